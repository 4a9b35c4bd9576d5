"""Weights in the dtype they were stored in, widened exactly where the model needs a wider one.

A checkpoint's matrices stay as the file stores them (float32, float16, bfloat16: memory-mapped, no copy).
When the model computes in a wider dtype (float32 from a bfloat16 file, float64 golden mode, the float32
products of the float16/bfloat16 modes), each matrix is either

* widened once at load into a plain array (fastest: the blocks multiply it as it is), or
* kept as a :class:`StoredWeight`, which widens one tile of rows each time a block uses it (``linear``
  multiplies tile by tile, ``embed`` widens the rows it gathers), so the model needs little more memory
  than the file.

``from_pretrained(..., widen=...)`` chooses: ``"at_load"``, ``"per_use"``, or ``"auto"`` (the default),
which widens at load when that costs at most ``AUTO_WIDEN_EXTRA_BYTES`` more than the stored weights and
per use otherwise. Widening is exact (bfloat16 and float16 are subsets of float32, float32 of float64), so
the two policies give the same numbers up to the order of the products' sums.

Stored values that the model's dtype cannot hold exactly (a float32 file run in float16, bfloat16 run in
float16 ...) are rounded to that dtype once at load, as transformers does when it loads such a checkpoint.
Vectors (norm weights, biases) are small and always converted to the model's dtype at load.
"""

from __future__ import annotations

import functools

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array

from ..backend import device_of, to_device, to_numpy
from ..blocks.namespace import array_namespace
from ..blocks.precision import product_dtype
from ..blocks.stored import StoredMatrix, is_stored
from ..errors import InputError

WIDEN_POLICIES = ("auto", "at_load", "per_use")
AUTO_WIDEN_EXTRA_BYTES = 2 * 1024**3  # "auto" widens at load when that needs at most this much more memory
WIDEN_TILE_ROWS = 256  # rows widened at a time when a whole matrix is widened at load

_FLOAT16_MAGNITUDE_MASK = np.int32(np.uint32(0x8FFFFFFF).view(np.int32))  # keeps the sign and bits 27..0
_FLOAT16_TO_FLOAT32_SCALE = np.float32(2.0**112)  # 2**(127 - 15): float32's exponent bias minus float16's


def dtype_name(dtype) -> str:
    """``"float32"``, ``"bfloat16"`` ...: the name of a NumPy/CuPy/array_api_strict dtype."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).split(".")[-1].rstrip("'>")


# ---------------------------------------------------------------------------------------------- widening
def widen_bfloat16(data, dtype):
    """bfloat16 values (an ml_dtypes array, or their uint16 bits on CuPy) as ``dtype`` (float32/float64).

    A bfloat16 number is the top half of a float32: shifting its 16 bits up by 16 gives the float32 with
    the same value, exactly.
    """
    bits = data if dtype_name(data.dtype) == "uint16" else data.view(np.uint16)
    wide = bits.astype(np.uint32)
    wide <<= 16
    values = wide.view(np.float32)
    return values if dtype_name(dtype) == "float32" else values.astype(dtype)


def widen_float16(data, dtype, specials: bool = True):
    """float16 values as ``dtype`` (float32/float64), exactly, by moving the bits of each number.

    The 16 bits, sign-extended to 32 and shifted left by 13, put float16's 5-bit exponent and 10-bit
    mantissa where float32 keeps the low exponent bits and the mantissa; masking the bits the sign
    extension spilled into the exponent leaves a float32 that is the float16 value times 2**-112, and one
    multiply by 2**112 rescales it (subnormals included). Inf and NaN (exponent 31) come out as magnitudes
    of 65536 or more, which no finite float16 reaches: when two quick reductions find one, those entries are
    converted by ``astype`` instead. ``specials=False`` (the data is known to hold no inf or NaN) skips that.
    """
    wide = data.view(np.int16).astype(np.int32)
    wide <<= 13
    wide &= _FLOAT16_MAGNITUDE_MASK
    values = wide.view(np.float32)
    values *= _FLOAT16_TO_FLOAT32_SCALE
    if specials and values.size and (values.max() >= 65536.0 or values.min() <= -65536.0):  # inf or NaN
        special = np.abs(values) >= 65536.0
        values[special] = data[special].astype(np.float32)
    return values if dtype_name(dtype) == "float32" else values.astype(dtype)


def widen_by_astype(data, dtype):
    """Any array as ``dtype`` through the array library's own ``astype`` (float32 -> float64 ...)."""
    return array_namespace(data).astype(data, dtype)


_WIDENERS = {"bfloat16": widen_bfloat16, "float16": widen_float16}
_EXACT = {("float16", "float32"), ("bfloat16", "float32"), ("float16", "float64"), ("bfloat16", "float64"),
          ("float32", "float64")}


def widens_exactly(stored: str, dtype: str) -> bool:
    """Whether every value of dtype ``stored`` is a value of ``dtype`` (so converting loses nothing)."""
    return stored == dtype or (stored, dtype) in _EXACT


class StoredWeight(StoredMatrix):
    """A checkpoint's matrix kept in its stored dtype and widened a block of rows at a time where it is used.

    A StoredMatrix (blocks/stored.py, whose products the blocks use): ``shape`` ``(rows, cols)``; ``dtype``,
    the dtype its values have in the model; ``stored_dtype``, the storage's name; ``widened_rows(start,
    stop)`` -> [stop - start, cols] and ``widened_take(indices)`` -> [n, cols], both in ``compute_dtype``.

    data: [rows, cols] array in the stored dtype (on CuPy, bfloat16 as its uint16 bits); dtype: the
    model's dtype; compute_dtype: what the rows are widened to (float32 or float64); stored_dtype: name.
    """

    def __init__(self, data, dtype, compute_dtype, stored_dtype: str):
        self.data = data
        self.shape = tuple(data.shape)
        self.dtype = dtype
        self.compute_dtype = compute_dtype
        self.stored_dtype = stored_dtype
        bit_moves = is_numpy_array(data) or is_cupy_array(data)  # libraries that can view bits as another dtype
        self._widen = _WIDENERS.get(stored_dtype, widen_by_astype) if bit_moves else widen_by_astype
        if self._widen is widen_float16:  # look for inf/NaN once here, not in every tile
            specials = bool(((data.view(np.uint16) & 0x7C00) == 0x7C00).any())
            self._widen = functools.partial(widen_float16, specials=specials)

    @property
    def nbytes(self) -> int:
        """Bytes the stored values take."""
        return int(np.prod(self.shape)) * _itemsize(self.stored_dtype)

    def widened_rows(self, start: int, stop: int):
        """Rows ``start:stop`` in the compute dtype: [stop - start, cols]."""
        return self._widen(self.data[start:stop, :], self.compute_dtype)

    def widened_take(self, indices):
        """The rows at ``indices`` (1-D integers) in the compute dtype: [n, cols]."""
        return self._widen(array_namespace(self.data).take(self.data, indices, axis=0), self.compute_dtype)

    def __repr__(self) -> str:
        return (f"StoredWeight(shape={self.shape}, stored_dtype={self.stored_dtype}, "
                f"dtype={dtype_name(self.dtype)}, widened to {dtype_name(self.compute_dtype)})")


# ---------------------------------------------------------------------------------------------- placing
def _placed_dtype(array, model_dtype: str) -> str:
    """The dtype a checkpoint array is kept in: its own when the model's dtype holds it exactly, else the
    model's (rounded once at load)."""
    stored = dtype_name(array.dtype)
    return stored if array.ndim == 2 and widens_exactly(stored, model_dtype) else model_dtype


def widening_extra_bytes(tensors: dict, model_dtype: str) -> int:
    """How many more bytes the matrices of ``tensors`` take widened to the compute dtype than kept
    (model_dtype: the model's dtype name; the compute dtype is float64 in golden mode, else float32)."""
    compute = 8 if model_dtype == "float64" else 4
    extra = 0
    for array in tensors.values():
        size = int(np.prod(array.shape))
        if is_stored(array):
            extra += size * compute - array.nbytes
        elif array.ndim == 2:
            extra += size * max(0, compute - _itemsize(_placed_dtype(array, model_dtype)))
    return extra


def _itemsize(name: str) -> int:
    return 2 if name == "bfloat16" else np.dtype(name).itemsize


def resolve_widen_policy(widen: str, tensors: dict, model_dtype: str) -> str:
    """``"at_load"`` or ``"per_use"`` for a ``widen`` argument (``"auto"`` decides by memory, see the module)."""
    if widen not in WIDEN_POLICIES:
        raise InputError(f"unknown widen={widen!r}; choose one of {', '.join(WIDEN_POLICIES)}.")
    if widen != "auto":
        return widen
    return "at_load" if widening_extra_bytes(tensors, model_dtype) <= AUTO_WIDEN_EXTRA_BYTES else "per_use"


def weight_memory(tensors: dict, model_dtype: str, widen: str = "auto") -> dict:
    """The memory a model's weights take on the CPU, from the checkpoint's ``tensors`` (arrays that may be
    memory-mapped and unread: only shapes and dtypes are used) and the model's dtype name.

    Returns ``{"policy": "at_load" | "per_use", "mapped_bytes": ..., "copied_bytes": ...}``: the file's
    bytes used in place through the memory map (they count in RSS, and the kernel may drop and reread them),
    and the bytes of weights copied into the process's own memory (widened, or rounded to the model's dtype).
    """
    policy = resolve_widen_policy(widen, tensors, model_dtype)
    compute = "float64" if model_dtype == "float64" else "float32"
    mapped = copied = 0
    for array in tensors.values():
        size = int(np.prod(array.shape))
        if is_stored(array):  # a reader's stored weight: mapped from its file, widened whole at load
            if policy == "at_load":
                copied += size * _itemsize(compute)
            else:
                mapped += array.nbytes
            continue
        kept = _placed_dtype(array, model_dtype)
        final = compute if array.ndim == 2 and kept != compute and policy == "at_load" else kept
        if final == kept == dtype_name(array.dtype):  # used as stored: the file's own pages
            mapped += array.nbytes
        else:
            copied += size * _itemsize(final)
    return {"policy": policy, "mapped_bytes": mapped, "copied_bytes": copied}


def widen_whole(weight):
    """A stored weight's whole matrix in its compute dtype, filled one row tile at a time (no full-size
    temporaries besides the result)."""
    rows, cols = weight.shape
    first = weight.widened_rows(0, min(rows, WIDEN_TILE_ROWS))
    xp = array_namespace(first)
    out = xp.empty((rows, cols), dtype=first.dtype)
    out[:first.shape[0], :] = first
    for start in range(first.shape[0], rows, WIDEN_TILE_ROWS):
        stop = min(start + WIDEN_TILE_ROWS, rows)
        out[start:stop, :] = weight.widened_rows(start, stop)
    return out


def place_weights(tensors: dict, xp, model_dtype, widen: str = "auto") -> dict:
    """The model's params from a checkpoint's ``tensors`` (name -> array in its stored dtype, or a reader's
    stored weight).

    xp: the model's namespace; model_dtype: its dtype object (``backend.resolve_dtype``); widen: the
    policy (module docstring). Returns name -> an xp array in the model's dtype (vectors, and matrices
    stored in the compute dtype), an xp array in the compute dtype (matrices widened at load), or a stored
    weight (matrices widened per use).
    """
    name = dtype_name(model_dtype)
    compute = product_dtype(xp, model_dtype)
    policy = resolve_widen_policy(widen, tensors, name)
    device = device_of(xp)
    placed = {}
    for key, array in tensors.items():
        if is_stored(array):
            placed[key] = widen_whole(array) if policy == "at_load" else array
            continue
        if device == "cuda" and not is_numpy_array(array):  # CuPy, torch CUDA ...: cast on the GPU, no host trip
            kept, moved = name, to_device(array, xp, model_dtype)
        else:
            host = np.asarray(to_numpy(array))
            kept = _placed_dtype(host, name)
            host = host.astype(host_dtype(kept), copy=False)  # rounded once when it must be, as torch does
            if device == "array_api_strict" and kept not in ("float32", "float64"):  # no 16-bit floats there
                host, kept = _WIDENERS[kept](host, np.dtype(dtype_name(compute))), dtype_name(compute)
            moved = _move(host, xp, kept)
        if moved.ndim != 2 or kept == dtype_name(compute):
            placed[key] = moved
        else:
            weight = StoredWeight(moved, model_dtype, compute, kept)
            placed[key] = widen_whole(weight) if policy == "at_load" else weight
    return placed


def host_dtype(name: str):
    """The NumPy dtype of a dtype name (bfloat16 from ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _move(host: np.ndarray, xp, kept: str):
    """A host array onto the model's device in its kept dtype; CuPy keeps bfloat16 as its uint16 bits."""
    if device_of(xp) == "cuda" and kept == "bfloat16":
        return to_device(host.view(np.uint16), xp)
    return to_device(host, xp)
