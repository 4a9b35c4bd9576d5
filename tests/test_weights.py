"""Weights kept in their stored dtype (arcee_np/io/weights.py): exact widening, the memory policy, and the
blocks' use of stored weights.

The references here are NumPy's and ml_dtypes' own conversions (independent of arcee_np's bit tricks) and
the models built with the other policy; the numbers against transformers are in test_golden.py.
"""

from __future__ import annotations

import importlib
import mmap

import ml_dtypes
import numpy as np
import pytest

from arcee_np import ArceeForCausalLM
from arcee_np.blocks import embed, linear
from arcee_np.io import weights
from arcee_np.io.checkpoint import read_checkpoint
from arcee_np.io.weights import StoredWeight, place_weights, widen_bfloat16, widen_float16

from conftest import random_model, small_config

ALL_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bfloat16_widening_is_exact_for_every_bit_pattern(dtype):
    values = ALL_BITS.view(ml_dtypes.bfloat16)
    with np.errstate(invalid="ignore"):  # NaN payloads
        expected = values.astype(dtype)
        got = widen_bfloat16(values, np.dtype(dtype))
    assert got.dtype == dtype
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    assert same.all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float16_widening_is_exact_for_every_bit_pattern(dtype):
    values = ALL_BITS.view(np.float16)
    with np.errstate(invalid="ignore"):  # NaN payloads
        expected = values.astype(dtype)
        got = widen_float16(values, np.dtype(dtype))
    assert got.dtype == dtype
    finite = np.isfinite(expected)
    assert np.array_equal(got[finite].view(np.uint8), expected[finite].view(np.uint8))  # signed zeros too
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(got[np.isinf(expected)], expected[np.isinf(expected)])


def test_linear_and_embed_use_a_stored_weight_tile_by_tile(rng, monkeypatch):
    """A stored weight gives the product of its widened values; linear asks for row tiles, embed for rows."""
    monkeypatch.setattr(importlib.import_module("arcee_np.blocks.stored"), "ROW_TILE_ELEMENTS", 3 * 16)  # 3 rows a tile
    data = rng.normal(size=(7, 16)).astype(ml_dtypes.bfloat16)
    weight = StoredWeight(data, np.dtype(np.float32), np.float32, "bfloat16")
    asked = []
    original = weight.widened_rows
    weight.widened_rows = lambda start, stop: asked.append((start, stop)) or original(start, stop)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    dense = data.astype(np.float32)
    np.testing.assert_allclose(linear(x, weight), x @ dense.T, rtol=1e-6, atol=1e-6)
    assert asked == [(0, 3), (3, 6), (6, 7)]
    ids = np.array([[6, 0, 6]])
    assert np.array_equal(embed(ids, weight), dense[ids])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_products_round_once_from_float32(rng, dtype):
    """float16/bfloat16 linear = the float32 product of the same values, rounded once (torch's CPU kernels)."""
    low = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float16)
    x = rng.normal(size=(4, 24)).astype(low)
    w = rng.normal(size=(10, 24)).astype(low)
    b = rng.normal(size=(10,)).astype(low)
    expected = (x.astype(np.float32) @ w.astype(np.float32).T + b.astype(np.float32)).astype(low)
    got = linear(x, w, b)
    assert got.dtype == low and np.array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_per_use_equals_at_load(tmp_path, rng):
    """The two policies hold the same values; float32 results differ only by the products' summation order,
    float64 ones by less than 1e-12."""
    model = random_model(small_config())
    bf16 = {name: w.astype(ml_dtypes.bfloat16) for name, w in model.state_dict().items()}
    ids = rng.integers(0, model.config.vocab_size, (2, 9))
    for dtype, tolerance in (("float32", 1e-5), ("float64", 1e-12)):
        at_load = ArceeForCausalLM.from_state_dict(model.config, bf16, dtype=dtype, widen="at_load")
        per_use = ArceeForCausalLM.from_state_dict(model.config, bf16, dtype=dtype, widen="per_use")
        assert all(isinstance(w, StoredWeight) for w in per_use.params.values() if w.ndim == 2)
        assert not any(isinstance(w, StoredWeight) for w in at_load.params.values())
        difference = np.abs(at_load(ids).logits - per_use(ids).logits).max()
        assert difference <= tolerance, (dtype, difference)


def test_per_use_keeps_the_file_mapped(tmp_path):
    """Stored weights are the memory-mapped file's own bytes: nothing is copied at load."""
    model = random_model(small_config())
    ArceeForCausalLM.from_state_dict(model.config, model.state_dict(), dtype="bfloat16").save_pretrained(tmp_path)
    loaded = ArceeForCausalLM.from_pretrained(tmp_path, widen="per_use")
    up = loaded.params["layers.0.mlp.up_proj.weight"]
    assert isinstance(up, StoredWeight) and up.stored_dtype == "bfloat16"
    assert not up.data.flags.owndata and not up.data.flags.writeable


def test_auto_widens_at_load_only_within_the_budget(monkeypatch):
    model = random_model(small_config())
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in model.state_dict().items()}
    extra = weights.widening_extra_bytes(tensors, "float32")
    assert extra == sum(v.size * 2 for v in tensors.values() if v.ndim == 2)  # bfloat16 -> float32: 2 bytes each
    assert weights.resolve_widen_policy("auto", tensors, "float32") == "at_load"
    monkeypatch.setattr(weights, "AUTO_WIDEN_EXTRA_BYTES", extra - 1)
    assert weights.resolve_widen_policy("auto", tensors, "float32") == "per_use"
    assert weights.widening_extra_bytes({k: v.astype(np.float32) for k, v in tensors.items()}, "float32") == 0
    with pytest.raises(ValueError, match="unknown widen='lazy'"):
        weights.resolve_widen_policy("lazy", tensors, "float32")


def test_values_the_model_dtype_cannot_hold_are_rounded_once_at_load():
    """A float32 matrix in a float16 model holds float16 values (as transformers' .half() would)."""
    matrix = np.array([[1.0 + 2.0**-12, 3.0], [6e4, -1e-8]], dtype=np.float32)
    placed = place_weights({"w": matrix}, np, np.dtype(np.float16), widen="per_use")["w"]
    assert placed.stored_dtype == "float16"
    assert np.array_equal(placed.widened_rows(0, 2), matrix.astype(np.float16).astype(np.float32))


def test_state_dict_and_save_are_in_the_model_dtype(tmp_path, rng):
    model = random_model(small_config())
    ids = rng.integers(0, model.config.vocab_size, (1, 6))
    bf16 = ArceeForCausalLM.from_state_dict(model.config, model.state_dict(), dtype="bfloat16", widen="per_use")
    assert {str(v.dtype) for v in bf16.state_dict().values()} == {"bfloat16"}
    bf16.save_pretrained(tmp_path)
    again = ArceeForCausalLM.from_pretrained(tmp_path, dtype="bfloat16")
    assert np.array_equal(again(ids).logits.view(np.uint16), bf16(ids).logits.view(np.uint16))


def _is_mapped(array) -> bool:
    """Whether a NumPy array's memory is the memory map of a checkpoint file (not a copy)."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return False


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("widen", ["at_load", "per_use"])
def test_weight_memory_states_what_loading_does(tmp_path, stored, dtype, widen):
    """weight_memory (what ``arcee-np info`` prints) equals the bytes the loaded model really holds mapped
    from the file and copied into the process."""
    model = random_model(small_config())
    source = ArceeForCausalLM.from_state_dict(model.config, model.state_dict(), dtype=stored)
    source.save_pretrained(tmp_path)
    loaded = ArceeForCausalLM.from_pretrained(tmp_path, dtype=dtype, widen=widen)
    held = [w.data if isinstance(w, StoredWeight) else w for w in (*loaded.params.values(),
                                                                   *loaded.head_params.values())]
    mapped = sum(a.nbytes for a in held if _is_mapped(a))
    copied = sum(a.nbytes for a in held if not _is_mapped(a))
    tensors = read_checkpoint(tmp_path)
    assert weights.weight_memory(tensors, dtype, widen) == {"policy": widen, "mapped_bytes": mapped,
                                                           "copied_bytes": copied}
