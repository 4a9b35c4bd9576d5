"""The checks of exercises 6-8: the causal + padding mask, grouped-query attention, the KV cache."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from arcee_np import ArceeConfig, ArceeForCausalLM
from arcee_np import KVCache as ReferenceKVCache
from arcee_np.blocks import attention as ref_attention
from arcee_np.blocks import attention_probs, lm_head
from arcee_np.blocks import causal_padding_mask as ref_mask
from arcee_np.model import backbone
from arcee_np.oracle.compare import TOLERANCES
from arcee_np.oracle.testing import reference_trace

from checking import (FLOAT32, Exercise, Failure, against_array, against_trace, array, call, check, first_match, fmt,
                      pair)

from .shipped import describe_ids, model, padded_reference, reference, softmax

# ---------------------------------------------------------------------------------------------- 6 the mask
MASK_CASES = (  # key_mask rows, query_length, what
    ([[1, 1, 1, 1, 1]], 5, "5 tokens, no padding"),
    ([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]], 7, "a batch of 2, the second left-padded by 3"),
    ([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], 2, "2 new queries over a cache of 4 past keys (S = 6, T = 2)"),
    ([[1, 1, 1, 1, 1, 1, 0, 0]], 8, "right padding"),
)


@check("mask")
def check_mask(causal_padding_mask):
    hint = ("query i of this step sits at cache index S - T + i; it may see key k when k <= S - T + i and "
            "key_mask[b, k] == 1. Return 0 there and np.finfo(dtype).min elsewhere, shape [B, 1, T, S].")
    ref = padded_reference()
    key_mask = ref.inputs["attention_mask"]
    B, S = key_mask.shape
    checked = ("layer 0's attention probabilities on a left-padded batch of 2, softmax(scores + your mask), with "
               f"your causal_padding_mask(key_mask={key_mask.tolist()}, query_length={S}, dtype=float32)")
    mask = array(call(causal_padding_mask, "causal_padding_mask", checked, key_mask, S, np.float32),
                 "causal_padding_mask", checked, (B, 1, S, S), "[B, 1, T, S]",
                 "one mask row per query: [B, 1, T, S]; the 1 broadcasts over the heads")
    if mask.dtype == np.bool_ or (np.isin(mask, (0, 1)).all() and (mask == 1).any()):
        raise Failure(checked, f"`causal_padding_mask` returned {'booleans' if mask.dtype == np.bool_ else '0s and 1s'}"
                      f"; the mask is additive: 0 where a query may look, np.finfo(dtype).min where it may not (it is "
                      f"added to the scores)", hint=hint)
    expected = np.asarray(ref_mask(key_mask, S, np.float32))
    scores = ref["layers.0.attn.scores"]
    with np.errstate(all="ignore"):
        probs = np.asarray(attention_probs(scores, mask.astype(np.float32), np.float32))
    err = against_trace({"layers.0.attn.scores": scores, "layers.0.attn.probs": probs}, ref, checked,
                        lambda: _mask_entries(mask, expected, key_mask, S), hint, valid=key_mask)
    for rows, T, what in MASK_CASES:
        for dtype in (np.float32, np.float16):
            key_mask = np.array(rows)
            B, S = key_mask.shape
            checked = f"causal_padding_mask(key_mask={rows}, query_length={T}, dtype={np.dtype(dtype).name}): {what}"
            out = call(causal_padding_mask, "causal_padding_mask", checked, key_mask, T, dtype)
            out = array(out, "causal_padding_mask", checked, (B, 1, T, S), "[B, 1, T, S]",
                        "one mask row per query: [B, 1, T, S]; the 1 broadcasts over the heads")
            if out.dtype == np.bool_:
                raise Failure(checked, "`causal_padding_mask` returned booleans; the mask is additive: 0 where a "
                              "query may look, np.finfo(dtype).min where it may not (it is added to the scores)")
            entries = _mask_entries(out, np.asarray(ref_mask(key_mask, T, dtype)), key_mask, T)
            if entries:
                raise Failure(checked, entries, hint=hint if "-inf" not in entries else (
                    "with -inf, a query row whose keys are all masked (a left-padding row) becomes exp(-inf + inf) "
                    "= NaN in the softmax; with finfo.min it becomes uniform, and such rows are then ignored"))
            if out.dtype != np.dtype(dtype):
                raise Failure(checked, f"`causal_padding_mask` returned {out.dtype}; return the mask in the given "
                              f"dtype ({np.dtype(dtype).name}): .astype(dtype)")
    return [f"checked: layer 0's attention probabilities with your mask on a left-padded batch (max abs error "
            f"{fmt(err)}), and {len(MASK_CASES)} masks entry by entry (padding left and right, a cache, float32 and "
            f"float16)"]


def _mask_entries(out, expected, key_mask, T) -> str | None:
    """The first wrong entry of your mask in words, or None when it equals arcee_np's."""
    S = key_mask.shape[1]
    minimum = np.finfo(expected.dtype).min
    allowed, want = out == 0, expected == 0
    wrong = np.argwhere(allowed != want)
    if wrong.size:
        real_query = key_mask[wrong[:, 0], S - T + wrong[:, 2]] == 1        # rows of padding queries come last
        b, _, i, k = (int(v) for v in wrong[np.argsort(~real_query, kind="stable")][0])
        index = S - T + i
        if want[b, 0, i, k]:
            why = f"it should see it: key {k} <= its cache index {index} and is not padding"
        elif k > index:
            why = f"key {k} is in its future (its cache index is {index}): mask it"
        else:
            why = f"key {k} is padding (key_mask[{b}, {k}] == 0): mask it"
        seen = "sees" if allowed[b, 0, i, k] else "does not see"
        return f"row {b}, query {i} {seen} key {k}, but {why} ({wrong.shape[0]} entries differ)"
    masked = out[~want]
    if masked.size and not np.all(masked == minimum):
        value = masked[masked != minimum][0]
        if np.isneginf(value):
            return f"masked entries hold -inf; arcee_np and transformers use np.finfo(dtype).min ({minimum:.4g})"
        return f"masked entries hold {value:.4g}; use np.finfo(dtype).min ({minimum:.4g}), the value transformers adds"
    return None


# ---------------------------------------------------------------------------------------------- 7 attention
@check("attention")
def check_attention(attention):
    hint = ("scores = q @ k^T * head_dim**-0.5 with query head n reading KV head n // (H / KV) (np.repeat(k, H // "
            "KV, axis=1)); add the mask; softmax over the keys (last axis) in float32; context = probs @ v, then "
            "[B, H, T, hd] -> [B, T, H, hd] -> [B, T, H*hd]")
    errors = []
    for ref, mask, what in _attention_cases():
        q, k, v = ref["layers.0.attn.q_rope"], ref["layers.0.attn.k_rope"], ref["layers.0.attn.v"]
        B, H, T, hd = q.shape
        checked = f"attention(q, k, v, mask) on layer 0 of {what} (H = {H} query heads, KV = {k.shape[1]})"
        context, probs = pair(call(attention, "attention", checked, q, k, v, mask), "attention", checked,
                              "(context, probs)")
        probs = array(probs, "attention(...)[1] (probs)", checked, (B, H, T, k.shape[2]), "[B, H, T, S]", hint)
        context = array(context, "attention(...)[0] (context)", checked, (B, T, H * hd), "[B, T, H*hd]", hint)

        def mistakes(H=H, k=k, v=v, q=q, mask=mask, ref=ref, probs=probs, hd=hd, B=B, T=T, context=context):
            n_rep = H // k.shape[1]
            kk, vv = np.repeat(k, n_rep, axis=1), np.repeat(v, n_rep, axis=1)
            raw = q @ np.swapaxes(kk, -1, -2)
            m = 0 if mask is None else mask
            expected = ref["layers.0.attn.probs"]
            found = first_match(probs, {
                "your probabilities are softmax(q k^T + mask) without the 1 / sqrt(head_dim) scale": softmax(raw + m),
                "you scaled by 1 / head_dim; the scale is head_dim**-0.5": softmax(raw / hd + m),
                "your probabilities ignore the mask: add it to the scores before the softmax":
                    softmax(raw * hd ** -0.5),
                "your softmax runs over the queries (axis -2); it runs over the keys (axis -1)":
                    softmax(raw * hd ** -0.5 + m, axis=-2),
                "you added the mask after the softmax; add it to the scores before": softmax(raw * hd ** -0.5) + m,
            }, expected)
            merged_wrong = (expected @ vv).reshape(B, T, H * hd)
            return found or first_match(context, {
                "you reshaped [B, H, T, hd] straight to [B, T, H*hd]; move the heads axis next to hd first "
                "(.transpose(0, 2, 1, 3)), then reshape": merged_wrong}, ref["layers.0.attn.context"])

        valid = ref.inputs.get("attention_mask")
        errors.append(against_trace({"layers.0.attn.q_rope": q, "layers.0.attn.k_rope": k, "layers.0.attn.v": v,
                                     "layers.0.attn.probs": probs, "layers.0.attn.context": context}, ref, checked,
                                    mistakes, hint, valid))
    probes = [_attention_probe(attention, *case, hint) for case in _attention_probes()]
    return [f"checked: layer 0's attention probabilities and context on the shipped model (8 query heads sharing 2 "
            f"KV heads, with and without padding) and on a random model with 4 and 1 KV heads (max abs error "
            f"{fmt(max(errors))}), then huge scores, rows that may see no key, and float16 scores past exp's overflow "
            f"(max abs error {fmt(probes[-1])} in float16)"]


def _attention_probes():
    """(q, k, v, mask, tolerance, what): inputs where a shortcut of the formula shows, every row compared."""
    ref = reference()
    q, k, v = ref["layers.0.attn.q_rope"], ref["layers.0.attn.k_rope"], ref["layers.0.attn.v"]
    T = q.shape[2]
    causal32 = np.asarray(ref_mask(np.ones((1, T), dtype=np.int64), T, np.float32))
    yield q * 40, k, v, causal32, TOLERANCES["float32"], "q 40 times larger: scores up to several hundred (exp " \
        "overflows float32 past 88)"
    key_mask = np.ones((1, T), dtype=np.int64)
    key_mask[:, :3] = 0                                            # keys 0-2 padding: queries 0-2 see no key
    mask = np.asarray(ref_mask(key_mask, T, np.float32))
    yield q, k, v, mask, TOLERANCES["float32"], ("keys 0 to 2 masked as padding, so queries 0 to 2 may see no key "
                                                 "(every row compared: eager attention makes such a row uniform)")
    causal = np.asarray(ref_mask(np.ones((1, T), dtype=np.int64), T, np.float16))
    yield ((q * 6).astype(np.float16), k.astype(np.float16), v.astype(np.float16), causal, TOLERANCES["float16"],
           "float16 q, k, v with scores up to about 100 (exp overflows float16 past 11)")


def _attention_probe(attention, q, k, v, mask, tolerance, what, hint):
    B, H, T, hd = q.shape
    checked = f"attention(q, k, v, mask) on layer 0 of the shipped model, {what}"
    with np.errstate(all="ignore"):
        context, probs = pair(call(attention, "attention", checked, q, k, v, mask), "attention", checked,
                              "(context, probs)")
    probs = array(probs, "attention(...)[1] (probs)", checked, (B, H, T, k.shape[2]), "[B, H, T, S]", hint)
    context = array(context, "attention(...)[0] (context)", checked, (B, T, H * hd), "[B, T, H*hd]", hint)
    with np.errstate(over="ignore"):  # float16 scores + finfo(float16).min overflow to -inf, as in transformers
        want_context, want_probs = (np.asarray(a) for a in ref_attention(q, k, v, mask, hd ** -0.5))

    def looks():
        if np.all(np.isfinite(probs)):
            return None
        if q.dtype == np.float16:
            return ("exp overflowed float16 (past 11.09): compute the softmax in float32 and subtract each row's "
                    "maximum before exp, then cast the probabilities back to q.dtype")
        if "larger" in what:
            return "exp overflowed: subtract each row's maximum from its scores before exp (the softmax is unchanged)"
        return ("rows whose keys are all masked came out NaN: add the mask (finfo.min, a finite number) to the scores "
                "rather than setting masked scores to -inf, so such a row's softmax stays finite (uniform)")
    if probs.dtype != q.dtype:
        raise Failure(checked, f"your probabilities are {probs.dtype} for {q.dtype} q; return them in q's dtype (the "
                      f"softmax runs in float32, then .astype(q.dtype), as transformers does)", hint=hint)
    err = against_array(probs, want_probs, "probs", checked, tolerance, looks, hint)
    return max(err, against_array(context, want_context, "context", checked, tolerance, looks, hint))


def _attention_cases():
    ref = reference()
    T = ref.inputs["input_ids"].shape[1]
    causal = np.asarray(ref_mask(np.ones((1, T), dtype=np.int64), T, np.float32))
    yield ref, causal, describe_ids(ref.inputs["input_ids"])
    padded = padded_reference()
    key_mask = padded.inputs["attention_mask"]
    yield padded, np.asarray(ref_mask(key_mask, key_mask.shape[1], np.float32)), "a left-padded batch of 2"
    for kv_heads in (4, 1):
        tiny = tiny_reference(kv_heads)
        n = tiny.inputs["input_ids"].shape[1]
        causal = np.asarray(ref_mask(np.ones((1, n), dtype=np.int64), n, np.float32))
        yield tiny, causal, f"a random model, KV = {kv_heads}"


@lru_cache(maxsize=None)
def tiny_reference(kv_heads: int):
    config = ArceeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                         bos_token_id=0, eos_token_id=1, initializer_range=0.2)
    return reference_trace(ArceeForCausalLM.from_config(config, seed=kv_heads), np.array([[0, 7, 3, 9, 4, 12, 5]]))


# ---------------------------------------------------------------------------------------------- 8 KV cache
@check("kv_cache")
def check_kv_cache(KVCache):
    ref, base = reference(), model()
    ids = ref.inputs["input_ids"]
    T, L = ids.shape[1], base.config.num_hidden_layers
    prompt = 6
    checked = (f"KVCache({L}) in the shipped model's forward: a {prompt}-token prompt, then one token at a time up "
               f"to {T}, against the full forward without a cache")
    hint = ("keep one list per layer; update(keys, values, layer) appends this step's [B, KV, T, hd] along axis 2 "
            "and returns everything stored for that layer; get_seq_length() is the number of positions stored")
    cache = call(KVCache, "KVCache", checked, L)
    length = call(cache.get_seq_length, "get_seq_length", checked) if hasattr(cache, "get_seq_length") else None
    if length != 0:
        raise Failure(checked, f"a new cache's get_seq_length() returned {length!r}; expected 0", hint=hint)
    watched = WatchedCache(cache, checked, hint)
    full = ref["logits"]
    worst = 0.0
    for start, stop in [(0, prompt)] + [(i, i + 1) for i in range(prompt, T)]:
        watched.step = (f"the prompt (positions 0 to {stop - 1})" if start == 0 else
                        f"decode step {start - prompt + 1} (position {start})")
        h = backbone(base.params, base.config, ids[:, start:stop], cache=watched).last_hidden_state
        logits = np.asarray(lm_head(h, base.lm_head_weight))
        stored = call(cache.get_seq_length, "get_seq_length", checked)
        if stored != stop:
            raise Failure(checked, f"after {watched.step} get_seq_length() returned {stored!r}; expected {stop}",
                          "you count update calls (one per layer per step) instead of positions"
                          if stored == L * stop or stored == L * (stop - start) + start else None, hint)
        worst = max(worst, against_array(logits, full[:, start:stop], f"the logits of {watched.step}", checked,
                                         TOLERANCES["kv_cache"], hint=hint))
    for layer in (0, L - 1):
        keys, values = watched.last[layer]
        against_array(keys, ref[f"layers.{layer}.attn.k_rope"], f"the keys update returned for layer {layer}",
                      checked, FLOAT32, hint="the cache keeps the keys it is given (after RoPE), in order")
        against_array(values, ref[f"layers.{layer}.attn.v"], f"the values update returned for layer {layer}",
                      checked, FLOAT32, hint="keep the values apart from the keys")
    return [f"checked: {checked}: every step's logits agree (max abs error {fmt(worst)}, tolerance "
            f"{TOLERANCES['kv_cache']})"]


class WatchedCache:
    """Your cache as the model sees it, with each update's result checked before the model uses it."""

    def __init__(self, cache, checked: str, hint: str):
        self.cache, self.checked, self.hint, self.step, self.last = cache, checked, hint, "", {}

    def get_seq_length(self, layer: int = 0) -> int:
        return call(self.cache.get_seq_length, "get_seq_length", self.checked)

    def update(self, keys, values, layer):
        past = self.last[layer][0].shape[2] if layer in self.last else 0
        expected = (*keys.shape[:2], past + keys.shape[2], keys.shape[3])
        where = f"{self.checked}; at {self.step}, layer {layer}"
        result = pair(call(self.cache.update, "update", where, keys, values, layer), "update", where,
                      "(keys, values)")
        got_k = array(result[0], "update(...)[0] (keys)", where, None)
        got_v = array(result[1], "update(...)[1] (values)", where, None)
        for got, what in ((got_k, "keys"), (got_v, "values")):
            if got.shape != expected:
                looks = None
                grown = [axis for axis in range(min(len(got.shape), 4)) if got.shape[axis] > keys.shape[axis]]
                if len(got.shape) == 4 and past and grown and grown != [2]:
                    looks = (f"you concatenated along axis {grown[0]}; the positions are axis 2 of [B, KV, T, hd]: "
                             f"np.concatenate([past, new], axis=2)")
                elif len(got.shape) == 4 and got.shape[2] == keys.shape[2] and past:
                    looks = "update returns only this step's positions; it must return the past ones too"
                elif len(got.shape) == 4 and got.shape[2] > expected[2]:
                    looks = "the layers share one store: keep a separate list for each layer (index by `layer`)"
                raise Failure(where, f"update returned {what} of shape {got.shape}; expected [B, KV, past + T, hd] "
                              f"= {expected}", looks, self.hint)
        self.last[layer] = (got_k, got_v)
        return got_k.astype(keys.dtype, copy=False), got_v.astype(values.dtype, copy=False)


EXERCISES = {  # the exercises of this notebook: the names each asks for, its check
    "mask": Exercise("ex3_attention", ("causal_padding_mask",), check_mask),
    "attention": Exercise("ex3_attention", ("attention",), check_attention),
    "kv_cache": Exercise("ex3_attention", ("KVCache",), check_kv_cache),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "causal_padding_mask": ref_mask,
    "attention": lambda q, k, v, mask: ref_attention(q, k, v, mask, q.shape[-1] ** -0.5),
    "KVCache": ReferenceKVCache,
}
