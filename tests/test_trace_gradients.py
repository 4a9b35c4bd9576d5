"""Traces of gradients: the backward records ``grad.`` + every forward name, in backward order, and compare
finds the first divergence of a port's backward with the same report as for the forward (no torch needed)."""

import numpy as np
import pytest

from arcee_np.blocks import ACTIVATION_BACKWARDS, causal_lm_loss, lm_head, relu_backward, rms_norm
from arcee_np.cli import main
from arcee_np.oracle.compare import TOLERANCES, compare_traces, gradient_tolerance_for
from arcee_np.oracle.testing import assert_trace_matches
from arcee_np.oracle.tracefile import load_trace, save_trace, trace_model
from arcee_np.trace import is_gradient, name_order_key, trace, trace_names
from arcee_np.training import loss_and_gradients
from conftest import random_model

IDS = np.array([[3, 14, 15, 9, 26, 5], [5, 35, 8, 96, 7, 1]])


@pytest.fixture(scope="module")
def model():
    return random_model()


def test_the_backward_records_every_gradient_in_backward_order(model):
    with trace("grad.*") as t:
        loss_and_gradients(model, IDS, labels=IDS)
    expected = [n for n in trace_names(2, gradients=True) if is_gradient(n)]
    assert list(t) == expected  # grad.logits first, grad.embed last
    assert sorted(t, key=name_order_key) == expected
    for name in expected:
        forward = name[len("grad."):]
        assert t[name].shape == trace_model(model, IDS, forward)[forward].shape, name


def test_gradient_of_a_named_tensor_is_the_loss_derivative():
    """grad.layers.1.out is the derivative of the loss as a function of that tensor (final norm, head, loss
    recomputed from it with the blocks), by central differences in float64."""
    model = random_model(dtype="float64")
    with trace(["layers.1.out", "grad.layers.1.out"]) as t:
        loss, _ = loss_and_gradients(model, IDS, labels=IDS)

    def loss_of(h):
        hidden = rms_norm(h, model.params["norm.weight"], model.config.rms_norm_eps)
        return float(causal_lm_loss(lm_head(hidden, model.head_params["lm_head.weight"]), IDS))

    h = t["layers.1.out"]
    assert loss_of(h) == pytest.approx(float(loss), rel=1e-12)
    direction = np.random.default_rng(0).normal(size=h.shape)
    numeric = (loss_of(h + 1e-6 * direction) - loss_of(h - 1e-6 * direction)) / 2e-6
    assert float(np.sum(t["grad.layers.1.out"] * direction)) == pytest.approx(numeric, rel=1e-7)


def test_trace_file_keeps_gradients_and_labels(model, tmp_path):
    t = trace_model(model, IDS, labels=IDS)
    assert "grad.embed" in t and "logits" in t and "labels" in t.inputs
    save_trace(t, tmp_path / "t.safetensors")
    back = load_trace(tmp_path / "t.safetensors")
    assert list(back) == list(t) and np.array_equal(back.inputs["labels"], IDS)


def test_gradient_tolerances():
    assert gradient_tolerance_for("float32") is TOLERANCES["gradients_float32"]
    assert gradient_tolerance_for("float64") is TOLERANCES["gradients_float64"]
    assert gradient_tolerance_for("float64", against="transformers") is TOLERANCES["gradients_float32"]


def test_a_wrong_activation_derivative_is_the_first_divergence(model, monkeypatch):
    """A port whose ReLU² backward forgets the factor 2 r (uses relu's derivative) diverges first at
    grad.layers.1.mlp.up, while the gradient it is computed from agrees."""
    reference = trace_model(model, IDS, labels=IDS)
    monkeypatch.setitem(ACTIVATION_BACKWARDS, "relu2", relu_backward)
    broken = trace_model(model, IDS, labels=IDS)
    monkeypatch.undo()
    report = compare_traces(broken, reference)
    assert report.first.name == "grad.layers.1.mlp.up"
    assert all(r.status == "ok" for r in report.rows if not is_gradient(r.name))  # the forward is untouched
    assert "grad.layers.1.mlp.act" in report.explanation and "activation's derivative" in report.explanation
    with pytest.raises(AssertionError, match="first divergence at grad.layers.1.mlp.up"):
        assert_trace_matches({k: v for k, v in broken.items() if is_gradient(k)}, model, IDS, labels=IDS)


def test_cli_trace_and_compare_with_gradients(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "g.safetensors"
    assert main(["trace", "--model", str(tmp_path / "m"), "--ids", "3 14 15 9", "--grad", "--out", str(out)]) == 0
    t = load_trace(out)
    assert "grad.layers.0.attn.q" in t and "grad.embed" in t
    assert main(["compare", str(out), str(out)]) == 0
    assert "(gradients 1e-05 + 1e-04*|ref|)" in capsys.readouterr().out
