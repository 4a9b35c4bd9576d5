"""The check of exercise 18: attention of one query tile over key tiles, with the online softmax."""

from __future__ import annotations

from functools import partial

import numpy as np
from arcee_np.blocks import attention as ref_attention

from checking import FLOAT32, Exercise, against_array, array, call, check, first_match, fmt

from .shipped import reference


def eager(q, k, v, keep):
    """arcee_np's eager attention of one head: softmax(q k^T / sqrt(hd) + mask) v, mask finfo.min where not keep."""
    mask = np.where(keep, 0, np.finfo(np.float32).min).astype(np.float32)[None, None]
    out, _ = ref_attention(q[None, None].astype(np.float32), k[None, None].astype(np.float32),
                           v[None, None].astype(np.float32), mask, q.shape[-1] ** -0.5)
    return np.asarray(out)[0]


def _cases():
    """(q, k, v, keep, what): real queries of the shipped model, then the inputs where a shortcut shows."""
    ref = reference()
    q, k, v = ref["layers.1.attn.q_rope"][0, 0], ref["layers.1.attn.k_rope"][0, 0], ref["layers.1.attn.v"][0, 0]
    T = q.shape[0]
    causal = np.tril(np.ones((T, T), dtype=bool))
    yield q, k, v, causal, "layer 1, head 0 of the shipped model, causal"
    padded = causal.copy()
    padded[:, :3] = False                 # the first 3 keys are padding: rows 0-2 see no key at all
    yield q, k, v, padded, "the first 3 keys padding: rows 0 to 2 may see no key (eager gives them the mean of v)"
    hot = q * np.float32(40)              # scores up to a few hundred: exp overflows float32 past 88
    yield hot, k, v, causal, "queries 40x larger: scores past 88, where exp overflows float32"
    late = np.zeros((T, T), dtype=bool)
    late[:, -2:] = True                   # every row sees only the last 2 keys: early tiles are all masked
    yield q, k, v, late, "every row sees only the last 2 keys (the first tiles are fully masked)"
    tie = np.tile(k[:1], (T, 1))          # equal keys: every score of a row ties
    yield q, tie, v, causal, "all keys equal (every score of a row ties)"


@check("online_attention")
def check_online_attention(online_attention):
    hint = ("per tile: s = q k_tile^T / sqrt(hd), -inf where not keep; m' = max(m, max s); c = exp(m - m'); "
            "l = l c + sum exp(s - m'); acc = acc c + exp(s - m') v_tile; m = m'. At the end acc / l, and the mean "
            "of v for rows with l == 0. A row whose m' is still -inf must subtract 0, not -inf (exp(-inf + inf) is "
            "NaN)")
    worst = 0.0
    for q, k, v, keep, what in _cases():
        S = k.shape[0]
        want = eager(q, k, v, keep)
        for tile in (1, 4, 7, S, S + 5):
            checked = f"online_attention(q, k, v, keep, key_tile={tile}) on {what} ({q.shape[0]} queries, {S} keys)"
            with np.errstate(all="ignore"):
                got = array(call(online_attention, "online_attention", checked, q.copy(), k.copy(), v.copy(),
                                 keep.copy(), tile), "online_attention", checked, want.shape, "[T, hd]", hint)
            worst = max(worst, against_array(got, want, "the output", checked, FLOAT32,
                                             partial(_mistake, got, q, k, v, keep, tile, want), hint))
    return [f"checked: online attention against eager attention on real queries of the shipped model, with padding, "
            f"fully masked rows and tiles, huge scores and ties, key tiles of 1, 4, 7, S and more than S "
            f"(max abs error {fmt(worst)})"]


def _mistake(got, q, k, v, keep, tile, want):
    scale = q.shape[-1] ** -0.5
    if not np.all(np.isfinite(got)):
        bad_rows = np.flatnonzero(~np.isfinite(got).all(axis=1))
        if np.all(~keep[bad_rows].any(axis=1)):
            return ("rows that may see no key came out NaN: with l = 0 return the mean of v, as eager does (its "
                    "finfo.min mask makes such a row uniform)")
        return ("NaN or inf: either exp(s) without subtracting the running max overflowed, or a row whose max is "
                "still -inf subtracted it (exp(-inf - -inf) = NaN); subtract 0 for such rows")
    with np.errstate(all="ignore"):
        s = np.where(keep, (q @ k.T) * scale, -np.inf)
        tiles = [(k0, min(k0 + tile, k.shape[0])) for k0 in range(0, k.shape[0], tile)]
        m = np.full((q.shape[0], 1), -np.inf)
        total = np.zeros((q.shape[0], 1))
        acc = np.zeros_like(want, dtype=np.float64)
        for k0, k1 in tiles:
            m = np.maximum(m, s[:, k0:k1].max(axis=1, keepdims=True))
            shift = np.where(np.isneginf(m), 0, m)
            p = np.exp(s[:, k0:k1] - shift)
            total, acc = total + p.sum(1, keepdims=True), acc + p @ v[k0:k1]      # summed under different maxima
        no_rescale = np.where(total > 0, acc / np.where(total > 0, total, 1), v.mean(0))
        m = np.full((q.shape[0], 1), -np.inf)
        total = np.zeros((q.shape[0], 1))
        acc = np.zeros_like(want, dtype=np.float64)
        for k0, k1 in tiles:                                                 # -inf - -inf: NaN, then dropped
            new_m = np.maximum(m, s[:, k0:k1].max(axis=1, keepdims=True))
            p, c = np.exp(s[:, k0:k1] - new_m), np.exp(m - new_m)
            total, acc, m = total * c + p.sum(1, keepdims=True), acc * c + p @ v[k0:k1], new_m
        no_guard = np.where(total > 0, acc / np.where(total > 0, total, 1), v.mean(0))
        per_tile = np.mean([np.where(keep[:, k0:k1].any(1, keepdims=True),
                                     _softmax_rows(s[:, k0:k1]) @ v[k0:k1], 0) for k0, k1 in tiles], axis=0)
        unscaled = eager(q / np.float32(scale), k, v, keep)
        zero_rows = np.where(keep.any(1, keepdims=True), want, 0)
    return first_match(got, {
        "you add each tile's exp(s - m) without rescaling what was summed before: when the maximum grows, multiply "
        "l and acc by exp(m_old - m_new)": no_rescale,
        "a row whose keys so far were all masked has m = -inf, and exp(s - m) = exp(-inf - -inf) is NaN: subtract 0 "
        "for such a row (where m' is -inf)": no_guard,
        "you averaged the tiles' own softmax outputs; the tiles share one softmax, so carry m and l across them":
            per_tile,
        "your scores miss the 1 / sqrt(head_dim) scale": unscaled,
        "rows that may see no key are 0; eager attention gives them the mean of v": zero_rows,
    }, want)


def _softmax_rows(s):
    m = s.max(1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(m), 0, m))
    total = e.sum(1, keepdims=True)
    return e / np.where(total > 0, total, 1)


def _reference_online(q, k, v, keep, key_tile):
    return eager(q, k, v, keep)


EXERCISES = {"online_attention": Exercise("ex9_online_softmax", ("online_attention",), check_online_attention)}
REFERENCE = {"online_attention": _reference_online}
