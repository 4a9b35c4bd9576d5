"""The check of exercise 13: the whole forward, and text from your own Arcee."""

from __future__ import annotations

import numpy as np
from arcee_np import KVCache as ReferenceKVCache
from arcee_np.blocks import lm_head
from arcee_np.model import backbone
from arcee_np.trace import trace

from checking import (Exercise, Failure, Verdict, against_trace, array, call, check, fmt)

from .ex5_sampling_loss import reference_sample
from .shipped import describe_ids, model, reference, token_words, tokenizer, weights


# ---------------------------------------------------------------------------------------------- 13 your Arcee
@check("arcee_forward")
def check_forward(arcee_forward):
    base, ref = model(), reference()
    ids = ref.inputs["input_ids"]
    checked = f"arcee_forward(params, config, input_ids) on {describe_ids(ids)}"
    hint = ("embed -> RoPE tables for positions past .. past + T -> causal mask -> every decoder layer -> final "
            "RMSNorm (norm.weight) -> logits = h @ embed_tokens.weight.T (the shipped model ties its embeddings)")
    out = _forward_dict(call(arcee_forward, "arcee_forward", checked, weights(), base.config, ids), checked, hint)
    err = against_trace(out, ref, checked, hint=hint)

    steps = 20
    checked = f"greedy generation of {steps} tokens after 'ROMEO:\\n' with arcee_forward and a KV cache"
    prompt = np.array([tokenizer().encode("ROMEO:\n")])
    want = base.generate(prompt, max_new_tokens=steps, do_sample=False, repetition_penalty=1.0)[0, prompt.shape[1]:]
    got = greedy(arcee_forward, ReferenceKVCache, prompt, steps, checked, hint)
    if not np.array_equal(got, want[:len(got)]) or len(got) != len(want):
        n = int(np.argmax(got != want[:len(got)])) if len(got) else 0
        raise Failure(checked, f"your tokens agree for {n} steps, then yours is {token_words(got[n:n + 1])} where "
                      f"arcee_np's is {token_words(want[n:n + 1])}",
                      hint="with a cache, feed only the new token: positions continue at cache.get_seq_length(); "
                           "one query needs no mask")
    return [f"checked: every tensor your arcee_forward returns ({len(out)} names, max abs error {fmt(err)}), and "
            f"{steps} greedy tokens with a KV cache, equal to arcee_np's generate"]


def _forward_dict(value, checked, hint) -> dict:
    if not isinstance(value, dict) or "logits" not in value:
        raise Failure(checked, f"`arcee_forward` returned a {type(value).__name__}; return a dict of named tensors "
                      f"with at least 'logits' [B, T, V]", hint=hint)
    known = set(reference())
    unknown = sorted(set(value) - known)
    if unknown:
        raise Failure(checked, f"names {unknown[:4]} are not trace names (docs/trace.md: embed, layers.0.out, ..., "
                      f"final_norm, logits)", hint=hint)
    return {name: array(v, f"arcee_forward(...)[{name!r}]", checked, reference()[name].shape)
            for name, v in value.items()}


def greedy(arcee_forward, cache_class, prompt, steps, checked, hint):
    """``steps`` greedy tokens after ``prompt`` from your forward with a cache: the prompt once, then a token a step."""
    cache = call(cache_class, "KVCache", checked, model().config.num_hidden_layers)
    tokens, feed = [], prompt
    for _ in range(steps):
        out = call(arcee_forward, "arcee_forward", checked, weights(), model().config, feed, cache=cache)
        if not isinstance(out, dict) or "logits" not in out:
            raise Failure(checked, "`arcee_forward` must return a dict with 'logits'", hint=hint)
        logits = array(out["logits"], "arcee_forward(...)['logits']", checked, (1, feed.shape[1],
                       model().config.vocab_size), "[B, T, V]", hint)
        tokens.append(int(np.argmax(logits[0, -1])))
        feed = np.array([[tokens[-1]]])
    return np.array(tokens)


def generate_text(arcee_forward, KVCache, sample_next, prompt="ROMEO:\n", max_new_tokens=60, temperature=0.8,
                  top_k=50, top_p=0.95, seed=0):
    """Write text with your own forward, cache and sampling step; compare it with arcee_np's generate."""
    base, tok = model(), tokenizer()
    ids = np.array([tok.encode(prompt)])
    checked = (f"your Arcee writing {max_new_tokens} tokens after {prompt!r} (temperature {temperature}, top-k "
               f"{top_k}, top-p {top_p}, seed {seed})")
    try:
        cache = call(KVCache, "KVCache", checked, base.config.num_hidden_layers)
        rng = np.random.default_rng(seed)
        tokens, feed = [], ids
        for _ in range(max_new_tokens):
            out = call(arcee_forward, "arcee_forward", checked, weights(), base.config, feed, cache=cache)
            scores = np.asarray(out["logits"], dtype=np.float32)[:, -1]
            token = int(np.asarray(call(sample_next, "sample_next", checked, scores, temperature, top_k, top_p,
                                        rng.random(1))).reshape(-1)[0])
            tokens.append(token)
            if token in _eos_ids():
                break
            feed = np.array([[token]])
    except Failure as failure:
        return Verdict("your Arcee", False, failure.lines)
    want = base.generate(ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=top_k,
                         top_p=top_p, repetition_penalty=1.0, seed=seed)[0, ids.shape[1]:]
    text = tok.decode(list(ids[0]) + tokens, skip_special_tokens=True)
    same = np.array_equal(np.array(tokens), want[:len(tokens)]) and len(tokens) == len(want)
    if same:
        return Verdict("your Arcee", True, [f"wrote: {text!r}",
                                            "equal to arcee_np's generate with the same seed, token for token"])
    return Verdict("your Arcee", False, [f"wrote: {text!r}", *_where_generation_differs(
        arcee_forward, sample_next, ids, tokens, want, (temperature, top_k, top_p), seed)])


def _where_generation_differs(arcee_forward, sample_next, prompt, tokens, want, settings, seed) -> list[str]:
    """Why your text differs from generate's: the forward's check first (it names the first diverging tensor),
    then your sampling step on arcee_np's own scores at the first token that differs."""
    n = next((i for i, (a, b) in enumerate(zip(tokens, want, strict=False)) if a != b), min(len(tokens), len(want)))
    yours, theirs = token_words(tokens[n:n + 1]) or "the end", token_words(want[n:n + 1]) or "the end"
    head = (f"differs from arcee_np's generate with the same seed: the tokens agree for {n} steps, then yours is "
            f"{yours} where arcee_np's is {theirs}")
    forward = check_forward(arcee_forward)
    if not forward.passed:
        return [head, "your forward is where (check_forward):", *forward.lines]
    context = np.concatenate([prompt[0], np.asarray(want[:n], dtype=prompt.dtype)])[None]
    scores = np.asarray(model()(context).logits[:, -1], dtype=np.float32)
    u = np.random.default_rng(seed).random(n + 1)[n:n + 1]
    expected = reference_sample(scores, *settings, u)
    checked = f"sample_next(scores, {', '.join(map(str, settings))}, u) on arcee_np's scores at step {n}"
    try:
        got = np.asarray(call(sample_next, "sample_next", checked, scores, *settings, u)).reshape(-1)
    except Failure as failure:
        return [head, *failure.lines]
    if not np.array_equal(got, expected):
        return [head, f"where: your forward passes its check; your sample_next gives {token_words(got)} on arcee_np's "
                f"own scores at step {n}, where arcee_np's sampling gives {token_words(expected)}",
                "hint: run check_sampling on your sampling functions (ex5_sampling_loss)"]
    return [head, "where: your forward passes its check and your sample_next agrees at that step: the uniforms differ "
            "(draw one u per step from numpy.random.default_rng(seed), as generate does) or the cache feeds the wrong "
            "positions"]


def _eos_ids():
    eos = model().config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def _reference_forward(params, config, input_ids, cache=None):
    with trace("*") as t:
        h = backbone(params, config, input_ids, cache=cache).last_hidden_state
        t["logits"] = lm_head(h, params.get("lm_head.weight", params["embed_tokens.weight"]))
    return dict(t)


EXERCISES = {  # the exercises of this notebook: the names each asks for, its check
    "arcee_forward": Exercise("ex6_your_arcee", ("arcee_forward",), check_forward),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "arcee_forward": _reference_forward,
}
