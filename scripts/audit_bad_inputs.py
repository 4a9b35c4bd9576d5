"""Audit: feed arcee_np several hundred generated bad inputs, each in its own process, and classify what happens.

Surfaces: config.json, generation_config.json, safetensors files, sharded indexes, checkpoints against their
config, forward arguments, generate arguments, KV caches, the tokenizer files and calls, trace files and the
``arcee-np`` command line. The cases are generated (bad values of every kind for every field, header lies of
every kind for every entry ...) from the shipped Shakespeare model and a few hand-built safetensors files.

Each case runs in a fresh Python process under a timeout and an address-space limit and ends as one of

* ``clean``: refused with an error raised by arcee_np whose message names the thing (field, file, argument);
  for the CLI: exit status 1 or 2, one line on stderr naming it, no traceback;
* ``accepted``: a valid (or convertible) input, accepted with the right result (the case checks it);
* ``unclear``: refused by arcee_np, but the message does not name the thing (or the CLI's stderr is not one
  line, or its exit status is not the one for that kind of error);
* ``internal``: an error from below (Python, NumPy, a dependency) that says nothing about the input;
* ``refused_valid``: a valid input refused;
* ``silent``: accepted with a wrong or meaningless result;
* ``crash`` (killed by a signal), ``hang`` (past the timeout), ``oom`` (MemoryError or killed for memory).

    python scripts/audit_bad_inputs.py                       # every case, a table by surface
    python scripts/audit_bad_inputs.py --only config --show  # one surface, and every case not clean/accepted
    python scripts/audit_bad_inputs.py --json audit.json     # the outcome of every case

Needs only the plain dependencies (numpy, safetensors, tokenizers); ``--against transformers`` cases expect
a clean refusal whether or not transformers is installed.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import math
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "arcee_np" / "data" / "shakespeare"
CATEGORIES = ("clean", "accepted", "unclear", "internal", "refused_valid", "silent", "crash", "hang", "oom")


@dataclass
class Case:
    """One bad (or borderline) input. ``code`` runs in a fresh process (``WORK`` is the case's folder, ``MODEL``
    the shipped model's copy); ``argv`` instead runs ``arcee-np ARGV``. ``expect``: "refuse", "accept" or
    "either" (a convertible input: accepted with the checks in ``code`` passing, or refused cleanly).
    ``needles``: groups of alternatives; every group must have one member in the error message."""

    surface: str
    name: str
    expect: str = "refuse"
    needles: list = field(default_factory=list)
    code: str | None = None
    argv: list | None = None
    stdin: bytes | None = None
    exit_status: int | None = None  # CLI: the status this error must end with (None: 1 or 2)
    folder: Path | None = None


# ---------------------------------------------------------------------------------------------- the bad values
def bad_json_values(kind: str) -> list[tuple[str, object]]:
    """(label, value) pairs that are wrong for a field of ``kind``: int, float, prob, bool, token, str."""
    common = [("null", None), ("string", "12"), ("list", [1]), ("object", {"a": 1})]
    numbers = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]
    if kind == "int":  # a positive integer
        return common + numbers + [("true", True), ("float", 12.5), ("-1", -1), ("0", 0)]
    if kind == "float":  # a positive finite number
        return common + numbers + [("true", True), ("-1", -1.0), ("0", 0.0)]
    if kind == "nonneg":  # a finite number >= 0
        return common + numbers + [("true", True), ("-1", -1.0)]
    if kind == "prob":  # a number in [0, 1]
        return common + [("nan", math.nan), ("true", True), ("-0.5", -0.5), ("1.5", 1.5)]
    if kind == "bool":
        return [("null", None), ("string", "yes"), ("list", [True]), ("2", 2)]
    if kind == "token":  # None or an id >= 0
        return [("string", "12"), ("-1", -1), ("float", 1.5), ("true", True), ("object", {"id": 1})]
    if kind == "str":
        return [("int", 12), ("list", ["relu2"]), ("unknown", "swish")]
    raise ValueError(kind)


CONFIG_FIELDS = {
    "vocab_size": "int", "hidden_size": "int", "intermediate_size": "int", "num_hidden_layers": "int",
    "num_attention_heads": "int", "num_key_value_heads": "int", "max_position_embeddings": "int", "head_dim": "int",
    "rms_norm_eps": "float", "rope_theta": "float", "initializer_range": "nonneg", "attention_dropout": "prob",
    "use_cache": "bool", "tie_word_embeddings": "bool", "attention_bias": "bool", "mlp_bias": "bool",
    "bos_token_id": "token", "eos_token_id": "token", "pad_token_id": "token", "hidden_act": "str",
}
NULL_ALLOWED = {"num_key_value_heads", "head_dim", "rope_theta"}  # None: derived (rope_theta: in rope_parameters)

GENERATION_FIELDS = {
    "max_new_tokens": "int", "max_length": "int", "min_new_tokens": "count", "do_sample": "bool",
    "temperature": "float", "top_k": "count", "top_p": "prob", "repetition_penalty": "float",
    "eos_token_id": "token", "pad_token_id": "token",
}


def bad_generation_values(kind: str) -> list[tuple[str, object]]:
    if kind == "count":  # an integer >= 0
        return [("string", "5"), ("float", 2.5), ("-1", -1), ("true", True), ("list", [5])]
    values = bad_json_values(kind)
    return [(label, v) for label, v in values if label != "null"]  # null means "unset" in generation_config


# ---------------------------------------------------------------------------------------------- fixtures
def model_folder(work: Path, name: str, replace: dict | None = None) -> Path:
    """A copy of the shipped model (files linked) with some files replaced (bytes, str, a JSON value) or
    removed (None)."""
    folder = work / name
    folder.mkdir(parents=True)
    replace = dict(replace or {})
    for file in SHIPPED.iterdir():
        if file.name not in replace:
            os.symlink(file, folder / file.name)
    for file_name, content in replace.items():
        if content is None:
            continue
        target = folder / file_name
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_text(json.dumps(content, allow_nan=True), encoding="utf-8")
    return folder


def shipped_json(name: str) -> dict:
    return json.loads((SHIPPED / name).read_text(encoding="utf-8"))


def v5_rope_spelling(config: dict) -> dict:
    """A config.json with its RoPE settings in transformers 5's ``rope_parameters`` (theta, type and scaling
    in one dict) instead of 4's top-level ``rope_theta`` and ``rope_scaling``: the base the RoPE cases vary."""
    if "rope_parameters" in config:
        return config
    rest = {k: v for k, v in config.items() if k not in ("rope_theta", "rope_scaling")}
    parameters = {"rope_type": "default", "rope_theta": config.get("rope_theta", 10000.0),
                  **(config.get("rope_scaling") or {})}
    return {**rest, "rope_parameters": parameters}


def safetensors_bytes(header: dict | str | bytes, data: bytes, header_len: int | None = None) -> bytes:
    """A safetensors file from a header (a dict, JSON text or raw bytes) and the data bytes."""
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else
                                                     json.dumps(header, allow_nan=True)).encode("utf-8")
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


def sample_tensors() -> tuple[dict, bytes]:
    """A valid header (three tensors, three dtypes, contiguous) and its data."""
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.arange(4, dtype="<i8") * 7
    c = np.linspace(-1, 1, 4, dtype="<f2").reshape(1, 2, 2)
    header, data, offset = {}, b"", 0
    for name, array, dtype in (("alpha", a, "F32"), ("beta", b, "I64"), ("gamma", c, "F16")):
        raw = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    return header, data


# ---------------------------------------------------------------------------------------------- case generators
LOAD = "from arcee_np import ArceeForCausalLM\nmodel = ArceeForCausalLM.from_pretrained(WORK)\n"


def config_cases(work: Path):
    base = v5_rope_spelling(shipped_json("config.json"))
    for name, kind in CONFIG_FIELDS.items():
        for label, value in bad_json_values(kind):
            if value is None and name in NULL_ALLOWED:
                continue
            folder = model_folder(work, f"config-{name}-{label}", {"config.json": {**base, name: value}})
            yield Case("config", f"{name}={label}", needles=[[name], ["config.json"]], code=LOAD, folder=folder)
    for name in ("rope_theta", "rope_type"):
        for label, value in bad_json_values("float" if name == "rope_theta" else "str"):
            params = {**base["rope_parameters"], name: value}
            folder = model_folder(work, f"config-rope_parameters-{name}-{label}",
                                  {"config.json": {**base, "rope_parameters": params}})
            yield Case("config", f"rope_parameters.{name}={label}", needles=[[name], ["config.json"]], code=LOAD,
                       folder=folder)
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}
    for key, values in {"factor": [("string", "4"), ("nan", math.nan), ("inf", math.inf), ("0.5", 0.5), ("-2", -2.0),
                                   ("null-list", [4])],
                        "original_max_position_embeddings": [("string", "128"), ("-5", -5), ("float", 12.5),
                                                             ("0", 0), ("true", True)],
                        "beta_fast": [("string", "32"), ("nan", math.nan), ("list", [32])],
                        "beta_slow": [("string", "1"), ("inf", math.inf)],
                        "attention_factor": [("string", "1"), ("-1", -1.0), ("nan", math.nan)],
                        "mscale": [("string", "1")], "truncate": [("string", "yes")],
                        "unknown_knob": [("1", 1)]}.items():
        for label, value in values:
            for spelling in ("rope_scaling", "rope_parameters"):
                scaling = {**yarn, key: value}
                folder = model_folder(work, f"config-{spelling}-{key}-{label}",
                                      {"config.json": {**{k: v for k, v in base.items() if k != "rope_parameters"},
                                                       spelling: scaling}})
                yield Case("config", f"{spelling}.{key}={label}", needles=[[key], ["config.json"]], code=LOAD,
                           folder=folder)
    no_rope = {k: v for k, v in base.items() if k != "rope_parameters"}
    structural = {
        "rope_scaling-string": ({**no_rope, "rope_scaling": "yarn"}, ["rope_scaling"]),
        "rope_scaling-list": ({**no_rope, "rope_scaling": ["yarn"]}, ["rope_scaling"]),
        "rope_parameters-number": ({**no_rope, "rope_parameters": 3}, ["rope_parameters"]),
        "rope_scaling-unknown-type": ({**no_rope, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
                                      ["dynamic"]),
        "rope_scaling-no-type": ({**no_rope, "rope_scaling": {"factor": 2.0}}, ["rope_type"]),
        "type-vs-rope_type": ({**no_rope, "rope_scaling": {**yarn, "type": "default"}}, ["type"]),
        "theta-v4-vs-v5": ({**base, "rope_theta": 500000.0}, ["rope_theta"]),
        "scaling-vs-parameters": ({**base, "rope_scaling": yarn}, ["rope_scaling"]),
        "model_type-llama": ({**base, "model_type": "llama"}, ["model_type"]),
        "model_type-number": ({**base, "model_type": 5}, ["model_type"]),
        "heads-not-divisible": ({**base, "num_key_value_heads": 3}, ["num_key_value_heads"]),
        "head_dim-odd": ({**base, "head_dim": 31}, ["head_dim"]),
        "hidden_size-smaller-than-heads": ({**base, "hidden_size": 4, "head_dim": None}, ["head_dim", "hidden_size"]),
        "id2label-list": ({**base, "id2label": ["a", "b"]}, ["id2label"]),
        "num_labels-string": ({**base, "num_labels": "2"}, ["num_labels"]),
        "num_layers-huge": ({**base, "num_hidden_layers": 10 ** 9}, ["num_hidden_layers"]),
        "vocab-huge": ({**base, "vocab_size": 10 ** 12}, ["vocab_size", "embed_tokens"]),
        "eos-list-of-strings": ({**base, "eos_token_id": ["1"]}, ["eos_token_id"]),
        "problem_type-unknown": ({**base, "problem_type": "ranking"}, ["problem_type"]),
    }
    for name, (config, needle) in structural.items():
        folder = model_folder(work, f"config-{name}", {"config.json": config})
        yield Case("config", name, needles=[needle, ["config.json"]], code=LOAD, folder=folder)
    whole_file = {"top-level-list": [], "top-level-string": "arcee", "top-level-number": 5, "top-level-null": None,
                  "empty-object": {}, "not-json": "{\"vocab_size\": 4096,", "empty-file": "",
                  "not-utf8": b"\xff\xfe{\x00}", "deep-nesting": "[" * 100000 + "]" * 100000,
                  "duplicate-key": json.dumps(base)[:-1] + ", \"hidden_size\": 512}",
                  "nan-literal": json.dumps({**base, "rms_norm_eps": math.nan})}
    for name, content in whole_file.items():
        folder = model_folder(work, f"config-file-{name}", {"config.json": content})
        needles = [["config.json"]] + ([["rms_norm_eps"]] if name == "nan-literal" else []) + \
            ([["hidden_size"]] if name == "duplicate-key" else [])
        yield Case("config", f"file:{name}", needles=needles, code=LOAD, folder=folder)
    folder = model_folder(work, "config-missing", {"config.json": None})
    yield Case("config", "file:missing", needles=[["config.json"]], code=LOAD, folder=folder)
    folder = model_folder(work, "config-is-a-folder", {"config.json": None})
    (folder / "config.json").mkdir()
    yield Case("config", "file:a-folder", needles=[["config.json"]], code=LOAD, folder=folder)
    # ArceeConfig built in Python, not from a file
    for name, value in (("hidden_size", "'256'"), ("rms_norm_eps", "float('inf')"), ("num_attention_heads", "0"),
                        ("rope_scaling", "'yarn'"), ("eos_token_id", "'12'"), ("tie_word_embeddings", "'no'")):
        code = f"from arcee_np import ArceeConfig\nArceeConfig({name}={value})\n"
        yield Case("config", f"ArceeConfig({name}={value})", needles=[[name]], code=code)


def generation_config_cases(work: Path):
    base = shipped_json("generation_config.json")
    for name, kind in GENERATION_FIELDS.items():
        for label, value in bad_generation_values(kind):
            folder = model_folder(work, f"gen-{name}-{label}", {"generation_config.json": {**base, name: value}})
            yield Case("generation_config", f"{name}={label}", needles=[[name], ["generation_config.json"]],
                       code=LOAD, folder=folder)
    for name, content in {"top-level-list": [], "not-json": "{", "not-utf8": b"\xff\xff",
                          "eos-beyond-vocab": {**base, "eos_token_id": 10 ** 6}}.items():
        folder = model_folder(work, f"gen-file-{name}", {"generation_config.json": content})
        yield Case("generation_config", f"file:{name}", needles=[["generation_config.json"]], code=LOAD, folder=folder)


SAFETENSORS_READ = """
from arcee_np.io.safetensors import read_safetensors
ours = read_safetensors(FILE)
"""
SAFETENSORS_ACCEPT = SAFETENSORS_READ + """
import ml_dtypes  # noqa: F401 - lets NumPy name bfloat16 for the safetensors package
import numpy as np
from safetensors.numpy import load_file
theirs = load_file(FILE)
assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
for name in theirs:
    a, b = np.asarray(ours[name]), theirs[name]
    if b.dtype.name == "bfloat16" or str(b.dtype) == "bfloat16":
        b = b.astype(np.float32)
    assert a.shape == b.shape and np.array_equal(a.astype(np.float64), b.astype(np.float64)), name
"""


def safetensors_cases(work: Path):
    header, data = sample_tensors()
    folder = work / "safetensors"
    folder.mkdir()
    count = iter(range(10 ** 6))

    def case(name, content, expect="refuse", needles=None):
        path = folder / f"{next(count):03d}-{name.replace('/', '_')}.safetensors"
        path.write_bytes(content)
        code = f"FILE = {str(path)!r}\n" + (SAFETENSORS_ACCEPT if expect == "accept" else SAFETENSORS_READ)
        return Case("safetensors", name, expect=expect, needles=needles or [[path.name]], code=code)

    def entry_values(key):
        if key == "dtype":
            return [("null", None), ("number", 5), ("list", ["F32"]), ("unknown", "F33"), ("lowercase", "f32"),
                    ("empty", "")]
        if key == "shape":
            return [("null", None), ("string", "23"), ("floats", [2.0, 3.0]), ("negative", [-2, -3]),
                    ("bools", [True, 6]), ("nested", [[2], 3]), ("number", 6), ("object", {"a": 6}),
                    ("wrong-count", [5]), ("huge", [2 ** 64, 1]), ("overflow", [2 ** 62, 2 ** 3]),
                    ("too-many-dims", [1] * 70)]
        return [("null", None), ("one", [0]), ("three", [0, 24, 24]), ("strings", ["0", "24"]),
                ("floats", [0.0, 24.0]), ("negative", [-8, 16]), ("reversed", [24, 0]), ("bools", [False, 24]),
                ("number", 24), ("beyond-end", [0, 10 ** 6])]

    for tensor in header:
        for key in ("dtype", "shape", "data_offsets"):
            for label, value in entry_values(key):
                bad = json.loads(json.dumps(header))
                bad[tensor][key] = value
                yield case(f"{tensor}.{key}={label}", safetensors_bytes(bad, data), needles=None)
        for label, value in (("list", [1, 2]), ("string", "F32"), ("null", None), ("missing-keys", {"dtype": "F32"})):
            bad = json.loads(json.dumps(header))
            bad[tensor] = value
            yield case(f"{tensor}={label}", safetensors_bytes(bad, data))
    a, b, c = (header[n]["data_offsets"] for n in ("alpha", "beta", "gamma"))
    layouts = {
        "overlap": {"alpha": [0, 24], "beta": [16, 48], "gamma": [48, 56]},
        "gap": {"alpha": [0, 24], "beta": [32, 64], "gamma": [64, 72]},
        "swapped": {"alpha": b, "beta": a, "gamma": c},
        "same-bytes": {"alpha": [0, 24], "beta": [24, 56], "gamma": [24, 32]},
        "not-from-zero": {"alpha": [8, 32], "beta": [32, 64], "gamma": [64, 72]},
    }
    for name, offsets in layouts.items():
        bad = json.loads(json.dumps(header))
        for tensor, span in offsets.items():
            bad[tensor]["data_offsets"] = span
        yield case(f"layout:{name}", safetensors_bytes(bad, data + b"\x00" * 16))
    raw = json.dumps(header).encode()
    structural = {
        "empty-file": b"", "short-file": b"\x01\x02", "length-past-end": safetensors_bytes(header, data, 10 ** 6),
        "length-huge": safetensors_bytes(header, data, 2 ** 63), "length-zero": safetensors_bytes(b"", data),
        "not-json": safetensors_bytes(b"{\"alpha\": ", data), "not-utf8": safetensors_bytes(b"{\"\xff\": 1}", data),
        "top-level-list": safetensors_bytes([1, 2], data), "top-level-string": safetensors_bytes("\"x\"", data),
        "data-too-long": safetensors_bytes(header, data + b"\x00" * 8),
        "data-truncated": safetensors_bytes(header, data[:-4]),
        "duplicate-name": safetensors_bytes(raw[:-1] + b", \"alpha\": " + json.dumps(header["gamma"]).encode() + b"}",
                                            data),
        "deep-nesting": safetensors_bytes(b"{\"__metadata__\": " + b"[" * 50000 + b"]" * 50000 + b"}", b""),
        "metadata-list": safetensors_bytes({**header, "__metadata__": ["a"]}, data),
        "metadata-number-value": safetensors_bytes({**header, "__metadata__": {"format": 5}}, data),
        "metadata-null-value": safetensors_bytes({**header, "__metadata__": {"format": None}}, data),
        "metadata-string": safetensors_bytes({**header, "__metadata__": "pt"}, data),
        "no-tensors-but-data": safetensors_bytes({}, b"\x00" * 8),
    }
    for name, content in structural.items():
        yield case(name, content)
    # valid files: must be accepted with the same values as the safetensors package reads
    valid = {
        "plain": (header, data),
        "trailing-spaces": (raw.decode() + "    ", data),
        "leading-spaces": ("  " + raw.decode(), data),
        "metadata": ({**header, "__metadata__": {"format": "pt", "note": "ünïcode"}}, data),
        "zero-size": ({"empty": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}, **{
            k: v for k, v in header.items()}}, data),
        "scalar": ({"s": {"dtype": "F64", "shape": [], "data_offsets": [0, 8]}}, struct.pack("<d", 2.5)),
        "unaligned": ({"byte": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                       "f": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]}},
                      b"\x01\x02\x03" + np.array([1.5, -2.0], "<f4").tobytes()),
        "bf16-and-bool": ({"h": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
                           "m": {"dtype": "BOOL", "shape": [2], "data_offsets": [4, 6]}},
                          np.array([0x3FC0, 0xC000], "<u2").tobytes() + b"\x01\x00"),
        "empty-header": ({}, b""),
    }
    for name, (head, body) in valid.items():
        yield case(f"valid:{name}", safetensors_bytes(head, body), expect="accept")
    yield case("unsupported-dtype:F8_E4M3", safetensors_bytes(
        {"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\x00\x01"), needles=[["F8_E4M3"]])


def shard_folder(work: Path, name: str, index, shards: dict[str, dict] | None = None) -> Path:
    """A checkpoint folder: the shipped config and tokenizer, the shipped weights split in two shards."""
    from safetensors.numpy import load_file, save_file

    folder = model_folder(work, name, {"model.safetensors": None})
    tensors = load_file(str(SHIPPED / "model.safetensors"))
    names = sorted(tensors)
    if shards is None:
        shards = {"model-00001-of-00002.safetensors": {n: tensors[n] for n in names[: len(names) // 2]},
                  "model-00002-of-00002.safetensors": {n: tensors[n] for n in names[len(names) // 2:]}}
    for file, content in shards.items():
        save_file(content, str(folder / file), metadata={"format": "pt"})
    content = index(shards) if callable(index) else index
    (folder / "model.safetensors.index.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def index_cases(work: Path):
    from safetensors import safe_open

    with safe_open(str(SHIPPED / "model.safetensors"), framework="numpy") as fh:
        dropped = sorted(fh.keys())[0]

    def weight_map(shards):
        return {n: file for file, content in shards.items() for n in content}

    cases = {
        "valid": (lambda s: {"metadata": {}, "weight_map": weight_map(s)}, "accept", []),
        "weight_map-list": (lambda s: {"weight_map": list(weight_map(s))}, "refuse", ["weight_map"]),
        "weight_map-missing": (lambda s: {"metadata": {}}, "refuse", ["weight_map"]),
        "weight_map-null": (lambda s: {"weight_map": None}, "refuse", ["weight_map"]),
        "weight_map-number-values": (lambda s: {"weight_map": {n: 1 for n in weight_map(s)}}, "refuse",
                                     ["weight_map"]),
        "top-level-list": (lambda s: [], "refuse", []),
        "not-json": (lambda s: "{\"weight_map\": ", "refuse", []),
        "escapes-folder": (lambda s: {"weight_map": {**weight_map(s), "model.norm.weight": "../outside.safetensors"}},
                           "refuse", ["outside.safetensors"]),
        "absolute-shard": (lambda s: {"weight_map": {**weight_map(s), "model.norm.weight": "/etc/passwd"}},
                           "refuse", ["/etc/passwd"]),
        "missing-shard": (lambda s: {"weight_map": {**weight_map(s), "model.norm.weight": "model-3.safetensors"}},
                          "refuse", ["model-3.safetensors"]),
        "tensor-not-in-shard": (lambda s: {"weight_map": {**weight_map(s), "model.layers.9.extra.weight":
                                                          "model-00001-of-00002.safetensors"}}, "refuse",
                                ["model.layers.9.extra.weight"]),
        "tensor-not-in-index": (lambda s: {"weight_map": {n: f for n, f in weight_map(s).items() if n != dropped}},
                                "refuse", [dropped]),
        "wrong-shard-for-tensor": (lambda s: {"weight_map": {n: ("model-00002-of-00002.safetensors" if f.startswith(
            "model-00001") else "model-00001-of-00002.safetensors") for n, f in weight_map(s).items()}}, "refuse",
                                   ["model-0000"]),
        "metadata-list": (lambda s: {"metadata": [], "weight_map": weight_map(s)}, "refuse", ["metadata"]),
    }
    for name, (index, expect, needle) in cases.items():
        folder = shard_folder(work, f"index-{name}", index)
        needles = [needle, ["model.safetensors.index.json"]] if needle else [["model.safetensors.index.json"]]
        check = "\nimport numpy as np\nassert model(np.array([[0, 5, 9]])).logits.shape == (1, 3, 4096)\n"
        yield Case("index", name, expect=expect, needles=needles if expect == "refuse" else [],
                   code=LOAD + (check if expect == "accept" else ""), folder=folder)


def checkpoint_cases(work: Path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(SHIPPED / "model.safetensors"))
    norm = "model.layers.0.input_layernorm.weight"
    up = "model.layers.1.mlp.up_proj.weight"

    def with_tensors(name, change):
        folder = model_folder(work, f"ckpt-{name}", {"model.safetensors": None})
        changed = dict(tensors)
        change(changed)
        save_file(changed, str(folder / "model.safetensors"))
        return folder

    def nan_at(t, name, value):
        array = t[name].copy()
        array.reshape(-1)[7] = value
        t[name] = array

    variants = {
        "missing-tensor": (lambda t: t.pop(norm), [norm]),
        "extra-tensor": (lambda t: t.update({"model.layers.0.gate_proj.weight": np.zeros((4, 4), np.float32)}),
                         ["gate_proj"]),
        "wrong-shape": (lambda t: t.update({norm: np.ones(255, np.float32)}), [norm]),
        "nan-weight": (lambda t: nan_at(t, up, np.nan), [up]),
        "inf-weight": (lambda t: nan_at(t, norm, np.inf), [norm]),
        "integer-weight": (lambda t: t.update({norm: np.ones(256, np.int32)}), [norm]),
    }
    for name, (change, needle) in variants.items():
        yield Case("checkpoint", name, needles=[needle], code=LOAD, folder=with_tensors(name, change))
    folder = with_tensors("nan-weight-unchecked", lambda t: nan_at(t, up, np.nan))
    yield Case("checkpoint", "nan-weight-generate-unchecked", needles=[["layers.1"]], folder=folder,
               code="from arcee_np import ArceeForCausalLM\nimport numpy as np\n"
                    "model = ArceeForCausalLM.from_pretrained(WORK, check_finite=False)\n"
                    "model.generate(np.array([[0, 5, 9]]), max_new_tokens=3)\n")
    yield Case("checkpoint", "nan-weight-forward-unchecked", needles=[["layers.1"]], folder=folder,
               code="from arcee_np import ArceeForCausalLM\nimport numpy as np\n"
                    "model = ArceeForCausalLM.from_pretrained(WORK, check_finite=False)\n"
                    "model(np.array([[0, 5, 9]]))\n")
    pickle_only = model_folder(work, "ckpt-pickle-only", {"model.safetensors": None})
    (pickle_only / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    yield Case("checkpoint", "pickle-only", needles=[["pytorch_model.bin", "pickle"]], code=LOAD, folder=pickle_only)
    yield Case("checkpoint", "no-weights", needles=[["model.safetensors"]], code=LOAD,
               folder=model_folder(work, "ckpt-no-weights", {"model.safetensors": None}))
    truncated = model_folder(work, "ckpt-truncated", {"model.safetensors": (SHIPPED / "model.safetensors")
                                                      .read_bytes()[:100000]})
    yield Case("checkpoint", "truncated", needles=[["model.safetensors"]], code=LOAD, folder=truncated)
    weights_dir = model_folder(work, "ckpt-weights-folder", {"model.safetensors": None})
    (weights_dir / "model.safetensors").mkdir()
    yield Case("checkpoint", "weights-is-a-folder", needles=[["model.safetensors"]], code=LOAD, folder=weights_dir)
    yield Case("checkpoint", "folder-missing", needles=[["no-such-folder"]],
               code="from arcee_np import ArceeForCausalLM\n"
                    "ArceeForCausalLM.from_pretrained(WORK + '/no-such-folder')\n")
    yield Case("checkpoint", "path-is-a-file", needles=[["config.json"]],
               code="from arcee_np import ArceeForCausalLM\nArceeForCausalLM.from_pretrained(MODEL + '/config.json')\n")
    for _name, kwargs, needle in (("dtype", "dtype='int8'", "int8"), ("device", "device='tpu'", "tpu"),
                                  ("dtype-type", "dtype=32", "dtype"),
                                  ("check_finite-string", "check_finite='no'", "check_finite")):
        yield Case("checkpoint", f"from_pretrained({kwargs})", needles=[[needle]],
                   code=f"from arcee_np import ArceeForCausalLM\nArceeForCausalLM.from_pretrained(MODEL, {kwargs})\n")


MODEL_SETUP = """
import numpy as np
from arcee_np import ArceeForCausalLM, KVCache
model = ArceeForCausalLM.from_pretrained(MODEL)
ids = np.array([[0, 5, 9, 14]])
"""


def forward_cases(work: Path):
    bad = {
        "input_ids-float": ("model(ids.astype(np.float32))", ["input_ids"]),
        "input_ids-string": ("model('ROMEO')", ["input_ids"]),
        "input_ids-list-of-strings": ("model([['a', 'b']])", ["input_ids"]),
        "input_ids-ragged": ("model([[1, 2, 3], [4]])", ["input_ids"]),
        "input_ids-1d": ("model(ids[0])", ["input_ids"]),
        "input_ids-3d": ("model(ids[None])", ["input_ids"]),
        "input_ids-empty": ("model(ids[:, :0])", ["input_ids", "empty"]),
        "input_ids-past-vocab": ("model(ids + 4096)", ["input_ids"]),
        "input_ids-negative": ("model(-ids - 1)", ["input_ids"]),
        "input_ids-bool": ("model(ids > 3)", ["input_ids"]),
        "input_ids-object": ("model(np.array([[1, None]], dtype=object))", ["input_ids"]),
        "input_ids-huge-int": ("model([[2 ** 70]])", ["input_ids"]),
        "input_ids-none": ("model()", ["input_ids"]),
        "input_ids-dict": ("model({'input_ids': ids})", ["input_ids"]),
        "both-ids-and-embeds": ("model(ids, inputs_embeds=np.zeros((1, 4, 256), np.float32))", ["inputs_embeds"]),
        "mask-shape": ("model(ids, attention_mask=np.ones((1, 5)))", ["attention_mask"]),
        "mask-value-2": ("model(ids, attention_mask=np.full((1, 4), 2))", ["attention_mask"]),
        "mask-negative": ("model(ids, attention_mask=-np.ones((1, 4)))", ["attention_mask"]),
        "mask-half": ("model(ids, attention_mask=np.full((1, 4), 0.5))", ["attention_mask"]),
        "mask-string": ("model(ids, attention_mask='1111')", ["attention_mask"]),
        "mask-3d": ("model(ids, attention_mask=np.ones((1, 4, 4)))", ["attention_mask"]),
        "mask-4d-shape": ("model(ids, attention_mask=np.zeros((1, 1, 4, 3), np.float32))", ["attention_mask"]),
        "mask-4d-nan": ("model(ids, attention_mask=np.full((1, 1, 4, 4), np.nan, np.float32))", ["attention_mask"]),
        "mask-4d-int": ("model(ids, attention_mask=np.ones((1, 1, 4, 4), np.int64))", ["attention_mask"]),
        "position_ids-negative": ("model(ids, position_ids=np.array([[-1, 0, 1, 2]]))", ["position_ids"]),
        "position_ids-float": ("model(ids, position_ids=np.array([[0., 1., 2., 3.]]))", ["position_ids"]),
        "position_ids-shape": ("model(ids, position_ids=np.array([[0, 1]]))", ["position_ids"]),
        "position_ids-string": ("model(ids, position_ids='0123')", ["position_ids"]),
        "labels-negative": ("model(ids, labels=np.array([[1, -5, 2, 3]]))", ["labels"]),
        "labels-past-vocab": ("model(ids, labels=np.array([[1, 2, 3, 4096]]))", ["labels"]),
        "labels-float": ("model(ids, labels=ids.astype(np.float64))", ["labels"]),
        "labels-shape": ("model(ids, labels=ids[:, :2])", ["labels"]),
        "logits_to_keep-float": ("model(ids, logits_to_keep=1.5)", ["logits_to_keep"]),
        "logits_to_keep-string": ("model(ids, logits_to_keep='1')", ["logits_to_keep"]),
        "logits_to_keep-negative": ("model(ids, logits_to_keep=-1)", ["logits_to_keep"]),
        "logits_to_keep-out-of-range": ("model(ids, logits_to_keep=np.array([0, 9]))", ["logits_to_keep"]),
        "logits_to_keep-2d": ("model(ids, logits_to_keep=np.array([[0, 1]]))", ["logits_to_keep"]),
        "logits_to_keep-with-labels": ("model(ids, labels=ids, logits_to_keep=1)", ["logits_to_keep"]),
        "inputs_embeds-width": ("model(inputs_embeds=np.zeros((1, 4, 8), np.float32))", ["inputs_embeds"]),
        "inputs_embeds-int": ("model(inputs_embeds=np.zeros((1, 4, 256), np.int64))", ["inputs_embeds"]),
        "inputs_embeds-nan": ("model(inputs_embeds=np.full((1, 4, 256), np.nan, np.float32))", ["inputs_embeds"]),
        "inputs_embeds-2d": ("model(inputs_embeds=np.zeros((4, 256), np.float32))", ["inputs_embeds"]),
        "inputs_embeds-string": ("model(inputs_embeds='x')", ["inputs_embeds"]),
        "use_cache-string": ("model(ids, use_cache='no')", ["use_cache"]),
        "output_attentions-string": ("model(ids, output_attentions='yes')", ["output_attentions"]),
        "output_hidden_states-list": ("model(ids, output_hidden_states=[1])", ["output_hidden_states"]),
        "unknown-keyword": ("model(ids, foo=1)", ["foo"]),
    }
    for name, (call, needle) in bad.items():
        yield Case("forward", name, needles=[needle], code=MODEL_SETUP + call + "\n")
    yield Case("forward", "mask-float-ones", expect="accept", code=MODEL_SETUP + textwrap.dedent("""
        a = model(ids, attention_mask=np.ones((1, 4), np.float32)).logits
        assert np.array_equal(a, model(ids).logits)
    """))
    yield Case("forward", "logits_to_keep-numpy-int", expect="accept", code=MODEL_SETUP + textwrap.dedent("""
        a = model(ids, logits_to_keep=np.int64(1)).logits
        assert a.shape == (1, 1, 4096) and np.allclose(a[0, -1], model(ids).logits[0, -1], atol=1e-5)
    """))
    yield Case("forward", "ids-list-of-ints", expect="accept", code=MODEL_SETUP + textwrap.dedent("""
        assert np.array_equal(model([[0, 5, 9, 14]]).logits, model(ids).logits)
    """))


def cache_cases(work: Path):
    other = ("from arcee_np import ArceeConfig\n"
             "small = ArceeForCausalLM.from_config(ArceeConfig(vocab_size=4096, hidden_size=64, intermediate_size=96, "
             "num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, "
             "bos_token_id=0, eos_token_id=1))\n")
    bad = {
        "batch-size": ("c = KVCache(4); model(ids, past_key_values=c)\nmodel(np.array([[1], [2]]), past_key_values=c)",
                       ["batch"]),
        "too-few-layers": ("model(ids, past_key_values=KVCache(2))", ["layers"]),
        "too-many-layers": ("model(ids, past_key_values=KVCache(6))", ["layers"]),
        "another-model": (other + "c = KVCache(4); small(ids, past_key_values=c)\nmodel(ids, past_key_values=c)",
                          ["head"]),
        "dtype": ("m64 = ArceeForCausalLM.from_pretrained(MODEL, dtype='float64')\nc = KVCache(4)\n"
                  "m64(ids, past_key_values=c)\nmodel(np.array([[3]]), past_key_values=c)", ["dtype"]),
        "string": ("model(ids, past_key_values='cache')", ["past_key_values"]),
        "list-of-ints": ("model(ids, past_key_values=[1, 2, 3, 4])", ["past_key_values"]),
        "legacy-wrong-shapes": ("model(ids, past_key_values=tuple((np.zeros((1, 2, 3)), np.zeros((1, 2, 3))) "
                                "for _ in range(4)))", ["past_key_values"]),
        "max-length-too-small": ("model(ids, past_key_values=KVCache(4, max_length=2))", ["max_length"]),
        "mask-ignores-cache": ("c = KVCache(4); model(ids, past_key_values=c)\n"
                               "model(np.array([[3]]), attention_mask=np.ones((1, 1)), past_key_values=c)",
                               ["attention_mask"]),
        "layers-out-of-step": ("c = KVCache(4); model(ids, past_key_values=c); c._lengths[2] = 1\n"
                               "model(np.array([[3]]), past_key_values=c)", ["cache"]),
    }
    for name, (call, needle) in bad.items():
        yield Case("cache", name, needles=[needle], code=MODEL_SETUP + call + "\n")
    yield Case("cache", "legacy-tuple", expect="either", needles=[["past_key_values"]],
               code=MODEL_SETUP + textwrap.dedent("""
        c = KVCache(4)
        model(ids, past_key_values=c)
        legacy = tuple((np.array(k), np.array(v)) for k, v in c.to_legacy())
        step = np.array([[7]])
        want = model(step, past_key_values=c).logits
        got = model(step, past_key_values=legacy).logits
        assert np.allclose(got, want, atol=1e-5)
    """))


GENERATE_SETUP = MODEL_SETUP + "ids = np.array([[0, 5, 9]])\n"


def generate_cases(work: Path):
    knobs = {
        "max_new_tokens": [("0", 0), ("-1", -1), ("float", 1.5), ("string", "10"), ("huge", 10 ** 9), ("true", True)],
        "max_length": [("string", "20"), ("float", 20.5), ("-3", -3), ("huge", 10 ** 9)],
        "min_new_tokens": [("-1", -1), ("string", "2"), ("float", 2.5)],
        "do_sample": [("string", "yes"), ("list", [True])],
        "temperature": [("0-sampling", 0.0), ("-1", -1.0), ("nan", math.nan), ("inf", math.inf), ("string", "0.7")],
        "top_k": [("-1", -1), ("float", 1.5), ("string", "5")],
        "top_p": [("1.5", 1.5), ("nan", math.nan), ("-0.1", -0.1), ("string", "0.9")],
        "repetition_penalty": [("0", 0.0), ("nan", math.nan), ("inf", math.inf), ("-1", -1.0)],
        "eos_token_id": [("string", "12"), ("-1", -1), ("past-vocab", 10 ** 6), ("list-with-string", [1, "a"]),
                         ("float", 1.5), ("nested", [[1]])],
        "pad_token_id": [("string", "0"), ("-1", -1), ("float", 0.5)],
        "seed": [("-1", -1), ("string", "a"), ("float", 1.5)],
    }
    for knob, values in knobs.items():
        for label, value in values:
            extra = ", do_sample=True" if knob in ("temperature", "top_k", "top_p") else ""
            value_text = repr(value).replace("nan", "float('nan')").replace("inf", "float('inf')")
            length = "" if knob in ("max_new_tokens", "max_length") else ", max_new_tokens=3"  # max_new_tokens wins
            yield Case("generate", f"{knob}={label}", needles=[[knob]],
                       code=GENERATE_SETUP + f"model.generate(ids, {knob}={value_text}{extra}{length})\n")
    calls = {
        "input_ids-float": ("model.generate(ids.astype(np.float32), max_new_tokens=2)", ["input_ids"]),
        "input_ids-past-vocab": ("model.generate(ids + 5000, max_new_tokens=2)", ["input_ids"]),
        "input_ids-negative": ("model.generate(-ids - 1, max_new_tokens=2)", ["input_ids"]),
        "input_ids-1d": ("model.generate(ids[0], max_new_tokens=2)", ["input_ids"]),
        "input_ids-empty": ("model.generate(ids[:, :0], max_new_tokens=2)", ["input_ids"]),
        "input_ids-string": ("model.generate('ROMEO', max_new_tokens=2)", ["input_ids"]),
        "mask-value-2": ("model.generate(ids, attention_mask=np.full((1, 3), 2), max_new_tokens=2)",
                         ["attention_mask"]),
        "mask-half": ("model.generate(ids, attention_mask=np.full((1, 3), 0.5), max_new_tokens=2)",
                      ["attention_mask"]),
        "mask-shape": ("model.generate(ids, attention_mask=np.ones((1, 4)), max_new_tokens=2)", ["attention_mask"]),
        "streamer-without-put": ("model.generate(ids, max_new_tokens=2, streamer=object())", ["streamer"]),
        "prompt-past-max-positions": ("model.generate(np.zeros((1, 600), np.int64), max_new_tokens=2)",
                                      ["max_position_embeddings"]),
        "unknown-keyword": ("model.generate(ids, max_new_tokens=2, num_beamz=4)", ["num_beamz"]),
        "generation_config-set-badly": ("model.generation_config = {'temperature': 'hot'}\n"
                                        "model.generate(ids, max_new_tokens=2)", ["temperature"]),
    }
    for name, (call, needle) in calls.items():
        yield Case("generate", name, needles=[needle], code=GENERATE_SETUP + call + "\n")


HEAD_SETUP = """
import numpy as np
from arcee_np import ArceeConfig, ArceeForQuestionAnswering, ArceeForSequenceClassification, ArceeForTokenClassification
config = ArceeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=0,
                     num_labels=3)
ids = np.array([[5, 6, 7], [8, 9, 10]])
"""


def head_cases(work: Path):
    seq = "m = ArceeForSequenceClassification.from_config(config)\n"
    tok = "m = ArceeForTokenClassification.from_config(config)\n"
    qa = "m = ArceeForQuestionAnswering.from_config(config)\n"
    bad = {
        "seq-labels-out-of-range": (seq + "m(ids, labels=np.array([0, 3]))", ["labels"]),
        "seq-labels-negative": (seq + "m(ids, labels=np.array([0, -2]))", ["labels"]),
        "seq-labels-shape": (seq + "m(ids, labels=np.array([0, 1, 2]))", ["labels"]),
        "seq-labels-string": (seq + "m(ids, labels='1')", ["labels"]),
        "tok-labels-negative": (tok + "m(ids, labels=np.array([[0, 1, -7], [0, 1, 2]]))", ["labels"]),
        "tok-labels-shape": (tok + "m(ids, labels=np.array([[0, 1], [0, 1]]))", ["labels"]),
        "tok-labels-float": (tok + "m(ids, labels=np.zeros((2, 3)))", ["labels"]),
        "qa-positions-float": (qa + "m(ids, start_positions=np.array([0.5, 1.0]), end_positions=np.array([1, 2]))",
                               ["start_positions"]),
        "qa-positions-shape": (qa + "m(ids, start_positions=np.array([0]), end_positions=np.array([1, 2]))",
                               ["start_positions"]),
        "problem_type-unknown": (seq + "m.config.problem_type = 'ranking'\nm(ids, labels=np.array([0, 1]))",
                                 ["problem_type"]),
    }
    for name, (call, needle) in bad.items():
        yield Case("heads", name, needles=[needle], code=HEAD_SETUP + call + "\n")
    yield Case("heads", "qa-positions-negative", expect="either", needles=[["start_positions"]],
               code=HEAD_SETUP + qa + textwrap.dedent("""
        clamped = m(ids, start_positions=np.array([-3, 0]), end_positions=np.array([1, 2])).loss
        assert np.allclose(clamped, m(ids, start_positions=np.array([0, 0]), end_positions=np.array([1, 2])).loss)
    """))  # transformers clamps span positions to [0, seq]


TOKENIZER_LOAD = "from arcee_np.io.tokenizer import ArceeTokenizer\ntok = ArceeTokenizer.from_pretrained(WORK)\n"
CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}"
        "{{ eos_token }}{% endfor %}")


def tokenizer_cases(work: Path):
    tokenizer_json = (SHIPPED / "tokenizer.json").read_text(encoding="utf-8")
    files = {
        "tokenizer.json": {"not-json": "{\"model\": ", "not-utf8": b"\xff\xfe\x00", "top-level-list": [],
                           "model-number": {**json.loads(tokenizer_json), "model": 5}, "empty": "",
                           "truncated": tokenizer_json[: len(tokenizer_json) // 2]},
        "tokenizer_config.json": {"not-json": "{", "not-utf8": b"\xff", "top-level-list": [],
                                  "bos_token-number": {"bos_token": 5}, "bos_token-content-number":
                                      {"bos_token": {"content": 5}}, "add_bos_token-string": {"add_bos_token": "yes"},
                                  "padding_side-middle": {"padding_side": "middle"},
                                  "padding_side-number": {"padding_side": 5}, "chat_template-number":
                                      {"chat_template": 5}, "chat_template-bad-list": {"chat_template": [{"name": 1}]},
                                  "model_max_length-string": {"model_max_length": "512"},
                                  "clean_up-string": {"clean_up_tokenization_spaces": "no"},
                                  "pad_token-list": {"pad_token": ["<|pad|>"]}},
    }
    for file, variants in files.items():
        for label, content in variants.items():
            folder = model_folder(work, f"tok-{file}-{label}", {file: content})
            key = label.split("-")[0]
            needles = [[file]] + ([[key]] if file == "tokenizer_config.json" and "_" in key else [])
            yield Case("tokenizer", f"{file}:{label}", needles=needles, code=TOKENIZER_LOAD, folder=folder)
    folder = model_folder(work, "tok-missing", {"tokenizer.json": None})
    yield Case("tokenizer", "tokenizer.json:missing", needles=[["tokenizer.json"]], code=TOKENIZER_LOAD, folder=folder)
    config = shipped_json("tokenizer_config.json")
    templates = {
        "syntax-error": ("{% for m in messages %}{{ m['content'] }", "tokenizer_config.json"),
        "raise-exception": (CHAT, "unknown role"),
        "type-error": ("{{ messages[0]['content'] + 5 }}", "tokenizer_config.json"),
        "undefined-call": ("{{ no_such_function() }}", "tokenizer_config.json"),
        "unsafe": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "tokenizer_config.json"),
    }
    for name, (template, needle) in templates.items():
        folder = model_folder(work, f"tok-template-{name}", {"tokenizer_config.json": {**config, "chat_template":
                                                                                       template}})
        yield Case("tokenizer", f"chat_template:{name}", needles=[[needle]], folder=folder,
                   code=TOKENIZER_LOAD + "tok.apply_chat_template([{'role': 'system', 'content': 'hi'}])\n")
    folder = model_folder(work, "tok-jinja-file", {"chat_template.jinja": "{% if %}"})
    yield Case("tokenizer", "chat_template.jinja:syntax-error", needles=[["chat_template.jinja"]], folder=folder,
               code=TOKENIZER_LOAD + "tok.apply_chat_template([{'role': 'user', 'content': 'hi'}])\n")
    folder = model_folder(work, "tok-jinja-utf8", {"chat_template.jinja": b"{{ \xff }}"})
    yield Case("tokenizer", "chat_template.jinja:not-utf8", needles=[["chat_template.jinja"]], folder=folder,
               code=TOKENIZER_LOAD + "tok.apply_chat_template([{'role': 'user', 'content': 'hi'}])\n")
    shipped = "from arcee_np.io.tokenizer import ArceeTokenizer\ntok = ArceeTokenizer.from_pretrained(MODEL)\n"
    calls = {
        "decode-past-vocab": ("tok.decode([5, 99999])", ["99999"]),
        "decode-negative": ("tok.decode([5, -1])", ["-1"]),
        "decode-floats": ("tok.decode([5.7, 6.2])", ["token_ids", "integer"]),
        "decode-string": ("tok.decode('hello')", ["token_ids", "integer"]),
        "decode-nested-ragged": ("tok.decode([[1, 2], [3]])", ["token_ids"]),
        "batch_decode-past-vocab": ("tok.batch_decode([[1, 2], [3, 10 ** 7]])", [str(10 ** 7)]),
        "encode-number": ("tok.encode(12)", ["encode", "string"]),
        "encode-surrogate": ("tok.encode('ab\\udc80cd')", ["text", "surrogate", "Unicode"]),
        "call-padding-max_length": ("tok(['a', 'bb'], padding='max_length')", ["padding"]),
        "call-return_tensors-pt": ("tok('a', return_tensors='pt')", ["return_tensors"]),
        "call-list-of-ints": ("tok([1, 2])", ["string"]),
        "chat-no-template": ("tok.apply_chat_template([{'role': 'user', 'content': 'hi'}])", ["chat_template"]),
        "chat-not-a-list": ("tok.apply_chat_template('hi')", ["conversation"]),
        "chat-message-no-role": ("tok.apply_chat_template([{'content': 'hi'}], chat_template='{{ 1 }}')", ["role"]),
    }
    for name, (call, needle) in calls.items():
        yield Case("tokenizer", name, needles=[needle], code=shipped + call + "\n")


TRACE_SETUP = """
import json
from arcee_np.oracle.tracefile import load_trace
load_trace(FILE)
"""


def trace_file_bytes(meta_value: str | None, tensors: dict | None = None) -> bytes:
    """A safetensors trace file with ``meta_value`` under the "arcee_np.trace" metadata key."""
    tensors = tensors if tensors is not None else {"embed": np.ones((1, 2, 4), np.float32),
                                                   "inputs.input_ids": np.array([[1, 2]], np.int64)}
    header, data, offset = {}, b"", 0
    for name, array in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": {"float32": "F32", "int64": "I64"}[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    if meta_value is not None:
        header["__metadata__"] = {"arcee_np.trace": meta_value}
    return safetensors_bytes(header, data)


def tracefile_cases(work: Path):
    folder = work / "traces"
    folder.mkdir()
    good = {"format": "arcee_np.trace", "version": 1, "names": ["embed"], "inputs": ["input_ids"],
            "meta": {"producer": "arcee_np", "dtype": "float32"}}
    variants = {
        "meta-not-json": "{", "meta-list": "[]", "meta-string": "\"x\"",
        "format-wrong": json.dumps({**good, "format": "x"}),
        "names-missing": json.dumps({k: v for k, v in good.items() if k != "names"}),
        "names-string": json.dumps({**good, "names": "embed"}), "names-ints": json.dumps({**good, "names": [1, 2]}),
        "names-absent-tensor": json.dumps({**good, "names": ["embed", "layers.0.out"]}),
        "names-duplicate": json.dumps({**good, "names": ["embed", "embed"]}),
        "inputs-missing-tensor": json.dumps({**good, "inputs": ["attention_mask"]}),
        "inputs-dict": json.dumps({**good, "inputs": {"input_ids": 1}}),
        "meta-field-list": json.dumps({**good, "meta": ["dtype"]}),
        "version-99": json.dumps({**good, "version": 99}),
        "dtype-unknown": json.dumps({**good, "meta": {"dtype": "int4"}}),
        "stopped_at-number": json.dumps({**good, "meta": {"stopped_at": 5}}),
        "model_path-number": json.dumps({**good, "meta": {"model_path": 5}}),
    }
    for name, meta in variants.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(trace_file_bytes(meta))
        yield Case("tracefile", name, needles=[[path.name]], code=f"FILE = {str(path)!r}\n" + TRACE_SETUP)
    for name, content in {"truncated": trace_file_bytes(json.dumps(good))[:-5], "empty": b"",
                          "garbage": b"\x00" * 64}.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(content)
        yield Case("tracefile", name, needles=[[path.name]], code=f"FILE = {str(path)!r}\n" + TRACE_SETUP)
    path = folder / "valid.safetensors"
    path.write_bytes(trace_file_bytes(json.dumps(good)))
    yield Case("tracefile", "valid", expect="accept", code=f"FILE = {str(path)!r}\n" + TRACE_SETUP.replace(
        "load_trace(FILE)",
        "t = load_trace(FILE)\nassert list(t) == ['embed'] and t.inputs['input_ids'].tolist() == [[1, 2]]"))
    yield Case("tracefile", "a-folder", needles=[["traces"]], code=f"FILE = {str(folder)!r}\n" + TRACE_SETUP)


def cli_cases(work: Path):
    def cli(name, argv, needles, exit_status=None, stdin=None, expect="refuse"):
        return Case("cli", name, expect=expect, needles=needles, argv=argv, exit_status=exit_status, stdin=stdin)

    missing = str(work / "no-such-model")
    for flag, values in {"--max-new-tokens": ["0", "-1", "x", "1.5", "1000000000"], "--temperature": ["0", "nan", "inf",
                         "-1", "x"], "--top-p": ["2", "nan", "-0.1"], "--top-k": ["-1", "x"], "--seed": ["-1", "x"],
                         "--repetition-penalty": ["0", "nan"], "--min-new-tokens": ["-1"], "--dtype": ["int8"],
                         "--device": ["tpu"]}.items():
        for value in values:
            status = None if value == "1000000000" else 2
            yield cli(f"generate {flag} {value}", ["generate", "hi", flag, value], [[flag, "max_position"]], status)
    yield cli("generate --model missing", ["generate", "hi", "--model", missing], [[missing]], 2)
    yield cli("generate --model file", ["generate", "hi", "--model", str(SHIPPED / "config.json")],
              [["config.json"]], 2)
    yield cli("generate --device cuda", ["generate", "hi", "--device", "cuda"], [["cuda", "CuPy"]])
    yield cli("generate stdin not utf-8", ["generate"], [["stdin", "UTF-8"]], stdin=b"\xff\xfe bad")
    yield cli("generate --chat without template", ["generate", "hi", "--chat"], [["chat"]])
    yield cli("generate empty prompt", ["generate", "", "--max-new-tokens", "2"], [], expect="accept")
    bad_models = {
        "config-eps-null": {"config.json": {**shipped_json("config.json"), "rms_norm_eps": None}},
        "config-eps-inf": {"config.json": {**shipped_json("config.json"), "rms_norm_eps": math.inf}},
        "config-list": {"config.json": []},
        "weights-truncated": {"model.safetensors": (SHIPPED / "model.safetensors").read_bytes()[:5000]},
        "generation-config-temperature-string": {"generation_config.json": {"temperature": "hot"}},
        "tokenizer-not-json": {"tokenizer.json": "{"},
        "tokenizer-config-list": {"tokenizer_config.json": []},
        "template-syntax": {"tokenizer_config.json": {**shipped_json("tokenizer_config.json"),
                                                      "chat_template": "{% for %}"}},
        "template-raises": {"tokenizer_config.json": {**shipped_json("tokenizer_config.json"), "chat_template":
                                                      "{{ raise_exception('no chats here') }}"}},
    }
    needle_of = {"config-eps-null": ["rms_norm_eps"], "config-eps-inf": ["rms_norm_eps"],
                 "config-list": ["config.json"],
                 "weights-truncated": ["model.safetensors"], "generation-config-temperature-string": ["temperature"],
                 "tokenizer-not-json": ["tokenizer.json"], "tokenizer-config-list": ["tokenizer_config.json"],
                 "template-syntax": ["tokenizer_config.json"], "template-raises": ["no chats here"]}
    for name, replace in bad_models.items():
        folder = model_folder(work, f"cli-{name}", replace)
        args = ["generate", "hi", "--model", str(folder), "--max-new-tokens", "2"] + (["--chat"] if "template" in name
                                                                                       else [])
        yield cli(f"generate model:{name}", args, [needle_of[name]], 1)
        if "template" not in name:
            yield cli(f"info model:{name}", ["info", "--model", str(folder)], [needle_of[name]], 1)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(SHIPPED / "model.safetensors"))
    down = "model.layers.2.mlp.down_proj.weight"
    tensors[down] = np.full_like(tensors[down], np.nan)
    nan_folder = model_folder(work, "cli-nan-weights", {"model.safetensors": None})
    save_file(tensors, str(nan_folder / "model.safetensors"))
    yield cli("generate model:nan-weights", ["generate", "hi", "--model", str(nan_folder)], [["layers.2"]], 1)
    yield cli("info --model missing", ["info", "--model", missing], [[missing]], 2)
    out_dir = work / "cli-out"
    out_dir.mkdir()
    trace = ["trace", "--out", str(out_dir / "t.safetensors")]
    for value in ("a b", "", "1 2\n3", "99999", "-1", "[[1, 2], [3]]", "1.5", "[[[1]]]", "{\"a\": 1}"):
        yield cli(f"trace --ids {value!r}", trace + ["--ids", value], [["--ids"]], 2)
    yield cli("trace --out missing folder", ["trace", "--ids", "1 2", "--out", str(work / "nowhere" / "t.safetensors")],
              [["nowhere"]], 2)
    yield cli("trace --out a folder", ["trace", "--ids", "1 2", "--out", str(out_dir)], [[str(out_dir)]], 2)
    yield cli("trace --prompt and --ids", trace + ["--ids", "1", "--prompt", "x"], [["--prompt"]], 2)
    yield cli("trace --model missing", trace + ["--ids", "1", "--model", missing], [[missing]], 2)
    yield cli("trace --dtype bad", trace + ["--ids", "1", "--dtype", "int3"], [["--dtype"]], 2)
    valid_trace = out_dir / "valid.safetensors"
    valid_trace.write_bytes(trace_file_bytes(json.dumps({"format": "arcee_np.trace", "version": 1, "names": ["embed"],
                                                         "inputs": ["input_ids"], "meta": {}})))
    broken_trace = out_dir / "broken.safetensors"
    broken_trace.write_bytes(trace_file_bytes(json.dumps({"format": "arcee_np.trace", "version": 1, "inputs": []})))
    garbage = out_dir / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2, 3]}")
    compare = ["compare", str(valid_trace), str(valid_trace)]
    bad_values = {"--atol": ["nan", "-1", "x", "inf"], "--rtol": ["nan", "-1"], "--tolerance": ["loose"]}
    for flag, values in bad_values.items():
        for value in values:
            yield cli(f"compare {flag} {value}", compare + [flag, value], [[flag]], 2)
    yield cli("compare --json missing folder", compare + ["--json", str(work / "nowhere" / "r.json")], [["nowhere"]], 2)
    yield cli("compare --json a folder", compare + ["--json", str(out_dir)], [[str(out_dir)]], 2)
    yield cli("compare missing trace", ["compare", str(valid_trace), str(out_dir / "none.safetensors")],
              [["none.safetensors"]], 2)
    yield cli("compare broken trace", ["compare", str(valid_trace), str(broken_trace)], [["broken.safetensors"]], 1)
    yield cli("compare garbage trace", ["compare", str(garbage), str(valid_trace)], [["garbage.safetensors"]], 1)
    yield cli("compare three traces", compare + [str(valid_trace)], [["TRACE", "trace"]], 2)
    yield cli("compare one trace", ["compare", str(valid_trace)], [["trace"]], 2)
    pickle_only = model_folder(work, "cli-pickle-only", {"model.safetensors": None})
    (pickle_only / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    yield cli("compare --against transformers pickle-only", ["compare", "--against", "transformers", "--model",
                                                             str(pickle_only), "--ids", "1 2"],
              [["pytorch_model.bin", "pickle", "transformers"]])
    yield cli("compare --against transformers missing folder", ["compare", "--against", "transformers", "--model",
                                                                missing, "--ids", "1 2"], [[missing]], 2)
    yield cli("compare --against transformers trace names missing model", ["compare", str(valid_trace), "--against",
                                                                           "transformers"], [["--model", "model_path"]])
    huge = model_folder(work, "cli-huge-layers", {"config.json": {**shipped_json("config.json"),
                                                                   "num_hidden_layers": 10 ** 9}})
    yield cli("info model:num_layers-huge", ["info", "--model", str(huge)], [["num_hidden_layers"]], 1)
    yield cli("generate prompt not utf-8", ["generate", "caf\udce9"], [["PROMPT"]], 2)
    yield cli("generate bfloat16 on array_api_strict", ["generate", "hi", "--dtype", "bfloat16", "--device",
                                                         "array_api_strict"], [["bfloat16"]])
    yield cli("generate --max-new-tokens past positions", ["generate", "hi", "--max-new-tokens", "600"],
              [["max_position_embeddings"]])
    ids_file = out_dir / "ids.txt"
    ids_file.write_bytes(b"\xff\xfe 1 2")
    yield cli("trace --ids file not utf-8", trace + ["--ids", str(ids_file)], [["--ids"]], 2)
    yield cli("compare traces of other names", ["compare", str(valid_trace), str(out_dir / "t2.safetensors")],
              [["t2.safetensors"]], 2)
    for argv, needle in ((["frobnicate"], "frobnicate"), ([], "COMMAND"), (["generate", "--frobnicate"], "frobnicate"),
                         (["info", "--json", "extra"], "extra")):
        yield cli(f"argv {' '.join(argv) or '(none)'}", argv, [[needle]], 2)


def api_cases(work: Path):
    """The rest of the public surface: constructors, tracing, comparing, saving."""
    calls = {
        "from_config-huge": ("from arcee_np import ArceeConfig, ArceeForCausalLM\nArceeForCausalLM.from_config("
                             "ArceeConfig(num_hidden_layers=10 ** 9, vocab_size=64, hidden_size=32, "
                             "intermediate_size=32,"
                             " num_attention_heads=4))", ["from_config"]),
        "KVCache(0)": ("from arcee_np import KVCache\nKVCache(0)", ["num_layers"]),
        "KVCache('2')": ("from arcee_np import KVCache\nKVCache('2')", ["num_layers"]),
        "KVCache(max_length=-1)": ("from arcee_np import KVCache\nKVCache(2, max_length=-1)", ["max_length"]),
        "trace(5)": ("import arcee_np\nwith arcee_np.trace(5):\n    pass", ["pattern"]),
        "save_trace-missing-folder": ("from arcee_np.oracle.tracefile import save_trace\nimport numpy as np\n"
                                      "save_trace({'embed': np.ones(2)}, WORK + '/nowhere/t.safetensors')",
                                      ["nowhere"]),
        "save_trace-reserved-name": ("from arcee_np.oracle.tracefile import save_trace\nimport numpy as np\n"
                                     "save_trace({'inputs.x': np.ones(2)}, WORK + '/t.safetensors')", ["inputs."]),
        "compare-tolerance-nan": ("from arcee_np.oracle.compare import compare_traces\nimport numpy as np\n"
                                  "compare_traces({'a': np.ones(2)}, {'a': np.ones(2)}, (float('nan'), 0))", ["atol"]),
        "compare-tolerance-string": ("from arcee_np.oracle.compare import compare_traces\nimport numpy as np\n"
                                     "compare_traces({'a': np.ones(2)}, {'a': np.ones(2)}, 'loose')", ["loose"]),
        "pipeline-task": ("from arcee_np.pipeline import pipeline\npipeline('summarization')", ["summarization"]),
        "pipeline-number": ("from arcee_np.pipeline import pipeline\npipeline()(12)", ["text-generation"]),
        "pipeline-chat-without-role": ("from arcee_np.pipeline import pipeline\npipeline()([{'content': 'hi'}])",
                                       ["role"]),
        "decode-skip-string": ("from arcee_np.io.tokenizer import ArceeTokenizer\n"
                               "ArceeTokenizer.from_pretrained(MODEL).decode([5], skip_special_tokens='yes')",
                               ["skip_special_tokens"]),
        "encode-add-special-none": ("from arcee_np.io.tokenizer import ArceeTokenizer\n"
                                    "ArceeTokenizer.from_pretrained(MODEL).encode('hi', add_special_tokens=None)",
                                    ["add_special_tokens"]),
        "tokenizer-folder-missing": ("from arcee_np.io.tokenizer import ArceeTokenizer\n"
                                     "ArceeTokenizer.from_pretrained(WORK + '/none')", ["none"]),
        "from_pretrained-path-number": ("from arcee_np import ArceeForCausalLM\nArceeForCausalLM.from_pretrained(5)",
                                        ["path", "5"]),
        "from_pretrained-widen": ("from arcee_np import ArceeForCausalLM\n"
                                  "ArceeForCausalLM.from_pretrained(MODEL, widen='sometimes')", ["widen"]),
        "from_pretrained-attention": ("from arcee_np import ArceeForCausalLM\n"
                                      "ArceeForCausalLM.from_pretrained(MODEL, attn_implementation='flash')",
                                      ["attn_implementation"]),
        "bfloat16-on-array_api_strict": ("from arcee_np import ArceeForCausalLM\nArceeForCausalLM.from_pretrained("
                                         "MODEL, dtype='bfloat16', device='array_api_strict')", ["bfloat16"]),
    }
    for name, (code, needle) in calls.items():
        yield Case("api", name, needles=[needle], code=code + "\n")
    yield Case("api", "labels-all-ignored", expect="accept", code=MODEL_SETUP + textwrap.dedent("""
        out = model(ids, labels=np.full((1, 4), -100))
        assert np.isnan(out.loss)  # the mean over no tokens, as PyTorch's cross_entropy gives
    """))
    yield Case("api", "bool-mask", expect="accept", code=MODEL_SETUP + textwrap.dedent("""
        assert np.array_equal(model(ids, attention_mask=np.ones((1, 4), bool)).logits, model(ids).logits)
    """))


GENERATORS = {"config": config_cases, "generation_config": generation_config_cases, "safetensors": safetensors_cases,
              "index": index_cases, "checkpoint": checkpoint_cases, "forward": forward_cases, "cache": cache_cases,
              "generate": generate_cases, "heads": head_cases, "tokenizer": tokenizer_cases,
              "tracefile": tracefile_cases, "api": api_cases, "cli": cli_cases}


# ---------------------------------------------------------------------------------------------- running a case
RUNNER = r"""
import json, os, sys, traceback, warnings
case = json.loads(open(sys.argv[1], encoding="utf-8").read())
namespace = {"WORK": case["folder"], "MODEL": case["model"], "__name__": "__audit__"}
result = {"status": "returned"}
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(case["code"], "<case>", "exec"), namespace)
    result["warnings"] = [str(w.message)[:300] for w in caught]
except BaseException as err:  # noqa: BLE001 - the audit classifies every outcome
    frames = traceback.extract_tb(err.__traceback__)
    raiser = next((f.filename for f in reversed(frames) if "arcee_np" in f.filename.replace(os.sep, "/")), "")
    result = {"status": "raised", "type": type(err).__name__, "message": str(err)[:2000],
              "classes": [f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__],
              "from_case": frames[-1].filename == "<case>" if frames else False,
              "raised_in_arcee_np": bool(frames) and "arcee_np" in frames[-1].filename.replace(os.sep, "/"),
              "passed_through_arcee_np": bool(raiser)}
with open(sys.argv[2], "w", encoding="utf-8") as fh:
    json.dump(result, fh)
"""


def _limits(memory_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        os.setsid()
    return apply


def run_case(case: Case, index: int, work: Path, timeout: float, memory_bytes: int) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("ARCEE_NP_DEBUG", None)
    folder = str(case.folder or work)
    if case.argv is not None:
        command = [sys.executable, "-m", "arcee_np.cli", *case.argv]
    else:
        spec, out = work / "cases" / f"{index:04d}.json", work / "cases" / f"{index:04d}.out.json"
        spec.write_text(json.dumps({"code": case.code, "folder": folder, "model": str(work / "model")}))
        command = [sys.executable, "-c", RUNNER, str(spec), str(out)]
    try:
        done = subprocess.run(command, input=case.stdin or b"", capture_output=True, timeout=timeout, env=env,
                              cwd=str(work / "cwd"), preexec_fn=_limits(memory_bytes))
    except subprocess.TimeoutExpired as expired:
        return {"category": "hang", "detail": f"no result after {timeout:.0f} s", "stderr": str(expired.stderr)[-300:]}
    stderr = done.stderr.decode("utf-8", "replace")
    if case.argv is not None:
        return classify_cli(case, done.returncode, stderr, done.stdout.decode("utf-8", "replace"))
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return {"category": "oom" if name == "SIGKILL" else "crash", "detail": f"killed by {name}",
                "stderr": stderr[-300:]}
    if not out.exists():
        return {"category": "crash", "detail": f"exit status {done.returncode} without a result",
                "stderr": stderr[-500:]}
    return classify(case, json.loads(out.read_text(encoding="utf-8")))


def _names_it(case: Case, message: str) -> bool:
    low = message.lower()
    return all(any(str(n).lower() in low for n in group) for group in case.needles)


def classify(case: Case, result: dict) -> dict:
    if result["status"] == "returned":
        if case.expect == "refuse":
            return {"category": "silent", "detail": "accepted" + (f" with warnings {result['warnings']}"
                                                                  if result.get("warnings") else "")}
        return {"category": "accepted", "detail": ""}
    message, kind = result["message"], result["type"]
    detail = f"{kind}: {message[:400]}"
    if kind == "MemoryError" or "Unable to allocate" in message:
        return {"category": "oom", "detail": detail}
    if result["from_case"] and kind == "AssertionError":
        return {"category": "silent", "detail": "wrong result: " + detail}
    ours = any(c.startswith("arcee_np.") for c in result["classes"]) or result["raised_in_arcee_np"] or \
        (kind == "TypeError" and "unexpected keyword argument" in message)  # Python's own check of the call
    library_class = "arcee_np.errors.ArceeError" in result["classes"]
    if case.expect == "accept":
        return {"category": "refused_valid", "detail": detail}
    if not ours:
        return {"category": "internal", "detail": detail}
    return {"category": "clean" if _names_it(case, message) else "unclear", "detail": detail,
            "library_class": library_class}


def classify_cli(case: Case, status: int, stderr: str, stdout: str) -> dict:
    lines = [line for line in stderr.splitlines() if line.strip()]
    detail = f"exit {status}: {' | '.join(lines)[:400]}"
    if status < 0:
        name = signal.Signals(-status).name
        return {"category": "oom" if name == "SIGKILL" else "crash", "detail": f"killed by {name}"}
    if "Traceback" in stderr:
        return {"category": "internal", "detail": "traceback: " + stderr[-400:]}
    if status == 0:
        return {"category": "accepted" if case.expect != "refuse" else "silent", "detail": detail}
    if case.expect == "accept":
        return {"category": "refused_valid", "detail": detail}
    if "out of memory" in stderr.lower() or "MemoryError" in stderr:
        return {"category": "oom", "detail": detail}
    if status not in (1, 2):
        return {"category": "crash", "detail": detail}
    errors = [line for line in lines if ": error: " in line or line.startswith("error:")]
    one_line = len(errors) == 1 and all(": warning: " in line or line in errors for line in lines)
    right_status = case.exit_status is None or status == case.exit_status
    if "internal error" in stderr.lower():
        return {"category": "internal", "detail": detail}
    named = _names_it(case, stderr)
    return {"category": "clean" if one_line and right_status and named else "unclear", "detail": detail}


# ---------------------------------------------------------------------------------------------- main
def build_cases(work: Path, only: set[str] | None) -> list[Case]:
    cases = []
    for surface, generate in GENERATORS.items():
        if only and surface not in only:
            continue
        cases.extend(generate(work))
    return cases


def table(cases: list[Case], outcomes: list[dict]) -> str:
    counts = collections.defaultdict(collections.Counter)
    for case, outcome in zip(cases, outcomes, strict=False):
        counts[case.surface][outcome["category"]] += 1
        counts["total"][outcome["category"]] += 1
    width = max(len(s) for s in counts) + 2
    head = f"{'surface':<{width}}{'cases':>6}" + "".join(f"{c:>9}" if len(c) < 9 else f"{c[:8]:>9}" for c in CATEGORIES)
    head += f"{'clean %':>9}"
    rows = [head, "-" * len(head)]
    for surface in [*GENERATORS, "total"]:
        if surface not in counts:
            continue
        c = counts[surface]
        n = sum(c.values())
        refusable = n - c["accepted"]
        share = 100.0 * c["clean"] / refusable if refusable else 100.0
        if surface == "total":
            rows.append("-" * len(head))
        rows.append(f"{surface:<{width}}{n:>6}" + "".join(f"{c[k]:>9}" for k in CATEGORIES) + f"{share:>8.1f}%")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(GENERATORS),
                        help="audit only this surface (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at the same time (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take (default: %(default)s)")
    parser.add_argument("--memory-gib", type=float, default=4.0,
                        help="address-space limit per case (default: %(default)s)")
    parser.add_argument("--show", action="store_true", help="list every case that is neither clean nor accepted")
    parser.add_argument("--show-all", action="store_true", help="list every case with its outcome")
    parser.add_argument("--json", metavar="FILE", help="write every case's outcome as JSON")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="arcee-audit-"))
    try:
        (work / "cases").mkdir()
        (work / "cwd").mkdir()
        shutil.copytree(SHIPPED, work / "model")
        cases = build_cases(work, set(args.only) if args.only else None)
        print(f"{len(cases)} cases, {args.jobs} at a time, {args.timeout:.0f} s and {args.memory_gib:g} GiB each",
              file=sys.stderr)
        memory = int(args.memory_gib * 2 ** 30)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(lambda item: run_case(item[1], item[0], work, args.timeout, memory),
                                     enumerate(cases)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for case, outcome in zip(cases, outcomes, strict=False):
        if args.show_all or (args.show and outcome["category"] not in ("clean", "accepted")):
            print(f"[{outcome['category']}] {case.surface}: {case.name}\n    {outcome['detail'][:600]}")
    print(table(cases, outcomes))
    library = sum(1 for o in outcomes if o.get("library_class"))
    in_python = sum(1 for c, o in zip(cases, outcomes, strict=False) if o["category"] == "clean" and c.argv is None)
    print(f"clean errors outside the CLI: {in_python}, of which {library} raised as arcee_np.ArceeError (the rest: "
          f"Python's own check of a call's keywords)")
    if args.json:
        Path(args.json).write_text(json.dumps([{"surface": c.surface, "name": c.name, "expect": c.expect, **o}
                                               for c, o in zip(cases, outcomes, strict=False)], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
