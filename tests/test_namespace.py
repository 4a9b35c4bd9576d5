"""The NumPy namespace the blocks get (blocks/namespace.py): array-api-compat's, with five functions sent
straight to NumPy's methods and ufunc reductions, giving the same arrays (values, dtypes, shapes, views) as
array-api-compat's own functions for every argument form, and still recognised as NumPy's namespace."""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy as compat_numpy
import array_api_strict
import numpy as np
import pytest

from arcee_np.blocks.namespace import DIRECT_NUMPY_CALLS, array_namespace, numpy_namespace

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64, np.bool_]


def arrays(rng):
    """Arrays of every dtype the package reduces: contiguous, transposed (non-contiguous), 0-d and empty rows."""
    for dtype in DTYPES:
        base = rng.normal(size=(3, 4, 5)) * 50
        x = base.astype(dtype) if dtype is not np.bool_ else base > 0
        yield x
        yield np.transpose(x, (2, 0, 1))
        yield x[..., 0, 0]
        yield np.asarray(x[0, 0, 0])


def same(got, expected):
    assert type(got) is type(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype and np.shape(got) == np.shape(expected)
    np.testing.assert_array_equal(got, expected)


def test_the_namespace_is_numpy_s():
    xp = array_namespace(np.zeros(3, dtype=np.float32))
    assert xp is numpy_namespace and array_api_compat.is_numpy_namespace(xp)
    assert xp.__name__ == compat_numpy.__name__ and xp.__array_api_version__ == compat_numpy.__array_api_version__
    for name, value in vars(compat_numpy).items():
        if name not in DIRECT_NUMPY_CALLS and not name.startswith("__"):
            assert getattr(xp, name) is value, name


def test_other_libraries_keep_their_namespace():
    assert array_namespace(array_api_strict.asarray([1.0])) is array_api_strict


@pytest.mark.parametrize("name", ["max", "sum"])
def test_reductions_equal_numpy_s(rng, name):
    direct, reference = DIRECT_NUMPY_CALLS[name], getattr(compat_numpy, name)
    for x in arrays(rng):
        axes = [None] + list(range(-x.ndim, x.ndim)) + ([(0, x.ndim - 1)] if x.ndim >= 2 else [])
        for axis in axes:
            for keepdims in (False, True):
                same(direct(x, axis=axis, keepdims=keepdims), reference(x, axis=axis, keepdims=keepdims))
    x = rng.normal(size=(4, 6)).astype(np.float16)
    same(DIRECT_NUMPY_CALLS["sum"](x, axis=-1, dtype=np.float32), compat_numpy.sum(x, axis=-1, dtype=np.float32))
    nan = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, -np.inf]], dtype=np.float32)
    same(DIRECT_NUMPY_CALLS["max"](nan, axis=-1), compat_numpy.max(nan, axis=-1))


def test_max_of_nothing_refuses_as_numpy_does():
    with pytest.raises(ValueError):
        DIRECT_NUMPY_CALLS["max"](np.zeros((2, 0)), axis=-1)


def test_shape_functions_equal_numpy_s_and_give_views(rng):
    for x in arrays(rng):
        if x.ndim < 2:
            continue
        axes = tuple(reversed(range(x.ndim)))
        same(DIRECT_NUMPY_CALLS["permute_dims"](x, axes), compat_numpy.permute_dims(x, axes))
        same(DIRECT_NUMPY_CALLS["matrix_transpose"](x), compat_numpy.matrix_transpose(x))
        for shape in [(-1,), (x.shape[0], -1), (*x.shape, 1)]:
            got = DIRECT_NUMPY_CALLS["reshape"](x, shape)
            same(got, compat_numpy.reshape(x, shape))
            assert np.shares_memory(got, x) == np.shares_memory(compat_numpy.reshape(x, shape), x)
    x = rng.normal(size=(2, 3))
    copied = DIRECT_NUMPY_CALLS["reshape"](x, (3, 2), copy=True)
    assert not np.shares_memory(copied, x)
    with pytest.raises(ValueError):
        DIRECT_NUMPY_CALLS["reshape"](x.T, (6,), copy=False)  # no view possible: refused, as the array API says
    with pytest.raises(ValueError):
        DIRECT_NUMPY_CALLS["matrix_transpose"](np.zeros(3))
