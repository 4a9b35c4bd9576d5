"""Old import paths keep working for a release: each imports with a DeprecationWarning naming the new path
and gives the same objects as the new home (arcee_np.moved)."""

import importlib
import subprocess
import sys

import pytest

from arcee_np.moved import MOVED_MODULES, REMOVED_IN

FIRST_RELEASE = {  # the documented paths of 0.1.0 and a few of the names a port's tests imported from them
    "arcee_np.compare": ("arcee_np.oracle.compare", ["TOLERANCES", "Tolerance", "compare_arrays", "compare_traces",
                                                     "tolerance_for", "transformers_trace", "Report", "Row"]),
    "arcee_np.testing": ("arcee_np.oracle.testing", ["assert_close", "assert_trace_matches", "reference_trace"]),
    "arcee_np.checkpoint": ("arcee_np.io.checkpoint", ["read_checkpoint", "checkpoint_files", "write_checkpoint",
                                                       "backbone_shapes", "read_safetensors"]),
    "arcee_np.tokenizer": ("arcee_np.io.tokenizer", ["ArceeTokenizer", "TextStreamer"]),
    "arcee_np.tracefile": ("arcee_np.oracle.tracefile", ["save_trace", "load_trace", "trace_model", "as_numpy"]),
    "arcee_np.validation.cli": ("arcee_np.cli.checks", ["parse_token_ids", "check_model_path", "positive_int"]),
}


def fresh_import(name):
    """Import ``name`` as a first import would (the warning is given once per process)."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(FIRST_RELEASE))
def test_an_old_module_path_warns_and_gives_the_same_names(old):
    new, names = FIRST_RELEASE[old]
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}: import it from there .*{REMOVED_IN}"):
        module = fresh_import(old)
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name), name


def test_the_first_release_import_lines_still_run():
    """A port author's test file of 0.1.0, run as its own process: it runs, and warns on each old path."""
    code = ("import warnings\nwarnings.simplefilter('always')\n"
            "from arcee_np.compare import TOLERANCES, compare_traces\n"
            "from arcee_np.testing import assert_close\n"
            "from arcee_np.checkpoint import read_checkpoint\n"
            "from arcee_np.tokenizer import ArceeTokenizer, TextStreamer\n"
            "import numpy as np\nassert_close(np.ones(3), np.ones(3))\nprint(TOLERANCES['float32'].atol)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.0001"
    warned = [line for line in done.stderr.splitlines() if "DeprecationWarning" in line]
    assert len(warned) == 4 and all("<string>" in line for line in warned)  # pointing at the user's lines


def test_the_old_command_module_gives_the_commands():
    with pytest.warns(DeprecationWarning, match="arcee_np.oracle.cli moved to arcee_np.cli"):
        old = fresh_import("arcee_np.oracle.cli")
    from arcee_np.cli import main
    from arcee_np.cli.checks import parse_token_ids

    assert old.main is main and old.parse_ids is parse_token_ids and old.EXIT_OK == 0


@pytest.mark.parametrize("module, name, new", [
    ("arcee_np.training.finetune", "add_finetune_command", "arcee_np.cli.finetune.add_command"),
    ("arcee_np.oracle.gguf_check", "run_gguf_check", "arcee_np.cli.gguf_check.cmd_gguf_check"),
])
def test_names_that_left_a_module_warn_on_use(module, name, new):
    home = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}.{name} moved to {new}"):
        moved = getattr(home, name)
    owner, _, attr = new.rpartition(".")
    assert moved is getattr(importlib.import_module(owner), attr)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        home.nothing_here  # noqa: B018 - an unknown name is still an AttributeError


def test_every_moved_module_has_a_test():
    assert set(FIRST_RELEASE) | {"arcee_np.oracle.cli", "arcee_np.debug_cli"} == set(MOVED_MODULES)


def test_the_public_faces_import_without_a_warning():
    """Paths that stay public (the oracle's compare re-exports its parts) give no warning."""
    code = ("import warnings\nwarnings.simplefilter('error')\n"
            "from arcee_np.oracle.compare import TOLERANCES, compare_arrays, compare_traces, transformers_trace\n"
            "from arcee_np.oracle.testing import assert_close\nfrom arcee_np.cli import main, DTYPE_BYTES\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
