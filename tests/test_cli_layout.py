"""The command line sits on top of the library: the library holds no argparse and never imports arcee_np.cli,
and what the commands share (--model, --dtype, --device, exit statuses) is declared once."""

import ast
import pathlib

from arcee_np.backend import DEVICES, DTYPES
from arcee_np.cli import DTYPE_BYTES, build_parser

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "arcee_np"


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
    return found


def test_no_library_module_holds_argparse_or_imports_the_cli():
    library = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(library) > 40
    for path in library:
        imported = imports_of(path)
        assert "argparse" not in imported, f"{path.relative_to(PACKAGE)} uses argparse: commands go in arcee_np/cli/"
        assert not any(m == "arcee_np.cli" or m.startswith("arcee_np.cli.") for m in imported), path


def test_model_dtype_and_device_flags_are_one_declaration():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"generate", "info", "trace", "compare", "finetune", "gguf-check", "attribute"}
    for name, parser in commands.items():
        flags = {action.dest: action for action in parser._actions}
        if "dtype" in flags:
            assert tuple(flags["dtype"].choices) == tuple(DTYPES), name
        if "device" in flags:
            assert tuple(flags["device"].choices) == tuple(DEVICES), name
        if "model" in flags and flags["model"].option_strings:  # gguf-check's MODEL.gguf is positional
            assert flags["model"].metavar == "PATH", name


def test_the_bytes_per_dtype_come_from_the_one_dtype_vocabulary():
    assert DTYPE_BYTES == dict(DTYPES) == {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
