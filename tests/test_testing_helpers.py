"""arcee_np.oracle.testing (assert_close, assert_trace_matches) and the worked examples of docs/debugging.md:
three deliberately broken ports, each of which the report must pin to the exact tensor."""

import re
from pathlib import Path

import numpy as np
import pytest

from arcee_np.oracle.testing import assert_close, assert_trace_matches, reference_trace
from conftest import random_model

DOCS = Path(__file__).resolve().parent.parent / "docs" / "debugging.md"
IDS = np.array([[3, 14, 15, 9, 26]])


def test_assert_close_uses_the_tolerance_table():
    expected = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert_close(expected + 5e-5, expected, name="logits")
    with pytest.raises(AssertionError, match=r"logits: max abs 0\.0003 at \(1, 2\).*exceeds tol 1e-04"):
        bad = expected.copy()
        bad[1, 2] += 3e-4
        assert_close(bad, expected, name="logits")
    expected64 = expected.astype(np.float64)
    with pytest.raises(AssertionError, match="tol 1e-09"):
        assert_close(expected64 + 1e-8, expected64, name="h")       # float64 golden mode: 1e-9
    assert_close(expected64 + 1e-8, expected64, name="h", dtype="float64_plain")
    assert_close(expected + 0.5, expected, tolerance=(1.0, 0.0))
    with pytest.raises(AssertionError, match="shape"):
        assert_close(expected.T, expected)


def test_assert_close_names_diverging_heads():
    probs = np.full((1, 4, 3, 3), 1 / 3)
    wrong = probs.copy()
    wrong[:, 2] = 0.5
    with pytest.raises(AssertionError, match=r"heads \[2\] of 4"):
        assert_close(wrong, probs, name="layers.0.attn.probs")


def test_assert_trace_matches():
    model = random_model()
    ours = reference_trace(model, IDS)
    theirs = {k: np.array(v) for k, v in ours.items() if k.startswith("layers.1.") or k == "logits"}
    report = assert_trace_matches(theirs, model, IDS)
    assert report.ok and len(report.compared) == 17
    theirs["layers.1.mlp.act"] = theirs["layers.1.mlp.act"] * 1.01
    with pytest.raises(AssertionError) as info:
        assert_trace_matches(theirs, model, IDS)
    message = str(info.value)
    marked = [line for line in message.splitlines() if line.endswith("<-- first divergence")]
    assert len(marked) == 1 and marked[0].startswith("layers.1.mlp.act ")
    assert message.strip().splitlines()[-1].startswith("first divergence at layers.1.mlp.act")
    with pytest.raises(AssertionError, match="no tensor named"):
        assert_trace_matches({"layers.0.attention.q": ours["layers.0.attn.q"]}, model, IDS)


def run_debugging_docs() -> dict:
    """Execute every ```python block of docs/debugging.md in one namespace, as a reader would."""
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S):
        exec(compile(block, str(DOCS), "exec"), namespace)
    return namespace


def test_debugging_docs_run_and_pin_each_broken_port():
    with np.errstate(over="ignore", invalid="ignore"):
        ns = run_debugging_docs()
    assert ns["report"].ok  # the faithful port agrees on all 35 tensors
    assert len(ns["report"].compared) == 35

    rope = ns["report_rope"]
    assert rope.first.name == "layers.0.attn.q_rope"
    assert rope.first.positions[0] == 1  # position 0 (angle 0) agrees in every layout
    assert "q (layers.0.attn.q, max abs 0) agrees" in rope.explanation
    assert "rotate-half vs interleaved" in rope.explanation

    norm = ns["report_norm"]
    assert norm.first.name == "layers.0.input_norm"
    assert "embed reaches |x|" in norm.explanation and "missing upcast" in norm.explanation

    gqa = ns["report_gqa"]
    assert gqa.first.name == "layers.0.attn.scores"
    assert gqa.first.heads == [1, 2]
    assert "q after RoPE (layers.0.attn.q_rope, max abs 0) and k after RoPE" in gqa.explanation
    assert "GQA head mapping: query head n must read KV head n // n_rep" in gqa.explanation
