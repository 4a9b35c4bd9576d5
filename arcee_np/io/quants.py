"""ggml's weight formats, dequantized exactly as ggml does: what each block stores and how it becomes floats.

A GGUF tensor row is a run of whole *blocks*; each block encodes ``block_size`` consecutive values of the
row in ``type_size`` bytes. Every function below takes the bytes of many blocks, ``[n_blocks, type_size]``
uint8, and returns their values, ``[n_blocks, block_size]`` float32, computing in float32 in the order
ggml's ``dequantize_row_*`` (and gguf-py's ``gguf.quants``) do, so the results agree bit for bit.

The formats (``d``, ``dmin``: float16 scales; ``q``: small unsigned integers; little-endian throughout):

=======  =====  =====  ==========================================================================
type     block  bytes  one block
=======  =====  =====  ==========================================================================
F32      1      4      the float32 itself
F16      1      2      a float16
BF16     1      2      the top 16 bits of a float32
Q8_0     32     34     d, then 32 int8 q:                      x = d * q
Q4_0     32     18     d, then 16 bytes of 4-bit q:            x = d * (q - 8)
Q4_1     32     20     d, m, then 16 bytes of 4-bit q:         x = d * q + m
Q5_0     32     22     d, 4 bytes of fifth bits, 16 of q:      x = d * (q - 16)
Q5_1     32     24     d, m, 4 bytes of fifth bits, 16 of q:   x = d * q + m
Q4_K     256    144    d, dmin, 12 bytes of eight 6-bit scales and eight 6-bit mins, 128 bytes of
                       4-bit q; sub-block s (32 values):       x = (d * scale[s]) * q - dmin * min[s]
Q5_K     256    176    as Q4_K plus 32 bytes holding the fifth bit of every q
Q6_K     256    210    128 bytes of low 4 bits, 64 bytes of high 2 bits, sixteen int8 scales, d;
                       sub-block s (16 values):                x = (d * scale[s]) * (q - 32)
=======  =====  =====  ==========================================================================

llama.cpp's quantizer stores a matrix whose rows are not whole 256-value blocks in Q5_0 instead of Q4_K,
Q5_1 instead of Q5_K and Q8_0 instead of Q6_K, so a "Q4_K" file of a small model holds those too.
The "K" formats group 256 values into a super-block with one float16 scale (``d``) and, for Q4_K/Q5_K, one
float16 offset scale (``dmin``); each sub-block then stores small integer multipliers of those two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

QK_K = 256  # values per super-block of the K formats


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte ``start`` of every block, widened to float32: [n_blocks, 1]."""
    return np.ascontiguousarray(blocks[:, start:start + 2]).view(np.float16).astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """Split bytes [n, k] into their 4-bit halves: [n, 2, k] (low nibbles first, then high)."""
    return np.stack([packed & 0x0F, packed >> 4], axis=1)


# ---------------------------------------------------------------------------------------------- plain floats
def dequantize_f32(blocks: np.ndarray) -> np.ndarray:
    """F32: four bytes a value. [n, 4] uint8 -> [n, 1] float32."""
    return np.ascontiguousarray(blocks).view(np.float32)


def dequantize_f16(blocks: np.ndarray) -> np.ndarray:
    """F16: an IEEE half-precision float a value, widened exactly. [n, 2] -> [n, 1]."""
    return np.ascontiguousarray(blocks).view(np.float16).astype(np.float32)


def dequantize_bf16(blocks: np.ndarray) -> np.ndarray:
    """BF16: the upper 16 bits of a float32; widening shifts them back (exact). [n, 2] -> [n, 1]."""
    top = np.ascontiguousarray(blocks).view(np.uint16).astype(np.uint32)
    return (top << 16).view(np.float32)


# ---------------------------------------------------------------------------------------------- 32-value blocks
def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0: ``x = d * q`` with one float16 ``d`` and 32 int8 ``q`` a block. [n, 34] -> [n, 32]."""
    d = _f16(blocks, 0)  # [n, 1]
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)  # [n, 32]
    return d * q


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0: ``x = d * (q - 8)``, 4-bit ``q`` in 0..15. [n, 18] -> [n, 32].

    Byte ``i`` of the 16 packed bytes holds value ``i`` in its low nibble and value ``i + 16`` in its high one.
    """
    d = _f16(blocks, 0)  # [n, 1]
    q = _nibbles(blocks[:, 2:]).reshape(len(blocks), 32)  # [n, 2, 16] -> [n, 32]: lows are values 0..15
    return d * (q.astype(np.int8) - 8).astype(np.float32)


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """Q4_1: ``x = d * q + m`` with float16 ``d`` and offset ``m``, 4-bit ``q`` packed as in Q4_0.
    [n, 20] -> [n, 32]."""
    d, m = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1] each
    q = _nibbles(blocks[:, 4:]).reshape(len(blocks), 32).astype(np.float32)
    return d * q + m


def _fifth_bits(blocks: np.ndarray, start: int) -> np.ndarray:
    """The 32 high bits of a Q5_0 / Q5_1 block: bit ``i`` of the little-endian uint32 at ``start``. [n, 32] uint8."""
    qh = np.ascontiguousarray(blocks[:, start:start + 4]).view("<u4")  # [n, 1]
    return ((qh >> np.arange(32, dtype=np.uint32)[None, :]) & 1).astype(np.uint8)


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """Q5_0: ``x = d * (q - 16)``, 5-bit ``q``: the low 4 bits packed as in Q4_0, the fifth in a uint32.
    Bytes: d (2), high bits (4), low nibbles (16). [n, 22] -> [n, 32]."""
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 6:]).reshape(len(blocks), 32) | (_fifth_bits(blocks, 2) << 4)
    return d * (q.astype(np.int8) - 16).astype(np.float32)


def dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    """Q5_1: ``x = d * q + m``, 5-bit ``q`` as in Q5_0. Bytes: d, m, high bits (4), low nibbles (16).
    [n, 24] -> [n, 32]."""
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    q = _nibbles(blocks[:, 8:]).reshape(len(blocks), 32) | (_fifth_bits(blocks, 4) << 4)
    return d * q.astype(np.float32) + m


# ---------------------------------------------------------------------------------------------- K super-blocks
def unpack_q4_k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and eight 6-bit mins of a Q4_K / Q5_K super-block, from its 12 bytes.

    packed: [n, 12] uint8. Returns (scales, mins), each [n, 8] uint8 in 0..63. Bytes 0-3 hold scales 0-3 in
    their low 6 bits, bytes 4-7 mins 0-3; bytes 8-11 hold the low 4 bits of scales 4-7 (low nibble) and of
    mins 4-7 (high nibble), whose top 2 bits sit in the spare top bits of bytes 0-3 (scales) and 4-7 (mins)::

        byte 0..3   SSssssss   (s: scale j,  S: top bits of scale j + 4)
        byte 4..7   MMmmmmmm   (m: min j,    M: top bits of min j + 4)
        byte 8..11  mmmmssss   (low 4 bits of min j + 4 and scale j + 4)
    """
    low, high, mixed = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]  # [n, 4] each
    scales = np.concatenate([low & 0x3F, (mixed & 0x0F) | ((low >> 6) << 4)], axis=1)  # [n, 8]
    mins = np.concatenate([high & 0x3F, (mixed >> 4) | ((high >> 6) << 4)], axis=1)  # [n, 8]
    return scales, mins


def _k_scaled(blocks: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(d * scale[s]) * q - dmin * min[s]`` for Q4_K/Q5_K. q: [n, 8, 32] float32. Returns [n, 256]."""
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1] each
    scales, mins = unpack_q4_k_scales(blocks[:, 4:16])  # [n, 8] each
    step = (d * scales.astype(np.float32))[:, :, None]  # [n, 8, 1]
    offset = (dmin * mins.astype(np.float32))[:, :, None]  # [n, 8, 1]
    return (step * q - offset).reshape(len(blocks), QK_K)


def _q4_k_low_bits(packed: np.ndarray) -> np.ndarray:
    """The 4-bit parts of a K super-block's 256 values from 128 bytes: [n, 128] -> [n, 8, 32].

    The bytes come in four runs of 32; run ``j`` holds sub-block ``2j`` in its low nibbles and sub-block
    ``2j + 1`` in its high nibbles.
    """
    runs = packed.reshape(len(packed), 4, 32)  # [n, 4 runs, 32]
    return np.stack([runs & 0x0F, runs >> 4], axis=2).reshape(len(packed), 8, 32)  # [n, 4, 2, 32] -> [n, 8, 32]


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """Q4_K: 256 values in 8 sub-blocks of 32, ``x = (d * scale[s]) * q - dmin * min[s]``, q in 0..15.

    Bytes: d (2), dmin (2), packed 6-bit scales and mins (12, unpack_q4_k_scales), 4-bit q (128).
    [n, 144] -> [n, 256].
    """
    q = _q4_k_low_bits(blocks[:, 16:144]).astype(np.float32)  # [n, 8, 32]
    return _k_scaled(blocks, q)


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """Q5_K: Q4_K with a fifth bit, q in 0..31: ``x = (d * scale[s]) * q - dmin * min[s]``.

    Bytes: d, dmin, scales/mins (12), then 32 bytes ``qh`` where bit ``s`` of ``qh[i]`` is the high bit of
    value ``i`` of sub-block ``s``, then the 4-bit parts (128) as in Q4_K. [n, 176] -> [n, 256].
    """
    low = _q4_k_low_bits(blocks[:, 48:176])  # [n, 8, 32]
    qh = blocks[:, 16:48]  # [n, 32]
    high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # [n, 8 sub-blocks, 32]
    q = (low | (high << 4)).astype(np.float32)
    return _k_scaled(blocks, q)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K: 256 values in 16 sub-blocks of 16, ``x = (d * scale[s]) * (q - 32)``, q in 0..63 (6 bits).

    Bytes: ``ql`` (128: low 4 bits), ``qh`` (64: high 2 bits), sixteen int8 scales, d (2). Each half of 128
    values uses 64 bytes of ``ql`` and 32 of ``qh``: value ``32k + i`` (k = 0..3, i = 0..31) takes its low
    bits from ``ql[i + 32 (k % 2)]`` (low nibble for k < 2, high for k >= 2) and its high bits from bits
    ``2k, 2k + 1`` of ``qh[i]``. [n, 210] -> [n, 256].
    """
    n = len(blocks)
    ql = blocks[:, 0:128].reshape(n, 2, 64)  # [n, half, 64]
    qh = blocks[:, 128:192].reshape(n, 2, 32)  # [n, half, 32]
    low = np.stack([ql & 0x0F, ql >> 4], axis=2).reshape(n, 2, 4, 32)  # [n, half, k, 32]: k = 2*nibble + run
    high = (qh[:, :, None, :] >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3  # [n, half, k, 32]
    q = ((low | (high << 4)).astype(np.int8) - 32).reshape(n, 16, 16).astype(np.float32)  # [n, 16 sub, 16]
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)  # [n, 16]
    step = (_f16(blocks, 208) * scales)[:, :, None]  # [n, 16, 1]
    return (step * q).reshape(n, QK_K)


# ---------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Format:
    """One ggml storage format: ``block_size`` values in ``type_size`` bytes, and how to decode them."""

    name: str
    block_size: int
    type_size: int
    dequantize_blocks: Callable[[np.ndarray], np.ndarray]

    def row_bytes(self, cols: int) -> int:
        """Bytes of one row of ``cols`` values (a whole number of blocks)."""
        return cols // self.block_size * self.type_size

    def dequantize_rows(self, rows: np.ndarray, cols: int) -> np.ndarray:
        """Rows of raw bytes [r, row_bytes(cols)] -> their values [r, cols] float32."""
        blocks = np.ascontiguousarray(rows).reshape(-1, self.type_size)  # [r * blocks a row, type_size]
        return self.dequantize_blocks(blocks).reshape(len(rows), cols)


FORMATS = {f.name: f for f in (
    Format("F32", 1, 4, dequantize_f32),
    Format("F16", 1, 2, dequantize_f16),
    Format("BF16", 1, 2, dequantize_bf16),
    Format("Q8_0", 32, 34, dequantize_q8_0),
    Format("Q4_0", 32, 18, dequantize_q4_0),
    Format("Q4_1", 32, 20, dequantize_q4_1),
    Format("Q5_0", 32, 22, dequantize_q5_0),
    Format("Q5_1", 32, 24, dequantize_q5_1),
    Format("Q4_K", QK_K, 144, dequantize_q4_k),
    Format("Q5_K", QK_K, 176, dequantize_q5_k),
    Format("Q6_K", QK_K, 210, dequantize_q6_k),
)}
