"""A trace file's metadata: the JSON document ``save_trace`` writes under the "arcee_np.trace" key.

``check_trace_header`` parses it and checks its shape (format and version, the names and inputs lists,
that every name is a tensor of the file, the types of the ``meta`` fields compare and the CLI use)
before anything is compared; every error is a TraceFileError naming the file.
"""

from __future__ import annotations

from ..errors import TraceFileError
from .files import parse_json
from .values import shown


def check_trace_header(raw: str, path: str, tensors, fmt: str, version: int, input_prefix: str, dtypes) -> dict:
    """The header ``{"format", "version", "names", "inputs", "meta"}`` of the trace file ``path`` (``raw``: its
    JSON text; ``tensors``: the names the file holds)."""
    header = parse_json(raw, path, TraceFileError)
    if not isinstance(header, dict):
        raise TraceFileError(f"{path}: the trace metadata must be a JSON object, got {shown(header)}. Write trace "
                             f"files with `arcee-np trace` or save_trace.")
    if header.get("format") != fmt:
        raise TraceFileError(f"{path}: unknown trace format {shown(header.get('format'))} (expected {fmt!r}).")
    if header.get("version") != version:
        raise TraceFileError(f"{path}: trace format version {shown(header.get('version'))}; this arcee_np reads "
                             f"version {version}. Re-write the trace with this arcee_np.")
    for key, prefix in (("names", ""), ("inputs", input_prefix)):
        names = header.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TraceFileError(f"{path}: the trace metadata's {key!r} must be a list of tensor names, got "
                                 f"{shown(names)}. The file is corrupt; re-write it.")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise TraceFileError(f"{path}: the trace metadata lists {twice[:5]} twice under {key!r}. The file is "
                                 f"corrupt; re-write it.")
        missing = [n for n in names if prefix + n not in tensors]
        if missing:
            raise TraceFileError(f"{path}: the trace lists {key} the file lacks: {missing[:5]}. The file is corrupt; "
                                 f"re-write it.")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise TraceFileError(f"{path}: the trace metadata's 'meta' must be an object, got {shown(meta)}.")
    for key in ("model_path", "stopped_at", "device", "producer"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise TraceFileError(f"{path}: meta.{key} must be a string, got {shown(meta[key])}.")
    if meta.get("dtype") is not None and meta["dtype"] not in dtypes:
        raise TraceFileError(f"{path}: meta.dtype must be one of {', '.join(dtypes)}, got {shown(meta['dtype'])}.")
    if meta.get("config") is not None and not isinstance(meta["config"], dict):
        raise TraceFileError(f"{path}: meta.config must be an object (a config.json), got {shown(meta['config'])}.")
    return {"names": header["names"], "inputs": header["inputs"], "meta": meta}
