"""``arcee-np compare REFERENCE CANDIDATE``: compare two trace files; ``arcee-np compare TRACE --against
transformers``: rerun transformers (eager) on the trace's inputs and compare the trace with it (or, with
--model and --ids/--prompt and no trace, run arcee_np too). Prints a table; exits 0 when all agree and 1
on any divergence (or when nothing could be compared), so it can gate CI; 2 when it cannot run as asked.
"""

from __future__ import annotations

import json

from ..errors import UsageError
from ..io.gguf import is_gguf
from ..oracle.compare import TOLERANCES, Tolerance, reference_regime, tolerance_for
from .arguments import EXIT_DIVERGED, EXIT_OK, input_ids, model_path
from .attribute import add_html_argument, write_compare_html
from .checks import check_input_file, check_output_file, non_negative_float
from .trace import add_run_arguments


def add_command(commands) -> None:
    """Add ``compare`` to an argparse subparsers object."""
    c = commands.add_parser("compare", help="compare traces (or a model) with another trace or live transformers",
                            description="Compare REFERENCE and CANDIDATE trace files, or a trace (or --model on "
                            "--ids) with transformers rerun on the same inputs (--against transformers). Prints "
                            "every tensor's error and the first divergence with its likely cause; exits 0 when "
                            "all agree, 1 on a divergence, 2 when it cannot run as asked.")
    c.add_argument("traces", nargs="*", metavar="TRACE",
                   help="REFERENCE CANDIDATE trace files; with --against transformers one candidate trace (or none "
                        "with --model and --ids/--prompt)")
    c.add_argument("--against", choices=["transformers"], help="rerun transformers on the same inputs as the reference")
    add_run_arguments(c)
    c.add_argument("--pattern", action="append", help="compare only names matching this glob (repeatable)")
    c.add_argument("--tolerance", choices=list(TOLERANCES),
                   help="a row of arcee_np.oracle.tolerances.TOLERANCES (default: by the reference's dtype)")
    c.add_argument("--atol", type=non_negative_float, help="absolute tolerance: replaces the row's atol (the rtol "
                   "keeps the row's value unless --rtol is given)")
    c.add_argument("--rtol", type=non_negative_float, help="relative tolerance: replaces the row's rtol (the atol "
                   "keeps the row's value unless --atol is given)")
    c.add_argument("--failures-only", action="store_true", help="list only the diverging tensors")
    c.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    add_html_argument(c)
    c.set_defaults(func=cmd_compare)


def chosen_tolerance(args, reference) -> Tolerance | str | None:
    """The tolerance the flags ask for: --tolerance ROW (or None: compare_traces picks the row by the
    reference's dtype, and the gradient rows for ``grad.*``); --atol / --rtol replace one number each of that
    row, as in numpy.allclose, where each has a default and either may be given alone."""
    if args.atol is None and args.rtol is None:
        return args.tolerance
    name = args.tolerance
    if name is None:
        dtype, against = reference_regime(reference)
        row = tolerance_for(dtype, against)
        name = next(key for key, value in TOLERANCES.items() if value is row)
    row = TOLERANCES[name]
    given = " and ".join(flag for flag, value in (("--atol", args.atol), ("--rtol", args.rtol)) if value is not None)
    return Tolerance(row.atol if args.atol is None else args.atol, row.rtol if args.rtol is None else args.rtol,
                     f"{given}, the rest from the {name} row")


def cmd_compare(args) -> int:
    """Load (or record) both traces, compare them, print the table and the first divergence."""
    from ..oracle.compare import compare_traces
    from ..oracle.tracefile import load_trace

    for flag, path in (("--json", args.json), ("--html", args.html)):
        if path:
            check_output_file(path, flag)
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
        reference, candidate = _transformers_reference(args)
        labels = ["transformers", args.traces[0] if args.traces else "arcee_np"]
    tolerance = chosen_tolerance(args, reference)
    report = compare_traces(candidate, reference, tolerance, names=args.pattern, reference_label=labels[0],
                            candidate_label=labels[1])
    print(f"reference: {labels[0]}\ncandidate: {labels[1]}")
    used = report.tolerance
    print(f"tolerance: |candidate - reference| <= atol + rtol * |reference| with atol {used.atol:g}, rtol "
          f"{used.rtol:g} ({used.what})")
    print(report.table(failures_only=args.failures_only))
    for note in report.notes:
        print(note)
    print(report.summary())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1)
    if args.html:
        write_compare_html(args, report, reference, candidate)
    return EXIT_OK if report.ok else EXIT_DIVERGED


def _transformers_reference(args):
    """(transformers' trace, the candidate trace) for --against transformers: the candidate is the trace file,
    or arcee_np run on --model with --ids / --prompt; transformers reruns on the candidate's inputs."""
    from ..oracle.compare import load_transformers_model, transformers_trace
    from ..oracle.tracefile import load_trace

    candidate = load_trace(args.traces[0]) if args.traces else None
    if candidate is not None and args.model is None and candidate.meta.get("model_path") is None:
        raise UsageError("the trace names no model_path: give the checkpoint with --model PATH.")
    path = model_path(args, None if candidate is None else candidate.meta.get("model_path"))
    if is_gguf(path):
        raise UsageError(f"{path} is a GGUF file, which transformers' Arcee does not load; compare a GGUF with its "
                         f"transformers checkpoint by `arcee-np gguf-check {path} --reference HF_DIR`.")
    if candidate is None:
        from ..io.checkpoint import read_config
        from ..models import ArceeForCausalLM
        from ..oracle.tracefile import trace_model

        ids = input_ids(args, path, read_config(path).vocab_size)
        model = ArceeForCausalLM.from_pretrained(path, dtype=args.dtype or "float32", device=args.device)
        candidate = trace_model(model, ids, args.pattern or "*", labels=ids if args.grad else None)
    inputs = candidate.inputs
    if "input_ids" not in inputs:
        raise UsageError("the trace holds no input_ids to rerun transformers on; write it with `arcee-np trace`.")
    dtype = args.dtype or candidate.meta.get("dtype") or "float32"
    try:
        torch_model = load_transformers_model(path, dtype)
    except ImportError as err:
        raise UsageError(f"--against transformers needs torch and transformers: pip install "
                         f"'arcee-np[golden]' ({err}).") from None
    reference = transformers_trace(torch_model, inputs["input_ids"], inputs.get("attention_mask"),
                                   inputs.get("position_ids"), args.pattern or list(candidate),
                                   labels=inputs.get("labels"))
    return reference, candidate
