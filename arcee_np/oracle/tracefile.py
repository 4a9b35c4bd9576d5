"""Traces on disk, and tracing a model call with everything needed to reproduce it.

A trace file is one safetensors file: every recorded tensor under its trace name, the inputs under
``inputs.<name>`` (``inputs.input_ids``, ``inputs.attention_mask`` ...), and in the header metadata one
JSON document under the key ``"arcee_np.trace"``::

    {"format": "arcee_np.trace", "version": 1, "names": [...in recording order...], "inputs": [...],
     "meta": {"producer": "arcee_np", "config": {...}, "dtype": "float32", "device": "cpu",
              "versions": {"arcee_np": ..., "numpy": ..., "python": ...}, "patterns": [...], ...}}

Any safetensors file of named tensors loads too (a port's own dump, say): without that metadata the
names are put in recording order and ``meta`` is empty.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from importlib import metadata as importlib_metadata

import numpy as np

from ..backend import DTYPES, to_numpy
from ..errors import CheckpointError, FileAccessError, InputError, TraceFileError
from ..io.safetensors import read_checked_header, read_safetensors
from ..trace import Trace, name_order_key, pattern_list, trace
from ..validation.files import check_file, writable_file_problem
from ..validation.tracefile import check_trace_header

FORMAT = "arcee_np.trace"
METADATA_KEY = "arcee_np.trace"
INPUT_PREFIX = "inputs."
INPUT_NAMES = ("input_ids", "attention_mask", "position_ids", "inputs_embeds", "labels")


def as_numpy(x) -> np.ndarray:
    """Any array (NumPy, CuPy, array_api_strict, a torch tensor, a list) as a NumPy array on the host.

    torch tensors are detached and moved to the CPU; bfloat16 (which NumPy lacks) is widened to float32.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if isinstance(x, (list, tuple, int, float)):
        return np.asarray(x)
    return to_numpy(x)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the numbers (torch/transformers when imported)."""
    out = {"python": platform.python_version()}
    for package in ("arcee-np", "numpy", "safetensors", "array-api-compat", "torch", "transformers"):
        module = package.replace("-", "_")
        if package in ("torch", "transformers") and module not in sys.modules:
            continue
        try:
            out[module] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def describe_patterns(patterns) -> list[str]:
    """The trace patterns as JSON-safe strings (regexes by their source, predicates by their name)."""
    return [p if isinstance(p, str) else p.pattern if isinstance(p, re.Pattern) else getattr(p, "__name__", repr(p))
            for p in pattern_list(patterns)]


def trace_model(model, input_ids=None, patterns="*", *, attention_mask=None, position_ids=None, inputs_embeds=None,
                labels=None, to_host=True, stop_after=None, stop_on_nonfinite=False, **meta) -> Trace:
    """Run ``model`` (an arcee_np model) once under a trace and return it with its inputs and metadata.

    input_ids: [B, T] (or inputs_embeds [B, T, D]); attention_mask / position_ids as for the model call.
    With ``labels`` (a causal LM's [B, T], -100 ignored) the call is ``loss_and_gradients``: the forward with
    the loss, then the backward, which records the gradients ``grad.*`` too. The call runs without a KV
    cache. ``meta`` keywords (``model_path=...``) are added to ``trace.meta``. Values are copied to the host
    (NumPy) unless ``to_host=False``.
    """
    call = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                inputs_embeds=inputs_embeds, use_cache=False)
    with trace(patterns, to_host=to_host, stop_after=stop_after, stop_on_nonfinite=stop_on_nonfinite) as t:
        if labels is None:
            model(**call)
        else:
            from ..training import loss_and_gradients

            loss_and_gradients(model, labels=labels, **call)
    given = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                 inputs_embeds=inputs_embeds, labels=labels)
    t.inputs = {k: as_numpy(v) for k, v in given.items() if v is not None}
    t.meta = {"producer": "arcee_np", "model": type(model).__name__, "config": model.config.to_dict(),
              "dtype": model.dtype, "device": model.device, "versions": versions(),
              "patterns": describe_patterns(patterns), "stopped_at": t.stopped_at, **meta}
    return t


def save_trace(t, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Write a trace (a Trace, or any ``{name: array}`` dict) to one safetensors file (format: module docstring).

    ``meta`` is merged over ``t.meta``; it must be JSON-serialisable. Arrays of any backend (and torch
    tensors) are copied to the host.
    """
    clash = [name for name in t if name.startswith(INPUT_PREFIX)]
    if clash:
        raise InputError(f"trace names may not start with {INPUT_PREFIX!r} (reserved for the inputs): {clash[:3]}")
    inputs = dict(getattr(t, "inputs", {}))
    tensors = {name: np.ascontiguousarray(as_numpy(value)) for name, value in t.items()}
    tensors.update({INPUT_PREFIX + k: np.ascontiguousarray(as_numpy(v)) for k, v in inputs.items()})
    header = {"format": FORMAT, "version": 1, "names": list(t), "inputs": list(inputs),
              "meta": {**getattr(t, "meta", {}), **(meta or {})}}
    from safetensors.numpy import save_file

    path = os.fspath(path)
    problem = writable_file_problem(path)
    if problem:
        raise FileAccessError(f"cannot write the trace file {path!r}: {problem}.")
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(header)})


def load_trace(path: str | os.PathLike) -> Trace:
    """Read a trace file (or any safetensors file of named tensors) back into a Trace with ``meta`` and ``inputs``.

    A malformed file or metadata is a TraceFileError naming the file (arcee_np.validation.tracefile)."""
    path = check_file(os.fspath(path), "trace file", "; write one with `arcee-np trace` or save_trace")
    try:
        tensors, metadata = read_safetensors(path), read_checked_header(path).metadata
    except CheckpointError as err:
        raise TraceFileError(f"not a readable trace file: {err}") from None
    raw = metadata.get(METADATA_KEY)
    if raw is None:  # a plain safetensors dump of named tensors
        names = sorted((n for n in tensors if not n.startswith(INPUT_PREFIX)), key=name_order_key)
        header = {"names": names, "inputs": [n[len(INPUT_PREFIX):] for n in tensors if n.startswith(INPUT_PREFIX)],
                  "meta": {}}
    else:
        header = check_trace_header(raw, path, tensors, FORMAT, 1, INPUT_PREFIX, DTYPES)
    meta = header["meta"]
    out = Trace("*", meta=meta,  # meta["patterns"] says what was recorded
                inputs={k: tensors[INPUT_PREFIX + k] for k in header["inputs"]})
    out.update((name, tensors[name]) for name in header["names"])
    out.stopped_at = meta.get("stopped_at")
    return out
