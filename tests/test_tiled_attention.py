"""Tiled attention (blocks/tiled_attention.py) equals eager attention (blocks/attention.py), the readable
reference whose numbers test_golden.py holds against transformers: over tile sizes (1, odd, larger than the
sequence), padding on either side, packed rows, caches that do not start at zero, MHA/GQA/MQA, a caller's
4-D mask, float32 (to float32 rounding) and float64 (1e-12), NumPy and array_api_strict; and the tiled
path builds no [T, S]-sized mask."""

from __future__ import annotations

import importlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcee_np import ArceeForCausalLM, KVCache
from arcee_np.blocks import attention, causal_padding_mask, packed_causal_mask, packed_segments, tiled_attention
from arcee_np.model import StepMask

from conftest import random_model, small_config

tiled_module = importlib.import_module("arcee_np.blocks.tiled_attention")  # the package exports the function

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


@st.composite
def problems(draw):
    kv = draw(st.sampled_from([1, 2, 3]))
    heads = kv * draw(st.sampled_from([1, 2, 4]))  # MQA, GQA and MHA
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 19))
    past = draw(st.sampled_from([0, 0, 1, 7]))
    head_dim = draw(st.sampled_from([2, 4, 8]))
    kind = draw(st.sampled_from(["causal", "left", "right", "packed", "given"]))
    if kind == "packed":
        past = 0  # packed rows come without a cache
    tiles = (draw(st.sampled_from([1, 2, 3, 5, 7, 64])), draw(st.sampled_from([1, 2, 3, 5, 11, 64])))
    return batch, heads, kv, length, past, head_dim, kind, tiles, draw(st.integers(0, 2**31 - 1))


def masks(kind, batch, length, past, rng, dtype):
    """(key_mask, segments, given 4-D mask) for tiled_attention and the additive mask for eager, in dtype."""
    total = past + length
    key_mask = np.ones((batch, total), dtype=np.int64)
    if kind in ("left", "right"):
        for b in range(batch):
            pads = rng.integers(0, total)  # may pad a whole row's queries: padding rows are compared too
            if kind == "left":
                key_mask[b, :pads] = 0
            else:
                key_mask[b, total - pads:] = 0
    if kind == "packed":
        starts = rng.random((batch, length)) < 0.3
        starts[:, 0] = True
        positions = np.zeros((batch, length), dtype=np.int64)
        for b in range(batch):
            for t in range(1, length):
                positions[b, t] = 0 if starts[b, t] else positions[b, t - 1] + 1
        segments = np.asarray(packed_segments(positions))
        return None, segments, None, packed_causal_mask(segments, dtype)
    eager = causal_padding_mask(key_mask, length, dtype)
    if kind == "given":
        return None, None, eager, eager
    return key_mask, None, None, eager


@settings(max_examples=150, deadline=None)
@given(problem=problems(), dtype=st.sampled_from([np.float32, np.float64]))
def test_tiled_equals_eager(problem, dtype):
    batch, heads, kv, length, past, head_dim, kind, (query_tile, key_tile), seed = problem
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, heads, length, head_dim)).astype(dtype)
    k = rng.normal(size=(batch, kv, past + length, head_dim)).astype(dtype)
    v = rng.normal(size=(batch, kv, past + length, head_dim)).astype(dtype)
    key_mask, segments, given, eager_mask = masks(kind, batch, length, past, rng, dtype)
    expected, _ = attention(q, k, v, eager_mask, head_dim**-0.5)
    step = StepMask(key_mask, segments, given, past, length, dtype)
    got, _ = tiled_attention(q, k, v, step, head_dim**-0.5, query_tile=query_tile, key_tile=key_tile)
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_sixteen_bit_tiled_rounds_as_eager(rng, dtype):
    """In float16/bfloat16 the two-pass path rounds scores and probabilities where eager does: the same
    numbers up to the products' summation order (at most one ulp here)."""
    q, k, v = (rng.normal(size=shape).astype(dtype) for shape in ((2, 4, 37, 16), (2, 2, 37, 16), (2, 2, 37, 16)))
    key_mask = np.ones((2, 37), dtype=np.int64)
    key_mask[1, :5] = 0
    expected, _ = attention(q, k, v, causal_padding_mask(key_mask, 37, dtype), 0.25)
    got, _ = tiled_attention(q, k, v, StepMask(key_mask, None, None, 0, 37, dtype), 0.25, query_tile=8, key_tile=6)
    ulp = float(np.finfo(np.float16).eps if dtype == np.float16 else ml_dtypes.finfo(dtype).eps)
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=ulp, atol=ulp)


def test_causal_tiles_above_the_diagonal_are_skipped(monkeypatch):
    """With 4 query tiles and 4 key tiles of the same size, only the 10 tiles on or below the diagonal are
    computed, and only the 4 on it are masked."""
    computed = []
    original_scores = tiled_module.masked_scores
    monkeypatch.setattr(tiled_module, "masked_scores", lambda *a: computed.append(a[2][2:]) or original_scores(*a))
    masked = record_masked_tiles(monkeypatch)
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, 2, 16, 4)) for _ in range(3))
    tiled_attention(q, k, v, StepMask(None, None, None, 0, 16, q.dtype), 0.5, query_tile=4, key_tile=4)
    assert len(computed) == 10
    assert sorted(masked) == [(0, 0, 4), (4, 4, 8), (8, 8, 12), (12, 12, 16)]


def record_masked_tiles(monkeypatch):
    """A list that collects ``(q0, k0, k1)`` of every tile for which tile_keep builds a mask (in any order:
    the query tiles may run side by side)."""
    masked = []
    original_keep = tiled_module.tile_keep

    def keep(xp, mask, tile):
        result = original_keep(xp, mask, tile)
        if result is not None:
            masked.append((tile.q0, tile.k0, tile.k1))
        return result

    monkeypatch.setattr(tiled_module, "tile_keep", keep)
    return masked


@pytest.mark.parametrize("padding", ["left", "right", "none"])
def test_the_tiled_forward_builds_no_whole_mask(monkeypatch, rng, padding):
    """The model's tiled path never asks for the [B, 1, T, S] mask and builds masks a tile at a time."""
    model = random_model(small_config())
    monkeypatch.setattr(StepMask, "additive", lambda self: pytest.fail("the tiled path built the whole mask"))
    shapes = []
    original = tiled_module.allowed
    monkeypatch.setattr(tiled_module, "allowed", lambda *a: shapes.append((len(a[0]), len(a[1]))) or original(*a))
    monkeypatch.setattr(tiled_module, "SCORE_TILE_ELEMENTS", 4 * 8 * 8)  # 4 heads: 8 x 8 tiles of scores
    monkeypatch.setattr(tiled_module, "QUERY_TILE", 8)
    mask = np.ones((2, 40), dtype=np.int64)
    if padding == "left":
        mask[1, :9] = 0
    elif padding == "right":
        mask[0, 30:] = 0
    model(rng.integers(0, 97, (2, 40)), attention_mask=None if padding == "none" else mask, use_cache=False)
    assert shapes and max(shapes) <= (8, 64) and max(s[0] * s[1] for s in shapes) <= 8 * 64


def test_tiled_and_eager_models_agree_with_a_cache(rng):
    """A prefill and decode steps through the KV cache (cache not starting at zero) give the same logits
    with both implementations, float32 and float64."""
    for dtype, tolerance in (("float32", 1e-5), ("float64", 1e-12)):
        tiled = random_model(small_config(), dtype=dtype)
        eager = random_model(small_config(), dtype=dtype, attn_implementation="eager")
        ids = rng.integers(0, 97, (2, 30))
        mask = np.ones((2, 30), dtype=np.int64)
        mask[1, :4] = 0
        caches = KVCache(2), KVCache(2)
        for lo, hi in ((0, 17), (17, 18), (18, 25), (25, 26)):
            outs = [m(ids[:, lo:hi], attention_mask=mask[:, :hi], past_key_values=c, use_cache=True).logits
                    for m, c in zip((tiled, eager), caches)]
            valid = mask[:, lo:hi].astype(bool)
            np.testing.assert_allclose(outs[0][valid], outs[1][valid], rtol=0, atol=tolerance)


def test_tiled_runs_on_array_api_strict(rng):
    """The whole tiled forward on array_api_strict arrays gives NumPy's numbers (float64: 1e-12)."""
    pytest.importorskip("array_api_strict")
    model = random_model(small_config(), dtype="float64")
    strict = random_model(small_config(), dtype="float64", device="array_api_strict")
    ids = rng.integers(0, 97, (2, 21))
    mask = np.ones((2, 21), dtype=np.int64)
    mask[0, :6] = 0
    got = strict(ids, attention_mask=mask, use_cache=False).logits
    assert type(got).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got), model(ids, attention_mask=mask, use_cache=False).logits,
                               rtol=0, atol=1e-12)


def test_unknown_attention_implementation_is_refused():
    with pytest.raises(ValueError, match="'sdpa'.*compute what \"tiled\" computes"):
        ArceeForCausalLM.from_config(small_config(), attn_implementation="sdpa")


def test_key_spans_give_the_causal_diagonal_tiles_of_their_own():
    """Keys before the query tile come in key tiles every query sees; the tile's own diagonal keys come in
    tiles of their own (the only ones the causal mask touches); later keys are skipped."""
    assert tiled_module.key_spans(16, 6, (8, 12)) == [(0, 6), (6, 8), (8, 12)]
    assert tiled_module.key_spans(16, 3, (8, 12)) == [(0, 3), (3, 6), (6, 8), (8, 11), (11, 12)]
    assert tiled_module.key_spans(10, 4, (8, 12)) == [(0, 4), (4, 8), (8, 10)]  # the cache ends inside the diagonal
    assert tiled_module.key_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]  # a given mask: every key


def test_only_diagonal_key_tiles_are_masked(monkeypatch):
    """With query tiles of 4 and key tiles of 6 over 16 causal positions, the tiles of keys before a query
    tile pass unmasked; the mask is built for the 4 diagonal tiles alone, and the result is eager's."""
    masked = record_masked_tiles(monkeypatch)
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(1, 2, 16, 4)) for _ in range(3))
    got, _ = tiled_attention(q, k, v, StepMask(None, None, None, 0, 16, q.dtype), 0.5, query_tile=4, key_tile=6)
    assert sorted(masked) == [(0, 0, 4), (4, 4, 8), (8, 8, 12), (12, 12, 16)]
    expected, _ = attention(q, k, v, causal_padding_mask(np.ones((1, 16)), 16, np.float64), 0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
