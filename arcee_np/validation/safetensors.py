"""A safetensors file's header, checked whole before any tensor is read.

The format: an 8-byte little-endian header length N, N bytes of a JSON object
``{name: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then
the data. ``read_header`` accepts a header only when it is at least as strict as the ``safetensors``
package would be (tests/test_fuzz_safetensors.py feeds both the same generated files):

* the JSON is UTF-8, an object, no deeper than the format needs, with no name given twice;
* ``__metadata__`` is null or maps strings to strings;
* every entry is an object with a known ``dtype`` string, a ``shape`` of at most 64 non-negative integers
  (not floats, strings or bools) whose element count fits 63 bits, and two integer ``data_offsets``
  ``0 <= begin <= end`` spanning exactly ``count * itemsize`` bytes;
* the tensors, in offset order, cover the data contiguously from byte 0 to its end: no overlap, no gap,
  no byte left over, none missing (a truncated file).

Every error is a CheckpointError naming the file, the tensor and what is wrong.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ..errors import CheckpointError
from .files import check_file, decode_text, parse_json
from .values import is_integer, shown

MAX_HEADER_BYTES = 100_000_000  # the safetensors package's limit
MAX_DIMS = 64  # NumPy's limit
# Bits per element of every dtype the safetensors format names.
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
_REPAIR = "The file is corrupt or was not written by a safetensors writer; re-download or re-save it."


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checked header: its bytes are ``data[begin:end]`` (offsets into the data)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A checked header: the entries in file order, the metadata, where the data starts and its size."""

    entries: tuple[TensorEntry, ...]
    metadata: dict
    data_start: int
    data_size: int


def read_header(path: str, readable_dtypes) -> Header:
    """Read and check the header of the safetensors file ``path``; ``readable_dtypes``: the dtype names the
    caller can turn into arrays (a valid file with another dtype is refused, saying so)."""
    size = os.path.getsize(check_file(path, "safetensors file"))
    if size < 8:
        raise CheckpointError(f"{path} is truncated ({size} bytes): a safetensors file starts with an 8-byte "
                              f"header length. {_REPAIR}")
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            limit = "the format's limit of 100 MB" if header_len > MAX_HEADER_BYTES else \
                f"the {size - 8} bytes the file has after the length"
            raise CheckpointError(f"{path} is truncated or not a safetensors file: its header claims {header_len} "
                                  f"bytes, more than {limit}. {_REPAIR}")
        raw = fh.read(header_len)
    header = parse_json(decode_text(raw, path, CheckpointError), path, CheckpointError)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header must be a JSON object of tensors, got "
                              f"{type(header).__name__}. {_REPAIR}")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and
                                     all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: the header's __metadata__ must map strings to strings, got "
                              f"{shown(metadata)}. {_REPAIR}")
    data_start, data_size = 8 + header_len, size - 8 - header_len
    entries = tuple(_entry(path, name, info) for name, info in header.items() if name != "__metadata__")
    _check_layout(path, entries, data_size)
    for entry in entries:
        if entry.dtype not in readable_dtypes:
            raise CheckpointError(f"{path}: tensor {entry.name!r} has dtype {entry.dtype}, which arcee_np does not "
                                  f"read (it reads {', '.join(readable_dtypes)}). Convert the checkpoint.")
    return Header(entries, dict(metadata or {}), data_start, data_size)


def _entry(path: str, name: str, info) -> TensorEntry:
    """One header entry, checked on its own."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise CheckpointError(f"{where}: a header entry must be an object with dtype, shape and data_offsets, got "
                              f"{shown(info)}. {_REPAIR}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CheckpointError(f"{where}: dtype {shown(dtype)} is not a safetensors dtype ({', '.join(DTYPE_BITS)}). "
                              f"{_REPAIR}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(is_integer(n) and n >= 0 for n in shape):
        raise CheckpointError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers, got "
                              f"{shown(shape)}. {_REPAIR}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_integer(n) for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets must be two integers [begin, end] with 0 <= begin <= end, got "
                              f"{shown(offsets)}. {_REPAIR}")
    count = 1
    for n in shape:
        count *= n if n else 1
    if count * DTYPE_BITS[dtype] > 8 * (2 ** 63 - 1):
        raise CheckpointError(f"{where}: shape {shape} holds more elements than any file can ({count}). {_REPAIR}")
    count = count if all(shape) else 0
    bits = count * DTYPE_BITS[dtype]
    begin, end = offsets
    if bits % 8 or end - begin != bits // 8:
        raise CheckpointError(f"{where}: shape {shape} of {dtype} needs {bits / 8:g} bytes but data_offsets "
                              f"{offsets} span {end - begin}. {_REPAIR}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _check_layout(path: str, entries: tuple[TensorEntry, ...], data_size: int) -> None:
    """The tensors, in offset order, must tile the data exactly: from 0 to ``data_size``, no gap or overlap."""
    expected, previous = 0, None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != expected:
            if entry.begin < expected:
                problem = f"overlaps {previous.name!r} (bytes {previous.begin}-{previous.end})"
            else:
                problem = f"leaves bytes {expected}-{entry.begin} unused " + \
                          (f"after {previous.name!r}" if previous else "at the start of the data")
            raise CheckpointError(f"{path}: tensor {entry.name!r} at bytes {entry.begin}-{entry.end} {problem}: "
                                  f"the tensors must cover the data one after another. {_REPAIR}")
        expected, previous = entry.end, entry
    if expected > data_size:
        raise CheckpointError(f"{path} is truncated: tensor {previous.name!r} ends at data byte {expected} but the "
                              f"file holds {data_size} bytes of data. {_REPAIR}")
    if expected < data_size:
        raise CheckpointError(f"{path}: {data_size - expected} bytes of data after the last tensor belong to no "
                              f"tensor (a truncated header or an appended file). {_REPAIR}")
