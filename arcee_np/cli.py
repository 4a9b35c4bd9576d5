"""The ``arcee-np`` command line.

    arcee-np generate "ROMEO:"                 stream text from the shipped Shakespeare model
    arcee-np generate "Hi" --model DIR --greedy --max-new-tokens 40
    arcee-np info [--model DIR] [--json]       config, parameter count, memory per dtype
    arcee-np trace / compare ...               debugging tools (arcee_np/oracle/cli.py)
    arcee-np finetune --data FILE --steps N --out DIR   fine-tune on a text file (arcee_np/training/finetune.py)

Each subcommand is a ``cmd_<name>(args) -> exit status`` function registered in ``build_parser()``; add a
command by adding a parser there with ``set_defaults(func=...)``. ``main`` runs every command through
``run_command``, the one place errors become one line on stderr and an exit status: 2 for usage errors
(argparse's, and UsageError: what the command line names cannot be used), 1 for every other failure
(any arcee_np error, out of memory, an error from a library below), never a traceback (set
ARCEE_NP_DEBUG=1 to see one). Flag values and paths are checked by arcee_np/validation/cli.py before any
work. docs/cli.md documents every command and flag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .errors import ArceeError, MissingFileError, UsageError
from .validation.cli import (check_model_path, check_prompt_text, non_negative_int, positive_float, positive_int,
                             probability)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}  # the dtypes arcee_np computes in
FORWARD_TOKENS = 2048  # the prompt length `arcee-np info` states a forward's working memory for


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line: ``arcee-np generate: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``arcee-np`` parser with one subparser per command; each sets ``func(args) -> exit status``."""
    parser = _Parser(prog="arcee-np", description="The Arcee decoder of transformers in NumPy/CuPy: generate text, "
                     "inspect checkpoints, trace and compare forward passes.",
                     epilog="Run 'arcee-np COMMAND --help' for the flags of a command. Docs: docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    gen = commands.add_parser("generate", help="generate text from a prompt, streaming it as it comes",
                              description="Generate text from PROMPT (or stdin when it is piped), printing the "
                              "prompt and each new token as it comes. Unset knobs come from the model's "
                              "generation_config.json ('arcee-np info' lists them), else transformers' defaults. "
                              "Sampling follows generation_config.json's do_sample; --temperature, --top-k or "
                              "--top-p turn it on, --greedy turns it off.")
    gen.add_argument("prompt", nargs="?", metavar="PROMPT",
                     help="text to continue (default: stdin when piped, else just the bos token)")
    _add_model_arguments(gen)
    gen.add_argument("--max-new-tokens", type=positive_int, metavar="N", help="how many tokens to add at most")
    gen.add_argument("--temperature", type=positive_float, metavar="T", help="sampling temperature (> 0); samples")
    gen.add_argument("--top-k", type=non_negative_int, metavar="K", help="keep the K most likely tokens (0 = all); "
                     "samples")
    gen.add_argument("--top-p", type=probability, metavar="P", help="nucleus: keep the most likely tokens whose "
                     "probabilities reach P (1 = all); samples")
    gen.add_argument("--repetition-penalty", type=positive_float, metavar="R",
                     help="divide the scores of tokens already present by R (1 = off)")
    gen.add_argument("--min-new-tokens", type=non_negative_int, metavar="N", help="forbid eos for the first N tokens")
    gen.add_argument("--seed", type=non_negative_int, metavar="S", help="seed of the sampler (reproducible output)")
    gen.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    gen.add_argument("--chat", action="store_true", help="wrap PROMPT as a user message with the tokenizer's chat "
                     "template")
    gen.add_argument("--no-prompt", action="store_true", help="print only the generated text, not the prompt")
    gen.set_defaults(func=cmd_generate)

    info = commands.add_parser("info", help="print a checkpoint's config, parameter count and memory per dtype",
                               description="Describe a checkpoint without loading its weights: the config, the "
                               "parameter count, the memory its weights and its KV cache need in each dtype, the "
                               "generation defaults and the tokenizer.")
    _add_model_arguments(info, dtype=False)
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=cmd_info)

    from .oracle.cli import add_debug_commands  # trace, compare
    from .oracle.gguf_check import add_gguf_check_command
    from .training.finetune import add_finetune_command

    for add_commands in (add_debug_commands, add_finetune_command, add_gguf_check_command):
        add_commands(commands)
    return parser


def _add_model_arguments(p, dtype: bool = True) -> None:
    p.add_argument("--model", metavar="PATH", help="checkpoint folder (config.json, model.safetensors, "
                   "tokenizer.json) or a llama.cpp .gguf file (its tokenizer.json beside it); default: the shipped "
                   "Shakespeare model")
    if dtype:
        from .backend import DEVICES, DTYPES

        p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default: %(default)s)")
        p.add_argument("--device", choices=DEVICES, default="cpu",
                       help="cpu (NumPy), cuda (CuPy) or array_api_strict (default: %(default)s)")


def _version() -> str:
    from . import __version__

    return __version__


def _model_path(args) -> str:
    if args.model is None:
        from .shipped import default_model_path

        return default_model_path()
    return check_model_path(args.model)


def model_tokenizer(path: str, what: str, alternative: str = ""):
    """The ArceeTokenizer of a checkpoint folder, or of the folder holding a GGUF file; a UsageError saying
    where to put tokenizer.json when there is none (``what``: what needs it; ``alternative``: another way,
    such as "pass --ids instead")."""
    from .io.checkpoint import tokenizer_folder
    from .io.tokenizer import ArceeTokenizer

    folder = tokenizer_folder(path)
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        beside = " beside the GGUF file (arcee_np does not read llama.cpp's tokenizer inside it)" if folder != path \
            else f" in {folder}"
        raise MissingFileError(f"{what} needs the model's tokenizer.json{beside}; put it there"
                               + (f", or {alternative}." if alternative else "."))
    return ArceeTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------- generate
def cmd_generate(args) -> int:
    """Load the model and its tokenizer, encode the prompt, stream the generated text to stdout."""
    from .models import ArceeForCausalLM
    from .io.tokenizer import TextStreamer

    path = _model_path(args)
    prompt = check_prompt_text(args.prompt) if args.prompt is not None else _read_stdin()
    tokenizer = model_tokenizer(path, "arcee-np generate")
    if args.chat:
        if tokenizer.chat_template is None:
            raise UsageError("--chat needs a tokenizer with a chat template and this model has none: drop --chat.")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=False)
    else:
        ids = tokenizer.encode(prompt)
    if not ids:
        raise UsageError("the prompt is empty and the tokenizer adds no bos token: give a PROMPT.")
    model = ArceeForCausalLM.from_pretrained(path, dtype=args.dtype, device=args.device)
    sampling = args.temperature is not None or args.top_k is not None or args.top_p is not None
    do_sample = False if args.greedy else (True if sampling else None)
    streamer = TextStreamer(tokenizer, skip_prompt=args.no_prompt or args.chat, skip_special_tokens=True)
    import numpy as np

    model.generate(np.asarray([ids], dtype=np.int64), max_new_tokens=args.max_new_tokens,
                   min_new_tokens=args.min_new_tokens, do_sample=do_sample, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                   streamer=streamer)
    return EXIT_OK


def _read_stdin() -> str:
    """The prompt from stdin when it is piped ("" when it is a terminal), as UTF-8 text."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    stream = getattr(sys.stdin, "buffer", None)  # a text stream without one (a test's StringIO) is read as text
    raw = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"the prompt on stdin is not UTF-8 text (byte {err.start}); pipe UTF-8 text.") from None


# ---------------------------------------------------------------------------------------------- info
def describe(path: str) -> dict:
    """What ``arcee-np info`` prints, as a dict: config, parameters, memory per dtype, generation, tokenizer."""
    from .io.checkpoint import backbone_shapes, checkpoint_files, read_checkpoint, tokenizer_folder
    from .io.gguf import is_gguf, read_gguf
    from .validation.checkpoint import check_layer_count
    from .config import ArceeConfig
    from .io.weights import weight_memory
    from .validation.memory import working_bytes
    from .models import ArceeForCausalLM, read_generation_config

    if is_gguf(path):  # a llama.cpp file: its config is its metadata as llama.cpp reads it
        readings = {name: read_gguf(path, name) for name in DTYPE_BYTES}  # quantized matrices stay stored
        config, files = readings["float32"][0], [path]
        tensors_of = {name: reading[1] for name, reading in readings.items()}
    else:
        config, files = ArceeConfig.from_pretrained(path), checkpoint_files(path)
        tensors = read_checkpoint(path, check_finite=False)  # memory-mapped: only the (checked) headers are read
        check_layer_count(tensors, config.num_hidden_layers)  # before listing the shapes of every layer
        tensors_of = dict.fromkeys(DTYPE_BYTES, tensors)
    shapes = list(backbone_shapes(config).values()) + list(ArceeForCausalLM.head_shapes(config).values())
    params = sum(_prod(shape) for shape in shapes)
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
    tokens = min(FORWARD_TOKENS, config.max_position_embeddings)
    memory = {name: dict(weight_memory(tensors_of[name], name), forward_tokens=tokens,
                         forward_working_bytes=working_bytes(config, 1, tokens, size))
              for name, size in DTYPE_BYTES.items()}
    info = {
        "path": os.path.abspath(path),
        "config": config.to_dict(),
        "parameters": params,
        "weights_bytes": {name: params * size for name, size in DTYPE_BYTES.items()},
        "kv_cache_bytes_per_token": {name: kv_per_token * size for name, size in DTYPE_BYTES.items()},
        "memory": memory,
        "checkpoint_files": [os.path.basename(f) for f in files],
        "checkpoint_bytes": sum(os.path.getsize(f) for f in files),
        "generation_config": {} if is_gguf(path) else read_generation_config(path),
    }
    if os.path.isfile(os.path.join(tokenizer_folder(path), "tokenizer.json")):
        tok = model_tokenizer(path, "arcee-np info")
        info["tokenizer"] = {"vocab_size": len(tok), **tok.special_tokens_map,
                             "chat_template": tok.chat_template is not None}
    return info


def _prod(shape) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def cmd_info(args) -> int:
    """Print describe() as text (or JSON with --json)."""
    info = describe(_model_path(args))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return EXIT_OK
    c = info["config"]
    print(f"model: {info['path']}")
    print(f"checkpoint: {', '.join(info['checkpoint_files'])} ({_bytes(info['checkpoint_bytes'])})")
    print(f"parameters: {info['parameters']:,}" + (" (tied embeddings counted once)" if c["tie_word_embeddings"]
                                                   else ""))
    print("all weights held in: " + ", ".join(f"{k} {_bytes(v)}" for k, v in info["weights_bytes"].items()))
    print("memory by dtype mode (widen='auto'): weights used in place from the file / copied; a forward:")
    for name, m in info["memory"].items():
        print(f"  {name:9} widen {m['policy']:8} file {_bytes(m['mapped_bytes']):>10} mapped, "
              f"{_bytes(m['copied_bytes']):>10} copied; 1 x {m['forward_tokens']} forward "
              f"{_bytes(m['forward_working_bytes'])}")
    print("KV cache per token: " + ", ".join(f"{k} {_bytes(v)}" for k, v in info["kv_cache_bytes_per_token"].items())
          + f" (x {c['max_position_embeddings']:,} positions max)")
    print("config:")
    for key in sorted(c):
        print(f"  {key}: {json.dumps(c[key])}")
    if info["generation_config"]:
        print("generation defaults (generation_config.json):")
        for key in sorted(info["generation_config"]):
            print(f"  {key}: {json.dumps(info['generation_config'][key])}")
    if "tokenizer" in info:
        print("tokenizer: " + ", ".join(f"{k} {v!r}" for k, v in info["tokenizer"].items()))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- main
def _one_line(err: BaseException) -> str:
    """An exception's message on one line (checkpoint errors list their problems on several)."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def failure(err: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an error a command ended with."""
    if isinstance(err, UsageError):
        return EXIT_USAGE, _one_line(err)
    if isinstance(err, ArceeError):
        return EXIT_FAILURE, _one_line(err)
    if isinstance(err, MemoryError):
        detail = f" ({_one_line(err)})" if str(err) else ""
        return EXIT_FAILURE, (f"out of memory{detail}: the model or the request is too large for this machine; try "
                              f"fewer tokens, a smaller --dtype or a smaller model.")
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename!r}" if err.filename else ""
        return EXIT_FAILURE, f"{err.strerror}{where}."
    origin = type(err).__module__.split(".")[0]
    below = f"in {origin} " if origin not in ("builtins", "arcee_np", "__main__") else ""
    return EXIT_FAILURE, (f"internal error {below}({type(err).__name__}: {_one_line(err)}); set ARCEE_NP_DEBUG=1 "
                          f"for the traceback and report it.")


def _warning_line(command: str):
    """A warnings.showwarning that prints ``arcee-np COMMAND: warning: ...`` on one line of stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"arcee-np {command}: warning: {_one_line(message)}", file=sys.stderr)
    return show


def run_command(args) -> int:
    """Run ``args.func(args)`` and return its exit status; every error ends as one line on stderr (failure())."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line(args.command)
        try:
            return int(args.func(args) or EXIT_OK)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `arcee-np generate | head`
            return EXIT_OK
        except (SystemExit, GeneratorExit):
            raise
        except BaseException as err:  # noqa: BLE001 - every error ends as one line (Rust panics are BaseExceptions)
            if os.environ.get("ARCEE_NP_DEBUG"):
                raise
            status, message = failure(err)
            print(f"arcee-np {args.command}: error: {message}", file=sys.stderr)
            return status


def main(argv=None) -> int:
    """Entry point of the ``arcee-np`` console script; returns the exit status."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
