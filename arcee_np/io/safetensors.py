"""The safetensors format, read over a memory map: tensors become NumPy arrays that point into the file.

A ``.safetensors`` file is an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the raw bytes. This small parser (rather than the ``safetensors``
package) memory-maps the file, so nothing is read until used and no second copy is made. The header is
checked first, whole, at least as strictly as the safetensors package checks it
(arcee_np/validation/safetensors.py): a truncated or malformed file is a CheckpointError naming the file,
the tensor and the fix.
"""

from __future__ import annotations

import json
import mmap
import os
import struct

import ml_dtypes
import numpy as np

from ..errors import CheckpointError
from ..validation.safetensors import read_header

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_DTYPE_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file as read-only NumPy arrays in their stored dtype (bfloat16 as
    ml_dtypes' ``bfloat16``).

    The header is checked whole first (arcee_np.validation.safetensors); aligned tensors are then views of a
    memory map of the file, so nothing is read until used.
    """
    path = os.fspath(path)
    header = read_header(path, _DTYPES)
    with open(path, "rb") as fh:
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if header.data_size else b""
    return {entry.name: _tensor_from_buffer(entry, buffer, header.data_start) for entry in header.entries}


def read_checked_header(path: str | os.PathLike):
    """The header of a ``.safetensors`` file, checked as read_safetensors checks it, without reading a tensor:
    ``.entries`` (name, dtype, shape, byte range of each tensor) and ``.metadata``."""
    return read_header(os.fspath(path), _DTYPES)


def release_mapped_pages(array: np.ndarray) -> None:
    """Let the kernel drop the file pages that hold ``array``, a view of a memory map ``read_safetensors``
    made, from this process's resident memory (they are read again from the file if ``array`` is used).

    Called once the values have been copied elsewhere (a stack of q, k and v weights): the process then
    holds the copy, not both. Only pages wholly inside the array are dropped; anything else, or a system
    without ``madvise``, is left as it is.
    """
    owner = array
    while isinstance(owner, (np.ndarray, memoryview)):  # NumPy keeps the buffer it viewed as a memoryview
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    if not isinstance(owner, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = array.__array_interface__["data"][0] - np.frombuffer(owner, np.uint8).__array_interface__["data"][0]
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (start + array.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > first:
        owner.madvise(mmap.MADV_DONTNEED, first, end - first)


def _tensor_from_buffer(entry, buffer, data_start) -> np.ndarray:
    """One tensor of a checked header, as a NumPy array over ``buffer``."""
    dtype = _DTYPES[entry.dtype]
    offset = data_start + entry.begin
    count = (entry.end - entry.begin) // dtype.itemsize
    if count == 0:  # nothing to map (the file may hold no data at all)
        array = np.zeros(entry.shape, dtype=dtype)
    else:
        array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(entry.shape)
    if offset % dtype.itemsize:
        array = array.copy()  # unaligned in the file: one aligned copy
    return array


# ---------------------------------------------------------------------------------------------- writing
def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict | None = None):
    """Write ``tensors`` (name -> NumPy array, bfloat16 included) as one ``.safetensors`` file.

    The header lists the tensors in the given order with contiguous byte ranges; it is padded with spaces
    to a multiple of 8 bytes (as the safetensors package writes it). metadata: str -> str, or None.
    """
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, array in tensors.items():
        code = _DTYPE_CODES.get(np.dtype(array.dtype).newbyteorder("<"))
        if code is None:
            raise CheckpointError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store "
                                  f"(supported: {', '.join(_DTYPES)}).")
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for array in tensors.values():
            fh.write(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
