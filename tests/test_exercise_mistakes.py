"""Plausible wrong answers to every exercise, run through the checks: each must be caught (✗), and where the check
can say, with the right place (the ``where:`` line) and the right mistake (the ``looks like:`` line).

Each wrong answer is the solution with one slip a learner makes; ``place`` is a fragment the ``where:`` line must
hold (the first diverging tensor, the row, the block, the step), ``mistake`` one the ``looks like:`` line must
hold (None: the check need not name it, but must not name another one).
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
sys.path.insert(0, str(EXERCISES_DIR))

import checks  # noqa: E402

S = {name: importlib.import_module(f"solutions.{name}") for name in checks.NOTEBOOKS}
s1, s2, s3, s4, s5, s6 = (S[n] for n in checks.NOTEBOOKS[:6])
s7, s8, s9, s10, s11, s12, s13, s14, s15 = (S[n] for n in checks.NOTEBOOKS[6:])


@dataclass
class Wrong:
    exercise: str
    functions: list
    place: str
    mistake: str | None = None


def replace(exercise: str, **functions) -> list:
    """The solution's functions of ``exercise`` with some replaced by wrong ones."""
    module = S[checks.EXERCISES[exercise].notebook]
    return [functions.get(name, getattr(module, name)) for name in checks.EXERCISES[exercise].names]


def float32_norm(normalise):
    """An rms_norm that upcasts, normalises with ``normalise(x32, eps)`` and casts back as it should."""
    def rms_norm(x, weight, eps):
        x32 = x.astype(np.float32)
        return weight * normalise(x32, eps).astype(x.dtype)
    return rms_norm


def mean_square(x):
    return np.mean(x * x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- 1-2
WRONG = {
    "embed scaled like Gemma": Wrong("embed", [lambda ids, w: w[ids] * math.sqrt(w.shape[1])], "embed",
                                     "sqrt(D) times too large"),
    "embed of the columns": Wrong("embed", [lambda ids, w: w.T[:, ids]], "returned shape"),
    "embed of the first row only": Wrong("embed", [lambda ids, w: w[ids[:1]].repeat(len(ids), 0)], "batch of 2"),
    "embed plus one": Wrong("embed", [lambda ids, w: w[ids + 1]], "embed"),
    "rms_norm without eps": Wrong("rms_norm", [float32_norm(lambda x, eps: x / np.sqrt(mean_square(x)))],
                                  "rms 1.0e-04", "you left out eps"),
    "rms_norm with eps outside the sqrt": Wrong("rms_norm", [float32_norm(
        lambda x, eps: x / (np.sqrt(mean_square(x)) + eps))], "rms 1.0e-04", "eps outside the square root"),
    "rms_norm with the mean, not the mean of squares": Wrong("rms_norm", [float32_norm(
        lambda x, eps: x / np.sqrt(np.mean(x, -1, keepdims=True) + eps))], "layers.2.input_norm",
        "the mean of x"),
    "rms_norm with mean |x|": Wrong("rms_norm", [float32_norm(
        lambda x, eps: x / (np.mean(np.abs(x), -1, keepdims=True) + eps))], "layers.2.input_norm", "mean(|x|)"),
    "rms_norm with 1 + weight": Wrong("rms_norm", [lambda x, w, eps: (1 + w) * x / np.sqrt(mean_square(x) + eps)],
                                      "layers.2.input_norm", "1 + weight"),
    "rms_norm as LayerNorm": Wrong("rms_norm", [float32_norm(lambda x, eps: (x - x.mean(-1, keepdims=True)) / np.sqrt(
        x.var(-1, keepdims=True) + eps))], "layers.2.input_norm", "LayerNorm"),
    "rms_norm without the weight": Wrong("rms_norm", [lambda x, w, eps: x / np.sqrt(mean_square(x) + eps)],
                                         "layers.2.input_norm", "forgot to multiply by the weight"),
    "rms_norm over the tokens": Wrong("rms_norm", [float32_norm(lambda x, eps: x / np.sqrt(
        np.mean(x * x, 1, keepdims=True) + eps))], "layers.2.input_norm", "averaged over the tokens"),
    "rms_norm with the sum": Wrong("rms_norm", [float32_norm(lambda x, eps: x / np.sqrt(
        np.sum(x * x, -1, keepdims=True) + eps))], "layers.2.input_norm", "sqrt(sum(x**2))"),
    "rms_norm without the float32 upcast": Wrong("rms_norm", [lambda x, w, eps: w * x / np.sqrt(
        mean_square(x) + eps)], "rms_norm(float16 x)", "overflowed"),
    "rms_norm returning float32 for float16": Wrong("rms_norm", [lambda x, w, eps: w.astype(np.float32) * (
        x.astype(np.float32) / np.sqrt(mean_square(x.astype(np.float32)) + eps))], "float16"),
}


# ---------------------------------------------------------------------------------------------- 3-5
def inv_freq_j_over_hd(hd, theta):
    return (theta ** (-np.arange(hd // 2) / hd)).astype(np.float32)


def tables_interleaved(position_ids, inv_freq):
    angles = np.repeat(position_ids[..., None].astype(np.float32) * inv_freq, 2, axis=-1)
    return np.cos(angles), np.sin(angles)


def tables_swapped(position_ids, inv_freq):
    cos, sin = s2.rope_tables(position_ids, inv_freq)
    return sin, cos


def rope_interleaved(x, cos, sin):
    half = x.shape[-1] // 2
    c, s = cos[:, None, :, :half], sin[:, None, :, :half]
    even, odd = x[..., 0::2], x[..., 1::2]
    return np.stack([even * c - odd * s, odd * c + even * s], axis=-1).reshape(x.shape)


def rope_backwards(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos[:, None] + np.concatenate([x[..., half:], -x[..., :half]], -1) * sin[:, None]


def yarn_with(low_of, high_of, swap=False):
    def yarn_inv_freq(hd, theta, factor, original, beta_fast=32.0, beta_slow=1.0):
        j = np.arange(hd // 2, dtype=np.float32)
        plain = (1.0 / np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.float32) / hd)).astype(np.float32)

        def corr(n):
            return hd * math.log(original / (2 * math.pi * n)) / (2 * math.log(theta))
        low, high = low_of(corr(beta_fast)), high_of(corr(beta_slow), hd)
        ramp = np.clip((j - low) / (high - low), 0, 1)
        if swap:
            ramp = 1 - ramp
        return plain * (1 - ramp) + plain / factor * ramp
    return yarn_inv_freq


YARN_RIGHT = (lambda low: max(math.floor(low), 0), lambda high, hd: min(math.ceil(high), hd - 1))
WRONG.update({
    "RoPE exponent j / hd": Wrong("rope_tables", replace("rope_tables", rope_inv_freq=inv_freq_j_over_hd),
                                  "rope_inv_freq(32, 10000)", "exponent is j / head_dim"),
    "RoPE theta ** (2j / hd)": Wrong("rope_tables", replace("rope_tables", rope_inv_freq=lambda hd, theta: (
        theta ** (np.arange(0, hd, 2) / hd)).astype(np.float32)), "rope_inv_freq(32, 10000)", "its inverse"),
    "RoPE tables interleaved": Wrong("rope_tables", replace("rope_tables", rope_tables=tables_interleaved),
                                     "layers.0.attn.q_rope", "repeats each angle twice"),
    "RoPE tables (sin, cos)": Wrong("rope_tables", replace("rope_tables", rope_tables=tables_swapped),
                                    "layers.0.attn.q_rope", "(sin, cos)"),
    "RoPE tables of positions + 1": Wrong("rope_tables", replace("rope_tables", rope_tables=lambda p, inv:
                                                              s2.rope_tables(
        p + 1, inv)), "layers.0.attn.q_rope"),
    "RoPE tables of arange(T), ignoring position_ids": Wrong("rope_tables", replace(
        "rope_tables", rope_tables=lambda p, inv: (
        tuple(np.broadcast_to(t, (*p.shape, t.shape[-1])) for t in s2.rope_tables(np.arange(p.shape[1])[None], inv)))),
        "positions [[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3]]"),
    "RoPE interleaved": Wrong("apply_rope", [rope_interleaved], "layers.0.attn.q_rope", "adjacent pairs"),
    "RoPE by minus the angle": Wrong("apply_rope", [rope_backwards], "layers.0.attn.q_rope", "minus the angle"),
    "RoPE sin times x": Wrong("apply_rope", [lambda x, cos, sin: x * cos[:, None] + x * sin[:, None]],
                              "layers.0.attn.q_rope", "sin term multiplies x itself"),
    "RoPE cos only": Wrong("apply_rope", [lambda x, cos, sin: x * cos[:, None]], "layers.0.attn.q_rope"),
    "YaRN without truncation": Wrong("yarn", replace("yarn", yarn_inv_freq=yarn_with(lambda low: low,
                                                                                    lambda high, hd: high)),
                                     "layers.0.attn.q_rope", "floors low and ceils high"),
    "YaRN ramp reversed": Wrong("yarn", replace("yarn", yarn_inv_freq=yarn_with(*YARN_RIGHT, swap=True)),
                                "layers.0.attn.q_rope", "interpolated the fast pairs"),
    "YaRN as linear": Wrong("yarn", replace("yarn", yarn_inv_freq=lambda hd, theta, factor, original, beta_fast=32.0,
                                            beta_slow=1.0: s2.rope_inv_freq(hd, theta) / factor),
                            "layers.0.attn.q_rope", "divided every pair by the factor"),
    "YaRN ignoring beta_fast and beta_slow": Wrong("yarn", replace("yarn", yarn_inv_freq=lambda hd, theta, factor,
                                                                   original, beta_fast=32.0, beta_slow=1.0:
                                                                   s2.yarn_inv_freq(hd, theta, factor, original)),
                                                   "beta_fast=1, beta_slow=0.125"),
    "YaRN factor with log10": Wrong("yarn", replace("yarn", yarn_attention_factor=lambda f: 0.1 * math.log10(f) + 1
                                                    if f > 1 else 1.0), "layers.0.attn.q_rope", "log10"),
    "YaRN factor without + 1": Wrong("yarn", replace("yarn", yarn_attention_factor=lambda f: 0.1 * math.log(f)
                                                     if f > 1 else 1.0), "layers.0.attn.q_rope", "the + 1"),
    "YaRN factor without the guard": Wrong("yarn", replace("yarn", yarn_attention_factor=lambda f: 0.1 * math.log(f)
                                                           + 1), "returned 0.93", "factor <= 1 does not stretch"),
    "YaRN factor 1": Wrong("yarn", replace("yarn", yarn_attention_factor=lambda f: 1.0), "layers.0.attn.q_rope"),
})


# ---------------------------------------------------------------------------------------------- 6-8
def mask_with(allowed_of, fill=None):
    def causal_padding_mask(key_mask, query_length, dtype):
        batch, key_length = key_mask.shape
        query_index = np.arange(key_length - query_length, key_length)[:, None]
        key_index = np.arange(key_length)[None, :]
        allowed = allowed_of(key_index, query_index, key_mask)
        value = np.finfo(dtype).min if fill is None else fill(dtype)
        return np.where(allowed, 0, value).astype(dtype)[:, None]
    return causal_padding_mask


def attention_with(scores_of=None, softmax=None, merge=None, repeat=None):
    def attention(q, k, v, mask):
        batch, heads, length, head_dim = q.shape
        n_rep = heads // k.shape[1]
        index = repeat(heads, k.shape[1]) if repeat else np.arange(heads) // n_rep
        kk, vv = k[:, index], v[:, index]
        raw = q @ kk.swapaxes(-1, -2)
        scores = scores_of(raw, head_dim, mask) if scores_of else raw * head_dim ** -0.5 + (0 if mask is None else mask)
        probs = (softmax or s3.softmax)(scores).astype(q.dtype)
        context = probs @ vv
        out = merge(context) if merge else context.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim)
        return out, probs
    return attention


def naive_softmax(scores):
    e = np.exp(scores)
    return e / e.sum(-1, keepdims=True)


class CacheOnlyNew(s3.KVCache):
    def update(self, keys, values, layer):
        super().update(keys, values, layer)
        return keys, values


class CacheCountingCalls(s3.KVCache):
    def __init__(self, num_layers):
        super().__init__(num_layers)
        self.calls = 0

    def get_seq_length(self, layer=0):
        return self.calls

    def update(self, keys, values, layer):
        self.calls += keys.shape[2]
        return super().update(keys, values, layer)


class CacheWrongAxis(s3.KVCache):
    def update(self, keys, values, layer):
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = keys, values
        else:
            self.keys[layer] = np.concatenate([self.keys[layer], keys], axis=1)
            self.values[layer] = np.concatenate([self.values[layer], values], axis=1)
        return self.keys[layer], self.values[layer]


class CacheSharedStore(s3.KVCache):
    def update(self, keys, values, layer):
        return super().update(keys, values, 0)

    def get_seq_length(self, layer=0):
        return super().get_seq_length(0) // len(self.keys)


class CacheSwapped(s3.KVCache):
    def update(self, keys, values, layer):
        k, v = super().update(keys, values, layer)
        return v, k


class CacheStartingAtOne(s3.KVCache):
    def get_seq_length(self, layer=0):
        return super().get_seq_length(layer) + (1 if self.keys[layer] is None else 0)


class CachePrepending(s3.KVCache):
    def update(self, keys, values, layer):
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = keys, values
        else:
            self.keys[layer] = np.concatenate([keys, self.keys[layer]], axis=2)
            self.values[layer] = np.concatenate([values, self.values[layer]], axis=2)
        return self.keys[layer], self.values[layer]


WRONG.update({
    "mask with -inf": Wrong("mask", [mask_with(lambda k, q, m: (k <= q)[None] & m[:, None, :].astype(bool),
                                               fill=lambda dtype: -np.inf)], "-inf"),
    "mask forgetting padding": Wrong("mask", [mask_with(lambda k, q, m: np.broadcast_to(k <= q, (len(m), *np.broadcast(
        k, q).shape)))], "layers.0.attn.probs", "is padding"),
    "mask off by one (k < q)": Wrong("mask", [mask_with(lambda k, q, m: (k < q)[None] & m[:, None, :].astype(bool))],
                                     "layers.0.attn.probs", "should see it"),
    "mask off by one (k <= q + 1)": Wrong("mask", [mask_with(lambda k, q, m: (k <= q + 1)[None]
                                                             & m[:, None, :].astype(bool))], "layers.0.attn.probs",
                                     "in its future"),
    "mask ignoring the cache offset": Wrong("mask", [mask_with(lambda k, q, m: (k <= q - q.min())[None]
                                                               & m[:, None, :].astype(bool))], "should see it"),
    "mask of booleans": Wrong("mask", [lambda key_mask, t, dtype: s3.causal_padding_mask(key_mask, t, dtype) == 0],
                              "booleans"),
    "mask of 1s and 0s": Wrong("mask", [lambda key_mask, t, dtype: (s3.causal_padding_mask(key_mask, t, dtype) == 0
                                                                     ).astype(dtype)], "0s and 1s"),
    "mask with -1e9": Wrong("mask", [mask_with(lambda k, q, m: (k <= q)[None] & m[:, None, :].astype(bool),
                                               fill=lambda dtype: -1e9)], "masked entries hold"),
    "mask in float32 always": Wrong("mask", [lambda key_mask, t, dtype: s3.causal_padding_mask(key_mask, t,
                                                                                               np.float32)],
                                    "float16"),
    "attention without the scale": Wrong("attention", [attention_with(lambda raw, hd, m: raw + (0 if m is None
                                                                                                else m))],
                                         "layers.0.attn.probs", "without the 1 / sqrt(head_dim) scale"),
    "attention scaled by 1 / hd": Wrong("attention", [attention_with(lambda raw, hd, m: raw / hd + (0 if m is None
                                                                                                    else m))],
                                        "layers.0.attn.probs", "1 / head_dim"),
    "attention ignoring the mask": Wrong("attention", [attention_with(lambda raw, hd, m: raw * hd ** -0.5)],
                                         "layers.0.attn.probs", "ignore the mask"),
    "attention softmax over the queries": Wrong("attention", [attention_with(softmax=lambda s: np.exp(
        s - s.max(-2, keepdims=True)) / np.exp(s - s.max(-2, keepdims=True)).sum(-2, keepdims=True))],
        "layers.0.attn.probs", "over the queries"),
    "attention mask after the softmax": Wrong("attention", [attention_with(
        lambda raw, hd, m: raw * hd ** -0.5, softmax=None)], "layers.0.attn.probs"),
    "attention GQA n % KV": Wrong("attention", [attention_with(repeat=lambda h, kv: np.arange(h) % kv)],
                                  "layers.0.attn.probs", None),
    "attention merged without the transpose": Wrong("attention", [attention_with(
        merge=lambda c: c.reshape(c.shape[0], c.shape[2], -1))], "layers.0.attn.context", "reshaped [B, H, T, hd]"),
    "attention without max subtraction": Wrong("attention", [attention_with(softmax=naive_softmax)],
                                               "q 40 times larger", "exp overflowed"),
    "attention with -inf for the mask": Wrong("attention", [attention_with(lambda raw, hd, m: np.where(
        (m if m is not None else 0) < 0, -np.inf, raw * hd ** -0.5))], "may see no key", "came out NaN"),
    "attention softmax in float16": Wrong("attention", [attention_with(softmax=lambda s: naive_softmax(
        s.astype(np.float16)) if s.dtype == np.float16 else s3.softmax(s))], "float16", "float16"),
    "cache returning only the new keys": Wrong("kv_cache", [CacheOnlyNew], "decode step 1",
                                               "must return the past ones too"),
    "cache counting calls": Wrong("kv_cache", [CacheCountingCalls], "get_seq_length() returned 24",
                                  "count update calls"),
    "cache concatenating on the heads axis": Wrong("kv_cache", [CacheWrongAxis], "concatenation axis"),
    "cache shared by the layers": Wrong("kv_cache", [CacheSharedStore], "layer 1", "separate list for each layer"),
    "cache swapping keys and values": Wrong("kv_cache", [CacheSwapped], "logits of the prompt"),
    "cache starting at 1": Wrong("kv_cache", [CacheStartingAtOne], "get_seq_length() returned 1"),
    "cache prepending": Wrong("kv_cache", [CachePrepending], "the keys update returned"),
})
# the mask after the softmax: probabilities plus the mask
WRONG["attention mask after the softmax"] = Wrong("attention", [lambda q, k, v, mask: (lambda probs: (
    (probs @ np.repeat(v, q.shape[1] // k.shape[1], 1)).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[2], -1),
    probs))(s3.softmax(q @ np.repeat(k, q.shape[1] // k.shape[1], 1).swapaxes(-1, -2) * q.shape[-1] ** -0.5)
            + (0 if mask is None else mask))], "layers.0.attn.probs", "after the softmax")


# ---------------------------------------------------------------------------------------------- 9-10
def layer_with(**changes):
    def decoder_layer(h, weights, cos, sin, mask, config, cache=None, layer=0):
        out = s4.decoder_layer(h, weights, cos, sin, mask, config, cache, layer)
        for name, change in changes.items():
            out[name] = change(out, h, weights, config)
        return out
    return decoder_layer


WRONG.update({
    "relu instead of relu2": Wrong("mlp", replace("mlp", relu2=lambda x: np.maximum(x, 0)), "relu2", "relu(x); square"),
    "relu2 without the relu": Wrong("mlp", replace("mlp", relu2=lambda x: x * x), "relu2", "without the relu"),
    "relu2 as SiLU": Wrong("mlp", replace("mlp", relu2=lambda x: x / (1 + np.exp(-x))), "relu2", "SiLU"),
    "relu2 as relu(x**2)": Wrong("mlp", replace("mlp", relu2=lambda x: np.maximum(x * x, 0)), "relu2",
                                 "squared without the relu"),
    "mlp with a gate": Wrong("mlp", replace("mlp", mlp=lambda x, up, down: (s4.relu2(x @ up.T) * (x @ up.T)) @ down.T),
                             "layers.1.mlp.out"),
    "mlp without the transpose": Wrong("mlp", replace("mlp", mlp=lambda x, up, down: s4.relu2(x @ up.T) @ down),
                                       "mlp"),
    "mlp applying relu": Wrong("mlp", replace("mlp", mlp=lambda x, up, down: np.maximum(x @ up.T, 0) @ down.T),
                               "layers.1.mlp.out", "relu, not relu squared"),
    "layer residual of the normed input": Wrong("decoder_layer", [layer_with(
        attn_residual=lambda o, h, w, c: o["input_norm"] + o["attn.out"])], "layers.1.attn_residual"),
    "layer ignoring the cache": Wrong("decoder_layer", [lambda *a, cache=None, layer=0: s4.decoder_layer(*a)],
                                      "cache holds 0 positions", "does not call cache.update"),
    "layer without the second residual": Wrong("decoder_layer", [layer_with(out=lambda o, h, w, c: o["mlp.out"])],
                                               "layers.1.out"),
    "layer with the wrong norm weight": Wrong("decoder_layer", [lambda h, w, cos, sin, mask, c, cache=None, layer=0:
                                                                s4.decoder_layer(h, {**w, "post_attention_layernorm"
                                                                                     ".weight": w["input_layernorm"
                                                                                                  ".weight"]}, cos,
                                                                                 sin, mask, c, cache, layer)],
                                              "layers.1.post_norm"),
    "layer returning only out": Wrong("decoder_layer", [lambda *a, **k: {"outs": s4.decoder_layer(*a, **k)["out"]}],
                                      "not names of a layer's tensors"),
})


# ---------------------------------------------------------------------------------------------- 11-12
def top_p_dropping_the_crossing_token(scores, p):
    order = np.argsort(-scores, axis=-1, kind="stable")
    probs = np.take_along_axis(s5.softmax(scores.astype(np.float64)), order, axis=-1)
    keep_sorted = np.cumsum(probs, -1) <= p
    keep_sorted[:, 0] = True
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return np.where(keep, scores, -np.inf)


def top_p_past_the_threshold(scores, p):
    order = np.argsort(-scores, axis=-1, kind="stable")
    probs = np.take_along_axis(s5.softmax(scores.astype(np.float64)), order, axis=-1)
    keep_sorted = np.cumsum(probs, -1) - probs <= p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return np.where(keep, scores, -np.inf)


def top_k_exactly_k(scores, k):
    index = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    keep = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(keep, index, True, -1)
    return np.where(keep, scores, -np.inf)


def draw_by_rank(scores, u):
    probs = s5.softmax(scores.astype(np.float64))
    order = np.argsort(-probs, axis=-1, kind="stable")
    cdf = np.cumsum(np.take_along_axis(probs, order, -1), -1)
    return np.take_along_axis(order, np.argmax(cdf > u[:, None], -1)[:, None], -1)[:, 0]


def sample_filter_first(scores, t, k, p, u):
    if p < 1.0:
        scores = s5.top_p_filter(scores, p)
    if k > 0:
        scores = s5.top_k_filter(scores, k)
    return s5.draw(s5.apply_temperature(scores, t), u)


def loss_with(shift=True, ignore=True, reduce=None, log=np.log):
    def causal_lm_loss(logits, labels):
        if shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        logp = s5.log_softmax(logits.astype(np.float32))
        picked = np.take_along_axis(logp, np.where(labels < 0, labels + logp.shape[-1], labels)[..., None], -1)[..., 0]
        counted = labels != -100 if ignore else np.ones(labels.shape, dtype=bool)
        nll = -picked * (1 / math.log(2) if log is np.log2 else 1)
        return reduce(nll, counted) if reduce else nll[counted].mean()
    return causal_lm_loss


WRONG.update({
    "temperature multiplied": Wrong("sampling", replace("sampling", apply_temperature=lambda s, t: s * t),
                                    "apply_temperature", "multiplied by the temperature"),
    "temperature on probabilities": Wrong("sampling", replace("sampling", apply_temperature=lambda s, t: s5.softmax(
        s / t)), "apply_temperature"),
    "top-k filling with 0": Wrong("sampling", replace("sampling", top_k_filter=lambda s, k: np.where(
        s5.top_k_filter(s, k) == -np.inf, 0.0, s)), "removed tokens hold 0"),
    "top-k keeping exactly k": Wrong("sampling", replace("sampling", top_k_filter=top_k_exactly_k),
                                     "row 0: you kept 2 tokens", "ties with the k-th largest"),
    "top-k keeping k + 1": Wrong("sampling", replace("sampling", top_k_filter=lambda s, k: s5.top_k_filter(s, k + 1)),
                                 "you kept", "more than the k largest"),
    "top-p one token short": Wrong("sampling", replace("sampling", top_p_filter=top_p_dropping_the_crossing_token),
                                   "you kept", "you dropped the token that makes the mass"),
    "top-p past the threshold": Wrong("sampling", replace("sampling", top_p_filter=top_p_past_the_threshold),
                                      "you kept 7 tokens", "one token more than needed"),
    "draw by rank": Wrong("sampling", replace("sampling", draw=draw_by_rank), "draw gave tokens",
                          "from the most likely"),
    "draw with >=": Wrong("sampling", replace("sampling", draw=lambda s, u: np.argmax(np.cumsum(s5.softmax(
        s.astype(np.float64)), -1) >= u[:, None], -1)), "draw gave tokens", "reaches u (>=)"),
    "draw argmax": Wrong("sampling", replace("sampling", draw=lambda s, u: np.argmax(s, -1)), "draw gave tokens"),
    "sample filtering before the temperature": Wrong("sampling", replace("sampling", sample_next=sample_filter_first),
                                                     "sample_next gave", "filtered before applying the temperature"),
    "sample ignoring top-p": Wrong("sampling", replace("sampling", sample_next=lambda s, t, k, p, u: s5.sample_next(
        s, t, k, 1.0, u)), "sample_next gave", "skips top-p"),
    "sample ignoring top-k": Wrong("sampling", replace("sampling", sample_next=lambda s, t, k, p, u: s5.sample_next(
        s, t, 0, p, u)), "sample_next gave", "skips top-k"),
    "sample with top-p before top-k": Wrong("sampling", replace("sampling", sample_next=lambda s, t, k, p, u: s5.draw(
        s5.top_k_filter(s5.top_p_filter(s5.apply_temperature(s, t), p), k) if k > 0 else s5.top_p_filter(
            s5.apply_temperature(s, t), p), u)), "sample_next gave", "top-p before top-k"),
    "log_softmax without the max": Wrong("loss", replace("loss", log_softmax=lambda z: z - np.log(np.exp(z).sum(
        -1, keepdims=True))), "log_softmax of logits up to", "overflowed"),
    "log_softmax over the tokens": Wrong("loss", replace("loss", log_softmax=lambda z: s5.log_softmax(
        z.swapaxes(1, 2)).swapaxes(1, 2)), "log_softmax", "over the tokens"),
    "log_softmax without the log of the sum": Wrong("loss", replace("loss", log_softmax=lambda z: z - z.max(
        -1, keepdims=True)), "log_softmax", "log of the sum"),
    "loss shifted the wrong way": Wrong("loss", replace("loss", causal_lm_loss=lambda logits, labels: loss_with(
        shift=False)(logits[:, 1:], labels[:, :-1])), "returned", "shifted the wrong way"),
    "log_softmax as the log of the softmax": Wrong("loss", replace("loss", log_softmax=lambda z: np.log(s5.softmax(z))),
                                                   "log_softmax of logits up to", "log(0) = -inf"),
    "loss without the shift": Wrong("loss", replace("loss", causal_lm_loss=loss_with(shift=False)), "returned",
                                    "position t predicts token t + 1"),
    "loss counting -100": Wrong("loss", replace("loss", causal_lm_loss=loss_with(ignore=False)),
                                "the first 9 labels -100",
                                "counted the -100 labels"),
    "loss summed": Wrong("loss", replace("loss", causal_lm_loss=loss_with(reduce=lambda nll, c: nll[c].sum())),
                         "returned", "summed the losses"),
    "loss divided by every position": Wrong("loss", replace("loss", causal_lm_loss=loss_with(
        reduce=lambda nll, c: nll[c].sum() / c.size)), "the first 9 labels -100", "every position"),
    "loss mean of sequence means": Wrong("loss", replace("loss", causal_lm_loss=loss_with(
        reduce=lambda nll, c: np.mean([nll[b][c[b]].mean() for b in range(len(c))]))), "left-padded",
        "averaged each sequence"),
    "loss divided by the batch": Wrong("loss", replace("loss", causal_lm_loss=loss_with(
        reduce=lambda nll, c: nll[c].sum() / len(c))), "returned", "divided the sum by the batch size"),
    "loss in bits": Wrong("loss", replace("loss", causal_lm_loss=loss_with(log=np.log2)), "returned", "bits"),
})


# ---------------------------------------------------------------------------------------------- 13
def forward_with(change):
    def arcee_forward(params, config, input_ids, cache=None):
        return change(s6.arcee_forward(params, config, input_ids, cache), params, config)
    return arcee_forward


def forward_without_mask(params, config, input_ids, cache=None):
    """The solution's forward with every layer run without a mask: each token sees the future too."""
    out, h = {}, s1.embed(input_ids, params["embed_tokens.weight"])
    out["embed"] = h
    cos, sin = s2.rope_tables(np.arange(input_ids.shape[1])[None], s2.rope_inv_freq(config.head_dim, config.rope_theta))
    for i in range(config.num_hidden_layers):
        weights = {n[len(f"layers.{i}."):]: w for n, w in params.items() if n.startswith(f"layers.{i}.")}
        h = out[f"layers.{i}.out"] = s4.decoder_layer(h, weights, cos, sin, None, config, cache, i)["out"]
    h = out["final_norm"] = s1.rms_norm(h, params["norm.weight"], config.rms_norm_eps)
    out["logits"] = h @ params["embed_tokens.weight"].T
    return out


def forward_positions_from_zero(params, config, input_ids, cache=None):
    class NoPast:
        def __init__(self, inner):
            self.inner = inner

        def get_seq_length(self, layer=0):
            return 0

        def update(self, k, v, layer):
            return self.inner.update(k, v, layer)
    return s6.arcee_forward(params, config, input_ids, None if cache is None else NoPast(cache))


WRONG.update({
    "forward without the final norm": Wrong("arcee_forward", [forward_with(lambda o, p, c: {
        **o, "final_norm": o[f"layers.{c.num_hidden_layers - 1}.out"],
        "logits": o[f"layers.{c.num_hidden_layers - 1}.out"] @ p["embed_tokens.weight"].T})], "final_norm", None),
    "forward without the causal mask": Wrong("arcee_forward", [forward_without_mask], "layers.0.out"),
    "forward with scaled logits": Wrong("arcee_forward", [forward_with(lambda o, p, c: {
        **o, "logits": o["logits"] / math.sqrt(c.hidden_size)})], "logits"),
    "forward restarting positions with a cache": Wrong("arcee_forward", [forward_positions_from_zero],
                                                       "your tokens agree for"),
})


# ---------------------------------------------------------------------------------------------- 14-15
def count_with(delta):
    return lambda config: s7.count_parameters(config) + delta(config)


def queries_with(change):
    def first_layer_queries(state_dict, config, input_ids):
        return change(state_dict, config, input_ids)
    return first_layer_queries


def q_no_norm(sd, c, ids):
    q = sd["model.embed_tokens.weight"][ids] @ sd["model.layers.0.self_attn.q_proj.weight"].T
    return q.reshape(*ids.shape, c.num_attention_heads, c.head_dim).transpose(0, 2, 1, 3)


def q_no_transpose(sd, c, ids):
    h = sd["model.embed_tokens.weight"][ids]
    x = s7.rms_norm(h, sd["model.layers.0.input_layernorm.weight"], c.rms_norm_eps)
    return (x @ sd["model.layers.0.self_attn.q_proj.weight"]).reshape(*ids.shape, c.num_attention_heads,
                                                                       c.head_dim).transpose(0, 2, 1, 3)


def q_straight_reshape(sd, c, ids):
    q = s7.first_layer_queries(sd, c, ids).transpose(0, 2, 1, 3).reshape(*ids.shape, -1)
    return q.reshape(ids.shape[0], c.num_attention_heads, ids.shape[1], c.head_dim)


WRONG.update({
    "count with k/v as H heads": Wrong("count_parameters", [count_with(lambda c: 2 * c.num_hidden_layers
                                                                       * c.hidden_size * (c.num_attention_heads
                                                                                          - c.num_key_value_heads)
                                                                       * c.head_dim)], "returned",
                                       "[KV*hd, D]"),
    "count with the tied head": Wrong("count_parameters", [count_with(lambda c: c.vocab_size * c.hidden_size
                                                                      if c.tie_word_embeddings else 0)],
                                      "returned", "tied"),
    "count without the untied head": Wrong("count_parameters", [count_with(lambda c: 0 if c.tie_word_embeddings
                                                                           else -c.vocab_size * c.hidden_size)],
                                           "returned", "left out the LM head"),
    "count without the norms": Wrong("count_parameters", [count_with(lambda c: -(2 * c.num_hidden_layers + 1)
                                                                     * c.hidden_size)], "returned",
                                     "left out the norms"),
    "count without the final norm": Wrong("count_parameters", [count_with(lambda c: -c.hidden_size)], "returned",
                                          "final norm"),
    "count with a gate": Wrong("count_parameters", [count_with(lambda c: c.num_hidden_layers * c.hidden_size
                                                               * c.intermediate_size)], "returned", "gate_proj"),
    "count ignoring biases": Wrong("count_parameters", [lambda c: s7.count_parameters(
        __import__("dataclasses").replace(c, attention_bias=False, mlp_bias=False))], "biases", "biases"),
    "count with D for the attention width": Wrong("count_parameters", [lambda c: s7.count_parameters(
        __import__("dataclasses").replace(c, head_dim=c.hidden_size // c.num_attention_heads))],
        "H * hd (32) is not D (24)", "attention width as hidden_size"),
    "queries without the norm": Wrong("first_layer_queries", [queries_with(q_no_norm)], "layers.0.attn.q",
                                      "skipped the input norm"),
    "queries without the weight transpose": Wrong("first_layer_queries", [queries_with(q_no_transpose)],
                                                  "layers.0.attn.q", "not its transpose"),
    "queries reshaped straight to heads": Wrong("first_layer_queries", [queries_with(q_straight_reshape)],
                                                "layers.0.attn.q", "reshaped [B, T, H*hd] straight"),
    "queries with the post-attention norm": Wrong("first_layer_queries", [queries_with(
        lambda sd, c, ids: s7.first_layer_queries(
        {**sd, "model.layers.0.input_layernorm.weight": sd["model.layers.0.post_attention_layernorm.weight"]}, c,
        ids))], "layers.0.attn.q", "post_attention_layernorm"),
})


# ---------------------------------------------------------------------------------------------- 16-17
def close_with(rule):
    def close(actual, expected, atol, rtol):
        a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        with np.errstate(all="ignore"):
            return rule(a, e, atol, rtol)
    return close


def first_with(order=None, skip_shape=False, last=False):
    def first_divergence(yours, reference, atol, rtol):
        names = list(yours) if order == "yours" else list(reference)
        found = []
        for name in names:
            if name not in yours or name not in reference:
                continue
            a, e = np.asarray(yours[name]), np.asarray(reference[name])
            if a.shape != e.shape:
                if skip_shape:
                    continue
                found.append(name)
                continue
            if not s8.close(a, e, atol, rtol).all():
                found.append(name)
        return (found[-1] if last else found[0]) if found else None
    return first_divergence


WRONG.update({
    "close with <": Wrong("close", [close_with(lambda a, e, atol, rtol: (a == e) | (np.abs(a - e) < atol + rtol
                                                                                    * np.abs(e)))], "pair"),
    "close scaled by |actual|": Wrong("close", [close_with(lambda a, e, atol, rtol: (a == e) | (np.abs(a - e) <= atol
                                                                                                + rtol * np.abs(a)))],
                                      "pair", None),
    "close with both tolerances": Wrong("close", [close_with(lambda a, e, atol, rtol: (a == e) | (
        (np.abs(a - e) <= atol) & (np.abs(a - e) <= rtol * np.abs(e))))], "pair"),
    "close without a == e": Wrong("close", [close_with(lambda a, e, atol, rtol: np.abs(a - e) <= atol + rtol
                                                       * np.abs(e))], "pair", "equal infinities"),
    "close with NaN never close": Wrong("close", [close_with(lambda a, e, atol, rtol: (a == e) | (
        np.abs(a - e) <= atol + rtol * np.where(np.isfinite(e), np.abs(e), 0)))], "pair", "two NaNs are close"),
    "close as np.isclose": Wrong("close", [lambda a, e, atol, rtol: np.isclose(a, e, rtol=rtol, atol=atol)], "pair",
                                 "two NaNs are close"),
    "first divergence in your order": Wrong("first_divergence", [first_with(order="yours")], "returned",
                                            "your dict's order"),
    "first divergence skipping shapes": Wrong("first_divergence", [first_with(skip_shape=True)], "returned",
                                              "another shape"),
    "first divergence in alphabetical order": Wrong("first_divergence", [lambda y, r, atol, rtol: next(
        (n for n in sorted(r) if n in y and (np.shape(y[n]) != np.shape(r[n]) or not s8.close(y[n], r[n], atol,
                                                                                              rtol).all())), None)],
        "returned", "alphabetically"),
    "yarn without clamping low at 0": Wrong("yarn", replace("yarn", yarn_inv_freq=yarn_with(
        lambda low: math.floor(low), lambda high, hd: math.ceil(high))), "low is clipped to 0"),
    "attention probabilities in float32 for float16": Wrong("attention", [lambda q, k, v, m: (lambda out: (
        out[0], out[1].astype(np.float32)))(s3.attention(q, k, v, m))], "float16", None),
    "first divergence returning the last": Wrong("first_divergence", [first_with(last=True)], "returned",
                                                 "the last diverging name"),
    "first divergence with exact equality": Wrong("first_divergence", [lambda y, r, atol, rtol: next(
        (n for n in r if n in y and (np.shape(y[n]) != np.shape(r[n]) or not np.array_equal(y[n], r[n]))), None)],
        "returned", "inside the tolerance"),
    "first divergence missing NaN": Wrong("first_divergence", [lambda y, r, atol, rtol: next(
        (n for n in r if n in y and (np.shape(y[n]) != np.shape(r[n]) or np.nanmax(np.abs(np.asarray(y[n], float)
                                                                                          - r[n])) > atol + rtol
                                     * np.abs(r[n]).max())), None)], "returned", "a NaN is never close"),
})


# ---------------------------------------------------------------------------------------------- 18
def online_with(rescale=True, max_shift=True, guard=True, scale=True, empty_rows="mean"):
    def online_attention(q, k, v, keep, key_tile):
        q, k, v = (a.astype(np.float32) for a in (q, k, v))
        factor = np.float32(q.shape[-1] ** -0.5) if scale else np.float32(1)
        m = np.full((q.shape[0], 1), -np.inf, dtype=np.float32)
        total = np.zeros((q.shape[0], 1), dtype=np.float32)
        acc = np.zeros((q.shape[0], v.shape[1]), dtype=np.float32)
        with np.errstate(all="ignore"):
            for k0 in range(0, k.shape[0], key_tile):
                s = np.where(keep[:, k0:k0 + key_tile], (q @ k[k0:k0 + key_tile].T) * factor, -np.inf)
                new_m = np.maximum(m, s.max(axis=-1, keepdims=True))
                shift = (np.where(np.isneginf(new_m), 0, new_m) if guard else new_m) if max_shift else 0
                p = np.exp(s - shift)
                correction = np.exp(m - shift) if rescale else 1
                total = total * correction + p.sum(-1, keepdims=True)
                acc = acc * correction + p @ v[k0:k0 + key_tile]
                m = new_m
            seen = total > 0
            fallback = v.mean(0, keepdims=True) if empty_rows == "mean" else np.zeros_like(acc)
            return np.where(seen, acc / np.where(seen, total, 1), fallback) if empty_rows != "nan" else acc / total
    return online_attention


WRONG.update({
    "online without the rescale": Wrong("online_attention", [online_with(rescale=False)], "the output",
                                        "without rescaling"),
    "online without the max": Wrong("online_attention", [online_with(max_shift=False)], "the output",
                                    "without subtracting the running max"),
    "online without the -inf guard": Wrong("online_attention", [online_with(guard=False)], "the output",
                                           "exp(-inf - -inf) is NaN"),
    "online without the scale": Wrong("online_attention", [online_with(scale=False)], "the output",
                                      "1 / sqrt(head_dim)"),
    "online with zero rows": Wrong("online_attention", [online_with(empty_rows="zero")], "the output",
                                   "mean of v"),
    "online with NaN rows": Wrong("online_attention", [online_with(empty_rows="nan")], "the output",
                                  "may see no key came out NaN"),
    "online averaging tile softmaxes": Wrong("online_attention", [lambda q, k, v, keep, tile: np.mean(
        [s9.online_attention(q, k[k0:k0 + tile], v[k0:k0 + tile], keep[:, k0:k0 + tile], tile)
         for k0 in range(0, k.shape[0], tile)], axis=0)], "the output"),
})


# ---------------------------------------------------------------------------------------------- 19-23
def rms_backward_with(kind):
    def rms_norm_backward(grad, x, weight, eps):
        with np.errstate(all="ignore"):
            r = 1 / np.sqrt(np.mean(x * x, -1, keepdims=True) + (0 if kind == "no eps" else eps))
            n = x * r
            g = grad * (1 if kind == "no weight" else weight)
            if kind == "no projection":
                dx = r * g
            elif kind == "x for n":
                dx = r * (g - x * np.mean(g * x, -1, keepdims=True))
            elif kind == "sum":
                dx = r * (g - n * np.sum(g * n, -1, keepdims=True))
            else:
                dx = r * (g - n * np.mean(g * n, -1, keepdims=True))
            dw = (grad * (x if kind == "dw of x" else n)).reshape(-1, x.shape[-1])
            dw = dw.mean(0) if kind == "dw mean" else dw.sum(0)
            if kind == "dw per token":
                dw = grad * n
            return dx, dw
    return rms_norm_backward


def mlp_backward_with(derivative=lambda u: 2 * np.maximum(u, 0), down_input=None):
    def mlp_backward(grad, x, up_weight, down_weight):
        up = x @ up_weight.T
        act = np.maximum(up, 0) ** 2
        d_up = (grad @ down_weight) * derivative(up)
        d_down = np.einsum("btd,bti->di", grad, act if down_input is None else down_input(up))
        return d_up @ up_weight, np.einsum("bti,btd->id", d_up, x), d_down
    return mlp_backward


def attention_backward_with(kind):
    def attention_backward(grad_context, q, k, v, probs, scale):
        B, H, T, hd = q.shape
        KV = k.shape[1]
        index = np.arange(H) % KV if kind == "modulo" else np.arange(H) // (H // KV)
        d_out = (grad_context.reshape(B, H, T, hd) if kind == "reshape" else
                 grad_context.reshape(B, T, H, hd).transpose(0, 2, 1, 3))
        dv = probs.swapaxes(-1, -2) @ d_out
        dp = d_out @ v[:, index].swapaxes(-1, -2)
        if kind == "no row sum":
            ds = probs * dp
        elif kind == "axis -2":
            ds = probs * (dp - (probs * dp).sum(-2, keepdims=True))
        else:
            ds = probs * (dp - (probs * dp).sum(-1, keepdims=True))
        s = 1 if kind == "no scale" else scale
        dq = ds @ k[:, index] * s
        dk = ds.swapaxes(-1, -2) @ q * s
        fold_k, fold_v = np.zeros(k.shape), np.zeros(v.shape)
        for n in range(H):
            fold_k[:, index[n]] += dk[:, n]
            fold_v[:, index[n]] += dv[:, n]
        if kind == "unsummed":
            return dq, dk, dv
        return dq, fold_k, fold_v
    return attention_backward


def clip_with(kind):
    def clip_grad_norm(grads, max_norm):
        norms = {n: float(np.sqrt(np.sum(g * g))) for n, g in grads.items()}
        total = math.sqrt(sum(x * x for x in norms.values()))
        if kind == "per tensor":
            return {n: g * min(1.0, max_norm / (norms[n] + 1e-6)) for n, g in grads.items()}, total
        if kind == "always":
            return {n: g * (max_norm / (total + 1e-6)) for n, g in grads.items()}, total
        if kind == "sum of norms":
            total = sum(norms.values())
        coefficient = min(1.0, max_norm / (total + (0 if kind == "no eps" else 1e-6)))
        clipped = {n: g * coefficient for n, g in grads.items()}
        return clipped, (min(total, max_norm) if kind == "clipped norm" else total)
    return clip_grad_norm


def adam_with(kind):
    def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay):
        beta1, beta2 = betas
        if kind == "l2":
            grad = grad + weight_decay * param
        elif kind == "decay without lr":
            param = param * (1 - weight_decay)
        elif kind != "no decay":
            param = param * (1 - lr * weight_decay)
        exp_avg = beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
        t = np.float64(step - 1 if kind == "t from 0" else step)
        m_hat = exp_avg if kind == "no correction" else exp_avg / (1 - beta1 ** t)
        v_hat = exp_avg_sq if kind in ("no correction", "only m corrected") else exp_avg_sq / (1 - beta2 ** t)
        denom = np.sqrt(v_hat + eps) if kind == "eps inside" else np.sqrt(v_hat) + eps
        return param - lr * m_hat / denom, exp_avg, exp_avg_sq
    return adamw_update


def train_with(kind):
    def train_step(params, state, loss_and_grads, lr, betas, eps, weight_decay, max_norm, no_decay):
        loss, grads = loss_and_grads(params)
        norm = 0.0
        if kind != "no clip":
            grads, norm = s10.clip_grad_norm(grads, max_norm)
        for name, grad in grads.items():
            s = state.setdefault(name, {"step": 0, "exp_avg": np.zeros_like(grad), "exp_avg_sq": np.zeros_like(grad)})
            if kind == "fresh state":
                s = {"step": 0, "exp_avg": np.zeros_like(grad), "exp_avg_sq": np.zeros_like(grad)}
            s["step"] += 1
            decay = weight_decay if kind == "decay all" or name not in no_decay else 0.0
            params[name], s["exp_avg"], s["exp_avg_sq"] = s10.adamw_update(
                params[name], grad, s["exp_avg"], s["exp_avg_sq"], s["step"], lr, betas, eps, decay)
        return loss, norm
    return train_step


WRONG.update({
    "rms backward without the projection": Wrong("rms_norm_backward", [rms_backward_with("no projection")],
                                                 "grad.layers.1.attn_residual", "r * g"),
    "rms backward without the weight": Wrong("rms_norm_backward", [rms_backward_with("no weight")],
                                             "grad.layers.1.attn_residual", "forgets the weight"),
    "rms backward without eps": Wrong("rms_norm_backward", [rms_backward_with("no eps")], "dx",
                                      "leaves out eps"),
    "rms backward with x for n": Wrong("rms_norm_backward", [rms_backward_with("x for n")],
                                       "grad.layers.1.attn_residual", "instead of the normalised"),
    "rms backward with a sum": Wrong("rms_norm_backward", [rms_backward_with("sum")], "grad.layers.1.attn_residual",
                                     "the sum over the features"),
    "rms backward dweight of x": Wrong("rms_norm_backward", [rms_backward_with("dw of x")], "dweight",
                                       "sums grad * x"),
    "rms backward dweight mean": Wrong("rms_norm_backward", [rms_backward_with("dw mean")], "dweight",
                                       "mean over the tokens"),
    "rms backward dweight per token": Wrong("rms_norm_backward", [rms_backward_with("dw per token")], "dweight"),
    "mlp backward 2u": Wrong("mlp_backward", [mlp_backward_with(lambda u: 2 * u)], "grad.layers.1.post_norm",
                             "2u for every u"),
    "mlp backward without the 2": Wrong("mlp_backward", [mlp_backward_with(lambda u: np.maximum(u, 0))],
                                        "grad.layers.1.post_norm", "misses the 2"),
    "mlp backward step": Wrong("mlp_backward", [mlp_backward_with(lambda u: (u > 0).astype(u.dtype))],
                               "grad.layers.1.post_norm", "relu's derivative"),
    "mlp backward at the activation": Wrong("mlp_backward", [mlp_backward_with(lambda u: 2 * np.maximum(u, 0) ** 2)],
                                            "grad.layers.1.post_norm", "at the activation"),
    "mlp backward d_down of u": Wrong("mlp_backward", [mlp_backward_with(down_input=lambda u: u)], "d_down_weight",
                                      "uses u instead of the activation"),
    "attention backward without the row sum": Wrong("attention_backward", [attention_backward_with("no row sum")],
                                                    "grad.layers.1.attn.k_rope", "P * dP"),
    "attention backward without the scale": Wrong("attention_backward", [attention_backward_with("no scale")],
                                                  "grad.layers.1.attn.k_rope", "misses the scale"),
    "attention backward softmax over queries": Wrong("attention_backward", [attention_backward_with("axis -2")],
                                                     "grad.layers.1.attn.k_rope", "over the queries (axis -2)"),
    "attention backward n % KV": Wrong("attention_backward", [attention_backward_with("modulo")],
                                       "grad.layers.1.attn.k_rope", "n % KV"),
    "attention backward straight reshape": Wrong("attention_backward", [attention_backward_with("reshape")],
                                                 "grad.layers.1.attn.k_rope", "straight to [B, H, T, hd]"),
    "attention backward unsummed": Wrong("attention_backward", [attention_backward_with("unsummed")], "returned shape",
                                         None),
    "clip per tensor": Wrong("optimizer", replace("optimizer", clip_grad_norm=clip_with("per tensor")), "clipped[",
                             "its own norm"),
    "clip always": Wrong("optimizer", replace("optimizer", clip_grad_norm=clip_with("always")), "clipped[",
                         "even when the norm is below"),
    "clip without 1e-6": Wrong("optimizer", replace("optimizer", clip_grad_norm=clip_with("no eps")), "clipped[",
                               "1e-6"),
    "clip with the sum of norms": Wrong("optimizer", replace("optimizer", clip_grad_norm=clip_with("sum of norms")),
                                        "total_norm", "summed the per-tensor norms"),
    "clip returning the clipped norm": Wrong("optimizer", replace("optimizer", clip_grad_norm=clip_with(
        "clipped norm")), "total_norm", "after clipping"),
    "adamw as Adam with L2": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("l2")), "param",
                                   "added the weight decay to the gradient"),
    "adamw without bias correction": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("no correction")),
                                           "param", "bias correction is missing"),
    "adamw correcting m only": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("only m corrected")),
                                     "param", "only the first moment"),
    "adamw eps inside the sqrt": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("eps inside")),
                                       "param", "eps is inside"),
    "adamw without decay": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("no decay")), "param",
                                 "left out the weight decay"),
    "adamw decay without lr": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("decay without lr")),
                                    "param", "weight_decay alone"),
    "adamw step from 0": Wrong("optimizer", replace("optimizer", adamw_update=adam_with("t from 0")), "param",
                               "starts at 0"),
    "train step decaying the norms": Wrong("train_step", [train_with("decay all")], "norm", "no_decay"),
    "train step with fresh state": Wrong("train_step", [train_with("fresh state")], "step 2", "keep each weight's"),
    "train step without clipping": Wrong("train_step", [train_with("no clip")], "step 1"),
})


# ---------------------------------------------------------------------------------------------- 24-25
def quantize_with(kind):
    def quantize_q8_0(x):
        x = x.astype(np.float32)
        absmax = x.max(1, keepdims=True) if kind == "max" else np.abs(x).max(1, keepdims=True)
        d = absmax / np.float32(128 if kind == "128" else 127)
        with np.errstate(all="ignore"):
            d_used = d.astype(np.float16).astype(np.float32) if kind == "f16 d" else d
            inverse = np.where(d_used == 0, np.float32(0), np.float32(1) / d_used)
            y = x * inverse if kind != "nan zero" else x / d_used
            q = {"rint": np.rint, "trunc": np.trunc, "floor": np.floor}.get(kind, lambda v: np.sign(v) * np.floor(
                np.abs(v) + np.float32(0.5)))(y)
            q = np.nan_to_num(np.clip(q, -128, 127))
        d_bytes = d.astype(np.float32).view(np.uint8) if kind == "f32 d" else d.astype(np.float16).view(np.uint8)
        return np.concatenate([d_bytes, q.astype(np.int8).view(np.uint8)], axis=1)
    return quantize_q8_0


WRONG.update({
    "dequantize unsigned q": Wrong("dequantize_q8_0", [lambda b: np.ascontiguousarray(b[:, :2]).view("<f2").astype(
        np.float32) * b[:, 2:].astype(np.float32)], "the values", "unsigned"),
    "dequantize big-endian d": Wrong("dequantize_q8_0", [lambda b: np.ascontiguousarray(b[:, :2]).view(">f2").astype(
        np.float32) * np.ascontiguousarray(b[:, 2:]).view(np.int8)], "the values", "big-endian"),
    "dequantize dividing by d": Wrong("dequantize_q8_0", [lambda b: np.ascontiguousarray(b[:, 2:]).view(np.int8) / (
        np.ascontiguousarray(b[:, :2]).view("<f2").astype(np.float32))], "the values", "divided by d"),
    "dequantize d from the end": Wrong("dequantize_q8_0", [lambda b: np.ascontiguousarray(b[:, -2:]).view("<f2").astype(
        np.float32) * np.ascontiguousarray(b[:, :32]).view(np.int8)], "the values"),
    "dequantize in float16": Wrong("dequantize_q8_0", [lambda b: np.ascontiguousarray(b[:, :2]).view("<f2")
                                   * np.ascontiguousarray(b[:, 2:]).view(np.int8).astype(np.float16)], "the values"),
    "quantize half to even": Wrong("quantize_q8_0", [quantize_with("rint")], "q[", "half to even"),
    "quantize truncating": Wrong("quantize_q8_0", [quantize_with("trunc")], "q[", "truncated"),
    "quantize flooring": Wrong("quantize_q8_0", [quantize_with("floor")], "q["),
    "quantize with max, not absmax": Wrong("quantize_q8_0", [quantize_with("max")], "block", "max(|x|)"),
    "quantize by 128": Wrong("quantize_q8_0", [quantize_with("128")], "block", "divided by 128"),
    "quantize with the float16 d": Wrong("quantize_q8_0", [quantize_with("f16 d")], "q[", "float16-rounded d"),
    "quantize with a float32 d": Wrong("quantize_q8_0", [quantize_with("f32 d")], "returned shape"),
})


# ---------------------------------------------------------------------------------------------- 26
def bpe_choosing(choose, right_to_left=False):
    def bpe(word, ranks):
        parts = list(word)
        while True:
            pairs = [(a, b) for a, b in zip(parts, parts[1:], strict=False) if (a, b) in ranks]
            if not pairs:
                return parts
            a, b = choose(pairs, ranks)
            seq = parts[::-1] if right_to_left else parts
            out, i = [], 0
            while i < len(seq):
                pair = (seq[i + 1], seq[i]) if right_to_left and i + 1 < len(seq) else (
                    (seq[i], seq[i + 1]) if i + 1 < len(seq) else None)
                if pair == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            parts = out[::-1] if right_to_left else out
    return bpe


def bpe_first_occurrence_only_once(word, ranks):
    parts = list(word)
    pairs = sorted(((ranks[p], i) for i, p in enumerate(zip(parts, parts[1:], strict=False)) if p in ranks))
    for _, i in pairs[:1]:
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


WRONG.update({
    "bpe leftmost pair": Wrong("bpe", [bpe_choosing(lambda pairs, r: pairs[0])], "Ġwhat", "leftmost"),
    "bpe highest rank": Wrong("bpe", [bpe_choosing(lambda pairs, r: max(pairs, key=r.get))], "Ġsoft", "highest rank"),
    "bpe right to left": Wrong("bpe", [bpe_choosing(lambda pairs, r: min(pairs, key=r.get), right_to_left=True)],
                               "Ġoooo", "from the right"),
    "bpe one merge": Wrong("bpe", [bpe_first_occurrence_only_once], "ROMEO"),
    "bpe characters": Wrong("bpe", [lambda word, ranks: list(word)], "ROMEO"),
    "bpe whole word": Wrong("bpe", [lambda word, ranks: [word]], "Ġyonder"),
})


# ---------------------------------------------------------------------------------------------- 27-28
def kv_with(formula):
    return lambda c, b, t, bytes_per: formula(c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
                                              c.head_dim, c.hidden_size, b, t, bytes_per)


def flops_with(delta):
    return lambda c, tokens, past: s13.forward_flops(c, tokens, past) + delta(c, tokens, past)


WRONG.update({
    "kv bytes with H heads": Wrong("kv_cache_bytes", [kv_with(lambda L, H, KV, hd, D, b, t, y: 2 * L * H * hd * b * t
                                                              * y)], "returned", "per query head"),
    "kv bytes without the 2": Wrong("kv_cache_bytes", [kv_with(lambda L, H, KV, hd, D, b, t, y: L * KV * hd * b * t
                                                               * y)], "returned", "keys only"),
    "kv bytes without the layers": Wrong("kv_cache_bytes", [kv_with(lambda L, H, KV, hd, D, b, t, y: 2 * KV * hd * b
                                                                    * t * y)], "returned", "left out the layers"),
    "kv bytes without the batch": Wrong("kv_cache_bytes", [kv_with(lambda L, H, KV, hd, D, b, t, y: 2 * L * KV * hd
                                                                   * t * y)], "returned", "left out the batch"),
    "kv bytes in bits": Wrong("kv_cache_bytes", [kv_with(lambda L, H, KV, hd, D, b, t, y: 16 * L * KV * hd * b * t
                                                         * y)], "returned", "bits"),
    "kv bytes with hidden_size": Wrong("kv_cache_bytes", [kv_with(lambda L, H, KV, hd, D, b, t, y: 2 * L * D * b * t
                                                                  * y)], "returned", "hidden_size"),
    "flops as multiply-adds": Wrong("forward_flops", [lambda c, t, p: s13.forward_flops(c, t, p) // 2], "returned",
                                    "multiply-adds"),
    "flops attention over the new tokens": Wrong("forward_flops", [flops_with(
        lambda c, t, p: -4 * c.num_hidden_layers * c.num_attention_heads * t * p * c.head_dim)], "decode step",
        "new tokens only"),
    "flops without attention": Wrong("forward_flops", [flops_with(
        lambda c, t, p: -4 * c.num_hidden_layers * c.num_attention_heads * t * (t + p) * c.head_dim)], "returned",
        "left out attention"),
    "flops without the head": Wrong("forward_flops", [flops_with(lambda c, t, p: -2 * t * c.hidden_size
                                                                 * c.vocab_size)], "returned", "LM head"),
    "flops with H-headed k and v": Wrong("forward_flops", [flops_with(
        lambda c, t, p: 4 * c.num_hidden_layers * t * c.hidden_size * (c.num_attention_heads
                                                                      - c.num_key_value_heads) * c.head_dim)],
        "returned", "KV heads"),
    "flops with a gate": Wrong("forward_flops", [flops_with(lambda c, t, p: 2 * c.num_hidden_layers * t
                                                            * c.hidden_size * c.intermediate_size)], "returned",
                               "gated MLP"),
    "flops with the causal half": Wrong("forward_flops", [flops_with(
        lambda c, t, p: -2 * c.num_hidden_layers * c.num_attention_heads * t * (t + p) * c.head_dim)], "returned",
        "causal triangle"),
    "flops with D for H * hd": Wrong("forward_flops", [lambda c, t, p: s13.forward_flops(__import__(
        "dataclasses").replace(c, head_dim=c.hidden_size // c.num_attention_heads), t, p)], "H * hd (64) != D (32)"),
})


# ---------------------------------------------------------------------------------------------- 29-30
WRONG.update({
    "linear multiplying": Wrong("linear_inv_freq", [lambda hd, theta, f: s14.linear_inv_freq(hd, theta, 1.0) * f],
                                "inv_freq", "multiplied the frequencies"),
    "linear dividing theta": Wrong("linear_inv_freq", [lambda hd, theta, f: s14.linear_inv_freq(hd, theta / f, 1.0)],
                                   "inv_freq", "divided theta"),
    "linear multiplying theta": Wrong("linear_inv_freq", [lambda hd, theta, f: s14.linear_inv_freq(hd, theta * f, 1.0)],
                                      "inv_freq", "multiplied theta"),
    "linear exponent j / hd": Wrong("linear_inv_freq", [lambda hd, theta, f: (theta ** (-np.arange(hd // 2) / hd)
                                                                              / f).astype(np.float32)], "inv_freq"),
    "ntk theta times factor": Wrong("ntk_theta", [lambda hd, theta, f: theta * f], "inv_freq with base",
                                    "multiplied theta by the factor"),
    "ntk exponent inverted": Wrong("ntk_theta", [lambda hd, theta, f: theta * f ** ((hd - 2) / hd)],
                                   "inv_freq with base", "(hd - 2) / hd"),
    "ntk dividing theta": Wrong("ntk_theta", [lambda hd, theta, f: theta / f ** (hd / (hd - 2))], "inv_freq with base",
                                "divided theta"),
    "ntk exponent hd / 2": Wrong("ntk_theta", [lambda hd, theta, f: theta * f ** (hd / 2)], "inv_freq with base"),
})



# ---------------------------------------------------------------------------------------------- 31-33
def min_p_absolute(scores, min_p):
    return np.where(s15.softmax(scores.astype(np.float64)) < min_p, -np.inf, scores)


def min_p_non_strict(scores, min_p):
    probs = s15.softmax(scores.astype(np.float64))
    return np.where(probs <= min_p * probs.max(axis=-1, keepdims=True), -np.inf, scores)


def beam_not_accumulated(log_probs, running_scores, num_beams):
    _, origin, tokens = s15.beam_step(log_probs, np.zeros_like(running_scores), num_beams)
    return running_scores[origin] + log_probs[origin, tokens], origin, tokens


def beam_best_per_beam(log_probs, running_scores, num_beams):
    tokens = np.argmax(log_probs, axis=-1)
    totals = running_scores + log_probs[np.arange(len(tokens)), tokens]
    order = np.argsort(-totals, kind="stable")[:num_beams]
    return totals[order], order, tokens[order]


def beam_swapped(log_probs, running_scores, num_beams):
    scores, origin, tokens = s15.beam_step(log_probs, running_scores, num_beams)
    flat = origin * log_probs.shape[-1] + tokens
    return scores, flat % log_probs.shape[-1], flat // log_probs.shape[-1]


def accept_when_p_above_q(candidates, p, q, u):
    rows = np.arange(len(candidates))
    always_or_never = np.where(p[rows, candidates] >= q[rows, candidates], 0.0, 0.999999)
    return s15.speculative_accept(candidates, p, q, np.append(always_or_never, u[-1]))


def resample_from_p(candidates, p, q, u):
    tokens, n = s15.speculative_accept(candidates, p, q, u)
    if n < len(candidates):
        tokens[-1] = s15.draw(p[n], u[-1])
    return tokens, n


def keep_testing(candidates, p, q, u):
    k = len(candidates)
    accepted = u[:k] <= p[np.arange(k), candidates] / q[np.arange(k), candidates]
    tokens, _ = s15.speculative_accept(candidates, p, q, u)
    return np.append(candidates[accepted], tokens[-1]), int(accepted.sum())


WRONG.update({
    "min_p absolute": Wrong("min_p", [min_p_absolute], "row", "you compared with min_p itself"),
    "min_p with <=": Wrong("min_p", [min_p_non_strict], "min_p_filter(scores, 1.0)", "the best token always stays"),
    "min_p filling with 0": Wrong("min_p", [lambda s, m: np.where(np.isinf(s15.min_p_filter(s, m)), 0.0, s)],
                                  "removed tokens hold 0; they must be -inf"),
    "min_p returning probabilities": Wrong("min_p", [lambda s, m: np.where(np.isinf(s15.min_p_filter(s, m)), -np.inf,
                                                                           s15.softmax(s))], "the kept scores changed"),
    "beam scores not accumulated": Wrong("beam_step", replace("beam_step", beam_step=beam_not_accumulated), "step 1",
                                         "you left out the running scores"),
    "beam: each beam's best token": Wrong("beam_step", replace("beam_step", beam_step=beam_best_per_beam), "step 1",
                                          "kept each beam's best token"),
    "beam and token swapped": Wrong("beam_step", replace("beam_step", beam_step=beam_swapped), "step",
                                    "beam i // V, token i % V"),
    "length penalty over the whole length": Wrong("beam_step", replace(
        "beam_step", hypothesis_score=lambda s, n, lp: s / (n + 4) ** lp), "length_penalty=1.0", "prompt included"),
    "length penalty without its exponent": Wrong("beam_step", replace(
        "beam_step", hypothesis_score=lambda s, n, lp: s / n), "length_penalty=2.0", "without its exponent"),
    "accept when p > q": Wrong("speculative_accept", [accept_when_p_above_q], "you accepted 0 draft tokens; expected 2",
                               "accept with probability min(1, p/q)"),
    "resample from p": Wrong("speculative_accept", [resample_from_p], "drawn with u[k]", "you resampled from p"),
    "keep testing after a rejection": Wrong("speculative_accept", [keep_testing],
                                            "you accepted 3 draft tokens; expected 2", "stop there"),
})


def verdict_lines(verdict) -> dict:
    """{"where": ..., "looks like": ..., "hint": ...} of a verdict, each line unwrapped."""
    lines, current = {}, None
    for line in str(verdict).splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("      "):
            key, _, text = line.strip().partition(": ")
            current = key
            lines[key] = text
        elif current:
            lines[current] += " " + line.strip()
    return lines


@functools.cache
def run(mistake: str):
    wrong = WRONG[mistake]
    with np.errstate(all="ignore"):
        return checks.EXERCISES[wrong.exercise].check(*wrong.functions)


@pytest.mark.parametrize("mistake", sorted(WRONG))
def test_a_wrong_answer_is_caught_at_its_place_with_its_diagnosis(mistake):
    wrong = WRONG[mistake]
    verdict = run(mistake)
    assert not verdict.passed, f"{mistake} passed:\n{verdict}"
    lines = verdict_lines(verdict)
    assert wrong.place in lines.get("checked", "") + " " + lines.get("where", ""), f"{mistake}: place\n{verdict}"
    if wrong.mistake is not None:
        assert wrong.mistake in lines.get("looks like", ""), f"{mistake}: diagnosis\n{verdict}"


def test_at_least_98_percent_caught_and_90_percent_placed():
    """The aims over the whole set: caught (✗), and placed (the where line holds the expected place)."""
    caught = placed = 0
    for mistake, wrong in WRONG.items():
        verdict = run(mistake)
        lines = verdict_lines(verdict)
        caught += not verdict.passed
        placed += not verdict.passed and wrong.place in lines.get("checked", "") + " " + lines.get("where", "")
    assert caught >= 0.98 * len(WRONG) and placed >= 0.90 * len(WRONG), (caught, placed, len(WRONG))


def test_the_set_covers_every_exercise_with_at_least_three_wrong_answers():
    counts = {name: sum(w.exercise == name for w in WRONG.values()) for name in checks.EXERCISES}
    assert all(n >= 3 for n in counts.values()), counts
    assert len(WRONG) >= 100
