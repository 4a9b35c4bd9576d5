"""Products with a weight, ``rows @ weight.T``, computed weight first for a few rows (blocks/precision.py
``times_transposed``): the same numbers to the rounding of the products' order, on NumPy and
array_api_strict, through ``linear`` and a stored weight's tiled product alike."""

from __future__ import annotations

import array_api_strict
import ml_dtypes
import numpy as np
import pytest

from arcee_np.blocks import linear
from arcee_np.blocks.precision import SKINNY_ROWS, times_transposed
from arcee_np.io.weights import StoredWeight

ROWS = [1, 2, 7, 64, SKINNY_ROWS, SKINNY_ROWS + 1, 300]


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_equals_the_formula(rng, rows, dtype, tolerance):
    x, w = rng.normal(size=(rows, 96)).astype(dtype), rng.normal(size=(40, 96)).astype(dtype)
    got = times_transposed(x, w)
    assert got.shape == (rows, 40) and got.dtype == dtype
    np.testing.assert_allclose(got, (x.astype(np.float64) @ w.astype(np.float64).T), rtol=tolerance,
                               atol=tolerance * 10)
    if rows == 1 or rows > SKINNY_ROWS:  # the formula itself, as written
        np.testing.assert_array_equal(got, x @ w.T)


def test_runs_on_array_api_strict(rng):
    x, w = rng.normal(size=(5, 8)), rng.normal(size=(3, 8))
    got = times_transposed(array_api_strict.asarray(x), array_api_strict.asarray(w))
    assert type(got).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got), x @ w.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [1, 16, 300])
def test_linear_and_the_stored_product_agree(rng, rows):
    """A bfloat16 weight kept stored (widened tile by tile) and widened whole: the same products, whichever
    order each runs in, to float32 rounding."""
    weight = rng.normal(size=(70, 48)).astype(ml_dtypes.bfloat16)
    x = rng.normal(size=(1, rows, 48)).astype(np.float32)
    stored = StoredWeight(weight, np.float32, np.float32, "bfloat16")
    widened = weight.astype(np.float32)
    np.testing.assert_allclose(linear(x, stored), linear(x, widened), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(linear(x, widened), x @ widened.T, rtol=2e-5, atol=2e-5)
