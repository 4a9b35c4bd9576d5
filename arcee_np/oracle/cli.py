"""The ``arcee-np trace`` and ``arcee-np compare`` commands (registered by cli.py via add_debug_commands).

``arcee-np trace --model DIR --ids "1 7 3" --out t.safetensors`` runs a model once and dumps its trace.
``arcee-np compare REFERENCE CANDIDATE`` compares two trace files; ``arcee-np compare TRACE --against
transformers`` reruns transformers (eager) on the trace's inputs and compares the trace with it. Both
print a table; compare exits 0 when all agree and 1 on any divergence (or when nothing could be compared),
so it can gate CI. Errors are arcee_np.cli.run_command's: 2 for a usage error (a bad flag, a path on the
command line that does not exist or cannot be written: checked before any work), 1 for a failure (a
corrupt trace file, a model that does not load).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..backend import DEVICES, DTYPES
from ..errors import UsageError
from ..io.gguf import is_gguf
from ..validation.cli import (check_ids_in_vocabulary, check_input_file, check_model_path, check_output_file,
                              check_prompt_text, non_negative_float, parse_token_ids)
from .compare import TOLERANCES

EXIT_OK, EXIT_DIVERGED = 0, 1


def add_debug_commands(subparsers) -> None:
    """Add ``trace`` and ``compare`` to an argparse subparsers object; each sets ``func(args) -> exit code``."""
    p = subparsers.add_parser("trace", help="run a model on a prompt or token ids and dump its named intermediates",
                              description="Run the model once on --prompt or --ids and write every named "
                              "intermediate (docs/trace.md) with the inputs and metadata to one safetensors file.")
    _add_input_arguments(p)
    p.add_argument("--out", default="trace.safetensors", help="trace file to write (default: %(default)s)")
    p.add_argument("--pattern", action="append", help="record only names matching this glob (repeatable; default: all)")
    p.add_argument("--layers-only", action="store_true", help="record embed, layers.{i}.out, final_norm, logits only")
    p.add_argument("--stop-after", metavar="NAME", help="stop the forward after this name (a glob)")
    p.add_argument("--stop-on-nonfinite", action="store_true",
                   help="stop at the first tensor holding NaN/Inf, name it and exit 1 (the partial trace is written)")
    p.set_defaults(func=run_trace)

    c = subparsers.add_parser("compare", help="compare traces (or a model) with another trace or live transformers",
                              description="Compare REFERENCE and CANDIDATE trace files, or a trace (or --model on "
                              "--ids) with transformers rerun on the same inputs (--against transformers). Prints "
                              "every tensor's error and the first divergence with its likely cause; exits 0 when "
                              "all agree, 1 on a divergence, 2 when it cannot run as asked.")
    c.add_argument("traces", nargs="*", metavar="TRACE",
                   help="REFERENCE CANDIDATE trace files; with --against transformers one candidate trace (or none "
                        "with --model and --ids/--prompt)")
    c.add_argument("--against", choices=["transformers"], help="rerun transformers on the same inputs as the reference")
    _add_input_arguments(c)
    c.add_argument("--pattern", action="append", help="compare only names matching this glob (repeatable)")
    c.add_argument("--tolerance", choices=list(TOLERANCES),
                   help="a row of arcee_np.compare.TOLERANCES (default: by the reference's dtype)")
    c.add_argument("--atol", type=non_negative_float, help="absolute tolerance (with --rtol; overrides --tolerance)")
    c.add_argument("--rtol", type=non_negative_float, default=0.0, help="relative tolerance with --atol (default 0)")
    c.add_argument("--failures-only", action="store_true", help="list only the diverging tensors")
    c.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    c.set_defaults(func=run_compare)


def _add_input_arguments(p) -> None:
    p.add_argument("--model", metavar="PATH", help="checkpoint folder (config.json + safetensors) or a llama.cpp "
                   ".gguf file; default: the trace's model_path for compare --against, else the shipped Shakespeare "
                   "model")
    p.add_argument("--prompt", help="text, encoded with the model's tokenizer as `arcee-np generate` does")
    p.add_argument("--ids", help='token ids: inline ("1 7 3" or "1,7,3") or a file of them (JSON list or text; '
                                 "one row per line for a batch)")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="default: float32 (compare: the trace's dtype)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="default: %(default)s")
    p.add_argument("--grad", action="store_true", help="also run the backward of the causal-LM loss (labels = the "
                   "input ids) and record the gradient of every named tensor as grad.NAME")


# ----------------------------------------------------------------------------------------------- inputs
def parse_ids(text: str) -> np.ndarray:
    """Token ids from inline text or a file: JSON (a list or list of lists) or whitespace/comma separated,
    one row per line. Returns [B, T] int64 (UsageError naming --ids when they do not parse)."""
    return parse_token_ids(text, "--ids")


def _input_ids(args, model_path, vocab_size: int) -> np.ndarray:
    """--ids (within the model's vocabulary) or --prompt encoded with the model's tokenizer."""
    if (args.prompt is None) == (args.ids is None):
        raise UsageError("give exactly one of --prompt TEXT or --ids IDS.")
    if args.ids is not None:
        return check_ids_in_vocabulary(parse_ids(args.ids), vocab_size)
    from ..cli import model_tokenizer

    tokenizer = model_tokenizer(model_path, "--prompt", "pass --ids instead")
    ids = tokenizer.encode(check_prompt_text(args.prompt, "--prompt"))
    if not ids:
        raise UsageError("--prompt encodes to no tokens (and the tokenizer adds no bos): give some text.")
    return np.asarray([ids], dtype=np.int64)


def _model_path(args, default=None) -> str:
    """--model, else ``default``, else the shipped Shakespeare model: a checkpoint folder or a GGUF file."""
    if args.model is not None:
        return check_model_path(args.model)
    if default is not None:
        return check_model_path(default, "the trace's model_path (override it with --model)")
    from ..shipped import default_model_path

    return default_model_path()


# ----------------------------------------------------------------------------------------------- trace
def run_trace(args) -> int:
    from ..io.checkpoint import read_config
    from ..models import ArceeForCausalLM
    from ..trace import LAYER_LEVEL, NonFiniteError
    from .tracefile import save_trace, trace_model

    check_output_file(args.out, "--out")
    path = _model_path(args)
    ids = _input_ids(args, path, read_config(path).vocab_size)
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
    from .tracefile import as_numpy

    lines = [f"{'name':<28} {'shape':<20} {'dtype':<8} {'max |x|':>10}"]
    for name, value in t.items():
        a = as_numpy(value)
        largest = float(np.max(np.abs(a.astype(np.float64)))) if a.size else 0.0
        lines.append(f"{name:<28} {'x'.join(map(str, a.shape)):<20} {str(a.dtype):<8} {largest:>10.3e}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- compare
def run_compare(args) -> int:
    from .compare import compare_traces, load_transformers_model, transformers_trace
    from .tracefile import load_trace

    tolerance = (args.atol, args.rtol) if args.atol is not None else args.tolerance
    if args.json:
        check_output_file(args.json, "--json")
    wanted = "one trace (the candidate) or none" if args.against else "REFERENCE CANDIDATE: two trace files"
    if (args.against is None and len(args.traces) != 2) or (args.against and len(args.traces) > 1):
        raise UsageError(f"compare takes {wanted}" + ("" if args.against else
                                                     ", or one trace with --against transformers") +
                         f"; got {len(args.traces)}.")
    for path in args.traces:
        check_input_file(path, "trace file")
    if args.against is None:
        reference, candidate = (load_trace(path) for path in args.traces)
        labels = args.traces
    else:
        candidate = load_trace(args.traces[0]) if args.traces else None
        if candidate is not None and args.model is None and candidate.meta.get("model_path") is None:
            raise UsageError("the trace names no model_path: give the checkpoint with --model PATH.")
        model_path = _model_path(args, None if candidate is None else candidate.meta.get("model_path"))
        if is_gguf(model_path):
            raise UsageError(f"{model_path} is a GGUF file, which transformers' Arcee does not load; compare a GGUF "
                             f"with its transformers checkpoint by `arcee-np gguf-check {model_path} --reference "
                             f"HF_DIR`.")
        if candidate is None:
            from ..io.checkpoint import read_config
            from ..models import ArceeForCausalLM
            from .tracefile import trace_model

            ids = _input_ids(args, model_path, read_config(model_path).vocab_size)
            model = ArceeForCausalLM.from_pretrained(model_path, dtype=args.dtype or "float32", device=args.device)
            candidate = trace_model(model, ids, args.pattern or "*", labels=ids if args.grad else None)
        inputs = candidate.inputs
        if "input_ids" not in inputs:
            raise UsageError("the trace holds no input_ids to rerun transformers on; write it with `arcee-np trace`.")
        dtype = args.dtype or candidate.meta.get("dtype") or "float32"
        try:
            torch_model = load_transformers_model(model_path, dtype)
        except ImportError as err:
            raise UsageError(f"--against transformers needs torch and transformers: pip install "
                             f"'arcee-np[golden]' ({err}).") from None
        reference = transformers_trace(torch_model, inputs["input_ids"], inputs.get("attention_mask"),
                                       inputs.get("position_ids"), args.pattern or list(candidate),
                                       labels=inputs.get("labels"))
        labels = ["transformers", args.traces[0] if args.traces else "arcee_np"]
    report = compare_traces(candidate, reference, tolerance, names=args.pattern, reference_label=labels[0],
                            candidate_label=labels[1])
    print(f"reference: {labels[0]}\ncandidate: {labels[1]}")
    print(report.table(failures_only=args.failures_only))
    for note in report.notes:
        print(note)
    print(report.summary())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1)
    return EXIT_OK if report.ok else EXIT_DIVERGED


# ----------------------------------------------------------------------------------------------- standalone
def main(argv=None) -> int:
    """``python -m arcee_np.oracle.cli {trace,compare} ...``: the same as ``arcee-np trace/compare ...``."""
    from ..cli import main as arcee_np_main

    return arcee_np_main(argv)


if __name__ == "__main__":
    sys.exit(main())
