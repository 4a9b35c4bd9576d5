"""The safetensors format, read over a memory map: tensors become NumPy arrays that point into the file.

A ``.safetensors`` file is an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the raw bytes. This small parser (rather than the ``safetensors``
package) memory-maps the file, so nothing is read until used and no second copy is made, and it turns a
truncated or malformed file into a CheckpointError that names the file and the fix.
"""

from __future__ import annotations

import json
import mmap
import os
import struct

import ml_dtypes
import numpy as np

from ..errors import CheckpointError

_MAX_HEADER = 100 * 1024 * 1024
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_DTYPE_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file as read-only NumPy arrays in their stored dtype (bfloat16 as
    ml_dtypes' ``bfloat16``).

    Aligned tensors are views of a memory map of the file; nothing is read until used.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 8:
        raise CheckpointError(f"{path} is truncated ({size} bytes): a safetensors file starts with an 8-byte "
                              f"header length. Re-download or re-save it.")
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f"{path} is truncated or not a safetensors file: its header claims {header_len} "
                                  f"bytes but the file has {size - 8} after the length. Re-save it.")
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path} has a malformed safetensors header ({err}). Re-save it.") from err
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + header_len else b""
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a malformed safetensors header (not a JSON object). Re-save it.")
    data_start = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor_from_buffer(path, name, info, buffer, data_start, size)
    return tensors


def _tensor_from_buffer(path, name, info, buffer, data_start, size) -> np.ndarray:
    """One tensor described by a safetensors header entry, checked against the file's real size."""
    try:
        dtype_name, shape, (begin, end) = info["dtype"], [int(n) for n in info["shape"]], info["data_offsets"]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: malformed header entry for {name!r} ({info!r}). Re-save it.") from err
    if dtype_name not in _DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype_name}, which arcee_np does not read "
                              f"(supported: {', '.join(_DTYPES)}).")
    dtype = _DTYPES[dtype_name]
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != count * dtype.itemsize or begin < 0:
        raise CheckpointError(f"{path}: tensor {name!r} claims shape {shape} of {dtype_name} but spans "
                              f"{end - begin} bytes. The file is corrupt; re-save it.")
    if data_start + end > size:
        raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} but the file "
                              f"has {size} bytes. Re-download or re-save it.")
    offset = data_start + begin
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
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
