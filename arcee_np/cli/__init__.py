"""The ``arcee-np`` command line, on top of the library (nothing below imports it).

    arcee-np generate "ROMEO:"                 stream text from the shipped Shakespeare model (generate.py)
    arcee-np info [--model DIR] [--json]       config, parameter count, memory per dtype (info.py)
    arcee-np trace / compare ...               debugging tools (trace.py, compare.py)
    arcee-np gguf-check MODEL.gguf --reference HF_DIR   what a GGUF conversion changed (gguf_check.py)
    arcee-np finetune --data FILE --steps N --out DIR   fine-tune on a text file (finetune.py)

One module per command, each with ``add_command(subparsers)`` and ``cmd_<name>(args) -> exit status``;
arguments.py holds what they share (exit statuses, --model / --dtype / --device, the model's path and
tokenizer, --prompt / --ids), checks.py the checks of what a command line names (run before any work), and
app.py the parser and ``run_command``, the one place errors become one line on stderr and an exit status.
docs/cli.md documents every command and flag.
"""

from .app import build_parser, failure, main, run_command
from .arguments import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, model_tokenizer
from .info import DTYPE_BYTES, describe

__all__ = ["DTYPE_BYTES", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "describe",
           "failure", "main", "model_tokenizer", "run_command"]
