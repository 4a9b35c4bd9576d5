"""The checks of the exercises: your code against arcee_np, on the shipped Shakespeare model.

Each ``check_*`` takes the function(s) an exercise asks for, runs them on the shipped model's own weights and
activations, and compares the results with arcee_np's through ``arcee_np.oracle``: where your tensors line up
with arcee_np's trace names (docs/trace.md) the verdict is the trace comparison's own report, the first
diverging tensor and its likely cause; everywhere it names what was expected, where yours differs, the
classic mistake your numbers match (when one does) and a hint.

``EXERCISES`` lists every exercise: its notebook, the names it asks for and its check. ``your_code(notebook)``
runs the exercise cells of a saved notebook; ``yours_or_reference(*names)`` gives a later notebook your
functions where their exercise passes and arcee_np's where it does not yet. Solutions: ``solutions/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import array_api_compat.numpy as xp
import numpy as np

import arcee_np
from arcee_np import ArceeConfig, ArceeForCausalLM, KVCache as ReferenceKVCache
from arcee_np.blocks import (apply_rope as ref_apply_rope, attention as ref_attention, attention_probs,
                             causal_lm_loss as ref_causal_lm_loss, causal_padding_mask as ref_mask,
                             default_inv_freq, embed as ref_embed, lm_head, log_softmax as ref_log_softmax,
                             mlp as ref_mlp, relu2 as ref_relu2, rms_norm as ref_rms_norm, rope_cos_sin,
                             yarn_attention_factor as ref_yarn_attention_factor, yarn_correction_range,
                             yarn_inv_freq as ref_yarn)
from arcee_np.generation import apply_temperature as ref_temperature, sample_from_scores
from arcee_np.generation import top_k_filter as ref_top_k, top_p_filter as ref_top_p
from arcee_np.io.tokenizer import ArceeTokenizer
from arcee_np.model import StepMask, backbone, decoder_layer as ref_decoder_layer
from arcee_np.oracle.compare import TOLERANCES, compare_arrays
from arcee_np.oracle.testing import reference_trace
from arcee_np.trace import LAYER_STAGES, trace

from checking import (EXACT, FLOAT32, HERE, RELATIVE, Failure, Verdict, against_array, against_trace, array, call,
                      check, first_match, fmt, missing, pair, run_cells)

TEXT = "ROMEO:\nBut, soft! what light through yonder window breaks?"
PADDED = ["JULIET:\nO Romeo, Romeo!", "ROMEO:\nShe speaks."]      # two lines, the shorter left-padded


# ---------------------------------------------------------------------------------------------- the shipped model
@lru_cache(maxsize=None)
def model() -> ArceeForCausalLM:
    return ArceeForCausalLM.from_pretrained(arcee_np.default_model_path())


@lru_cache(maxsize=None)
def tokenizer() -> ArceeTokenizer:
    return ArceeTokenizer.from_pretrained(arcee_np.default_model_path())


@lru_cache(maxsize=None)
def weights() -> dict:
    """Every weight of the shipped model as a NumPy array, named as in model.params (no ``model.`` prefix)."""
    return {name[len("model."):] if name.startswith("model.") else name: np.asarray(value)
            for name, value in model().state_dict().items()}


def layer_weights(layer: int) -> dict:
    """The weights of one layer, without the ``layers.{i}.`` prefix (``self_attn.q_proj.weight`` ...)."""
    prefix = f"layers.{layer}."
    return {name[len(prefix):]: value for name, value in weights().items() if name.startswith(prefix)}


@lru_cache(maxsize=None)
def reference():
    """arcee_np's trace of every named tensor on TEXT."""
    ids = np.array([tokenizer().encode(TEXT)])
    return reference_trace(model(), ids)


@lru_cache(maxsize=None)
def padded_reference():
    """arcee_np's trace of two left-padded lines (attention_mask in ``.inputs``; pad rows are not compared)."""
    batch = tokenizer()(PADDED, padding=True, padding_side="left", return_tensors="np")
    mask = batch["attention_mask"]
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return reference_trace(model(), batch["input_ids"], attention_mask=mask, position_ids=positions)


def shapes():
    c = model().config
    return c.num_attention_heads, c.num_key_value_heads, c.head_dim


def describe_ids(ids) -> str:
    return f"{ids.shape[1]} tokens of {TEXT!r} on the shipped model"


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
        rms = np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)
        centred = x - x.mean(-1, keepdims=True)
        return first_match(out, {
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
        }, ref["layers.2.input_norm"])

    err = against_trace({"layers.1.out": x, "layers.2.input_norm": out}, ref, checked, mistakes, hint)

    x16 = (x * (1000.0 / np.abs(x).max())).astype(np.float16)                     # |x| up to 1000: x**2 > 65504
    w16 = w.astype(np.float16)
    checked16 = f"rms_norm on float16 input whose largest |x| is {float(np.abs(x16).max()):.0f} (x**2 overflows float16)"
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
    return [f"checked: {checked} (max abs error {fmt(err)}), and float16 input past 256 (no overflow)"]


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
        against_array(inv, expected, f"rope_inv_freq({head_dim}, {base:g})", checked, RELATIVE, lambda: first_match(
            inv, {"your exponent is j / head_dim; it is 2j / head_dim": base ** (-j / head_dim),
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
        if positions.shape[0] == 1:       # through the model: q after RoPE with your tables
            q = ref["layers.0.attn.q"]
            against_trace({"layers.0.attn.q": q, "layers.0.attn.q_rope": ref_apply_rope(q, cos, sin)}, ref, where,
                          lambda: _table_mistake(cos, sin, exp_cos, exp_sin, positions, inv), hint)
        against_array(cos, exp_cos, "cos", where, FLOAT32, lambda: _table_mistake(
            cos, sin, exp_cos, exp_sin, positions, inv), hint)
        against_array(sin, exp_sin, "sin", where, FLOAT32, lambda: _table_mistake(
            cos, sin, exp_cos, exp_sin, positions, inv), hint)
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

        def mistakes():
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
    err = against_trace({"layers.0.attn.q": q, "layers.0.attn.q_rope": ref_apply_rope(q, cos, sin)}, ref, checked,
                        lambda: "; ".join(x for x in _yarn_diagnosis(inv, expected, hd, theta, scaling, 32.0, 1.0)
                                          if x), hint)
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
    for factor_ in (1.0, 4.0, 20.0):
        checked = f"yarn_attention_factor({factor_:g})"
        got = call(yarn_attention_factor, "yarn_attention_factor", checked, factor_)
        want = ref_yarn_attention_factor({"factor": factor_})
        if not isinstance(got, (int, float, np.floating)) or not math.isclose(float(got), want, rel_tol=1e-6):
            raise Failure(checked, f"returned {got!r}, expected {want:.6g}",
                          hint="0.1 * ln(factor) + 1 for factor > 1, and 1 for factor <= 1 (plain RoPE)")
    return [f"checked: q after RoPE on the shipped model with YaRN in its config (max abs error {fmt(err)}); "
            f"yarn_inv_freq for {', '.join(c[-1] for c in YARN_CASES)}; yarn_attention_factor"]


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

        def mistakes():
            n_rep = H // k.shape[1]
            kk, vv = np.repeat(k, n_rep, axis=1), np.repeat(v, n_rep, axis=1)
            raw = q @ np.swapaxes(kk, -1, -2)
            m = 0 if mask is None else mask
            expected = ref["layers.0.attn.probs"]
            found = first_match(probs, {
                "your probabilities are softmax(q k^T + mask) without the 1 / sqrt(head_dim) scale": _softmax(raw + m),
                "you scaled by 1 / head_dim; the scale is head_dim**-0.5": _softmax(raw / hd + m),
                "your probabilities ignore the mask: add it to the scores before the softmax":
                    _softmax(raw * hd ** -0.5),
                "your softmax runs over the queries (axis -2); it runs over the keys (axis -1)":
                    _softmax(raw * hd ** -0.5 + m, axis=-2),
            }, expected)
            merged_wrong = (expected @ vv).reshape(B, T, H * hd)
            return found or first_match(context, {
                "you reshaped [B, H, T, hd] straight to [B, T, H*hd]; move the heads axis next to hd first "
                "(.transpose(0, 2, 1, 3)), then reshape": merged_wrong}, ref["layers.0.attn.context"])

        valid = ref.inputs.get("attention_mask")
        errors.append(against_trace({"layers.0.attn.q_rope": q, "layers.0.attn.k_rope": k, "layers.0.attn.v": v,
                                     "layers.0.attn.probs": probs, "layers.0.attn.context": context}, ref, checked,
                                    mistakes, hint, valid))
    return [f"checked: layer 0's attention probabilities and context on the shipped model (8 query heads sharing 2 "
            f"KV heads, with and without padding) and on a random model with 4 and 1 KV heads "
            f"(max abs error {fmt(max(errors))})"]


def _softmax(s, axis=-1):
    s = np.asarray(s, dtype=np.float32)
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


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
        yield tiny, np.asarray(ref_mask(np.ones((1, n), dtype=np.int64), n, np.float32)), f"a random model, KV = {kv_heads}"


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
                if got.shape[2] == keys.shape[2] and past:
                    looks = "update returns only this step's positions; it must return the past ones too"
                elif len(got.shape) == 4 and got.shape[2] > expected[2]:
                    looks = "the layers share one store: keep a separate list for each layer (index by `layer`)"
                raise Failure(where, f"update returned {what} of shape {got.shape}; expected [B, KV, past + T, hd] "
                              f"= {expected}", looks, self.hint)
        self.last[layer] = (got_k, got_v)
        return got_k.astype(keys.dtype, copy=False), got_v.astype(values.dtype, copy=False)


# ---------------------------------------------------------------------------------------------- 9 the MLP
@check("mlp")
def check_mlp(relu2, mlp):
    grid = np.linspace(-3, 3, 13, dtype=np.float32)
    checked = f"relu2(x) on x = {np.round(grid, 1).tolist()}"
    hint = "relu2(x) = max(x, 0) ** 2: 0 for every x <= 0, x**2 above"
    got = array(call(relu2, "relu2", checked, grid), "relu2", checked, grid.shape, "[13]", hint)
    against_array(got, ref_relu2(grid), "relu2", checked, FLOAT32, lambda: first_match(got, {
        "you returned relu(x); square it": np.maximum(grid, 0),
        "you squared without the relu: negative inputs must give 0": grid * grid,
        "that is SiLU, Llama's activation; Arcee's is relu(x)**2": grid / (1 + np.exp(-grid)),
    }), hint)

    ref = reference()
    layer = 1
    W = layer_weights(layer)
    x, up = ref[f"layers.{layer}.post_norm"], ref[f"layers.{layer}.mlp.up"]
    checked = f"relu2 and mlp(x, up_weight, down_weight) as layer {layer}'s MLP, {describe_ids(ref.inputs['input_ids'])}"
    hint = ("mlp(x) = relu2(x @ up_weight.T) @ down_weight.T: weights are [out, in], up_weight [I, D], "
            "down_weight [D, I]; there is no gate")
    act = array(call(relu2, "relu2", checked, up), "relu2", checked, up.shape, "[B, T, I]")
    out = array(call(mlp, "mlp", checked, x, W["mlp.up_proj.weight"], W["mlp.down_proj.weight"]), "mlp", checked,
                x.shape, "[B, T, D]", hint)
    down = W["mlp.down_proj.weight"]
    err = against_trace({f"layers.{layer}.post_norm": x, f"layers.{layer}.mlp.up": up, f"layers.{layer}.mlp.act": act,
                         f"layers.{layer}.mlp.out": out}, ref, checked, lambda: first_match(out, {
                             "your MLP applies relu, not relu squared": np.maximum(up, 0) @ down.T,
                             "your MLP squares without the relu": (up * up) @ down.T,
                         }, ref[f"layers.{layer}.mlp.out"]), hint)
    return [f"checked: relu2 on a grid and {checked} (max abs error {fmt(err)})"]


# ---------------------------------------------------------------------------------------------- 10 one decoder layer
DECODER_NAMES = tuple(LAYER_STAGES)


@check("decoder_layer")
def check_decoder_layer(decoder_layer):
    config = model().config
    hint = ("h_in -> input_norm -> q, k, v -> RoPE on q and k -> (cache) -> attention -> o_proj -> + h_in = "
            "attn_residual -> post_norm -> mlp -> + attn_residual = out; return them in a dict under those names")
    errors = []
    for ref, layer, what in ((reference(), 1, describe_ids(reference().inputs["input_ids"])),
                             (padded_reference(), 2, "a left-padded batch of 2")):
        checked = f"decoder_layer(h, weights, cos, sin, mask, config) as layer {layer} on {what}"
        h, cos, sin, mask = _layer_inputs(ref, layer)
        out = _layer_dict(call(decoder_layer, "decoder_layer", checked, h, layer_weights(layer), cos, sin, mask,
                               config), checked, layer, h.shape, hint)
        valid = ref.inputs.get("attention_mask")
        errors.append(against_trace({f"layers.{layer - 1}.out": h, **out}, ref, checked, hint=hint, valid=valid))

    ref, layer = reference(), 1
    h, cos, sin, mask = _layer_inputs(ref, layer)
    prompt, T = 6, h.shape[1]
    cache = ReferenceKVCache(config.num_hidden_layers)
    checked = (f"decoder_layer with a KV cache (cache=KVCache, layer={layer}): positions 0-{prompt - 1} at once, then "
               f"{prompt} to {T - 1} one at a time")
    hint_cache = ("after RoPE, when a cache is given: k, v = cache.update(k, v, layer), so this step's queries "
                  "attend to the past keys too; a single new query needs no mask (mask is None)")
    for start, stop in [(0, prompt)] + [(i, i + 1) for i in range(prompt, T)]:
        step_mask = np.asarray(ref_mask(np.ones((1, stop), dtype=np.int64), stop - start, np.float32)) \
            if stop - start > 1 else None
        out = _layer_dict(call(decoder_layer, "decoder_layer", checked, h[:, start:stop], layer_weights(layer),
                               cos[:, start:stop], sin[:, start:stop], step_mask, config, cache=cache, layer=layer),
                          checked, layer, h[:, start:stop].shape, hint_cache)
        if cache.get_seq_length(layer) != stop:
            raise Failure(checked, f"after positions {start}-{stop - 1} the cache holds "
                          f"{cache.get_seq_length(layer)} positions of layer {layer}; expected {stop}",
                          "your layer does not call cache.update(k, v, layer)" if cache.get_seq_length(layer) == 0
                          else None, hint_cache)
        expected = ref[f"layers.{layer}.out"][:, start:stop]
        errors.append(against_array(out[f"layers.{layer}.out"], expected, f"out at positions {start}-{stop - 1}",
                                    checked, TOLERANCES["float32"], hint=hint_cache))
    return [f"checked: layers 1 and 2 on the shipped model (with and without padding) and with a KV cache, token "
            f"by token (max abs error {fmt(max(errors))})"]


def _layer_inputs(ref, layer):
    _, _, hd = shapes()
    ids = ref.inputs["input_ids"]
    key_mask = ref.inputs.get("attention_mask", np.ones(ids.shape, dtype=np.int64))
    positions = ref.inputs.get("position_ids", np.arange(ids.shape[1])[None, :])
    inv = np.asarray(default_inv_freq(hd, model().config.rope_theta, xp, xp.float32))
    cos, sin = (np.asarray(a) for a in rope_cos_sin(positions, inv, 1.0, xp.float32))
    mask = np.asarray(ref_mask(key_mask, ids.shape[1], np.float32))
    return ref[f"layers.{layer - 1}.out"], cos, sin, mask


def _layer_dict(value, checked, layer, shape, hint) -> dict:
    if not isinstance(value, dict):
        raise Failure(checked, f"`decoder_layer` returned a {type(value).__name__}; return a dict of the layer's "
                      f"tensors, at least {{'out': ...}}", hint=hint)
    unknown = sorted(set(value) - set(DECODER_NAMES))
    if unknown:
        raise Failure(checked, f"your dict has keys {unknown} that are not names of a layer's tensors; use names of "
                      f"docs/trace.md without the 'layers.i.' prefix: {', '.join(DECODER_NAMES)}", hint=hint)
    if "out" not in value:
        raise Failure(checked, "your dict has no 'out' (the layer's output, h after both residual adds)", hint=hint)
    out = {f"layers.{layer}.{name}": array(v, f"decoder_layer(...)[{name!r}]", checked) for name, v in value.items()}
    array(value["out"], "decoder_layer(...)['out']", checked, shape, "[B, T, D]", hint)
    return out


# ---------------------------------------------------------------------------------------------- 11 sampling
@check("sampling")
def check_sampling(apply_temperature, top_k_filter, top_p_filter, draw, sample_next):
    scores = next_token_scores()
    V = scores.shape[1]
    words = "the next-token scores [2, V] of the shipped model after 'ROMEO:\\n' and after 'JULIET:\\nO Romeo,'"
    for t in (0.5, 1.0, 2.0):
        checked = f"apply_temperature(scores, {t}) on {words}"
        got = array(call(apply_temperature, "apply_temperature", checked, scores, t), "apply_temperature", checked,
                    scores.shape, "[B, V]")
        against_array(got, ref_temperature(scores, t), "apply_temperature", checked, FLOAT32, lambda: first_match(
            got, {"you multiplied by the temperature; divide the scores by it": scores * t}),
                      "return scores / temperature: still scores (logits), not probabilities")
    for k in (1, 5, 50):
        checked = f"top_k_filter(scores, {k}) on {words}"
        got = array(call(top_k_filter, "top_k_filter", checked, scores, k), "top_k_filter", checked, scores.shape,
                    "[B, V]")
        _kept_set(got, np.asarray(ref_top_k(scores, k)), scores, checked, f"the {k} largest scores of each row")
    for p in (0.5, 0.9):
        checked = f"top_p_filter(scores, {p}) on {words}"
        got = array(call(top_p_filter, "top_p_filter", checked, scores, p), "top_p_filter", checked, scores.shape,
                    "[B, V]")
        _kept_set(got, np.asarray(ref_top_p(scores, p)), scores, checked,
                  f"the smallest set of most likely tokens whose probability reaches {p}", p)
    filtered = np.asarray(ref_top_k(scores, 50))
    for u in (0.0, 0.05, 0.3, 0.5, 0.77, 0.999):
        us = np.array([u, 1 - u if u > 0 else 0.5])
        checked = f"draw(scores, u={us.tolist()}) on {words} after top-k 50 (the rest -inf)"
        got = np.asarray(call(draw, "draw", checked, filtered, us)).reshape(-1)
        want = sample_from_scores(filtered, FixedDraws(us))
        if got.shape != want.shape or not np.array_equal(got, want):
            raise Failure(checked, f"draw gave tokens {got.tolist()}, expected {want.tolist()} "
                          f"({_token_words(want)})", _draw_mistake(got, filtered, us, want),
                          "probs = softmax(scores) (-inf gives 0); cdf = cumsum(probs) in vocabulary order; return "
                          "the first token whose cdf exceeds u, for each row")
    settings = ((0.8, 50, 0.95), (1.5, 0, 0.9), (0.5, 5, 1.0))
    for t, k, p in settings:
        us = np.array([0.42, 0.87])
        checked = f"sample_next(scores, temperature={t}, top_k={k}, top_p={p}, u={us.tolist()}) on {words}"
        got = np.asarray(call(sample_next, "sample_next", checked, scores, t, k, p, us)).reshape(-1)
        want = _reference_sample(scores, t, k, p, us)
        if not np.array_equal(got, want):
            raise Failure(checked, f"sample_next gave {got.tolist()}, expected {want.tolist()} ({_token_words(want)})",
                          _order_mistake(got, scores, t, k, p, us),
                          "apply the steps in transformers' order: temperature, then top-k (0: off), then top-p "
                          "(1.0: off), then draw")
    return ["checked: temperature, top-k, top-p, the draw and the whole sampling step on the shipped model's "
            f"next-token scores ({V} tokens, 2 rows): same kept tokens, same draws"]


class FixedDraws:
    """Stands in for a NumPy Generator: ``random(n)`` returns the given uniforms."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=np.float64)

    def random(self, n):
        return self.u[:n]


def _reference_sample(scores, t, k, p, u):
    s = np.asarray(ref_temperature(scores, t))
    if k > 0:
        s = np.asarray(ref_top_k(s, k))
    if p < 1.0:
        s = np.asarray(ref_top_p(s, p))
    return sample_from_scores(s, FixedDraws(u))


@lru_cache(maxsize=None)
def next_token_scores() -> np.ndarray:
    tok = tokenizer()
    rows = [np.asarray(model()(np.array([tok.encode(text)])).logits[0, -1], dtype=np.float32)
            for text in ("ROMEO:\n", "JULIET:\nO Romeo,")]
    return np.stack(rows)


def _token_words(ids) -> str:
    return ", ".join(repr(tokenizer().decode([int(i)])) for i in ids)


def _kept_set(got, expected, scores, checked, what, p=None):
    kept, want = np.isfinite(got), np.isfinite(expected)
    hint = (f"keep {what} unchanged and set every other score to -inf (float('-inf')), so the softmax gives it "
            f"probability exactly 0")
    fill = got[~want]
    if fill.size and np.all(fill == fill.flat[0]) and np.isfinite(fill.flat[0]) \
            and np.array_equal(got != fill.flat[0], want):
        raise Failure(checked, f"removed tokens hold {fill.flat[0]:.4g}; they must be -inf", hint=hint)
    if np.array_equal(kept, want):
        if not np.array_equal(got[want], expected[want]):
            raise Failure(checked, "the kept scores changed; a filter only removes tokens and leaves the others as "
                          "they were", hint=hint)
        return
    row = int(np.flatnonzero((kept != want).any(axis=1))[0])
    n_got, n_want = int(kept[row].sum()), int(want[row].sum())
    probs = _softmax(scores[row].astype(np.float64))
    mass = f" holding {probs[kept[row]].sum():.3f} of the probability" if p is not None else ""
    looks = None
    if p is not None and n_got == n_want - 1:
        looks = (f"you dropped the token that makes the mass reach {p}: it stays, the set must reach p (the "
                 f"expected {n_want} tokens hold {probs[want[row]].sum():.3f})")
    elif p is not None and n_got == n_want + 1:
        looks = f"you kept one token more than needed: {n_want} tokens already reach {p}"
    elif p is None and n_got != n_want:
        looks = "k counts the tokens kept; ties with the k-th score stay too (compare with >=)"
    extra = np.flatnonzero(kept[row] & ~want[row])
    lost = np.flatnonzero(want[row] & ~kept[row])
    detail = (f"; you keep {_token_words(extra[:3])} that should go" if extra.size else "") + \
             (f"; you drop {_token_words(lost[:3])} that should stay" if lost.size else "")
    raise Failure(checked, f"row {row}: you kept {n_got} tokens{mass}; expected {n_want}{detail}", looks, hint)


def _draw_mistake(got, scores, u, want):
    probs = _softmax(scores.astype(np.float64))
    order = np.argsort(-probs, axis=-1, kind="stable")
    cdf = np.cumsum(np.take_along_axis(probs, order, -1), -1)
    by_rank = np.take_along_axis(order, np.argmax(cdf > u[:, None], -1)[:, None], -1)[:, 0]
    if np.array_equal(got, by_rank):
        return ("you accumulated the probabilities from the most likely down; that is also a valid draw, but "
                "arcee_np (and so generate's seeded draws) accumulates in vocabulary order: 0, 1, 2, ...")
    if np.any(~np.isfinite(scores[np.arange(len(got)), np.clip(got, 0, scores.shape[1] - 1)])):
        return "you drew a token whose score is -inf (probability 0)"
    return None


def _order_mistake(got, scores, t, k, p, u):
    s = scores
    if p < 1.0:
        s = np.asarray(ref_top_p(s, p))
    if k > 0:
        s = np.asarray(ref_top_k(s, k))
    if np.array_equal(got, sample_from_scores(np.asarray(ref_temperature(s, t)), FixedDraws(u))):
        return "you filtered before applying the temperature; the temperature comes first"
    return None


# ---------------------------------------------------------------------------------------------- 12 the loss
@check("loss")
def check_loss(log_softmax, causal_lm_loss):
    ref = reference()
    logits, ids = ref["logits"], ref.inputs["input_ids"]
    checked = f"log_softmax(logits) on the shipped model's logits for {describe_ids(ids)}"
    hint = "log_softmax(s) = s - max(s) - log(sum(exp(s - max(s)))) over the last axis"
    got = array(call(log_softmax, "log_softmax", checked, logits), "log_softmax", checked, logits.shape, "[B, T, V]")
    against_array(got, ref_log_softmax(logits), "log_softmax", checked, FLOAT32, hint=hint)
    hot = logits * np.float32(100)
    checked_hot = f"log_softmax of logits up to {float(np.abs(hot).max()):.0f} (exp overflows float32 past 88)"
    with np.errstate(all="ignore"):
        got = array(call(log_softmax, "log_softmax", checked_hot, hot), "log_softmax", checked_hot, hot.shape)
    against_array(got, ref_log_softmax(hot), "log_softmax", checked_hot, FLOAT32,
                  "exp of a large score overflowed to inf" if not np.all(np.isfinite(got)) else None,
                  "subtract each row's maximum before exp: the result does not change, and exp can no longer "
                  "overflow")

    hint = ("the logits at position t predict token t + 1: score logits[:, :-1] against labels[:, 1:], leave out "
            "labels equal to -100, and return the mean of -log_softmax[label] over the tokens counted")
    T = ids.shape[1]
    labels_ignored = ids.copy()
    labels_ignored[:, : T // 2] = -100
    for labels, what in ((ids, "labels = input_ids"), (labels_ignored, f"the first {T // 2} labels -100")):
        checked = f"causal_lm_loss(logits, labels) on {describe_ids(ids)}, {what}"
        got = call(causal_lm_loss, "causal_lm_loss", checked, logits, labels)
        value = array(got, "causal_lm_loss", checked)
        if value.size != 1:
            raise Failure(checked, f"`causal_lm_loss` returned shape {value.shape}; expected one number (the mean)",
                          hint=hint)
        want = float(ref_causal_lm_loss(logits, labels))
        if not math.isclose(float(value), want, rel_tol=1e-5, abs_tol=1e-5):
            raise Failure(checked, f"returned {float(value):.6g} nats; expected {want:.6g} (perplexity "
                          f"{math.exp(want):.1f}), the loss arcee_np and transformers compute",
                          _loss_mistake(float(value), logits, labels), hint)
    out = model()(ids, labels=ids)
    return [f"checked: log_softmax (also on huge logits) and the loss on {describe_ids(ids)}, with and without "
            f"ignored labels: {float(out.loss):.4f} nats per token, as model(ids, labels=ids).loss"]


def _loss_mistake(value, logits, labels):
    logp = np.asarray(ref_log_softmax(logits.astype(np.float32)))
    V = logits.shape[-1]

    def nll(lp, lab, ignore=True):
        keep = lab != -100 if ignore else np.ones(lab.shape, dtype=bool)
        picked = np.take_along_axis(lp, np.clip(lab, 0, V - 1)[..., None], -1)[..., 0]
        return -picked[keep]

    shifted = nll(logp[:, :-1], labels[:, 1:])
    candidates = {
        "you scored each position against its own token; position t predicts token t + 1 (shift by one)":
            nll(logp, labels).mean(),
        "you summed the losses; take the mean over the counted tokens": shifted.sum(),
        "you counted the -100 labels; leave them out": nll(logp[:, :-1], labels[:, 1:], ignore=False).mean(),
        "you divided by every position, ignored ones included": shifted.sum() / labels[:, 1:].size,
        "your loss is in bits (log2); use the natural log (nats)": shifted.mean() / math.log(2),
    }
    return next((m for m, c in candidates.items() if math.isclose(value, float(c), rel_tol=1e-5)), None)


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
        raise Failure(checked, f"your tokens agree for {n} steps, then yours is {_token_words(got[n:n + 1])} where "
                      f"arcee_np's is {_token_words(want[n:n + 1])}",
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
    return {name: array(v, f"arcee_forward(...)[{name!r}]", checked, reference()[name].shape) for name, v in value.items()}


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
    lines = [f"wrote: {text!r}",
             "equal to arcee_np's generate with the same seed, token for token" if same else
             "differs from arcee_np's generate with the same seed (your draws or your logits differ somewhere)"]
    return Verdict("your Arcee", same, lines)


def _eos_ids():
    eos = model().config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


# ---------------------------------------------------------------------------------------------- the exercises
@dataclass(frozen=True)
class Exercise:
    notebook: str
    names: tuple
    check: object


EXERCISES = {
    "embed": Exercise("ex1_embeddings_rmsnorm", ("embed",), check_embed),
    "rms_norm": Exercise("ex1_embeddings_rmsnorm", ("rms_norm",), check_rms_norm),
    "rope_tables": Exercise("ex2_rope_yarn", ("rope_inv_freq", "rope_tables"), check_rope_tables),
    "apply_rope": Exercise("ex2_rope_yarn", ("apply_rope",), check_apply_rope),
    "yarn": Exercise("ex2_rope_yarn", ("yarn_inv_freq", "yarn_attention_factor"), check_yarn),
    "mask": Exercise("ex3_attention", ("causal_padding_mask",), check_mask),
    "attention": Exercise("ex3_attention", ("attention",), check_attention),
    "kv_cache": Exercise("ex3_attention", ("KVCache",), check_kv_cache),
    "mlp": Exercise("ex4_mlp_layer", ("relu2", "mlp"), check_mlp),
    "decoder_layer": Exercise("ex4_mlp_layer", ("decoder_layer",), check_decoder_layer),
    "sampling": Exercise("ex5_sampling_loss", ("apply_temperature", "top_k_filter", "top_p_filter", "draw",
                                               "sample_next"), check_sampling),
    "loss": Exercise("ex5_sampling_loss", ("log_softmax", "causal_lm_loss"), check_loss),
    "arcee_forward": Exercise("ex6_your_arcee", ("arcee_forward",), check_forward),
}
NOTEBOOKS = list(dict.fromkeys(e.notebook for e in EXERCISES.values()))


def _reference_decoder_layer(h, weights, cos, sin, mask, config, cache=None, layer=0):
    params = {f"layers.{layer}.{name}": value for name, value in weights.items()}
    past = cache.get_seq_length(layer) if cache is not None else 0
    step = StepMask(key_mask=None, segments=None, given=mask, past_length=past, length=h.shape[1], dtype=h.dtype)
    with trace(f"layers.{layer}.*") as t:
        ref_decoder_layer(h, params, layer, config, cos, sin, step, cache, attn_implementation="eager")
    return {name[len(f"layers.{layer}."):]: value for name, value in t.items()}


def _reference_forward(params, config, input_ids, cache=None):
    with trace("*") as t:
        h = backbone(params, config, input_ids, cache=cache).last_hidden_state
        t["logits"] = lm_head(h, params.get("lm_head.weight", params["embed_tokens.weight"]))
    return dict(t)


REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "embed": ref_embed,
    "rms_norm": ref_rms_norm,
    "rope_inv_freq": lambda head_dim, theta: default_inv_freq(head_dim, theta, xp, xp.float32),
    "rope_tables": lambda position_ids, inv_freq: rope_cos_sin(position_ids, inv_freq, 1.0, xp.float32),
    "apply_rope": ref_apply_rope,
    "yarn_inv_freq": lambda head_dim, theta, factor, original_max_position_embeddings, beta_fast=32.0, beta_slow=1.0:
        ref_yarn(head_dim, theta, {"factor": factor, "original_max_position_embeddings":
                                   original_max_position_embeddings, "beta_fast": beta_fast,
                                   "beta_slow": beta_slow}, xp, xp.float32)[0],
    "yarn_attention_factor": lambda factor: ref_yarn_attention_factor({"factor": factor}),
    "causal_padding_mask": ref_mask,
    "attention": lambda q, k, v, mask: ref_attention(q, k, v, mask, q.shape[-1] ** -0.5),
    "KVCache": ReferenceKVCache,
    "relu2": ref_relu2,
    "mlp": lambda x, up_weight, down_weight: ref_mlp(x, up_weight, down_weight),
    "decoder_layer": _reference_decoder_layer,
    "apply_temperature": ref_temperature,
    "top_k_filter": ref_top_k,
    "top_p_filter": ref_top_p,
    "draw": lambda scores, u: sample_from_scores(np.asarray(scores), FixedDraws(u)),
    "sample_next": _reference_sample,
    "log_softmax": ref_log_softmax,
    "causal_lm_loss": ref_causal_lm_loss,
    "arcee_forward": _reference_forward,
}


# ---------------------------------------------------------------------------------------------- your code, loaded
def your_code(notebook: str) -> dict:
    """The functions your saved ``notebook`` defines in its exercise cells, run with what they may use: numpy as
    np, math, and from earlier notebooks yours where they pass and arcee_np's where they do not yet."""
    return _your_code(notebook, _saved_state())


def _saved_state() -> tuple:
    """When each exercise notebook was last saved: results computed from them hold until one changes."""
    return tuple((HERE / f"{name}.ipynb").stat().st_mtime_ns for name in NOTEBOOKS)


@lru_cache(maxsize=32)
def _your_code(notebook: str, state: tuple) -> dict:
    earlier = [name for e in EXERCISES.values() if NOTEBOOKS.index(e.notebook) < NOTEBOOKS.index(notebook)
               for name in e.names]
    namespace = {"np": np, "math": math, "__name__": f"your_{notebook}"}
    if earlier:
        namespace.update(zip(earlier, yours_or_reference(*earlier, quiet=True)))
    return run_cells(notebook, namespace)


@lru_cache(maxsize=64)
def _passes(exercise_name: str, state: tuple) -> bool:
    return run_exercise(exercise_name, _your_code(EXERCISES[exercise_name].notebook, state)).passed


def run_exercise(name: str, namespace: dict):
    """Run exercise ``name``'s check on the functions of ``namespace`` (your notebook's, or solutions')."""
    exercise = EXERCISES[name]
    functions = [namespace.get(n) or missing(n, exercise.notebook, namespace) for n in exercise.names]
    return exercise.check(*functions)


def yours_or_reference(*names, quiet: bool = False):
    """For each name, your function when its exercise passes its check, else arcee_np's; prints which is which.

    Reads the saved notebooks: save an exercise notebook before another one uses its functions.
    """
    state = _saved_state()
    chosen, yours, theirs = [], [], []
    for name in names:
        exercise_name, exercise = next((k, e) for k, e in EXERCISES.items() if name in e.names)
        if _passes(exercise_name, state):
            chosen.append(_your_code(exercise.notebook, state)[name])
            yours.append(name)
        else:
            chosen.append(REFERENCE[name])
            theirs.append(name)
    if not quiet:
        print("yours (their exercises pass):", ", ".join(yours) or "none yet")
        print("arcee_np's (your exercise does not pass yet):", ", ".join(theirs) or "none")
    return tuple(chosen)
