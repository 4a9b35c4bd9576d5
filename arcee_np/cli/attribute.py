"""``arcee-np attribute CANDIDATE --reference REF``: which block causes the candidate's error in the logits
(activation patching; the library is arcee_np.oracle.attribution; docs/debugging.md). Also the ``--html FILE``
flag of ``compare`` and ``gguf-check``: the report as one self-contained page (arcee_np.oracle.html_report)."""

from __future__ import annotations

import json
import os

from ..backend import DTYPES
from ..errors import UsageError
from .arguments import EXIT_OK, add_dtype_argument, add_input_arguments, input_ids, model_path, model_tokenizer
from .checks import check_model_path, check_output_file, number_type

share = number_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
DESCRIPTION = """Run CANDIDATE (a checkpoint folder or a .gguf file) and the reference on the same tokens, then
rerun the candidate with the reference's value patched in at each site (embed; each layer's attn.out,
attn_residual, mlp.out and out; final_norm; logits) and print the share of the final logit error (and of the
KL divergence) each patch removes, and the cause: the earliest site that removes at least --threshold of it,
with the step inside its block. Exits 0 when it ran, 2 when it cannot run as asked, 1 on a failure. Docs:
docs/debugging.md."""


def add_command(commands) -> None:
    """Add ``attribute`` to an argparse subparsers object."""
    p = commands.add_parser("attribute", help="name the block that causes a candidate's error (activation patching)",
                            description=DESCRIPTION)
    p.add_argument("candidate", metavar="CANDIDATE", help="the checkpoint folder or .gguf file to attribute")
    p.add_argument("--reference", required=True, metavar="REF", help="the reference checkpoint folder (or .gguf)")
    add_input_arguments(p)
    add_dtype_argument(p, help="the reference's dtype (default: %(default)s)")
    p.add_argument("--candidate-dtype", choices=tuple(DTYPES),
                   help="the candidate's dtype (default: --dtype): attribute a lower precision to its sites")
    p.add_argument("--threshold", type=share, default=0.99,
                   help="share of the error a site's patch must remove to be the cause (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON: the sites (each with its name and "
                   "the share of the final error its patch removes) and the cause")
    add_html_argument(p)
    p.set_defaults(func=cmd_attribute)


def add_html_argument(p) -> None:
    """``--html FILE``: also write the report as one self-contained HTML page."""
    p.add_argument("--html", metavar="FILE", help="also write the report as one self-contained HTML page (pictures "
                   "need matplotlib: pip install 'arcee-np[report]')")


def token_labels(path: str, ids) -> list | None:
    """The tokens of ``ids`` [B, T] (row 0) as text, the labels of the report's pictures; None without a
    tokenizer (the pictures then number the positions)."""
    try:
        tokenizer = model_tokenizer(path, "token labels")
    except (UsageError, OSError):
        return None
    return [tokenizer.decode([int(i)]) for i in ids[0]]


def cmd_attribute(args) -> int:
    """Check what the command line names, run both models, attribute, print (and write) the result."""
    from ..io.checkpoint import read_config
    from ..models import ArceeForCausalLM
    from ..oracle.attribution import attribute

    candidate_path = check_model_path(args.candidate, "CANDIDATE")
    reference_path = check_model_path(args.reference, "--reference")
    for flag, path in (("--json", args.json), ("--html", args.html)):
        if path:
            check_output_file(path, flag)
    ids = input_ids(args, reference_path, read_config(reference_path).vocab_size)
    candidate_dtype = args.candidate_dtype or args.dtype
    reference = ArceeForCausalLM.from_pretrained(reference_path, dtype=args.dtype)
    candidate = ArceeForCausalLM.from_pretrained(candidate_path, dtype=candidate_dtype)
    if candidate.config.num_hidden_layers != reference.config.num_hidden_layers or \
            candidate.config.hidden_size != reference.config.hidden_size:
        raise UsageError(f"CANDIDATE ({candidate.config.num_hidden_layers} layers of {candidate.config.hidden_size}) "
                         f"and --reference ({reference.config.num_hidden_layers} of {reference.config.hidden_size}) "
                         f"are not the same architecture: patching needs tensors of the same shapes.")
    result = attribute(candidate, reference, ids, threshold=args.threshold, reference_label=reference_path,
                       candidate_label=candidate_path)
    print(f"reference: {reference_path} ({args.dtype})\ncandidate: {candidate_path} ({candidate_dtype})")
    print(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"reference": reference_path, "candidate": candidate_path, **result.to_dict()}, fh, indent=1)
    if args.html:
        from ..oracle.html_report import models_report

        page = models_report(candidate, reference, ids, attribution=result, tokens=token_labels(reference_path, ids),
                             title=f"arcee-np attribute {os.path.basename(os.path.normpath(candidate_path))}")
        print(f"HTML report: {args.html} ({page.save(args.html)} bytes)")
    return EXIT_OK


def write_compare_html(args, report, reference, candidate) -> None:
    """compare's ``--html``: the page of two traces, with the logit lens read by the model of --model, of a
    trace's model_path or (with --against) the model compare ran, when there is one."""
    from ..models import ArceeForCausalLM
    from ..oracle.html_report import traces_report

    recorded = (getattr(reference, "meta", {}) or {}).get("model_path") or \
        (getattr(candidate, "meta", {}) or {}).get("model_path")
    path = model_path(args, recorded) if (args.model or recorded or args.against) else None
    model = ArceeForCausalLM.from_pretrained(path) if path else None
    ids = (getattr(reference, "inputs", None) or getattr(candidate, "inputs", None) or {}).get("input_ids")
    tokens = token_labels(path, ids) if path and ids is not None else None
    page = traces_report(report, reference, candidate, model=model, tokens=tokens,
                         title=f"arcee-np compare: {report.candidate} against {report.reference}")
    print(f"HTML report: {args.html} ({page.save(args.html)} bytes)")


def gguf_attribution_section(args, report) -> None:
    """gguf-check's attribution section (printed), and with ``--html`` the page: which layers of the file cause
    its logit error, beside each layer's weight error."""
    from ..oracle.gguf_attribution import attribute_gguf, gguf_page, layer_lines

    if not report.forward or report.forward.get("skipped"):
        why = report.forward.get("skipped") if report.forward else "the file is not a conversion of the reference"
        print(f"\n(e) attribution: skipped: {why}" + (f" (so {args.html} is not written)" if args.html else ""))
        return
    ids = [report.input_ids]
    result, reference, candidate = attribute_gguf(args.model, args.reference, ids, args.dtype)
    print("\n(e) attribution: the share of the logit error each site's patch removes (the file's weights, the "
          "reference's settings), beside the weights' SNR")
    print("\n".join(layer_lines(result, report.tensors)))
    if args.html:
        page = gguf_page(report, result, reference, candidate, ids, tokens=token_labels(args.reference, ids))
        print(f"HTML report: {args.html} ({page.save(args.html)} bytes)")
