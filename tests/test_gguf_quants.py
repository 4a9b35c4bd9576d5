"""ggml's formats: arcee_np's dequantization against gguf-py's (``gguf.quants.dequantize``), bit for bit.

Random blocks of every type (scales drawn as real float16 numbers, every other byte uniform), raw random
bytes (NaN and Inf scales included), and every tensor of the fixtures made by llama.cpp's quantizer.
"""

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from arcee_np.io.gguf import GGUFFile
from arcee_np.io.quants import FORMATS, dequantize_q4_k, dequantize_q8_0, unpack_q4_k_scales

FIXTURES = Path(__file__).parent / "golden_gguf"
# byte offsets of the float16 scales in each block (d, dmin)
SCALE_OFFSETS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q4_K": (0, 2),
                 "Q5_K": (0, 2), "Q6_K": (208,)}


def random_blocks(rng, name, n_blocks):
    """``n_blocks`` blocks of type ``name``: uniform bytes with realistic finite float16 scales."""
    fmt = FORMATS[name]
    if fmt.block_size == 1:
        values = rng.normal(0, 0.1, size=n_blocks).astype(np.float32)
        if name == "F32":
            return values.view(np.uint8).reshape(n_blocks, 4)
        if name == "F16":
            return values.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n_blocks, 2)
    blocks = rng.integers(0, 256, size=(n_blocks, fmt.type_size), dtype=np.uint8)
    for offset in SCALE_OFFSETS[name]:
        scales = np.abs(rng.normal(0, 0.01, size=n_blocks)).astype(np.float16)
        blocks[:, offset:offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def same_bits(a, b):
    """Equal float32 bit patterns (NaN payloads included)."""
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_formats_have_ggml_sizes():
    for name, fmt in FORMATS.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == (fmt.block_size, fmt.type_size), name


@pytest.mark.parametrize("name", list(FORMATS))
def test_random_blocks_match_gguf(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    fmt = FORMATS[name]
    rows, blocks_per_row = 6, 4
    raw = random_blocks(rng, name, rows * blocks_per_row).reshape(rows, blocks_per_row * fmt.type_size)
    ours = fmt.dequantize_rows(raw, blocks_per_row * fmt.block_size)
    assert ours.dtype == np.float32
    assert np.isfinite(ours).all()
    assert same_bits(ours, dequantize(raw, gguf.GGMLQuantizationType[name]))


@pytest.mark.parametrize("name", list(FORMATS))
def test_raw_random_bytes_match_gguf(name):
    """Any bytes, including scales that are NaN, Inf or subnormal: the same bits as gguf-py."""
    fmt = FORMATS[name]
    raw = np.random.default_rng(7).integers(0, 256, size=(5, 3 * fmt.type_size), dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        assert same_bits(fmt.dequantize_rows(raw, 3 * fmt.block_size), dequantize(raw, gguf.GGMLQuantizationType[name]))


def fixture_tensors():
    for path in sorted(FIXTURES.glob("*/*.gguf")):
        for tensor in GGUFFile(path).tensors.values():
            yield pytest.param(path, tensor.name, id=f"{path.stem}:{tensor.name}")


@pytest.mark.parametrize("path, name", list(fixture_tensors()))
def test_fixture_tensors_match_gguf(path, name):
    """Every tensor llama.cpp's converter and quantizer wrote decodes to gguf-py's values, bit for bit."""
    tensor = GGUFFile(path).tensors[name]
    reference = dequantize(tensor.data, gguf.GGMLQuantizationType[tensor.type_name])
    assert same_bits(tensor.dequantize(), reference.reshape(tensor.shape))


def test_fixtures_hold_every_listed_type():
    types = set()
    for path in FIXTURES.glob("*/*.gguf"):
        types |= set(GGUFFile(path).type_counts())
    assert types == set(FORMATS)  # Q5_0, Q5_1: llama.cpp's fallbacks for Q4_K, Q5_K rows that are not whole blocks


def test_q8_0_by_hand():
    """One block written by hand: d = 0.5 (float16), q = -16 .. 15 -> x = 0.5 * q."""
    q = np.arange(-16, 16, dtype=np.int8)
    block = np.concatenate([np.float16(0.5).reshape(1).view(np.uint8), q.view(np.uint8)])[None, :]
    np.testing.assert_array_equal(dequantize_q8_0(block)[0], 0.5 * q.astype(np.float32))


def test_q4_k_scale_packing_by_hand():
    """Eight 6-bit scales and mins packed by the layout unpack_q4_k_scales documents, decoded back."""
    scales = np.array([10, 20, 30, 40, 50, 60, 61, 63], dtype=np.uint8)
    mins = np.array([1, 2, 3, 4, 51, 52, 53, 58], dtype=np.uint8)
    packed = np.zeros(12, dtype=np.uint8)
    packed[0:4] = scales[:4] | ((scales[4:] >> 4) << 6)  # low 6 bits of scale j, top 2 bits of scale j + 4
    packed[4:8] = mins[:4] | ((mins[4:] >> 4) << 6)
    packed[8:12] = (scales[4:] & 0x0F) | ((mins[4:] & 0x0F) << 4)
    got_scales, got_mins = unpack_q4_k_scales(packed[None, :])
    np.testing.assert_array_equal(got_scales[0], scales)
    np.testing.assert_array_equal(got_mins[0], mins)


def test_q4_k_by_hand():
    """d = 1, dmin = 0.5, every scale 2 and min 3, every 4-bit q = 5: x = 1 * 2 * 5 - 0.5 * 3 = 8.5."""
    block = np.zeros(144, dtype=np.uint8)
    block[0:2] = np.float16(1.0).reshape(1).view(np.uint8)
    block[2:4] = np.float16(0.5).reshape(1).view(np.uint8)
    block[4:8], block[8:12] = 2, 3  # scales and mins 0-3 (below 16: no high bits to spill)
    block[12:16] = 2 | (3 << 4)  # scales 4-7 (low nibble) and mins 4-7 (high nibble)
    block[16:] = 5 | (5 << 4)
    np.testing.assert_array_equal(dequantize_q4_k(block[None, :]), np.full((1, 256), 8.5, dtype=np.float32))
