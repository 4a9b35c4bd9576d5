"""The xp switch: which array library runs the model, moving arrays there and back, dtype names.

Three devices:

* ``"cpu"``: NumPy (through array-api-compat's NumPy namespace, so blocks see the standard API);
* ``"cuda"``: CuPy on a CUDA GPU;
* ``"array_api_strict"``: the array-API reference library, on the CPU. Slow, but it refuses every call
  outside the standard, so a forward that runs on it has no NumPy-only call that would break on CuPy.

Blocks never import this module: they take ``xp = array_namespace(*inputs)`` from their inputs.
"""

from __future__ import annotations

from types import ModuleType

import warnings

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array

from .blocks.namespace import array_namespace
from .errors import DeviceError, InputError

DEVICES = ("cpu", "cuda", "array_api_strict")
# The dtypes a model computes in, name -> bytes a number: the one list (the CLI, the checkpoint checks and the
# argument checks read it from here).
DTYPES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}

__all__ = ["DEVICES", "DTYPES", "array_namespace", "namespace_for_device", "resolve_dtype", "to_device",
           "to_numpy", "device_of"]


def namespace_for_device(device: str) -> ModuleType:
    """The array namespace for ``device`` (see the module docstring); a clear error if it is unusable."""
    if device == "cpu":
        import array_api_compat.numpy as xp

        return xp
    if device == "cuda":
        try:
            import cupy  # noqa: F401
            import array_api_compat.cupy as xp
        except ImportError as err:
            raise DeviceError(
                'device="cuda" needs CuPy: pip install "arcee-np[gpu]" (cupy-cuda12x) on a machine with a CUDA GPU.'
            ) from err
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as err:  # CUDA driver missing or broken
            raise DeviceError(f'device="cuda": CuPy is installed but no CUDA GPU is usable ({err}).') from err
        if count == 0:
            raise DeviceError('device="cuda": CuPy is installed but no CUDA GPU was found.')
        return xp
    if device == "array_api_strict":
        try:
            import array_api_strict as xp
        except ImportError as err:
            raise DeviceError('device="array_api_strict" needs: pip install array-api-strict') from err
        return xp
    raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}.")


def resolve_dtype(xp: ModuleType, dtype: str):
    """The ``xp`` dtype object for a dtype name in DTYPES.

    bfloat16 is ml_dtypes' ``bfloat16`` on NumPy (the dtype JAX uses); CuPy and array_api_strict have
    none, and array_api_strict has no float16 either: asking for them is an error that says so.
    """
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    device = device_of(xp)
    if dtype == "bfloat16" and device == "cpu":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if not hasattr(xp, dtype):
        usable = [name for name in DTYPES if hasattr(xp, name) and name != "bfloat16"]
        raise InputError(f'dtype="{dtype}" is not available on device="{device}" (its array library has no '
                         f'{dtype}); choose one of {", ".join(usable)}, or run on device="cpu".')
    return getattr(xp, dtype)


def device_of(xp: ModuleType) -> str:
    """The device name of a namespace returned by namespace_for_device."""
    name = xp.__name__
    if "cupy" in name:
        return "cuda"
    if "array_api_strict" in name:
        return "array_api_strict"
    return "cpu"


_DLPACK_CUDA = 2  # kDLCUDA in DLPack's device enum


def _on_cuda(x) -> bool:
    """Whether ``x`` is a non-CuPy array living on a CUDA device (a torch CUDA tensor ...) per DLPack."""
    try:
        return x.__dlpack_device__()[0] == _DLPACK_CUDA
    except Exception:
        return False


def to_device(x, xp: ModuleType, dtype=None):
    """``x`` (a NumPy array, a scalar, or an array of any supported library) as an ``xp`` array.

    NumPy arrays stay NumPy arrays on the CPU (no copy when the dtype already matches). For ``"cuda"``,
    CuPy arrays and other CUDA arrays (torch CUDA tensors, via DLPack) stay on the GPU: no host round trip,
    no copy when the dtype already matches (the result then shares the caller's memory).
    """
    if device_of(xp) == "cuda" and not is_cupy_array(x) and _on_cuda(x):
        import cupy

        x = cupy.from_dlpack(x)
    if not (is_numpy_array(x) or is_cupy_array(x) or np.isscalar(x) or isinstance(x, (list, tuple))):
        x = to_numpy(x)
    if device_of(xp) == "cpu":
        return np.asarray(to_numpy(x) if is_cupy_array(x) else x, dtype=dtype)
    if device_of(xp) == "cuda" and is_cupy_array(x):
        return x if dtype is None else x.astype(dtype, copy=False)
    return xp.asarray(np.asarray(x) if not is_cupy_array(x) else x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    """Any supported array (NumPy, CuPy, array_api_strict) as a NumPy array on the host."""
    if x is None or is_numpy_array(x):
        return x
    if is_cupy_array(x):
        return x.get()
    if _on_cuda(x):  # a torch CUDA tensor ...: through CuPy, which reads it in place
        import cupy

        return cupy.from_dlpack(x).get()
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


def __getattr__(name: str):
    """``is_wide``, which moved: ``blocks.precision.product_dtype(xp, dtype) == dtype`` is the one rule now."""
    if name == "is_wide":
        from .blocks.precision import product_dtype

        warnings.warn("arcee_np.backend.is_wide is deprecated: use arcee_np.blocks.precision.product_dtype "
                      "(is_wide(xp, d) is product_dtype(xp, d) == d)", DeprecationWarning, stacklevel=2)
        return lambda xp, dtype: product_dtype(xp, dtype) == dtype
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
