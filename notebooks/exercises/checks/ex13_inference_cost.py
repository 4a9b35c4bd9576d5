"""The checks of exercises 27-28: the bytes of the KV cache, and the FLOPs of a prefill and of a decode step."""

from __future__ import annotations

import math

import numpy as np
from arcee_np import ArceeConfig, ArceeForCausalLM, KVCache
from arcee_np.trace import trace

from checking import Exercise, Failure, call, check

from .ex7_tour import AFM
from .shipped import PADDED, model, tokenizer


def cache_bytes_measured(batch_texts=PADDED, dtype="float32") -> tuple[int, int, int]:
    """(batch, tokens, bytes): the bytes of the keys and values a real KVCache holds after a prefill."""
    base = model() if dtype == "float32" else ArceeForCausalLM(model().config, model().params, model().head_params)
    enc = tokenizer()(list(batch_texts), padding=True, return_tensors="np")
    cache = KVCache(base.config.num_hidden_layers)
    base(enc["input_ids"], attention_mask=enc["attention_mask"], past_key_values=cache, use_cache=True)
    stored = sum(k.nbytes + v.nbytes for k, v in (cache[layer] for layer in range(len(cache))))
    return enc["input_ids"].shape[0], enc["input_ids"].shape[1], stored


def _kv_mistakes(config, batch, tokens, b):
    L, H, KV, hd, D = (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
                       config.head_dim, config.hidden_size)
    true = 2 * L * KV * hd * batch * tokens * b
    return {
        "you counted a key and a value per query head (H); the cache holds one per KV head (num_key_value_heads)":
            true * H // KV,
        "you counted the keys only: the cache holds a key and a value vector (the factor 2)": true // 2,
        "you left out the layers: every layer keeps its own keys and values": true // L,
        "you left out the batch: every sequence has its own cache": true // batch,
        "you counted bits; the question is bytes": true * 8,
        "you used hidden_size for a key vector; it is num_key_value_heads * head_dim": 2 * L * D * batch * tokens * b,
    }


@check("kv_cache_bytes")
def check_kv_cache_bytes(kv_cache_bytes):
    hint = "2 (a key and a value) x L layers x KV heads x head_dim x batch x tokens x bytes per value"
    batch, tokens, measured = cache_bytes_measured()
    cases = [(model().config, batch, tokens, 4, measured,
              f"the shipped model after a prefill of {batch} sequences padded to {tokens} tokens, float32: the bytes "
              f"a real KVCache holds")]
    for b, t, bytes_per in ((1, 65536, 2), (8, 4096, 2), (1, 1, 1)):
        cases.append((AFM, b, t, bytes_per, 2 * AFM.num_hidden_layers * AFM.num_key_value_heads * AFM.head_dim * b
                      * t * bytes_per, f"AFM-4.5B, batch {b}, {t} tokens, {bytes_per} byte(s) a value"))
    for config, b, t, bytes_per, want, what in cases:
        checked = f"kv_cache_bytes(config, batch={b}, tokens={t}, bytes_per_value={bytes_per}) for {what}"
        got = call(kv_cache_bytes, "kv_cache_bytes", checked, config, b, t, bytes_per)
        if not isinstance(got, (int, float, np.integer, np.floating)) or got != want:
            looks = "; or ".join(m for m, n in _kv_mistakes(config, b, t, bytes_per).items() if n != want and n == got)
            raise Failure(checked, f"returned {got!r}; expected {want:,} bytes", looks, hint)
    return [f"checked: against the keys and values a real KVCache holds after a prefill ({measured:,} bytes) and "
            f"AFM-4.5B's cache at 64k tokens ({cases[1][4] / 2**30:.1f} GiB in bfloat16)"]


def measured_flops(config, tokens, past) -> int:
    """2 x multiply-adds of every matrix product one forward runs, counted from the shapes of its traced tensors.

    A model with ``config``'s shapes (random weights: the count depends on the shapes only) runs ``past`` tokens,
    then ``tokens`` more with the cache; every projection is 2 x rows x in x out, attention 2 x [T, hd] @ [hd, S]
    and 2 x [T, S] @ [S, hd] per head, the LM head 2 x T x D x V."""
    small = ArceeForCausalLM.from_config(config, seed=0)
    cache = KVCache(config.num_hidden_layers)
    if past:
        small(np.arange(past)[None] % config.vocab_size, past_key_values=cache, use_cache=True)
    with trace("layers.*") as t:
        small(np.arange(tokens)[None] % config.vocab_size, past_key_values=cache, use_cache=True)
    D, V = config.hidden_size, config.vocab_size
    total = 2 * tokens * D * V
    for layer in range(config.num_hidden_layers):
        p = f"layers.{layer}."
        for out_name in ("attn.q", "attn.k", "attn.v"):
            shape = t[p + out_name].shape                                   # [B, heads, T, hd]
            total += 2 * shape[2] * D * shape[1] * shape[3]
        total += 2 * math.prod(t[p + "attn.context"].shape) * D           # o_proj: [T, H*hd] @ [H*hd, D]
        scores = t[p + "attn.scores"].shape                                 # [B, H, T, S]
        total += 2 * 2 * math.prod(scores) * t[p + "attn.q"].shape[-1]     # q k^T and probs v
        total += 2 * 2 * math.prod(t[p + "mlp.up"].shape) * D              # up and down
    return int(total)


def _flop_mistakes(config, tokens, past):
    D, inter, V = config.hidden_size, config.intermediate_size, config.vocab_size
    H, KV, hd, L = config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.num_hidden_layers
    T, S = tokens, past + tokens
    true = measured_flops(config, tokens, past)
    attention = L * 4 * H * T * S * hd
    return {
        "you counted multiply-adds; a FLOP count takes 2 per multiply-add": true // 2,
        "your attention runs over the new tokens only; its keys are all S = past + T positions":
            true - attention + L * 4 * H * T * T * hd,
        "you left out attention's two products (q k^T and probs v), 4 H T S hd a layer": true - attention,
        "you left out the LM head (2 T D V), the largest single product of a small model": true - 2 * T * D * V,
        "you sized k_proj and v_proj with H heads; they have KV heads (grouped-query attention)":
            true + L * 2 * 2 * T * D * (H - KV) * hd,
        "you counted a gated MLP (gate, up, down: 3 matrices); Arcee's has up and down only":
            true + L * 2 * T * D * inter,
        "you counted half of attention's scores (the causal triangle); eager attention computes all T x S":
            true - attention // 2,
    }


@check("forward_flops")
def check_forward_flops(forward_flops):
    hint = ("per layer: 2 T D (H hd + 2 KV hd) [q, k, v] + 2 T H hd D [o] + 2 x 2 T D I [up, down] + 2 x 2 H T S hd "
            "[q k^T, probs v] with S = past + T; times L; plus 2 T D V for the LM head")
    small = ArceeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    cases = [(model().config, 18, 0, "the shipped model, a prefill of 18 tokens"),
             (model().config, 1, 40, "the shipped model, a decode step after 40 cached tokens"),
             (small, 5, 7, "a small model with H * hd (64) != D (32), 5 tokens after 7"),
             (small, 1, 0, "the same, one token and no cache")]
    for config, tokens, past, what in cases:
        checked = f"forward_flops(config, tokens={tokens}, past={past}) for {what}"
        got = call(forward_flops, "forward_flops", checked, config, tokens, past)
        want = measured_flops(config, tokens, past)
        if not isinstance(got, (int, float, np.integer, np.floating)) or not math.isclose(float(got), want,
                                                                                          rel_tol=1e-12):
            looks = "; or ".join(m for m, n in _flop_mistakes(config, tokens, past).items() if n != want and n == got)
            raise Failure(checked, f"returned {got!r}; the products of a forward with these shapes add up to "
                          f"{want:,} FLOPs", looks, hint)
    return ["checked: forward_flops for a prefill and a decode step of the shipped model and for a small model whose "
            "H * hd differs from D, against the products counted from the traced tensors' shapes"]


def _reference_kv_cache_bytes(config, batch, tokens, bytes_per_value):
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * batch * tokens * \
        bytes_per_value


EXERCISES = {
    "kv_cache_bytes": Exercise("ex13_inference_cost", ("kv_cache_bytes",), check_kv_cache_bytes),
    "forward_flops": Exercise("ex13_inference_cost", ("forward_flops",), check_forward_flops),
}
REFERENCE = {"kv_cache_bytes": _reference_kv_cache_bytes, "forward_flops": measured_flops}
