"""What the ``arcee-np`` command line names: flag values, paths to read and write, token ids, the prompt.

Everything here raises UsageError (exit status 2): the command line asks for something that cannot be
(a value out of range, a folder that does not exist, an output file that cannot be written, ids that do
not parse or lie outside the vocabulary). Each check runs before the command does any work. The argparse
value types (``positive_int`` ...) turn a bad flag value into argparse's own one-line usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from ..errors import UsageError
from .files import is_gguf, writable_file_problem


# ---------------------------------------------------------------------------------------------- flag values
def number_type(kind, test, wanted):
    """An argparse type: ``kind(text)`` that passes ``test``, else a one-line error saying what is wanted."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value
    parse.__name__ = wanted
    return parse


positive_int = number_type(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number_type(float, lambda v: v > 0 and math.isfinite(v), "a number > 0")
non_negative_float = number_type(float, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")
probability = number_type(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


# ---------------------------------------------------------------------------------------------- paths
def check_model_folder(path: str, flag: str = "--model") -> str:
    """A checkpoint folder named on the command line (``~`` expanded): it must exist and be a folder."""
    folder = os.path.expanduser(path)
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.exists(folder) else "is a file, not a folder"
        raise UsageError(f"{flag} {path!r} {what}; give a checkpoint folder (config.json, model.safetensors, "
                         f"tokenizer.json).")
    return folder


def check_model_path(path: str, flag: str = "--model") -> str:
    """A model named on the command line (``~`` expanded): a checkpoint folder or a llama.cpp GGUF file."""
    model = os.path.expanduser(path)
    if os.path.isfile(model):
        if not is_gguf(model):
            raise UsageError(f"{flag} {path!r} is a file that is not a GGUF file (it does not start with the bytes "
                             f"'GGUF'); give a checkpoint folder (config.json, model.safetensors, tokenizer.json) or "
                             f"a llama.cpp .gguf file.")
        return model
    return check_model_folder(path, flag)


def check_input_file(path: str, what: str) -> str:
    """A file named on the command line that the command reads (``what``: "trace file" ...)."""
    if not os.path.isfile(path):
        raise UsageError(f"no {what} at {path!r}" + (" (it is a folder)." if os.path.isdir(path) else "."))
    return path


def check_output_file(path: str, flag: str) -> str:
    """A file the command will write: its folder exists and is writable, nothing is in the way (nothing is
    created yet, so a bad path costs no work)."""
    problem = writable_file_problem(path)
    if problem:
        raise UsageError(f"{flag} {path!r} cannot be written: {problem}.")
    return path


# ---------------------------------------------------------------------------------------------- token ids, prompt
def parse_token_ids(text: str, flag: str = "--ids") -> np.ndarray:
    """Token ids from inline text or a file: JSON (a list or list of equal-length lists of ints) or
    whitespace/comma separated, one row per line. Returns [B, T] int64."""
    source = f"{flag} {text!r}"
    if os.path.isfile(text):
        source = f"{flag} file {text!r}"
        try:
            with open(text, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"{source} cannot be read as text ({err}).") from None
    text = text.strip()
    try:
        rows = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        try:
            rows = [[int(tok) for tok in line.replace(",", " ").split()] for line in text.splitlines() if line.strip()]
        except ValueError:
            raise UsageError(f"{source} must be token ids: integers separated by spaces or commas (one row per "
                             f"line), or a JSON list of them.") from None
    if isinstance(rows, list) and rows and not isinstance(rows[0], list):
        rows = [rows]
    if not (isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows)
            and all(isinstance(i, int) and not isinstance(i, bool) for r in rows for i in r)):
        raise UsageError(f"{source} must hold one or more rows of integer token ids, got {text[:60]!r}.")
    if len({len(r) for r in rows}) > 1:
        raise UsageError(f"{source}: every row must have the same length, got rows of {sorted({len(r) for r in rows})} "
                         f"ids.")
    ids = np.asarray(rows, dtype=object)
    if ids.min() < 0 or ids.max() >= 2 ** 63:
        raise UsageError(f"{source}: token ids are integers >= 0, got {ids.min() if ids.min() < 0 else ids.max()}.")
    return ids.astype(np.int64)


def check_ids_in_vocabulary(ids: np.ndarray, vocab_size: int, flag: str = "--ids") -> np.ndarray:
    """Token ids given on the command line all lie in [0, vocab_size) of the model."""
    bad = ids[ids >= vocab_size]
    if bad.size:
        raise UsageError(f"{flag}: {bad[:5].tolist()} lie outside the model's vocabulary [0, {vocab_size}).")
    return ids


def check_prompt_text(text: str, what: str = "PROMPT") -> str:
    """A prompt from the command line: valid Unicode (argv bytes that are not UTF-8 arrive as lone
    surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(f"{what} is not valid UTF-8 text (a bad byte at character {err.start}); pass UTF-8.") from None
    return text
