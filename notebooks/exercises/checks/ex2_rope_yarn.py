"""The checks of exercises 3-5: the RoPE tables, applying RoPE, YaRN's frequencies."""

from __future__ import annotations

import math
from functools import lru_cache, partial

import array_api_compat.numpy as xp
import numpy as np
from arcee_np import ArceeConfig, ArceeForCausalLM
from arcee_np.blocks import apply_rope as ref_apply_rope
from arcee_np.blocks import default_inv_freq, rope_cos_sin, yarn_correction_range
from arcee_np.blocks import yarn_attention_factor as ref_yarn_attention_factor
from arcee_np.blocks import yarn_inv_freq as ref_yarn
from arcee_np.oracle.compare import compare_arrays
from arcee_np.oracle.testing import reference_trace

from checking import (FLOAT32, RELATIVE, Exercise, Failure, against_array, against_trace, array, call, check,
                      first_match, fmt, pair)

from .shipped import describe_ids, model, padded_reference, reference, shapes


# ---------------------------------------------------------------------------------------------- 3 RoPE tables
@check("rope_tables")
def check_rope_tables(rope_inv_freq, rope_tables):
    H, KV, hd = shapes()
    theta = model().config.rope_theta
    checked = f"rope_inv_freq({hd}, {theta:g}) and rope_tables(position_ids, inv_freq)"
    hint_inv = "inv_freq[j] = 1 / theta ** (2j / head_dim) for j = 0 .. head_dim/2 - 1: np.arange(0, hd, 2) / hd"
    for head_dim, base in ((hd, theta), (128, 500000.0)):
        inv = array(call(rope_inv_freq, "rope_inv_freq", checked, head_dim, base), "rope_inv_freq", checked,
                    (head_dim // 2,), "[head_dim / 2]", hint_inv)
        expected = np.asarray(default_inv_freq(head_dim, base, xp, xp.float32))
        j = np.arange(head_dim // 2)
        against_array(inv, expected, f"rope_inv_freq({head_dim}, {base:g})", checked, RELATIVE, partial(
            first_match, inv, {"your exponent is j / head_dim; it is 2j / head_dim": base ** (-j / head_dim),
                  "you returned theta ** (2j / hd); the frequency is its inverse, theta ** (-2j / hd)":
                      base ** (2 * j / head_dim)}, expected, RELATIVE), hint_inv)

    ref = reference()
    ids = ref.inputs["input_ids"]
    T = ids.shape[1]
    inv = np.asarray(default_inv_freq(hd, theta, xp, xp.float32))
    hint = ("angles = position_ids[..., None] * inv_freq ([B, T, hd/2]); concatenate them with themselves, "
            "[a0 .. a15, a0 .. a15], and return (cos(angles), sin(angles)), each [B, T, hd]")
    for positions in (np.arange(T)[None, :], np.array([[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3]])):
        where = f"{checked}, positions {positions.tolist()}"
        cos, sin = pair(call(rope_tables, "rope_tables", where, positions, inv), "rope_tables", where, "(cos, sin)")
        shape = (*positions.shape, hd)
        cos = array(cos, "rope_tables(...)[0] (cos)", where, shape, "[B, T, hd]", hint)
        sin = array(sin, "rope_tables(...)[1] (sin)", where, shape, "[B, T, hd]", hint)
        exp_cos, exp_sin = (np.asarray(a) for a in rope_cos_sin(positions, inv, 1.0, xp.float32))
        table_mistake = partial(_table_mistake, cos, sin, exp_cos, exp_sin, positions, inv)
        if positions.shape[0] == 1:       # through the model: q after RoPE with your tables
            q = ref["layers.0.attn.q"]
            against_trace({"layers.0.attn.q": q, "layers.0.attn.q_rope": ref_apply_rope(q, cos, sin)}, ref, where,
                          table_mistake, hint)
        against_array(cos, exp_cos, "cos", where, FLOAT32, table_mistake, hint)
        against_array(sin, exp_sin, "sin", where, FLOAT32, table_mistake, hint)
    return [f"checked: {checked} for head_dim {hd} and 128, and q after RoPE with your tables on "
            f"{describe_ids(ids)}"]


def _table_mistake(cos, sin, exp_cos, exp_sin, positions, inv):
    angles = positions[..., None].astype(np.float32) * inv
    return (first_match(cos, {"your table repeats each angle twice side by side, [a0, a0, a1, a1, ...] (the "
                              "interleaved layout); transformers' layout is concat(angles, angles)":
                              np.cos(np.repeat(angles, 2, axis=-1))}, exp_cos)
            or ("you returned (sin, cos); return (cos, sin)" if first_match(cos, {"": exp_sin}) is not None else None))


# ---------------------------------------------------------------------------------------------- 4 applying RoPE
@check("apply_rope")
def check_apply_rope(apply_rope):
    hint = ("rotate_half(x) = concat(-x[..., hd/2:], x[..., :hd/2]); return x * cos + rotate_half(x) * sin, with "
            "cos and sin [B, T, hd] given a heads axis (cos[:, None]) to meet x [B, heads, T, hd]")
    results = []
    for ref, what in ((reference(), describe_ids(reference().inputs["input_ids"])),
                      (padded_reference(), "a left-padded batch of 2 lines (their own positions)")):
        checked = f"apply_rope(x, cos, sin) on layer 0's q and k, {what}"
        positions = ref.inputs.get("position_ids", np.arange(ref.inputs["input_ids"].shape[1])[None, :])
        _, _, hd = shapes()
        inv = np.asarray(default_inv_freq(hd, model().config.rope_theta, xp, xp.float32))
        cos, sin = (np.asarray(a) for a in rope_cos_sin(positions, inv, 1.0, xp.float32))
        q, k = ref["layers.0.attn.q"], ref["layers.0.attn.k"]
        q_rope = array(call(apply_rope, "apply_rope", checked, q, cos, sin), "apply_rope", checked, q.shape,
                       "[B, H, T, hd]", hint)
        k_rope = array(call(apply_rope, "apply_rope", checked, k, cos, sin), "apply_rope", checked, k.shape,
                       "[B, KV, T, hd]", hint)

        def mistakes(q=q, cos=cos, sin=sin, q_rope=q_rope, ref=ref):
            half = q.shape[-1] // 2
            c, s = cos[:, None], sin[:, None]
            even, odd = q[..., 0::2], q[..., 1::2]
            ch, sh = c[..., :half], s[..., :half]
            interleaved = np.stack([even * ch - odd * sh, odd * ch + even * sh], axis=-1).reshape(q.shape)
            backwards = q * c + np.concatenate([q[..., half:], -q[..., :half]], -1) * s
            return first_match(q_rope, {
                "you rotated adjacent pairs (2j, 2j+1), the GPT-J / Meta layout; transformers' checkpoints pair "
                "feature j with feature j + hd/2 (rotate-half)": interleaved,
                "you rotated by minus the angle: rotate_half(x) is concat(-x2, x1), not concat(x2, -x1)": backwards,
                "your sin term multiplies x itself; it multiplies rotate_half(x)": q * c + q * s,
            }, ref["layers.0.attn.q_rope"])

        valid = ref.inputs.get("attention_mask")
        results.append(against_trace({"layers.0.attn.q": q, "layers.0.attn.k": k, "layers.0.attn.q_rope": q_rope,
                                      "layers.0.attn.k_rope": k_rope}, ref, checked, mistakes, hint, valid))
    return [f"checked: layer 0's q and k after RoPE on {describe_ids(reference().inputs['input_ids'])} and on a "
            f"left-padded batch of 2 (max abs error {fmt(max(results))})"]


# ---------------------------------------------------------------------------------------------- 5 YaRN
YARN_CASES = (  # head_dim, theta, factor, original_max_position_embeddings, beta_fast, beta_slow, what
    (128, 10000.0, 20.0, 4096, 32.0, 1.0, "AFM-4.5B"),
    (32, 10000.0, 4.0, 256, 32.0, 1.0, "the shipped model stretched 4x"),
    (16, 100.0, 4.0, 16, 1.0, 0.125, "a tiny model with its own beta_fast and beta_slow"),
    (16, 10000.0, 8.0, 64, 32.0, 1.0, "a short original context: corr(beta_fast) is -0.99, so low is clipped to 0"),
)


@check("yarn")
def check_yarn(yarn_inv_freq, yarn_attention_factor):
    hint = ("plain = 1 / theta ** (2j/hd); low = floor(corr(beta_fast)), high = ceil(corr(beta_slow)) with "
            "corr(n) = hd * ln(L / (2 pi n)) / (2 ln theta); ramp = clip((j - low) / (high - low), 0, 1); "
            "inv_freq = plain * (1 - ramp) + plain / factor * ramp")
    # through the model first: the shipped model with YaRN set in its config, q after RoPE with your frequencies
    ref = yarn_reference()
    scaling = ref.meta["config"]["rope_scaling"]
    _, _, hd = shapes()
    theta = model().config.rope_theta
    factor, original = scaling["factor"], scaling["original_max_position_embeddings"]
    checked = f"q after RoPE on the shipped model configured with rope_scaling {scaling}"
    inv = array(call(yarn_inv_freq, "yarn_inv_freq", checked, hd, theta, factor, original), "yarn_inv_freq", checked,
                (hd // 2,), "[head_dim / 2]", hint)
    scale = call(yarn_attention_factor, "yarn_attention_factor", checked, factor)
    if not isinstance(scale, (int, float, np.floating)):
        raise Failure(checked, f"yarn_attention_factor returned {scale!r}; expected a number")
    positions = np.arange(ref.inputs["input_ids"].shape[1])[None, :]
    cos, sin = rope_cos_sin(positions, inv.astype(np.float32), float(scale), xp.float32)
    q = ref["layers.0.attn.q"]
    expected = np.asarray(ref_yarn(hd, theta, scaling, xp, xp.float32)[0])
    frequencies_agree = not compare_arrays(inv, expected, RELATIVE).failed
    err = against_trace({"layers.0.attn.q": q, "layers.0.attn.q_rope": ref_apply_rope(q, cos, sin)}, ref, checked,
                        lambda: _factor_mistake(scale, factor) if frequencies_agree else "; ".join(
                            x for x in _yarn_diagnosis(inv, expected, hd, theta, scaling, 32.0, 1.0) if x),
                        FACTOR_HINT if frequencies_agree else hint)
    for hd_, theta_, factor_, original_, beta_fast, beta_slow, what in YARN_CASES:
        checked = (f"yarn_inv_freq({hd_}, {theta_:g}, {factor_:g}, {original_}, beta_fast={beta_fast:g}, "
                   f"beta_slow={beta_slow:g}) ({what})")
        scaling = {"rope_type": "yarn", "factor": factor_, "original_max_position_embeddings": original_,
                   "beta_fast": beta_fast, "beta_slow": beta_slow}
        inv = array(call(yarn_inv_freq, "yarn_inv_freq", checked, hd_, theta_, factor_, original_,
                         beta_fast=beta_fast, beta_slow=beta_slow), "yarn_inv_freq", checked, (hd_ // 2,),
                    "[head_dim / 2]", hint)
        expected = np.asarray(ref_yarn(hd_, theta_, scaling, xp, xp.float32)[0])
        if compare_arrays(inv, expected, RELATIVE).failed:
            raise Failure(checked, *_yarn_diagnosis(inv, expected, hd_, theta_, scaling, beta_fast, beta_slow)[:2],
                          hint)
    for factor_ in (1.0, 4.0, 20.0, 0.5):
        checked = f"yarn_attention_factor({factor_:g})" + (" (below 1: no stretching)" if factor_ < 1 else "")
        got = call(yarn_attention_factor, "yarn_attention_factor", checked, factor_)
        want = ref_yarn_attention_factor({"factor": factor_})
        if not isinstance(got, (int, float, np.floating)) or not math.isclose(float(got), want, rel_tol=1e-6):
            raise Failure(checked, f"returned {got!r}, expected {want:.6g}", _factor_mistake(got, factor_),
                          FACTOR_HINT)
    return [f"checked: q after RoPE on the shipped model with YaRN in its config (max abs error {fmt(err)}); "
            f"yarn_inv_freq for {', '.join(c[-1] for c in YARN_CASES)}; yarn_attention_factor"]


FACTOR_HINT = ("the frequencies are right; the attention factor multiplies cos and sin: 0.1 * ln(factor) + 1 (the "
               "natural log, math.log) for factor > 1, and 1 for factor <= 1")


def _factor_mistake(got, factor) -> str | None:
    """The classic slip of yarn_attention_factor that gives ``got`` for ``factor``, if one does."""
    if not isinstance(got, (int, float, np.floating)) or factor == 1:
        return None
    variants = {
        "you used log10; the factor uses the natural log: 0.1 * math.log(factor) + 1": 0.1 * math.log10(factor) + 1,
        "you used log2; the factor uses the natural log: 0.1 * math.log(factor) + 1": 0.1 * math.log2(factor) + 1,
        "you left out the + 1: 0.1 * ln(factor) + 1": 0.1 * math.log(factor),
        "you left out the 0.1: 0.1 * ln(factor) + 1": math.log(factor) + 1,
        "a factor <= 1 does not stretch: return 1 there (0.1 * ln(factor) + 1 only for factor > 1)":
            0.1 * math.log(factor) + 1 if factor < 1 else None,
        "you returned the square root of the factor's scale; transformers applies 0.1 * ln(factor) + 1 itself, "
        "not its square root": math.sqrt(0.1 * math.log(factor) + 1) if factor > 1 else None,
    }
    return next((m for m, v in variants.items() if v is not None and math.isclose(float(got), v, rel_tol=1e-6)),
                None)


def _yarn_diagnosis(inv, expected, hd, theta, scaling, beta_fast, beta_slow):
    """(where the pairs differ, the classic mistake they match)."""
    row = compare_arrays(inv, expected, RELATIVE, "yarn_inv_freq")
    if not row.failed:
        return ("the frequencies agree; the attention factor (the cos/sin multiplier) differs", None)
    return (_yarn_where(inv, expected, hd, theta, scaling, row),
            _yarn_mistake(inv, expected, hd, theta, scaling["factor"], scaling["original_max_position_embeddings"],
                          beta_fast, beta_slow))


def _yarn_where(inv, expected, hd, theta, scaling, row) -> str:
    low, high = yarn_correction_range(hd, theta, scaling)
    bad = np.flatnonzero(~np.isclose(inv, expected, rtol=1e-5, atol=0))
    regions = []
    if np.any(bad < low):
        regions.append(f"pairs below low = {low} must keep plain RoPE's frequency")
    if np.any(bad > high):
        regions.append(f"pairs above high = {high} must be plain RoPE's divided by the factor")
    if np.any((bad >= low) & (bad <= high)):
        regions.append(f"pairs {low} to {high} blend the two linearly")
    return (f"yarn_inv_freq differs at pairs {bad.tolist()[:12]}{' ...' if bad.size > 12 else ''} (pair "
            f"{row.worst[0]}: yours {row.actual_value:.6g} vs arcee_np's {row.expected_value:.6g}); "
            + "; ".join(regions))


def _yarn_mistake(inv, expected, hd, theta, factor, original, beta_fast, beta_slow):
    j = np.arange(hd // 2)
    plain = theta ** (-2 * j / hd)

    def corr(n):
        return hd * math.log(original / (2 * math.pi * n)) / (2 * math.log(theta))

    def blend(low, high):
        ramp = np.clip((j - low) / (high - low), 0, 1)
        return plain * (1 - ramp) + plain / factor * ramp

    low, high = corr(beta_fast), corr(beta_slow)
    return first_match(inv, {
        f"your ramp runs from {low:.2f} to {high:.2f}: transformers floors low and ceils high (truncate, on by "
        f"default), so it runs from {max(math.floor(low), 0)} to {min(math.ceil(high), hd - 1)}": blend(low, high),
        "you interpolated the fast pairs and kept the slow ones: the ramp is 0 (keep) below low and 1 (divide by "
        "the factor) above high": plain * np.clip((j - math.floor(low)) / (math.ceil(high) - math.floor(low)), 0, 1)
        + plain / factor * (1 - np.clip((j - math.floor(low)) / (math.ceil(high) - math.floor(low)), 0, 1)),
        "you divided every pair by the factor: that is linear interpolation; YaRN keeps the fast pairs": plain / factor,
    }, expected, RELATIVE)


@lru_cache(maxsize=None)
def yarn_reference():
    """The shipped model's weights under a YaRN config (factor 4 over its 256 training positions)."""
    base = model()
    config = ArceeConfig.from_dict({**base.config.to_dict(), "max_position_embeddings": 1024,
                                    "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                     "original_max_position_embeddings": 256}})
    stretched = ArceeForCausalLM(config, base.params, base.head_params)
    return reference_trace(stretched, reference().inputs["input_ids"], "layers.0.attn.q*")


EXERCISES = {  # the exercises of this notebook: the names each asks for, its check
    "rope_tables": Exercise("ex2_rope_yarn", ("rope_inv_freq", "rope_tables"), check_rope_tables),
    "apply_rope": Exercise("ex2_rope_yarn", ("apply_rope",), check_apply_rope),
    "yarn": Exercise("ex2_rope_yarn", ("yarn_inv_freq", "yarn_attention_factor"), check_yarn),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "rope_inv_freq": lambda head_dim, theta: default_inv_freq(head_dim, theta, xp, xp.float32),
    "rope_tables": lambda position_ids, inv_freq: rope_cos_sin(position_ids, inv_freq, 1.0, xp.float32),
    "apply_rope": ref_apply_rope,
    "yarn_inv_freq": lambda head_dim, theta, factor, original_max_position_embeddings, beta_fast=32.0, beta_slow=1.0:
        ref_yarn(head_dim, theta, {"factor": factor, "original_max_position_embeddings":
                                   original_max_position_embeddings, "beta_fast": beta_fast,
                                   "beta_slow": beta_slow}, xp, xp.float32)[0],
    "yarn_attention_factor": lambda factor: ref_yarn_attention_factor({"factor": factor}),
}
