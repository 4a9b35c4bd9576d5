"""The checks of exercises 1-2: the embedding lookup and RMSNorm."""

from __future__ import annotations

import math

import numpy as np
from arcee_np.blocks import embed as ref_embed
from arcee_np.blocks import rms_norm as ref_rms_norm
from arcee_np.oracle.compare import TOLERANCES, compare_arrays

from checking import (EXACT, FLOAT32, Exercise, Failure, against_array, against_trace, array, call, check, first_match,
                      fmt)

from .shipped import describe_ids, model, reference, weights


# ---------------------------------------------------------------------------------------------- 1 embedding
@check("embed")
def check_embed(embed):
    ref = reference()
    ids, E = ref.inputs["input_ids"], weights()["embed_tokens.weight"]
    (B, T), D = ids.shape, E.shape[1]
    checked = f"embed(input_ids, weight) on {describe_ids(ids)} (weight [V, D] = {E.shape})"
    hint = "h[b, t] = weight[input_ids[b, t]]: one row of the [V, D] matrix per token id (weight[input_ids])."
    out = array(call(embed, "embed", checked, ids, E), "embed", checked, (B, T, D), "[B, T, D]", hint)
    err = against_trace({"embed": out}, ref, checked, lambda: first_match(out, {
        "your rows are sqrt(D) times too large: Gemma scales its embeddings by sqrt(hidden_size); Arcee, like "
        "Llama, does not": ref["embed"] * math.sqrt(D)}), hint)
    batch = np.concatenate([ids, ids[:, ::-1]])                                    # two rows, other orders
    out2 = array(call(embed, "embed", checked, batch, E), "embed", checked, (2, T, D), "[B, T, D]", hint)
    against_array(out2, E[batch], "embed of a batch of 2 rows", checked + "; then a batch of 2 rows", EXACT,
                  hint=hint)
    return [f"checked: {checked}, and a batch of 2 rows (max abs error {fmt(err)})"]


# ---------------------------------------------------------------------------------------------- 2 RMSNorm
@check("rms_norm")
def check_rms_norm(rms_norm):
    ref, eps = reference(), model().config.rms_norm_eps
    x, w = ref["layers.1.out"], weights()["layers.2.input_layernorm.weight"]
    checked = f"rms_norm(x, weight, eps) as layer 2's input norm, {describe_ids(ref.inputs['input_ids'])} (float32)"
    hint = "y = weight * x / sqrt(mean(x**2, axis=-1, keepdims=True) + eps)"
    out = array(call(rms_norm, "rms_norm", checked, x, w, eps), "rms_norm", checked, x.shape, "[B, T, D]", hint)

    def mistakes():
        return first_match(out, rms_norm_mistakes(x, w, eps), ref["layers.2.input_norm"])

    err = against_trace({"layers.1.out": x, "layers.2.input_norm": out}, ref, checked, mistakes, hint)

    small = small_rows(x)
    checked_small = (f"rms_norm on a batch of 2 x 4 rows whose root mean square is 1e-4, 1e-3, 0 (a zero row) and 1 "
                     f"(float32; below sqrt(eps) = {eps ** 0.5:.1e}, eps decides the result)")
    with np.errstate(all="ignore"):
        got = array(call(rms_norm, "rms_norm", checked_small, small, w, eps), "rms_norm", checked_small, small.shape,
                    "[B, T, D]", hint)
    want = np.asarray(ref_rms_norm(small, w, eps))
    row = compare_arrays(got, want, FLOAT32, "rms_norm(small rows)")
    if row.failed:
        bad_rows = [f"row ({b}, {t}) (rms {float(np.sqrt(np.mean(small[b, t] ** 2))):.1e})"
                    for b, t in np.argwhere(~np.isclose(got, want, rtol=1e-5, atol=1e-4).all(-1))]
        raise Failure(checked_small, f"{', '.join(bad_rows[:4])} differ: {row.describe()} (your value vs arcee_np's)",
                      first_match(got, rms_norm_mistakes(small, w, eps), want), hint)

    x16 = (x * (1000.0 / np.abs(x).max())).astype(np.float16)                     # |x| up to 1000: x**2 > 65504
    w16 = w.astype(np.float16)
    checked16 = (f"rms_norm on float16 input whose largest |x| is {float(np.abs(x16).max()):.0f} (x**2 overflows "
                 f"float16)")
    hint16 = ("square and average in float32 (x.astype(np.float32)), cast the normalised x back to x.dtype, and "
              "only then multiply by the weight, as transformers does")
    with np.errstate(all="ignore"):
        out16 = call(rms_norm, "rms_norm", checked16, x16, w16, eps)
    out16 = array(out16, "rms_norm", checked16, x16.shape, "[B, T, D]", hint16)
    expected16 = ref_rms_norm(x16, w16, eps)
    if out16.dtype != np.float16:
        raise Failure(checked16, f"`rms_norm` returned {out16.dtype} for float16 x and weight; expected float16.",
                      hint="cast the normalised x back to x.dtype before the weight multiply.")
    overflowed = bool(np.any(~np.isfinite(out16)) or np.any(out16[np.abs(expected16) > 1] == 0))  # a row zeroed by inf
    against_array(out16, expected16, "rms_norm(float16 x)", checked16, TOLERANCES["float16"],
                  "x * x overflowed float16 (its largest finite number is 65504), so the root mean square became "
                  "inf and the output 0" if overflowed else None, hint16)
    return [f"checked: {checked} (max abs error {fmt(err)}), rows whose root mean square is below sqrt(eps) and a "
            f"zero row, and float16 input past 256 (no overflow)"]


SMALL_RMS = (1e-4, 1e-3, 0.0, 1.0)   # the root mean squares of the probe rows: below sqrt(eps), zero, ordinary


def small_rows(x):
    """[2, 4, D] float32: rows of real activations rescaled to each root mean square of SMALL_RMS (a zero row)."""
    rows = x[0, :8].astype(np.float64)
    rows = rows / np.sqrt(np.mean(rows * rows, -1, keepdims=True))
    scale = np.array(SMALL_RMS * 2)[:, None]
    return (rows * scale).reshape(2, 4, -1).astype(np.float32)


def rms_norm_mistakes(x, w, eps) -> dict:
    """{the classic mistake: the result it gives on x}; first_match keeps those that differ from the right one."""
    with np.errstate(all="ignore"):
        x = x.astype(np.float32)
        mean_square = np.mean(x * x, -1, keepdims=True)
        rms = np.sqrt(mean_square + eps)
        centred = x - x.mean(-1, keepdims=True)
        return {
            "you left out eps: y = w * x / sqrt(mean(x**2) + eps) (eps decides rows whose rms is below sqrt(eps), and "
            "keeps a zero row from 0 / 0)": w * x / np.sqrt(mean_square),
            "you added eps outside the square root: y = w * x / sqrt(mean(x**2) + eps), not / (sqrt(mean(x**2)) + "
            "eps)": w * x / (np.sqrt(mean_square) + eps),
            "you divided by sqrt(mean(x) + eps), the mean of x; RMSNorm takes the mean of its squares":
                w * x / np.sqrt(np.mean(x, -1, keepdims=True) + eps),
            "you divided by mean(|x|) + eps; RMSNorm divides by the root of the mean square, sqrt(mean(x**2) + eps)":
                w * x / (np.mean(np.abs(x), -1, keepdims=True) + eps),
            "you multiplied by 1 + weight (Gemma stores weight - 1); Arcee multiplies by the weight as stored":
                (1 + w) * x / rms,
            "you subtracted the mean: that is LayerNorm; RMSNorm subtracts nothing": w * centred / np.sqrt(
                np.mean(centred * centred, -1, keepdims=True) + eps),
            "you forgot to multiply by the weight": x / rms,
            "you divided by sqrt(sum(x**2)); RMSNorm divides by sqrt(mean(x**2) + eps)":
                w * x / np.sqrt(np.sum(x * x, -1, keepdims=True) + eps),
            "you averaged over the tokens (axis 1); average over the features (axis=-1)":
                w * x / np.sqrt(np.mean(x * x, 1, keepdims=True) + eps),
            "you multiplied by the root mean square instead of dividing by it": w * x * rms,
        }


EXERCISES = {  # the exercises of this notebook: the names each asks for, its check
    "embed": Exercise("ex1_embeddings_rmsnorm", ("embed",), check_embed),
    "rms_norm": Exercise("ex1_embeddings_rmsnorm", ("rms_norm",), check_rms_norm),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "embed": ref_embed,
    "rms_norm": ref_rms_norm,
}
