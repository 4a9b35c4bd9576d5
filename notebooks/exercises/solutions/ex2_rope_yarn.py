"""Solutions: the RoPE tables, applying RoPE, and YaRN's frequencies."""

import math

import numpy as np


def rope_inv_freq(head_dim, theta):
    """inv_freq[j] = theta ** (-2j / head_dim), j = 0 .. head_dim/2 - 1, in float32. Returns [head_dim / 2]."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / head_dim     # 2j / hd
    return (1.0 / np.float32(theta) ** exponents).astype(np.float32)


def rope_tables(position_ids, inv_freq):
    """cos and sin of concat(angles, angles), angles = position * inv_freq. Returns two [B, T, hd]."""
    angles = position_ids[..., None].astype(np.float32) * inv_freq      # [B, T, hd/2]
    angles = np.concatenate([angles, angles], axis=-1)                  # [B, T, hd]: pair j is (j, j + hd/2)
    return np.cos(angles), np.sin(angles)


def apply_rope(x, cos, sin):
    """x * cos + rotate_half(x) * sin. x [B, heads, T, hd]; cos, sin [B, T, hd]. Returns [B, heads, T, hd]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # each pair turned by 90 degrees
    return x * cos[:, None] + rotated * sin[:, None]                    # [:, None]: the same angles for every head


def yarn_inv_freq(head_dim, theta, factor, original_max_position_embeddings, beta_fast=32.0, beta_slow=1.0):
    """YaRN: fast pairs keep plain RoPE's frequency, slow pairs are divided by factor, a linear ramp between."""
    plain = rope_inv_freq(head_dim, theta)

    def pair_turning(turns):  # the (fractional) pair that turns `turns` times over the original context
        return head_dim * math.log(original_max_position_embeddings / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(pair_turning(beta_fast)), 0)
    high = min(math.ceil(pair_turning(beta_slow)), head_dim - 1)
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)  # 0 keep .. 1 interpolate
    return plain * (1 - ramp) + (plain / factor) * ramp


def yarn_attention_factor(factor):
    """The multiplier of cos and sin: 0.1 ln(factor) + 1 (1 without stretching)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
