"""The ``arcee-np`` parser and the one place a command's errors become an exit status.

``build_parser()`` asks each command module (``generate``, ``info``, ``trace``, ``compare``, ``attribute``,
``gguf_check``, ``finetune``) to add its subparser; each sets ``func(args) -> exit status``. ``main`` runs the chosen
command through ``run_command``: every error ends as one line on stderr and an exit status, 2 for usage
errors (argparse's, and UsageError: what the command line names cannot be used), 1 for every other failure
(any arcee_np error, out of memory, an error from a library below), never a traceback (set
ARCEE_NP_DEBUG=1 to see one).
"""

from __future__ import annotations

import os
import sys
import warnings

from ..errors import ArceeError, UsageError
from . import attribute, compare, finetune, generate, gguf_check, info, trace
from .arguments import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser

COMMANDS = (generate, info, trace, compare, attribute, finetune, gguf_check)  # the order of `arcee-np --help`


def build_parser() -> Parser:
    """The ``arcee-np`` parser with one subparser per command; each sets ``func(args) -> exit status``."""
    parser = Parser(prog="arcee-np", description="The Arcee decoder of transformers in NumPy/CuPy: generate text, "
                    "inspect checkpoints, trace and compare forward passes.",
                    epilog="Run 'arcee-np COMMAND --help' for the flags of a command. Docs: docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for command in COMMANDS:
        command.add_command(commands)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


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
