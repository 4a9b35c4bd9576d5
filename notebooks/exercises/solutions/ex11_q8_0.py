"""Solutions: Q8_0 blocks, quantized and dequantized as ggml does."""

import numpy as np


def quantize_q8_0(x):
    """x: [n, 32] float32 -> [n, 34] uint8: the float16 scale d = max|x| / 127, then 32 int8 q = round(x / d),
    rounded half away from zero, computed as x * (1 / d) with the float32 d (an all-zero block: d = 0, q = 0)."""
    x = x.astype(np.float32)
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)                 # [n, 1] float32
    with np.errstate(divide="ignore"):
        inverse = np.where(d == 0, np.float32(0), np.float32(1) / d)
    scaled = x * inverse
    q = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))           # C's roundf: half away from zero
    return np.concatenate([d.astype(np.float16).view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)


def dequantize_q8_0(blocks):
    """blocks: [n, 34] uint8 -> [n, 32] float32: d (little-endian float16) times the int8 q."""
    d = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)    # [n, 1]
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)  # [n, 32]
    return d * q
