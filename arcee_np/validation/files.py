"""Reading and writing the files arcee_np is pointed at, with errors that name the file.

A missing file is a MissingFileError, one that cannot be opened a FileAccessError; content that is not
UTF-8, not JSON, nests too deeply or repeats a key is the ``error`` class of the surface that reads it
(ConfigError for config.json, TokenizerError for tokenizer files ...). Every message gives the full path.
"""

from __future__ import annotations

import json
import os

from ..errors import FileAccessError, InputTypeError, MissingFileError

GGUF_MAGIC = b"GGUF"  # the first four bytes of every llama.cpp GGUF file


def is_gguf(path) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def read_bytes(path: str, what: str) -> bytes:
    """The bytes of the file ``path`` (``what`` it is, for the message: "config.json", "a trace file" ...)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise MissingFileError(f"no {what} at {path!r}.") from None
    except IsADirectoryError:
        raise FileAccessError(f"{what} {path!r} is a folder, not a file.") from None
    except OSError as err:
        raise FileAccessError(f"cannot read {what} {path!r}: {err.strerror or err}.") from None


def decode_text(raw: bytes, path: str, error: type) -> str:
    """``raw`` as UTF-8 text; ``error`` names ``path`` and the first bad byte if it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path} is not UTF-8 text (byte {err.start} is 0x{raw[err.start]:02x}); re-save it as "
                    f"UTF-8.") from None


class _DuplicateKey(Exception):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs):
    """json object_pairs_hook: a dict, refusing a key given twice (json.loads would keep the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_json(text: str, path: str, error: type):
    """JSON ``text`` read from ``path``; ``error`` (naming the file, the line and the column) when it is not
    JSON, nests too deeply to parse or gives a key twice in one object."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise error(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); fix or "
                    f"re-save the file.") from None
    except _DuplicateKey as err:
        raise error(f"{path} gives the key {err.key!r} twice in one object: which one is meant is ambiguous; "
                    f"keep one.") from None
    except RecursionError:
        raise error(f"{path} nests JSON arrays or objects too deeply to read; it is not a file arcee_np "
                    f"wrote or reads.") from None


def read_json(path: str, what: str, error: type):
    """The JSON value of the file ``path``: file errors as in ``read_bytes``, content errors as ``error``."""
    return parse_json(decode_text(read_bytes(path, what), path, error), path, error)


def read_text(path: str, what: str, error: type) -> str:
    """The UTF-8 text of the file ``path``."""
    return decode_text(read_bytes(path, what), path, error)


def check_path(path, what: str) -> str:
    """``path`` (a str or os.PathLike) as a str; InputTypeError for anything else."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__} {path!r}.")
    return os.fspath(path)


def check_folder(path, what: str) -> str:
    """``path`` as a string, when it is an existing folder; MissingFileError / FileAccessError otherwise."""
    path = check_path(path, what)
    if not os.path.exists(path):
        raise MissingFileError(f"{what} {path!r} does not exist.")
    if not os.path.isdir(path):
        raise FileAccessError(f"{what} {path!r} is a file, not a folder.")
    return path


def check_file(path: str, what: str, fix: str = "") -> str:
    """``path``, when it is an existing regular file; MissingFileError (ending in ``fix``) / FileAccessError
    otherwise."""
    if not os.path.exists(path):
        raise MissingFileError(f"no {what} at {path!r}{fix}.")
    if not os.path.isfile(path):
        kind = "a folder, not a file" if os.path.isdir(path) else "not a regular file"
        raise FileAccessError(f"{what} {path!r} is {kind}.")
    return path


def writable_file_problem(path: str) -> str | None:
    """Why a file could not be written at ``path`` (its folder missing or read-only, a folder in its place),
    or None when it can; nothing is created."""
    if os.path.isdir(path):
        return f"{path!r} is a folder"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"the folder {folder!r} does not exist"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path!r} is read-only"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder!r} is read-only"
    return None
