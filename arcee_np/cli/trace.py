"""``arcee-np trace --model DIR --ids "1 7 3" --out t.safetensors``: run a model once and dump its trace
(every named intermediate of docs/trace.md, with the inputs and metadata) to one safetensors file."""

from __future__ import annotations

import os
import sys

import numpy as np

from .arguments import (EXIT_DIVERGED, EXIT_OK, add_device_argument, add_dtype_argument, add_input_arguments,
                        add_model_argument, input_ids, model_path)
from .checks import check_output_file

TRACE_MODEL_HELP = ("checkpoint folder (config.json + safetensors) or a llama.cpp .gguf file; default: the trace's "
                    "model_path for compare --against, else the shipped Shakespeare model")


def add_command(commands) -> None:
    """Add ``trace`` to an argparse subparsers object."""
    p = commands.add_parser("trace", help="run a model on a prompt or token ids and dump its named intermediates",
                            description="Run the model once on --prompt or --ids and write every named "
                            "intermediate (docs/trace.md) with the inputs and metadata to one safetensors file.")
    add_run_arguments(p)
    p.add_argument("--out", default="trace.safetensors", help="trace file to write (default: %(default)s)")
    p.add_argument("--pattern", action="append", help="record only names matching this glob (repeatable; default: all)")
    p.add_argument("--layers-only", action="store_true", help="record embed, layers.{i}.out, final_norm, logits only")
    p.add_argument("--stop-after", metavar="NAME", help="stop the forward after this name (a glob)")
    p.add_argument("--stop-on-nonfinite", action="store_true",
                   help="stop at the first tensor holding NaN/Inf, name it and exit 1 (the partial trace is written)")
    p.set_defaults(func=cmd_trace)


def add_run_arguments(p) -> None:
    """The flags of a traced run, shared by trace and compare: the model, its inputs, dtype, device, --grad."""
    add_model_argument(p, TRACE_MODEL_HELP)
    add_input_arguments(p)
    add_dtype_argument(p, None, "compute dtype (default: float32; compare --against: the trace's dtype)")
    add_device_argument(p)
    p.add_argument("--grad", action="store_true", help="also run the backward of the causal-LM loss (labels = the "
                   "input ids) and record the gradient of every named tensor as grad.NAME")


def cmd_trace(args) -> int:
    """Trace the model on the inputs, write the file, print a table of what it holds."""
    from ..io.checkpoint import read_config
    from ..models import ArceeForCausalLM
    from ..oracle.tracefile import save_trace, trace_model
    from ..trace import LAYER_LEVEL, NonFiniteError

    check_output_file(args.out, "--out")
    path = model_path(args)
    ids = input_ids(args, path, read_config(path).vocab_size)
    model = ArceeForCausalLM.from_pretrained(path, dtype=args.dtype or "float32", device=args.device)
    patterns = LAYER_LEVEL if args.layers_only else (args.pattern or "*")
    try:
        t = trace_model(model, ids, patterns, labels=ids if args.grad else None, stop_after=args.stop_after,
                        stop_on_nonfinite=args.stop_on_nonfinite, model_path=os.path.abspath(path))
    except NonFiniteError as err:
        partial = err.trace
        partial.meta = {"producer": "arcee_np", "nonfinite_at": err.name, "model_path": os.path.abspath(path),
                        "dtype": model.dtype}
        partial.inputs = {"input_ids": ids}
        save_trace(partial, args.out)
        print(f"arcee-np trace: error: {err} (a partial trace with {len(partial)} tensors is written to {args.out})",
              file=sys.stderr)
        return EXIT_DIVERGED
    save_trace(t, args.out)
    print(_summary_table(t))
    stop = f", stopped after {t.stopped_at}" if t.stopped_at else ""
    print(f"{len(t)} tensors ({model.dtype}, {model.device}{stop}) written to {args.out}")
    return EXIT_OK


def _summary_table(t) -> str:
    """name, shape, dtype and largest magnitude of every traced tensor, one line each."""
    from ..oracle.tracefile import as_numpy

    lines = [f"{'name':<28} {'shape':<20} {'dtype':<8} {'max |x|':>10}"]
    for name, value in t.items():
        a = as_numpy(value)
        largest = float(np.max(np.abs(a.astype(np.float64)))) if a.size else 0.0
        lines.append(f"{name:<28} {'x'.join(map(str, a.shape)):<20} {str(a.dtype):<8} {largest:>10.3e}")
    return "\n".join(lines)
