"""Import paths that moved: each keeps working for one release, with a DeprecationWarning naming the new path.

``MOVED_MODULES``: an old module path -> the module that now holds its names (or, where its names went to
several modules, ``{old name: "new.module:new_name"}``). ``import arcee_np.compare`` gives a module holding
the same objects as ``arcee_np.oracle.compare``, and warns once. ``MOVED_NAMES``: names that left a module
that still exists; the module's ``__getattr__`` hands them to ``moved_name``, which warns on every use.

The table names its targets as strings and imports them only when an old path is used, so it adds no
import between the layers. Every entry goes in the release after the one named in its warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.3.0"

_COMMANDS_OF_ORACLE_CLI = {  # arcee_np.oracle.cli held the trace and compare commands until 0.2.0
    "main": "arcee_np.cli.app:main",
    "run_trace": "arcee_np.cli.trace:cmd_trace",
    "run_compare": "arcee_np.cli.compare:cmd_compare",
    "parse_ids": "arcee_np.cli.checks:parse_token_ids",
    "EXIT_OK": "arcee_np.cli.arguments:EXIT_OK",
    "EXIT_DIVERGED": "arcee_np.cli.arguments:EXIT_DIVERGED",
}

MOVED_MODULES = {
    # the first release's paths (0.1.0), moved into the io and oracle folders
    "arcee_np.compare": "arcee_np.oracle.compare",
    "arcee_np.testing": "arcee_np.oracle.testing",
    "arcee_np.checkpoint": "arcee_np.io.checkpoint",
    "arcee_np.tokenizer": "arcee_np.io.tokenizer",
    "arcee_np.tracefile": "arcee_np.oracle.tracefile",
    "arcee_np.debug_cli": _COMMANDS_OF_ORACLE_CLI,
    # 0.2.0: the command line left the library for the arcee_np.cli package
    "arcee_np.oracle.cli": _COMMANDS_OF_ORACLE_CLI,
    "arcee_np.validation.cli": "arcee_np.cli.checks",
}

MOVED_NAMES = {
    "arcee_np.training.finetune": {"add_finetune_command": "arcee_np.cli.finetune:add_command",
                                   "cmd_finetune": "arcee_np.cli.finetune:cmd_finetune"},
    "arcee_np.oracle.gguf_check": {"add_gguf_check_command": "arcee_np.cli.gguf_check:add_command",
                                   "run_gguf_check": "arcee_np.cli.gguf_check:cmd_gguf_check"},
}


def _load(target: str):
    """The object a ``"module:name"`` target names (or the module of a plain ``"module"``)."""
    module, _, name = target.partition(":")
    value = importlib.import_module(module)
    return getattr(value, name) if name else value


def _warn(old: str, new: str, stacklevel: int) -> None:
    """The DeprecationWarning, pointing ``stacklevel`` frames up from the caller of _warn (warnings skips the
    import machinery's frames), at the user's line."""
    warnings.warn(f"{old} moved to {new}: import it from there ({old} goes in arcee_np {REMOVED_IN}).",
                  DeprecationWarning, stacklevel=stacklevel + 2)


def moved_name(module: str, name: str):
    """A name that left ``module`` (MOVED_NAMES), with a warning; AttributeError for any other name."""
    target = MOVED_NAMES.get(module, {}).get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn(f"{module}.{name}", target.replace(":", "."), 2)  # moved_name <- the module's __getattr__ <- the user
    return _load(target)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of MOVED_MODULES and fills each with the objects of its new home."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec):
        return None  # a plain module, filled by exec_module

    def exec_module(self, module) -> None:
        target = MOVED_MODULES[module.__name__]
        if isinstance(target, str):
            new = importlib.import_module(target)
            module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})
            module.__all__ = list(getattr(new, "__all__", [k for k in vars(new) if not k.startswith("_")]))
            _warn(module.__name__, target, 1)  # exec_module <- (the import machinery) <- the import line
        else:
            module.__dict__.update({name: _load(where) for name, where in target.items()})
            module.__all__ = list(target)
            homes = sorted({where.partition(":")[0] for where in target.values()})
            _warn(module.__name__, ", ".join(homes), 1)
        module.__doc__ = f"Deprecated: moved to {target if isinstance(target, str) else 'arcee_np.cli'}."


def install() -> None:
    """Put the finder of the old paths on sys.meta_path (once)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())
