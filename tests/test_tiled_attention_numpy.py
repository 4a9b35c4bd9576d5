"""The NumPy layout of tiled attention (blocks/tiled_attention_numpy.py) equals the reference tiled path to
float32 rounding (float64: 1e-12) at a real model's shape and in a whole model with a cache (its equality to
eager over tile sizes, masks and head layouts is tests/test_tiled_attention.py's); it runs the reference where
its in-place passes are not available (array_api_strict, 16-bit floats); and the models' default "auto" picks
it on NumPy only."""

from __future__ import annotations

import array_api_strict
import ml_dtypes
import numpy as np
import pytest

from arcee_np import ArceeForCausalLM, KVCache
from arcee_np.blocks import StepMask, attention, causal_padding_mask, tiled_attention
from arcee_np.blocks.tiled_attention_numpy import tiled_attention_numpy

from conftest import random_model, small_attention_tiles, small_config


def test_numpy_layout_at_a_real_models_shape(rng):
    """12 query heads over 4 KV heads of 64, 700 positions after 100 cached ones, default tiles: the
    reference's numbers to float32 rounding."""
    q = rng.normal(size=(1, 12, 700, 64)).astype(np.float32)
    k, v = (rng.normal(size=(1, 4, 800, 64)).astype(np.float32) for _ in range(2))
    step = StepMask(np.ones((1, 800), dtype=np.int64), None, None, 100, 700, np.float32)
    expected, _ = tiled_attention(q, k, v, step, 0.125)
    np.testing.assert_allclose(tiled_attention_numpy(q, k, v, step, 0.125)[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_sixteen_bit_floats_take_the_reference(rng, dtype):
    """float16/bfloat16 round their probabilities as eager does, which only the reference's two passes can:
    the NumPy layout hands them to it, so the numbers are the reference's exactly."""
    q, k, v = (rng.normal(size=shape).astype(dtype) for shape in ((1, 4, 37, 16), (1, 2, 37, 16), (1, 2, 37, 16)))
    step = StepMask(np.ones((1, 37), dtype=np.int64), None, None, 0, 37, dtype)
    expected, _ = tiled_attention(q, k, v, step, 0.25, query_tile=8, key_tile=6)
    np.testing.assert_array_equal(tiled_attention_numpy(q, k, v, step, 0.25, query_tile=8, key_tile=6)[0], expected)


def test_other_namespaces_take_the_reference(rng):
    """On array_api_strict (no ``out=``) the NumPy layout runs the reference: the same numbers exactly."""
    q = array_api_strict.asarray(rng.normal(size=(1, 4, 20, 8)))
    k, v = (array_api_strict.asarray(rng.normal(size=(1, 2, 20, 8))) for _ in range(2))
    step = StepMask(array_api_strict.ones((1, 20), dtype=array_api_strict.int64), None, None, 0, 20, q.dtype)
    expected, _ = tiled_attention(q, k, v, step, 0.5, query_tile=7, key_tile=5)
    got, _ = tiled_attention_numpy(q, k, v, step, 0.5, query_tile=7, key_tile=5)
    assert type(got) is type(expected)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    causal = causal_padding_mask(np.ones((1, 20), dtype=np.int64), 20, np.float64)
    np.testing.assert_allclose(np.asarray(got), attention(np.asarray(q), np.asarray(k), np.asarray(v), causal,
                                                          0.5)[0], rtol=0, atol=1e-12)


def test_auto_runs_the_numpy_layout_on_numpy_and_the_reference_elsewhere():
    """choose_attention resolves the models' default "auto": the NumPy layout on NumPy, the reference tiled
    path on array_api_strict; eager still wherever the step's scores fit one tile."""
    from arcee_np.model import choose_attention

    q, k = np.zeros((1, 12, 512, 64), dtype=np.float32), np.zeros((1, 4, 512, 64), dtype=np.float32)
    assert choose_attention("auto", 0, q, k) == "tiled_numpy"
    assert choose_attention("tiled", 0, q, k) == "tiled"
    assert choose_attention("auto", 0, q[:, :, :1], k) == "eager"  # a decode step: one tile
    strict_q, strict_k = array_api_strict.asarray(q), array_api_strict.asarray(k)
    assert choose_attention("auto", 0, strict_q, strict_k) == "tiled"
    assert ArceeForCausalLM.from_config(small_config()).attn_implementation == "auto"


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)])
def test_numpy_layout_model_equals_the_reference_model_with_a_cache(rng, dtype, tolerance):
    """A prefill and decode steps through the KV cache, with left padding, over tiles of 3 queries and 5 keys:
    the NumPy layout's logits are the reference tiled path's."""
    models = [random_model(small_config(), dtype=dtype, attn_implementation=name) for name in ("tiled_numpy",
                                                                                               "tiled")]
    ids = rng.integers(0, 97, (2, 30))
    mask = np.ones((2, 30), dtype=np.int64)
    mask[1, :4] = 0
    caches = KVCache(2), KVCache(2)
    with small_attention_tiles():
        for lo, hi in ((0, 17), (17, 18), (18, 25), (25, 26)):
            outs = [m(ids[:, lo:hi], attention_mask=mask[:, :hi], past_key_values=c, use_cache=True).logits
                    for m, c in zip(models, caches, strict=True)]
            valid = mask[:, lo:hi].astype(bool)
            np.testing.assert_allclose(outs[0][valid], outs[1][valid], rtol=0, atol=tolerance)
