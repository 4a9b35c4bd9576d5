"""Fuzzing the command line: every command with generated flags and values (numbers of every kind, words,
paths that do not exist or cannot be written, broken files).

Whatever the argv, ``arcee-np`` exits 0, 1 (a failure) or 2 (a usage error), and when it fails says so in
exactly one line on stderr, never a traceback: in process (many examples), and in a subprocess (a few).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from arcee_np.cli import main

from fuzzing import scaled
from tiny_lm import write_tiny_lm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A tiny model, a broken one, a trace file, a garbage file, a missing path and a read-only spot."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    model = write_tiny_lm(root / "lm")
    broken = root / "broken"
    broken.mkdir()
    for file in model.iterdir():
        (broken / file.name).write_bytes(file.read_bytes()[: max(1, file.stat().st_size // 3)])
    assert main(["trace", "--model", str(model), "--ids", "1 2 3", "--out", str(root / "t.safetensors")]) == 0
    (root / "garbage.safetensors").write_bytes(b"\x07" * 40)
    return {"model": str(model), "broken": str(broken), "trace": str(root / "t.safetensors"),
            "garbage": str(root / "garbage.safetensors"), "missing": str(root / "nope" / "x"), "folder": str(root),
            "out": str(root / "out.safetensors")}


VALUES = st.one_of(st.sampled_from(["0", "1", "-1", "3", "1.5", "nan", "inf", "-inf", "1e400", "x", "", " ", "[1, 2]",
                                    "1 2", "99999", "float16", "float64", "cpu", "cuda", "tpu", "layers.0.*"]),
                   st.text(max_size=6))
FLAGS = {
    "generate": ["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--repetition-penalty",
                 "--min-new-tokens", "--seed", "--dtype", "--device", "--greedy", "--chat", "--no-prompt"],
    "info": ["--json"],
    "trace": ["--ids", "--prompt", "--out", "--pattern", "--stop-after", "--dtype", "--layers-only",
              "--stop-on-nonfinite"],
    "compare": ["--atol", "--rtol", "--tolerance", "--json", "--pattern", "--failures-only", "--ids", "--against"],
}
SWITCHES = {"--greedy", "--chat", "--no-prompt", "--json", "--layers-only", "--stop-on-nonfinite", "--failures-only"}
PATH_FLAGS = {"--out", "--json"}


@st.composite
def argvs(draw, places):
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command]
    if command == "generate":
        argv += [draw(st.one_of(st.text(max_size=8), st.just("ROMEO:"))), "--max-new-tokens", "3"]
    if command == "compare":
        argv += draw(st.lists(st.sampled_from([places["trace"], places["garbage"], places["missing"]]), max_size=3))
    argv += ["--model", places[draw(st.sampled_from(["model", "model", "broken", "missing", "folder"]))]]
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=3)):
        if flag in SWITCHES and not (command == "compare" and flag == "--json"):
            argv.append(flag)
        elif flag in PATH_FLAGS:
            argv += [flag, places[draw(st.sampled_from(["out", "missing", "folder"]))]]
        elif flag == "--against":
            argv += [flag, "transformers"]
        else:
            argv += [flag, draw(VALUES)]
    return argv


def run_in_process(argv, capsys, cwd) -> tuple[int, str]:
    try:
        with contextlib.chdir(cwd):  # `trace` without --out writes trace.safetensors here
            status = main(argv)
    except SystemExit as done:  # argparse's own usage errors
        status = done.code
    return status, capsys.readouterr().err


def assert_one_line_failure(status, stderr, argv):
    assert status in (0, 1, 2), (status, argv)
    assert "Traceback" not in stderr, argv
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    if status != 0:
        assert len(errors) == 1, (argv, stderr)
    assert "internal error" not in stderr, (argv, stderr)


@settings(max_examples=scaled(30))  # each example loads the tiny model: ~0.1 s
@given(st.data())
def test_any_argv_exits_0_1_or_2_with_one_line(places, capsys, data):
    argv = data.draw(argvs(places))
    status, stderr = run_in_process(argv, capsys, places["folder"])
    assert_one_line_failure(status, stderr, argv)


@settings(max_examples=scaled(3))  # a process each: ~1 s
@given(st.data())
def test_in_a_subprocess_no_traceback_ever(places, data):
    argv = data.draw(argvs(places))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ARCEE_NP_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "arcee_np.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL, cwd=places["folder"])
    assert_one_line_failure(done.returncode, done.stderr, argv)
