"""The trace hook: names and shapes (against docs/trace.md), recorded values, options, the non-finite
sentinel, and trace files."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from arcee_np import TraceFileError, trace
from arcee_np.trace import (LAYER_LEVEL, NonFiniteError, Trace, _active, detect_nonfinite, record, tap,
                            trace_names)
from arcee_np.oracle.tracefile import load_trace, save_trace, trace_model
from conftest import random_model, small_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "trace.md"
IDS = np.array([[3, 14, 15, 9, 26], [5, 35, 8, 97 - 1, 7]])


def documented_names() -> dict[str, str]:
    """``{name template: shape}`` from the table of docs/trace.md."""
    rows = re.findall(r"^\| `([^`]+)` \| (\[[^\]]*\]) \|", DOCS.read_text(), re.M)
    return dict(rows)


def test_every_recorded_name_is_documented_with_its_shape(model):
    with trace() as t:
        model(IDS)
    assert list(t) == trace_names(2)
    documented = documented_names()
    templated = {re.sub(r"^layers\.\d+\.", "layers.{i}.", n) for n in t}
    assert templated == set(documented)
    c = model.config
    B, T = IDS.shape
    dims = dict(B=B, T=T, S=T, D=c.hidden_size, H=c.num_attention_heads, KV=c.num_key_value_heads, hd=c.head_dim,
                I=c.intermediate_size, V=c.vocab_size)
    dims["T'"] = T
    for name, value in t.items():
        spec = documented[re.sub(r"^layers\.\d+\.", "layers.{i}.", name)]
        expected = tuple(eval(d.strip().replace("T'", "Tk"), {}, {**dims, "Tk": T}) for d in spec[1:-1].split(","))
        assert tuple(value.shape) == expected, (name, spec)


def test_recorded_values_are_the_forward_values(model):
    with trace() as t:
        out = model(IDS, output_hidden_states=True, output_attentions=True)
    np.testing.assert_array_equal(t["logits"], out.logits)
    np.testing.assert_array_equal(t["final_norm"], out.hidden_states[-1])
    np.testing.assert_array_equal(t["layers.0.out"], out.hidden_states[1])
    np.testing.assert_array_equal(t["embed"], out.hidden_states[0])
    np.testing.assert_array_equal(t["layers.1.attn.probs"], out.attentions[1])
    np.testing.assert_allclose(t["layers.0.out"], t["layers.0.attn_residual"] + t["layers.0.mlp.out"], rtol=1e-6)
    np.testing.assert_allclose(t["layers.0.mlp.act"], np.maximum(t["layers.0.mlp.up"], 0) ** 2, rtol=1e-6)


def test_no_cost_when_off():
    value = np.ones(3)
    assert not _active.get()
    assert record("anything", value) is value
    assert tap("layers.0.mlp") is None


def test_patterns_globs_regex_and_predicates(model):
    with trace("layers.1.attn.*") as a, trace(LAYER_LEVEL) as b, trace(lambda n: n.endswith("_norm")) as c:
        model(IDS)
    assert list(a) == [f"layers.1.attn.{s}" for s in ("q", "k", "v", "q_rope", "k_rope", "scores", "probs", "context",
                                                        "out")]
    assert list(b) == ["embed", "layers.0.out", "layers.1.out", "final_norm", "logits"]
    assert list(c) == ["layers.0.input_norm", "layers.0.post_norm", "layers.1.input_norm", "layers.1.post_norm",
                       "final_norm"]
    assert not _active.get()


def test_stop_after_ends_the_forward(model):
    with trace(stop_after="layers.0.attn.k_rope") as t:
        model(IDS)
    assert t.stopped_at == "layers.0.attn.k_rope"
    assert list(t)[-1] == "layers.0.attn.k_rope" and "logits" not in t
    with trace("logits") as outer, trace(stop_after="embed") as inner:  # the inner stop ends the call for both
        model(IDS)
    assert list(inner) == ["embed"] and not outer
    with pytest.raises(ZeroDivisionError):  # other errors pass through, and the trace is removed
        with trace():
            1 / 0  # noqa: B018 - an error raised inside the block
    assert not _active.get()


def test_to_host_copies_other_backends():
    model = random_model(device="array_api_strict")
    ids = np.array([[3, 4, 5]])
    with trace("layers.0.mlp.*") as plain, trace("layers.0.mlp.*", to_host=True) as host:
        model(ids)
    assert not isinstance(plain["layers.0.mlp.up"], np.ndarray)
    assert all(isinstance(v, np.ndarray) for v in host.values())
    np.testing.assert_array_equal(host["layers.0.mlp.act"], np.asarray(plain["layers.0.mlp.act"]))


def hot_float16_model():
    """A float16 model whose first up_proj output reaches |x| >> 256, so relu(x)**2 overflows to Inf."""
    model = random_model(small_config(), dtype="float16")
    model.params["layers.0.mlp.up_proj.weight"] = model.params["layers.0.mlp.up_proj.weight"] * np.float16(2000)
    return model


def test_nonfinite_sentinel_names_the_relu2_overflow():
    model = hot_float16_model()
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NonFiniteError, match="logits of ArceeForCausalLM hold NaN/Inf.*layers.0.mlp.act") as plain:
            model(IDS)  # the forward refuses NaN/Inf logits, naming the first layer they came from
        assert plain.value.name == "layers.0.mlp.act"
        with pytest.raises(NonFiniteError) as info:
            with trace("logits", stop_on_nonfinite=True):  # names outside the patterns are checked too
                model(IDS)
    err = info.value
    assert err.name == "layers.0.mlp.act"
    assert err.previous[0] == "layers.0.mlp.up" and err.previous[1] > 255.9
    assert "relu(x)**2 overflows float16" in str(err) and "Inf" in str(err)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(NonFiniteError, match="layers.0.mlp.act"):
        with detect_nonfinite():
            model(IDS)
    assert not _active.get()


def test_sentinel_is_quiet_on_a_finite_forward(model):
    with detect_nonfinite() as t:
        out = model(IDS)
    assert np.isfinite(out.logits).all() and not t


# ------------------------------------------------------------------------------------------------ trace files
def test_trace_file_round_trip(tmp_path, model):
    mask = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    t = trace_model(model, IDS, attention_mask=mask, model_path="somewhere")
    save_trace(t, tmp_path / "t.safetensors")
    back = load_trace(tmp_path / "t.safetensors")
    assert list(back) == list(t) == trace_names(2)
    for name in t:
        assert back[name].dtype == t[name].dtype
        np.testing.assert_array_equal(back[name], t[name])
    np.testing.assert_array_equal(back.inputs["input_ids"], IDS)
    np.testing.assert_array_equal(back.inputs["attention_mask"], mask)
    meta = back.meta
    assert meta["producer"] == "arcee_np" and meta["dtype"] == "float32" and meta["device"] == "cpu"
    assert meta["config"]["hidden_size"] == 32 and meta["model_path"] == "somewhere"
    assert {"python", "numpy", "safetensors"} <= set(meta["versions"])
    header = json.loads(__import__("safetensors").safe_open(str(tmp_path / "t.safetensors"), "np").metadata()
                        ["arcee_np.trace"])
    assert header["names"] == trace_names(2) and header["format"] == "arcee_np.trace"


def test_float16_trace_keeps_its_dtype(tmp_path):
    model = random_model(dtype="float16")
    t = trace_model(model, IDS, LAYER_LEVEL)
    save_trace(t, tmp_path / "h.safetensors")
    back = load_trace(tmp_path / "h.safetensors")
    assert back["logits"].dtype == np.float16 and back.meta["dtype"] == "float16"
    np.testing.assert_array_equal(back["logits"], t["logits"])


def test_plain_safetensors_dump_loads_in_recording_order(tmp_path):
    tensors = {"logits": np.zeros((1, 2, 3), np.float32), "layers.1.out": np.ones((1, 2, 4), np.float32),
               "embed": np.ones((1, 2, 4), np.float32), "layers.0.attn.q": np.ones((1, 1, 2, 4), np.float32),
               "inputs.input_ids": np.array([[1, 2]])}
    save_file(tensors, str(tmp_path / "port.safetensors"))
    back = load_trace(tmp_path / "port.safetensors")
    assert list(back) == ["embed", "layers.0.attn.q", "layers.1.out", "logits"]
    assert back.meta == {} and back.inputs["input_ids"].tolist() == [[1, 2]]


def test_trace_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="arcee-np trace"):
        load_trace(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(TraceFileError, match="truncated"):
        load_trace(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="reserved"):
        save_trace(Trace() | {"inputs.x": np.zeros(1)}, tmp_path / "x.safetensors")
