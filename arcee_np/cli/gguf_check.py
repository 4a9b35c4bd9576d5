"""``arcee-np gguf-check MODEL.gguf --reference HF_DIR``: what a conversion to GGUF changed (the library is
arcee_np.oracle.gguf_check; docs/gguf.md)."""

from __future__ import annotations

import json

from ..errors import UsageError
from .arguments import EXIT_DIVERGED, EXIT_OK, add_dtype_argument, require_dtype
from .checks import (check_input_file, check_model_folder, check_output_file, non_negative_int, parse_token_ids,
                     positive_int)


def add_command(commands) -> None:
    """Add ``gguf-check`` to an argparse subparsers object."""
    p = commands.add_parser("gguf-check", help="find what a conversion to GGUF changed against the transformers "
                            "checkpoint", description="Check MODEL.gguf against the transformers checkpoint it was "
                            "converted from: the settings llama.cpp will ignore (each with its measured effect), "
                            "every tensor's error, the forward layer by layer, and llama.cpp's own logits when "
                            "llama-cpp-python is installed. Exits 1 when something is found, 0 on a clean "
                            "conversion, 2 when it cannot run as asked. Docs: docs/gguf.md.")
    p.add_argument("model", metavar="MODEL.gguf", help="the GGUF file")
    p.add_argument("--reference", required=True, metavar="HF_DIR", help="the transformers checkpoint folder")
    p.add_argument("--ids", help='token ids: inline ("1 7 3") or a file (default: --length random ids)')
    p.add_argument("--length", type=positive_int, default=64,
                   help="random ids to use without --ids (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random ids (default: %(default)s)")
    add_dtype_argument(p, help="arcee_np's dtype: float32 or float64 (default: %(default)s)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip section (d) even when llama-cpp-python is there")
    p.add_argument("--threads", type=positive_int, help="llama.cpp threads (default: 1)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=cmd_gguf_check)


def cmd_gguf_check(args) -> int:
    """Check what the command line names, run gguf_check, print its report; exit 1 on any finding."""
    from ..oracle.gguf_check import gguf_check

    check_input_file(args.model, "GGUF file")
    check_model_folder(args.reference, "--reference")
    require_dtype(args.dtype, ("float32", "float64"), "gguf-check", "its thresholds are float32's and float64's")
    if args.json:
        check_output_file(args.json, "--json")
    ids = parse_token_ids(args.ids, "--ids") if args.ids else None
    if ids is not None and ids.shape[0] != 1:
        raise UsageError("--ids must be one row of token ids")
    report = gguf_check(args.model, args.reference, ids, length=args.length, seed=args.seed, dtype=args.dtype,
                        llama_cpp=False if args.no_llama_cpp else None, threads=args.threads)
    print(report.text())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1)
    return EXIT_OK if report.ok else EXIT_DIVERGED
