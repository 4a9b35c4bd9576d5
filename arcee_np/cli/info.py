"""``arcee-np info``: a checkpoint's config, parameter count, memory per dtype, generation defaults and
tokenizer, read without loading its weights."""

from __future__ import annotations

import json
import math
import os

from ..backend import DTYPES
from ..errors import TokenizerError
from .arguments import EXIT_OK, add_model_argument, model_path, model_tokenizer

DTYPE_BYTES = dict(DTYPES)  # bytes per value of each dtype arcee_np computes in (backend.DTYPES)
FORWARD_TOKENS = 2048  # the prompt length `arcee-np info` states a forward's working memory for


def add_command(commands) -> None:
    """Add ``info`` to an argparse subparsers object."""
    info = commands.add_parser("info", help="print a checkpoint's config, parameter count and memory per dtype",
                               description="Describe a checkpoint without loading its weights: the config, the "
                               "parameter count, the memory its weights and its KV cache need in each dtype, the "
                               "generation defaults and the tokenizer.")
    add_model_argument(info)
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=cmd_info)


def describe(path: str) -> dict:
    """What ``arcee-np info`` prints, as a dict: config, parameters, memory per dtype, generation, tokenizer."""
    from ..config import ArceeConfig
    from ..io.checkpoint import backbone_shapes, checkpoint_files, read_checkpoint
    from ..io.gguf import is_gguf, read_gguf
    from ..io.weights import weight_memory
    from ..validation.memory import working_bytes
    from ..models import ArceeForCausalLM, read_generation_config
    from ..validation.checkpoint import check_layer_count

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
    params = sum(math.prod(shape) for shape in shapes)
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
    tokenizer_file = os.path.join(os.path.dirname(path) if is_gguf(path) else path, "tokenizer.json")
    if is_gguf(path) or os.path.isfile(tokenizer_file):
        try:
            tok = model_tokenizer(path, "arcee-np info")
        except TokenizerError as err:
            if os.path.isfile(tokenizer_file):  # broken tokenizer files are refused, as the other files are
                raise
            # the tokenizer stored in a GGUF file, of a type arcee_np cannot rebuild: said, not fatal
            info["tokenizer"] = {"source": None, "problem": " ".join(str(err).split())}
        else:  # source: the tokenizer.json read, or the GGUF file's own tokenizer
            info["tokenizer"] = {"source": tok.source, "vocab_size": len(tok), **tok.special_tokens_map,
                                 "add_bos_token": tok.add_bos_token, "add_eos_token": tok.add_eos_token,
                                 "chat_template": tok.chat_template is not None}
    return info


def _bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps the number at least 1: ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} TiB"


def cmd_info(args) -> int:
    """Print describe() as text (or JSON with --json)."""
    info = describe(model_path(args))
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
