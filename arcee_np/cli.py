"""The ``arcee-np`` command line.

    arcee-np generate "ROMEO:"                 stream text from the shipped Shakespeare model
    arcee-np generate "Hi" --model DIR --greedy --max-new-tokens 40
    arcee-np info [--model DIR] [--json]       config, parameter count, memory per dtype
    arcee-np trace / compare ...               debugging tools (arcee_np/oracle/cli.py)
    arcee-np finetune --data FILE --steps N --out DIR   fine-tune on a text file (arcee_np/training/finetune.py)

Each subcommand is a ``cmd_<name>(args) -> exit status`` function registered in ``build_parser()``; add a
command by adding a parser there with ``set_defaults(func=...)``. A bad path, flag or value ends in one
line on stderr and a non-zero exit status (2 for usage errors, 1 for failures), never a traceback
(set ARCEE_NP_DEBUG=1 to see one).
docs/cli.md documents every command and flag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}  # the dtypes arcee_np computes in
FORWARD_TOKENS = 2048  # the prompt length `arcee-np info` states a forward's working memory for


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line: ``arcee-np generate: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------------------------- value types
def _number(kind, test, wanted):
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


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and v == v and v != float("inf"), "a number > 0")
probability = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


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

    add_debug_commands(commands)
    from .training.finetune import add_finetune_command; add_finetune_command(commands)  # noqa: E702
    from .oracle.gguf_check import add_gguf_check_command; add_gguf_check_command(commands)  # noqa: E702
    return parser


def _add_model_arguments(p, dtype: bool = True) -> None:
    p.add_argument("--model", metavar="PATH", help="checkpoint folder (config.json, model.safetensors, "
                   "tokenizer.json); default: the shipped Shakespeare model")
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
    path = os.path.expanduser(args.model)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--model {args.model!r} is not a folder; give a checkpoint folder (config.json, "
                                f"model.safetensors, tokenizer.json).")
    return path


# ---------------------------------------------------------------------------------------------- generate
def cmd_generate(args) -> int:
    """Load the model and its tokenizer, encode the prompt, stream the generated text to stdout."""
    from .models import ArceeForCausalLM
    from .io.tokenizer import ArceeTokenizer, TextStreamer

    path = _model_path(args)
    tokenizer = ArceeTokenizer.from_pretrained(path)
    prompt = args.prompt
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    prompt = prompt or ""
    if args.chat:
        if tokenizer.chat_template is None:
            raise ValueError("--chat needs a tokenizer with a chat template and this model has none: drop --chat.")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=False)
    else:
        ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty and the tokenizer adds no bos token: give a PROMPT.")
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


# ---------------------------------------------------------------------------------------------- info
def describe(path: str) -> dict:
    """What ``arcee-np info`` prints, as a dict: config, parameters, memory per dtype, generation, tokenizer."""
    from .io.checkpoint import backbone_shapes, checkpoint_files, read_checkpoint
    from .config import ArceeConfig
    from .io.weights import weight_memory
    from .model import working_bytes
    from .models import ArceeForCausalLM, read_generation_config

    config = ArceeConfig.from_pretrained(path)
    shapes = list(backbone_shapes(config).values()) + list(ArceeForCausalLM.head_shapes(config).values())
    params = sum(_prod(shape) for shape in shapes)
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
    files = checkpoint_files(path)
    tensors = read_checkpoint(path)  # memory-mapped: only the headers are read
    tokens = min(FORWARD_TOKENS, config.max_position_embeddings)
    memory = {name: dict(weight_memory(tensors, name), forward_tokens=tokens,
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
        "generation_config": read_generation_config(path),
    }
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        from .io.tokenizer import ArceeTokenizer

        tok = ArceeTokenizer.from_pretrained(path)
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


def main(argv=None) -> int:
    """Entry point of the ``arcee-np`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `arcee-np generate | head`
        return EXIT_OK
    except (OSError, ValueError, TypeError, RuntimeError, LookupError) as err:
        if os.environ.get("ARCEE_NP_DEBUG"):
            raise
        print(f"arcee-np {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
