"""The forward's contract with the trace hook: every name of docs/trace.md goes through ``trace.record`` (or a
block's tap, which records) exactly once a forward, and the forward goes on with the value record returns,
so that a hook which changes a value changes everything after it. The backward keeps the same contract."""

import importlib

import numpy as np
import pytest

from arcee_np.trace import LAYER_STAGES, trace, trace_names
from arcee_np.training import loss_and_gradients

from conftest import random_model, small_config

trace_module = importlib.import_module("arcee_np.trace")
IDS = np.array([[3, 14, 15, 9, 2, 6]])


def recording_hook(monkeypatch, changed=None):
    """Replace trace.record: count every name, and return the value of ``changed`` as 1.5 x + 0.25 (a change that
    no softmax or norm undoes)."""
    counts = {}
    original = trace_module.record

    def record(name, value):
        counts[name] = counts.get(name, 0) + 1
        value = original(name, value)
        return value * 1.5 + 0.25 if name == changed else value

    for module in ("arcee_np.trace", "arcee_np.model", "arcee_np.models", "arcee_np.training.backward",
                   "arcee_np.training.gradients"):
        monkeypatch.setattr(importlib.import_module(module), "record", record)
    return counts


@pytest.fixture(scope="module")
def model():
    return random_model(small_config(), dtype="float64")


def test_every_name_is_recorded_once_a_forward(model, monkeypatch):
    counts = recording_hook(monkeypatch)
    with trace(()):  # an active trace that keeps nothing: the blocks' taps are handed out
        model(IDS, use_cache=False)
    assert counts == dict.fromkeys(trace_names(model.config.num_hidden_layers), 1)


@pytest.mark.parametrize("name", ["embed", "final_norm", "logits"] + [f"layers.1.{stage}" for stage in LAYER_STAGES])
def test_the_forward_goes_on_with_what_record_returns(model, monkeypatch, name):
    plain = model(IDS, use_cache=False).logits
    recording_hook(monkeypatch, changed=name)
    with trace(()):
        changed = model(IDS, use_cache=False).logits
    assert not np.allclose(changed, plain), f"changing {name} changed nothing after it"


@pytest.mark.parametrize("name", ["grad.logits", "grad.final_norm", "grad.layers.1.out", "grad.layers.1.mlp.act",
                                  "grad.layers.1.attn.probs", "grad.layers.1.attn.q", "grad.layers.1.input_norm"])
def test_the_backward_goes_on_with_what_record_returns(model, monkeypatch, name):
    labels = IDS.copy()
    plain = loss_and_gradients(model, IDS, labels=labels)[1]["model.layers.0.self_attn.q_proj.weight"]
    recording_hook(monkeypatch, changed=name)
    with trace(()):
        changed = loss_and_gradients(model, IDS, labels=labels)[1]["model.layers.0.self_attn.q_proj.weight"]
    assert not np.allclose(changed, plain), f"changing {name} changed no gradient before it"
