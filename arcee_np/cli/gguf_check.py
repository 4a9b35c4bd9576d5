"""``arcee-np gguf-check MODEL.gguf --reference HF_DIR``: what a conversion to GGUF changed (the library is
arcee_np.oracle.gguf_check; docs/gguf.md)."""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import UsageError
from .arguments import EXIT_DIVERGED, EXIT_OK, add_dtype_argument, model_tokenizer, require_dtype
from .attribute import add_html_argument, gguf_attribution_section
from .checks import (check_input_file, check_model_folder, check_output_file, check_prompt_text, non_negative_int,
                     parse_token_ids, positive_int)


def add_command(commands) -> None:
    """Add ``gguf-check`` to an argparse subparsers object."""
    p = commands.add_parser("gguf-check", help="find what a conversion to GGUF changed against the transformers "
                            "checkpoint", description="Check MODEL.gguf against the transformers checkpoint it was "
                            "converted from: the settings llama.cpp will ignore (each with its measured effect), "
                            "every tensor's error, the forward layer by layer, llama.cpp's own logits when "
                            "llama-cpp-python is installed, and which layers cause the logit error (attribution). "
                            "Exits 1 when something is found, 0 on a clean "
                            "conversion, 2 when it cannot run as asked. Docs: docs/gguf.md.")
    p.add_argument("model", metavar="MODEL.gguf", help="the GGUF file")
    p.add_argument("--reference", required=True, metavar="HF_DIR", help="the transformers checkpoint folder")
    p.add_argument("--ids", help='token ids: inline ("1 7 3") or a file (default: --length random ids)')
    p.add_argument("--prompt", help="text instead of ids, encoded with the GGUF file's tokenizer (its own, or a "
                   "tokenizer.json beside it) and compared with the reference's tokenizer on it")
    p.add_argument("--length", type=positive_int, default=64,
                   help="random ids to use without --ids (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random ids (default: %(default)s)")
    add_dtype_argument(p, help="arcee_np's dtype: float32 or float64 (default: %(default)s)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip section (d) even when llama-cpp-python is there")
    p.add_argument("--threads", type=positive_int, help="llama.cpp threads (default: 1)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--no-attribution", action="store_true", help="skip section (e), which patches the reference's "
                   "values into the file's forward site by site (one forward a site)")
    add_html_argument(p)
    p.set_defaults(func=cmd_gguf_check)


def cmd_gguf_check(args) -> int:
    """Check what the command line names, run gguf_check, print its report; exit 1 on any finding."""
    from ..oracle.gguf_check import gguf_check

    check_input_file(args.model, "GGUF file")
    check_model_folder(args.reference, "--reference")
    require_dtype(args.dtype, ("float32", "float64"), "gguf-check", "its thresholds are float32's and float64's")
    for flag, path in (("--json", args.json), ("--html", args.html)):
        if path:
            check_output_file(path, flag)
    if args.html and args.no_attribution:
        raise UsageError("--html draws section (e): drop --no-attribution.")
    if args.prompt is not None and args.ids:
        raise UsageError("give --prompt TEXT or --ids IDS, not both.")
    ids = parse_token_ids(args.ids, "--ids") if args.ids else None
    if ids is not None and ids.shape[0] != 1:
        raise UsageError("--ids must be one row of token ids")
    tokenizers_agree = True
    if args.prompt is not None:
        ids, tokenizers_agree = _prompt_ids(args.model, args.reference, check_prompt_text(args.prompt, "--prompt"))
    report = gguf_check(args.model, args.reference, ids, length=args.length, seed=args.seed, dtype=args.dtype,
                        llama_cpp=False if args.no_llama_cpp else None, threads=args.threads)
    *sections, summary = report.text().splitlines()
    print("\n".join(sections))
    if not args.no_attribution:
        gguf_attribution_section(args, report)
    print(summary)  # the last line, as before
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1)
    return EXIT_OK if report.ok and tokenizers_agree else EXIT_DIVERGED


def _prompt_ids(path: str, reference: str, prompt: str) -> tuple[np.ndarray, bool]:
    """([1, T] ids of ``prompt`` by the GGUF file's tokenizer, whether the reference's tokenizer.json gives the
    same ids); prints what each tokenizer gave."""
    ours = model_tokenizer(path, "--prompt", "pass --ids instead")
    ids = ours.encode(prompt)
    if not ids:
        raise UsageError("--prompt encodes to no tokens (and the tokenizer adds no bos): give some text.")
    print(f"--prompt: {len(ids)} ids from {ours.source}")
    if not os.path.isfile(os.path.join(reference, "tokenizer.json")):
        return np.asarray([ids], dtype=np.int64), True
    theirs = model_tokenizer(reference, "--prompt").encode(prompt)
    if theirs == ids:
        print(f"--prompt: {os.path.join(reference, 'tokenizer.json')} gives the same ids")
        return np.asarray([ids], dtype=np.int64), True
    at = next((i for i, (a, b) in enumerate(zip(ids, theirs, strict=False)) if a != b), min(len(ids), len(theirs)))
    print(f"--prompt: {os.path.join(reference, 'tokenizer.json')} gives other ids  <-- found (first difference at "
          f"position {at}: {ids[at:at + 3]} in the file, {theirs[at:at + 3]} in the reference; {len(ids)} vs "
          f"{len(theirs)} ids)")
    return np.asarray([ids], dtype=np.int64), False
