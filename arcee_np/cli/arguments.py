"""What every ``arcee-np`` command shares: the exit statuses, the parser class, the model / dtype / device
flags (declared here once, with one set of choices), the model path and its tokenizer, and the input ids
of ``--prompt`` / ``--ids``."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..backend import DEVICES, DTYPES
from ..errors import MissingFileError, TokenizerError, UsageError
from .checks import check_ids_in_vocabulary, check_model_path, check_prompt_text, parse_token_ids

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_DIVERGED = EXIT_FAILURE  # compare / gguf-check found a divergence (CI treats it as a failure)

MODEL_HELP = ("checkpoint folder (config.json, model.safetensors, tokenizer.json) or a llama.cpp .gguf file (its "
              "own tokenizer, or a tokenizer.json beside it); default: the shipped Shakespeare model")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line: ``arcee-np generate: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_model_argument(p, help: str = MODEL_HELP) -> None:
    """``--model PATH``: a checkpoint folder or a GGUF file (read by model_path)."""
    p.add_argument("--model", metavar="PATH", help=help)


def add_dtype_argument(p, default: str | None = "float32", help: str = "compute dtype (default: %(default)s)"):
    """``--dtype``: one of backend.DTYPES (a command that supports fewer checks it with require_dtype)."""
    p.add_argument("--dtype", choices=tuple(DTYPES), default=default, help=help)


def add_device_argument(p) -> None:
    """``--device``: one of backend.DEVICES."""
    p.add_argument("--device", choices=tuple(DEVICES), default="cpu",
                   help="cpu (NumPy), cuda (CuPy) or array_api_strict (default: %(default)s)")


def require_dtype(dtype: str, allowed: tuple, command: str, why: str) -> str:
    """``dtype`` when ``command`` supports it, else a UsageError naming the dtypes it supports and why."""
    if dtype not in allowed:
        raise UsageError(f"{command} runs in {' or '.join(allowed)} ({why}), not {dtype}: pass --dtype {allowed[0]}.")
    return dtype


def model_path(args, default: str | None = None) -> str:
    """--model, else ``default`` (a path recorded elsewhere, e.g. a trace's model_path), else the shipped
    Shakespeare model: a checkpoint folder or a GGUF file, checked to exist."""
    if args.model is not None:
        return check_model_path(args.model)
    if default is not None:
        return check_model_path(default, "the trace's model_path (override it with --model)")
    from ..shipped import default_model_path

    return default_model_path()


def model_tokenizer(path, what: str, alternative: str = ""):
    """The ArceeTokenizer of a checkpoint folder, or of a GGUF file (a path or an open GGUFFile: the tokenizer.json
    beside it, else the tokenizer the file stores); a MissingFileError saying where to put tokenizer.json when a
    folder has none, the TokenizerError of a stored tokenizer arcee_np cannot rebuild (``what``: what needs it;
    ``alternative``: another way, such as "pass --ids instead")."""
    from ..io.gguf import GGUFFile
    from ..io.tokenizer import ArceeTokenizer
    from ..validation.files import is_gguf

    gguf = isinstance(path, GGUFFile) or is_gguf(path)
    if not gguf and not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise MissingFileError(f"no tokenizer.json in {path!r}: {what} needs the model's tokenizer.json; put it there"
                               + (f", or {alternative}." if alternative else "."))
    try:
        return ArceeTokenizer.from_pretrained(path)
    except TokenizerError as err:
        if not alternative:
            raise
        raise TokenizerError(f"{err} Or {alternative}.") from None


def add_input_arguments(p) -> None:
    """``--prompt TEXT`` or ``--ids IDS``: the inputs of trace and compare (read by input_ids)."""
    p.add_argument("--prompt", help="text, encoded with the model's tokenizer as `arcee-np generate` does")
    p.add_argument("--ids", help='token ids: inline ("1 7 3" or "1,7,3") or a file of them (JSON list or text; '
                                 "one row per line for a batch)")


def input_ids(args, path: str, vocab_size: int) -> np.ndarray:
    """[B, T] int64: --ids (within the model's vocabulary) or --prompt encoded with the model's tokenizer."""
    if (args.prompt is None) == (args.ids is None):
        raise UsageError("give exactly one of --prompt TEXT or --ids IDS.")
    if args.ids is not None:
        return check_ids_in_vocabulary(parse_token_ids(args.ids, "--ids"), vocab_size)
    tokenizer = model_tokenizer(path, "--prompt", "pass --ids instead")
    ids = tokenizer.encode(check_prompt_text(args.prompt, "--prompt"))
    if not ids:
        raise UsageError("--prompt encodes to no tokens (and the tokenizer adds no bos): give some text.")
    return np.asarray([ids], dtype=np.int64)
