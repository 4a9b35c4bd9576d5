"""``array_namespace`` remembered per input types, with NumPy's most frequent calls made direct.

The namespace array-api-compat returns depends only on the types of the arrays (NumPy, CuPy,
array_api_strict ...), so the answer for a tuple of types is looked up once and reused: a decode step asks
for it a few hundred times.

On NumPy the blocks get array-api-compat's NumPy namespace with five functions sent straight to the array's
methods and to the ufuncs' reductions: ``reshape``, ``permute_dims``, ``matrix_transpose``, ``max`` and
``sum``. NumPy's public functions first pass through a dispatch layer (``__array_function__`` and keyword
handling) that costs 0.5-2 us a call, more than the work itself on a decode step's small arrays, and a step
of the 125M model makes about 400 such calls (docs/performance.md). The results are the same arrays, values,
dtypes and views alike (tests/test_namespace.py); every other function is array-api-compat's own, and the
namespace keeps its name, so ``array_api_compat.is_numpy_namespace`` still recognises it.
"""

import types

import array_api_compat.numpy as compat_numpy
import numpy as np
from array_api_compat import array_namespace as _array_namespace


def _reshape(x, /, shape, *, copy=None):
    """``reshape`` as the array API defines it: a view where the layout allows (``copy=None``)."""
    return x.reshape(shape) if copy is None else compat_numpy.reshape(x, shape, copy=copy)


def _permute_dims(x, /, axes):
    return x.transpose(axes)


def _matrix_transpose(x, /):
    return x.swapaxes(-1, -2) if x.ndim >= 2 else compat_numpy.matrix_transpose(x)  # the latter raises


def _max(x, /, *, axis=None, keepdims=False):
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)


def _sum(x, /, *, axis=None, dtype=None, keepdims=False):
    return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)


DIRECT_NUMPY_CALLS = {"reshape": _reshape, "permute_dims": _permute_dims, "matrix_transpose": _matrix_transpose,
                      "max": _max, "sum": _sum}

numpy_namespace = types.ModuleType(compat_numpy.__name__, compat_numpy.__doc__)
numpy_namespace.__dict__.update(vars(compat_numpy) | DIRECT_NUMPY_CALLS)

_known: dict = {}


def array_namespace(*arrays):
    """The array-API namespace of ``arrays`` (as array_api_compat.array_namespace, with NumPy's direct calls
    above), cached by type."""
    key = tuple(map(type, arrays))
    namespace = _known.get(key)
    if namespace is None:
        namespace = _array_namespace(*arrays)
        if namespace is compat_numpy:
            namespace = numpy_namespace
        _known[key] = namespace
    return namespace
