"""Rotary position embeddings (RoPE): default, linear and YaRN frequencies, cos/sin tables, rotate-half application.

Pair ``j`` of a head (features ``j`` and ``j + hd/2``, the non-interleaved "NeoX" layout of transformers)
is rotated by the angle ``position * inv_freq[j]``. Tables are computed in float32 as transformers does
(float64 in arcee_np's golden mode), then cast to the activation dtype.
"""

import math

from .namespace import array_namespace
from .precision import as_dtype, reduction_dtype


def default_inv_freq(head_dim, theta, xp, dtype):
    """``inv_freq[j] = 1 / theta ** (2j / hd)`` for ``j = 0 .. hd/2 - 1``.

    head_dim: int; theta: float; xp: the array namespace; dtype: xp.float32 (or float64).
    Returns [hd/2].
    """
    exponents = xp.arange(0, head_dim, 2, dtype=dtype) / head_dim  # [hd/2]
    return 1.0 / (xp.asarray(theta, dtype=dtype) ** exponents)


def linear_inv_freq(head_dim, theta, factor, xp, dtype):
    """Linear scaling (position interpolation): ``inv_freq[j] = theta ** (-2j / hd) / factor``.

    Dividing every frequency by ``factor`` is dividing every position by it: position ``p`` gets the
    angles plain RoPE gives ``p / factor``. head_dim: int; theta, factor: float. Returns [hd/2].
    """
    return default_inv_freq(head_dim, theta, xp, dtype) / factor


def yarn_mscale(scale, mscale=1.0):
    """YaRN's attention temperature ``0.1 * mscale * ln(scale) + 1`` (1 for ``scale <= 1``)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_attention_factor(scaling):
    """The cos/sin multiplier of YaRN: the explicit ``attention_factor``, else from ``factor`` (and mscales)."""
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor = scaling["factor"]
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return float(yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim))
    return yarn_mscale(factor)


def yarn_correction_range(head_dim, theta, scaling):
    """The pair indices ``(low, high)`` between which YaRN blends plain and interpolated frequencies.

    ``corr(n) = hd * ln(L / (2 pi n)) / (2 ln theta)`` with ``L = original_max_position_embeddings``;
    ``low = corr(beta_fast)``, ``high = corr(beta_slow)``, floored/ceiled when ``truncate`` (default),
    clamped to ``[0, hd - 1]``. Python floats, as transformers computes them.
    """
    original = scaling["original_max_position_embeddings"]
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def corr(rotations):
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = corr(beta_fast), corr(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)


def yarn_inv_freq(head_dim, theta, scaling, xp, dtype):
    """YaRN: ``inv_freq = inv_interp * (1 - keep) + inv_extrap * keep`` with ``keep = 1 - ramp``.

    ``inv_extrap = 1 / theta**(2j/hd)`` (plain RoPE), ``inv_interp = inv_extrap / factor``; ``ramp`` rises
    linearly from 0 at pair ``low`` to 1 at pair ``high`` (yarn_correction_range), so fast-rotating pairs
    keep their frequency and slow ones are interpolated. The explicit ``factor`` is used, as in
    transformers >= 4.56 and llama.cpp.

    scaling: the config's rope_scaling dict. Returns (inv_freq [hd/2], attention_factor float).
    """
    factor = scaling["factor"]
    pos_freqs = xp.asarray(theta, dtype=dtype) ** (xp.arange(0, head_dim, 2, dtype=dtype) / head_dim)  # [hd/2]
    inv_extrapolation = 1.0 / pos_freqs
    inv_interpolation = 1.0 / (factor * pos_freqs)
    low, high = yarn_correction_range(head_dim, theta, scaling)
    if low == high:
        high += 0.001  # avoid dividing by zero, as transformers does
    ramp = xp.clip((xp.arange(head_dim // 2, dtype=dtype) - low) / (high - low), 0.0, 1.0)  # [hd/2]
    keep = 1.0 - ramp
    inv_freq = inv_interpolation * (1.0 - keep) + inv_extrapolation * keep
    return inv_freq, yarn_attention_factor(scaling)


def default_rope(head_dim, theta, scaling, xp, dtype):
    """Plain RoPE as a ROPE_TYPES entry: ``(default_inv_freq, 1.0)``."""
    return default_inv_freq(head_dim, theta, xp, dtype), 1.0


def linear_rope(head_dim, theta, scaling, xp, dtype):
    """Linear scaling as a ROPE_TYPES entry: ``(linear_inv_freq, 1.0)``."""
    return linear_inv_freq(head_dim, theta, scaling["factor"], xp, dtype), 1.0


# rope_type -> (head_dim, theta, rope_scaling, xp, dtype) -> (inv_freq [hd/2], attention_scaling): the RoPE
# variants arcee_np has (config validation reads its allowed rope types from here).
ROPE_TYPES = {"default": default_rope, "linear": linear_rope, "yarn": yarn_inv_freq}


def rope_frequencies(head_dim, theta, rope_scaling, xp, dtype):
    """``(inv_freq [hd/2], attention_scaling)`` of the config's RoPE: plain (``rope_scaling`` None), or the
    ``rope_type`` of ROPE_TYPES that ``rope_scaling`` names."""
    rope_type = "default" if rope_scaling is None else rope_scaling["rope_type"]
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"unknown rope_type {rope_type!r}; arcee_np supports {', '.join(map(repr, ROPE_TYPES))}.")
    return ROPE_TYPES[rope_type](head_dim, theta, rope_scaling, xp, dtype)


def step_positions(position_ids, past_length, batch, length, xp):
    """The positions of this step's tokens, [B, T]: ``position_ids`` ([B, T] or [1, T]) broadcast over the
    batch, or ``past_length + arange(T)`` when None."""
    if position_ids is None:
        position_ids = xp.arange(past_length, past_length + length, dtype=xp.int64)[None, :]  # [1, T]
    return xp.broadcast_to(position_ids, (batch, length))


def rope_tables(position_ids, head_dim, theta, rope_scaling, dtype):
    """The cos/sin tables every layer of a step shares: (cos, sin), each [B, T, hd] in ``dtype``.

    position_ids: [B, T]; head_dim, theta, rope_scaling: the config's. The frequencies and angles are
    computed in float32 (float64 stays float64) and the tables cast to ``dtype``, as transformers does.
    """
    xp = array_namespace(position_ids)
    inv_freq, attention_scaling = rope_frequencies(head_dim, theta, rope_scaling, xp, reduction_dtype(xp, dtype))
    return rope_cos_sin(position_ids, inv_freq, attention_scaling, dtype)


def rope_cos_sin(position_ids, inv_freq, attention_scaling, dtype):
    """``cos/sin(concat(pos * inv_freq, pos * inv_freq)) * attention_scaling``, computed in inv_freq's dtype.

    position_ids: [B, T] integers; inv_freq: [hd/2]. Returns (cos, sin), each [B, T, hd] in ``dtype``.
    """
    xp = array_namespace(position_ids, inv_freq)
    angles = xp.astype(position_ids, inv_freq.dtype)[..., None] * inv_freq  # [B, T, hd/2]
    angles = xp.concat([angles, angles], axis=-1)  # [B, T, hd]
    cos = xp.cos(angles) * attention_scaling
    sin = xp.sin(angles) * attention_scaling
    return as_dtype(cos, dtype), as_dtype(sin, dtype)


def rotate_half(x):
    """``concat(-x[..., hd/2:], x[..., :hd/2])``: the 90-degree turn of every pair. x: [..., hd]."""
    xp = array_namespace(x)
    half = x.shape[-1] // 2
    return xp.concat([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """``x * cos + rotate_half(x) * sin``: rotate pair j of every head by its angle.

    x: [B, heads, T, hd]; cos, sin: [B, T, hd]. Returns [B, heads, T, hd].
    """
    cos, sin = cos[:, None, :, :], sin[:, None, :, :]  # [B, 1, T, hd]: the same angles for every head
    return x * cos + rotate_half(x) * sin


def apply_rope_backward(grad, cos, sin):
    """The vector-Jacobian product of apply_rope: rotate every pair back, by the negative angle.

    ``y = x cos + rotate_half(x) sin`` is a rotation per pair, so ``dx`` is its transpose applied to the
    output gradient: ``dx = grad cos - rotate_half(grad) sin``.
    grad: [B, heads, T, hd]; cos, sin: [B, T, hd]. Returns [B, heads, T, hd].
    """
    cos, sin = cos[:, None, :, :], sin[:, None, :, :]  # [B, 1, T, hd]
    return grad * cos - rotate_half(grad) * sin
