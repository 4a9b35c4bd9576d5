"""Solutions: linear (position interpolation) and NTK-aware RoPE scaling."""

import numpy as np


def linear_inv_freq(head_dim, theta, factor):
    """Every plain frequency theta ** (-2j / hd) divided by factor. Returns [hd / 2] float32."""
    plain = 1.0 / np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    return (plain / factor).astype(np.float32)


def ntk_theta(head_dim, theta, factor):
    """The base that divides the slowest pair's frequency by factor and leaves the fastest alone:
    theta * factor ** (hd / (hd - 2))."""
    return theta * factor ** (head_dim / (head_dim - 2))
