"""Differential fuzzing of the safetensors reader: arcee_np's parser and the safetensors package read the same
generated files, valid ones and ones with one lie in them (a field of a wrong type or range, offsets that
overlap, leave gaps or run past the end, a header length that lies, duplicate names, bad metadata ...).

Whatever arcee_np accepts, the safetensors package accepts too, with the same dtypes and bytes (at least as
strict);
whatever arcee_np refuses is a CheckpointError naming the file; a valid file both accept.
"""

from __future__ import annotations

import json
import math
import struct

import ml_dtypes  # noqa: F401 - lets NumPy name bfloat16 for the safetensors package
from hypothesis import given, strategies as st
from safetensors.numpy import load_file

from arcee_np import CheckpointError
from arcee_np.io.safetensors import read_safetensors

from fuzzing import JSON_VALUES, assert_refused

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@st.composite
def valid_files(draw):
    """(header dict, data bytes) of a valid file: up to four tensors, contiguous in a random order."""
    count = draw(st.integers(0, 4))
    specs = [(f"t{i}", draw(st.sampled_from(sorted(ITEMSIZE))), draw(st.lists(st.integers(0, 3), max_size=3)))
             for i in range(count)]
    order = draw(st.permutations(range(count)))
    header, offset = {}, 0
    for i in order:
        name, dtype, shape = specs[i]
        size = math.prod(shape) * ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = bytearray(draw(st.binary(min_size=offset, max_size=offset)))
    for entry in header.values():  # booleans are stored as 0 / 1
        if entry["dtype"] == "BOOL":
            begin, end = entry["data_offsets"]
            data[begin:end] = bytes(b & 1 for b in data[begin:end])
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
    return header, bytes(data)


def pack(header_bytes: bytes, data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header_bytes) if length is None else length) + header_bytes + data


@st.composite
def files(draw):
    """The bytes of a valid file, or of one with a single generated lie."""
    header, data = draw(valid_files())
    names = [n for n in header if n != "__metadata__"]
    kind = draw(st.sampled_from(["valid", "field", "entry", "shift", "swap", "data", "length", "metadata",
                                 "duplicate", "cut", "extra-key", "garbage"]))
    raw = json.dumps(header).encode()
    if kind in ("field", "entry", "shift", "swap", "duplicate", "extra-key") and not names:
        kind = "valid"
    if kind == "field":
        entry = header[draw(st.sampled_from(names))]
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JSON_VALUES)
    elif kind == "entry":
        header[draw(st.sampled_from(names))] = draw(JSON_VALUES)
    elif kind == "shift":
        entry = header[draw(st.sampled_from(names))]
        entry["data_offsets"][draw(st.integers(0, 1))] += draw(st.integers(-9, 9).filter(bool))
    elif kind == "swap" and len(names) > 1:
        a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
    elif kind == "data":
        cut = draw(st.integers(-min(len(data), 9), 9))
        data = data[:cut] if cut < 0 else data + bytes(cut)
    elif kind == "length":
        return pack(raw, data, draw(st.one_of(st.integers(0, len(raw) + 16), st.integers(0, 2 ** 64 - 1))))
    elif kind == "metadata":
        header["__metadata__"] = draw(JSON_VALUES)
    elif kind == "duplicate":
        name = draw(st.sampled_from(names))
        raw = raw[:-1] + b", " + json.dumps(name).encode() + b": " + json.dumps(header[name]).encode() + b"}"
        return pack(raw, data)
    elif kind == "cut":
        whole = pack(raw, data)
        return whole[:draw(st.integers(0, max(0, len(whole) - 1)))]
    elif kind == "extra-key":
        header[draw(st.sampled_from(names))][draw(st.text(min_size=1, max_size=5))] = draw(JSON_VALUES)
    elif kind == "garbage":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
        return pack(raw, data)
    return pack(json.dumps(header, allow_nan=True).encode(), data)


def _same_values(ours, theirs) -> bool:
    if sorted(ours) != sorted(theirs):
        return False
    for name, b in theirs.items():
        a = ours[name]
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            return False
    return True


@given(files())
def test_arcee_np_reader_is_at_least_as_strict_as_the_safetensors_package(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("st") / "fuzz.safetensors"
    path.write_bytes(content)
    try:
        theirs, their_error = load_file(str(path)), None
    except Exception as err:  # noqa: BLE001 - the package raises SafetensorError, ValueError, AttributeError ...
        theirs, their_error = None, err
    try:
        ours = read_safetensors(path)
    except CheckpointError as err:
        assert_refused(err, str(path))
        if their_error is None:  # stricter than the package only for duplicate names (the package keeps the last)
            assert "twice" in str(err), f"arcee_np refuses a file the safetensors package reads: {err}"
        return
    assert their_error is None, f"arcee_np accepts a file the safetensors package refuses ({their_error})"
    assert _same_values(ours, theirs)


@given(valid_files())
def test_valid_files_read_the_same(tmp_path_factory, file):
    header, data = file
    path = tmp_path_factory.mktemp("st") / "valid.safetensors"
    path.write_bytes(pack(json.dumps(header).encode(), data))
    assert _same_values(read_safetensors(path), load_file(str(path)))
