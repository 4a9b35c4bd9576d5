"""arcee_np against the golden outputs of transformers stored in tests/golden/ (see scripts/make_golden.py).

Needs neither torch nor transformers: the checkpoints, inputs and expected tensors are safetensors files.
Every case folder is loaded with ``ArceeForCausalLM.from_pretrained(folder, dtype=case["dtype"])``, run
with the stored inputs and ``case["call"]`` kwargs, and every stored tensor is compared (max abs error)
with the tolerance its expectation file declares (float32 1e-4, float64 plain 1e-6, float64 lifted 1e-9,
float16 1e-2): a row of arcee_np's TOLERANCES (``golden_*``), checked with arcee_np.oracle.testing.assert_close.
``compare == "mask"`` compares only valid (non-padding) rows. Per-block tests check RoPE,
RMSNorm and one decoder layer against ``tests/golden/blocks/``. A few cases also run on
``device="array_api_strict"`` and must give the same numbers as NumPy.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from arcee_np import ArceeConfig, ArceeForCausalLM, ArceeModel
from arcee_np.backend import namespace_for_device, to_device, to_numpy
from arcee_np.blocks import rms_norm, rope_cos_sin, rope_frequencies
from arcee_np.model import decoder_layer
from arcee_np.oracle import testing
from arcee_np.oracle.tolerances import TOLERANCES

from conftest import golden_tolerance, small_attention_tiles

GOLDEN = Path(__file__).resolve().parent / "golden"
META = json.loads((GOLDEN / "meta.json").read_text())
CASES = META["cases"]


def _case(name: str) -> dict:
    return json.loads((GOLDEN / name / "case.json").read_text())


def _inputs(name: str) -> dict[str, np.ndarray]:
    return load_file(str(GOLDEN / name / "inputs.safetensors"))


# ------------------------------------------------------------------------------------------ comparing


def _valid_rows(array: np.ndarray, key: str, mask: np.ndarray | None) -> np.ndarray:
    """The entries of ``array`` that ``compare == "mask"`` compares (see scripts/make_golden.py).

    [B, T, ...] tensors (logits, hidden_states): query rows t with mask[:, -T:] == 1;
    attentions [B, H, T, S]: the same query rows; cache [B, KV, S, hd]: positions with mask == 1.
    """
    if mask is None or key == "loss":
        return array
    mask = mask.astype(bool)
    if key.startswith("attentions."):
        rows = np.moveaxis(array, 2, 1)  # [B, T, H, S]
        return rows[mask[:, -rows.shape[1]:]]
    if key.startswith("past_key_values."):
        rows = np.moveaxis(array, 2, 1)  # [B, S, KV, hd]
        assert rows.shape[1] == mask.shape[1], (key, rows.shape, mask.shape)
        return rows[mask]
    return array[mask[:, -array.shape[1]:]]


def assert_close(actual, expected, key: str, tol, mask=None, where: str = "") -> float:
    """Max abs error of ``actual`` vs ``expected`` over the compared entries; fails where it exceeds ``tol``:
    a number (max abs) or ``[atol, rtol]`` (``|a - e| <= atol + rtol * |e|`` elementwise), which must be a row
    of TOLERANCES (golden_tolerance); the comparison is arcee_np.oracle.testing.assert_close's.

    key: the fixture name of the tensor (``logits``, ``attentions.0``, ``past_key_values.1.keys`` ...),
    which decides the axis ``mask`` applies to; where: context for the message.
    """
    label = f"{where}: {key}" if where else key
    actual = np.asarray(to_numpy(actual))
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != expected {expected.shape}"
    a = _valid_rows(actual.astype(np.float64), key, mask)
    e = _valid_rows(expected.astype(np.float64), key, mask)
    assert np.isfinite(e).all(), f"{label}: the golden tensor has non-finite compared entries"
    testing.assert_close(a, e, name=label, tolerance=golden_tolerance(tol))
    return float(np.max(np.abs(a - e))) if a.size else 0.0


def flatten(out) -> dict:
    """arcee_np output -> the flat names of the fixtures."""
    flat = {"logits": out.logits}
    if out.loss is not None:
        flat["loss"] = out.loss
    for i, h in enumerate(out.hidden_states or ()):
        flat[f"hidden_states.{i}"] = h
    for i, a in enumerate(out.attentions or ()):
        flat[f"attentions.{i}"] = a
    cache = out.past_key_values
    if cache is not None:
        for layer in range(len(cache)):
            keys, values = cache[layer]
            flat[f"past_key_values.{layer}.keys"] = keys
            flat[f"past_key_values.{layer}.values"] = values
    return flat


def compare_all(flat: dict, expected: dict, tol: float, mask, where: str) -> dict[str, float]:
    missing = sorted(set(expected) - set(flat))
    assert not missing, f"{where}: arcee_np did not produce {missing}"
    return {key: assert_close(flat[key], exp, key, tol, mask, where) for key, exp in expected.items()}


def _forward_kwargs(case: dict, inputs: dict) -> dict:
    kwargs = {k: v for k, v in inputs.items()}
    kwargs.update(case["call"])
    return kwargs


# ------------------------------------------------------------------------------------------ whole-model cases

SINGLE_STEP = [c for c in CASES if "steps" not in _case(c)]
STEPPED = [c for c in CASES if "steps" in _case(c)]
EXPECTATIONS = [(c, f) for c in SINGLE_STEP for f in _case(c)["expectations"]]


def test_meta_lists_every_case_folder():
    folders = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name != "blocks")
    assert folders == sorted(CASES)
    assert META["transformers"] and META["torch"]


# Every whole-model case runs under each way of holding the weights (widened at load, or kept in their
# stored dtype and widened tile by tile per use) and with every attention implementation: the default
# ("auto", whose steps on these tiny models fit one tile and so run eager), tiled and its NumPy layout with
# tiles of 3 queries and 5 keys (the online softmax over many tiles), and eager. Each must meet
# transformers' numbers.
VARIANTS = {"at_load": {"widen": "at_load"}, "per_use": {"widen": "per_use"},
            "small_tiles": {"widen": "at_load", "attn_implementation": "tiled"},
            "small_tiles_numpy": {"widen": "at_load", "attn_implementation": "tiled_numpy"},
            "eager": {"widen": "at_load", "attn_implementation": "eager"}}


def tiles_of(variant):
    """The attention tiles a variant runs with (tiny ones for the "small_tiles" variants, else the defaults)."""
    return small_attention_tiles() if variant.startswith("small_tiles") else contextlib.nullcontext()


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def get(name: str, device: str = "cpu", variant: str = "at_load"):
        key = (name, device, variant)
        if key not in cache:
            cache[key] = ArceeForCausalLM.from_pretrained(GOLDEN / name, dtype=_case(name)["dtype"], device=device,
                                                          **VARIANTS[variant])
        return cache[key]

    return get


def run_case(model, name: str) -> dict:
    case = _case(name)
    out = model(**_forward_kwargs(case, _inputs(name)))
    return flatten(out)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name,expectation", EXPECTATIONS, ids=[f"{c}-{f.split('.')[0]}" for c, f in EXPECTATIONS])
def test_case(name, expectation, variant, loaded):
    case = _case(name)
    spec = case["expectations"][expectation]
    inputs = _inputs(name)
    mask = inputs.get("attention_mask") if case["compare"] == "mask" else None
    with tiles_of(variant):
        flat = run_case(loaded(name, variant=variant), name)
    expected = load_file(str(GOLDEN / name / expectation))
    assert set(spec["tensors"]) == set(expected)
    compare_all(flat, expected, spec["tolerance"], mask, f"{name}/{expectation}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", STEPPED)
def test_kv_cache_steps(name, variant, loaded):
    """Prefill + single-token decode steps with arcee_np's cache, each step against transformers."""
    with tiles_of(variant):
        kv_cache_steps(name, loaded(name, variant=variant))


def kv_cache_steps(name, model):
    case = _case(name)
    inputs = _inputs(name)
    expected = load_file(str(GOLDEN / name / "expected.safetensors"))
    tol = case["expectations"]["expected.safetensors"]["tolerance"]
    cache, out = None, None
    for k, step in enumerate(case["steps"]):
        step_inputs = {arg: inputs[key] for arg, key in step["inputs"].items()}
        out = model(**step_inputs, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        assert cache is not None and cache.get_seq_length() == step_inputs["attention_mask"].shape[1]
        mask = step_inputs["attention_mask"] if case["compare"] == "mask" else None
        for arg, key in step["expected"].items():
            assert_close(getattr(out, arg), expected[key], arg, tol, mask, f"{name} step {k} ({key})")
    final = {k: v for k, v in expected.items() if k.startswith("past_key_values.")}
    compare_all(flatten(out), final, tol, step_inputs["attention_mask"] if case["compare"] == "mask" else None,
                f"{name} final cache")
    full = case["full"]
    out_full = model(**{arg: inputs[key] for arg, key in full["inputs"].items()}, **full["call"])
    full_mask = inputs[full["inputs"]["attention_mask"]]
    assert_close(out_full.logits, expected["full.logits"], "logits", tol, full_mask, f"{name} full forward")


def test_hidden_and_attentions_last_hidden_state_is_normed():
    """ArceeModel's last_hidden_state equals transformers' hidden_states[-1] (after the final norm)."""
    name = "hidden_and_attentions"
    case = _case(name)
    model = ArceeModel.from_pretrained(GOLDEN / name, dtype="float32")
    out = model(**_inputs(name), use_cache=False)
    expected = load_file(str(GOLDEN / name / "expected.safetensors"))
    last = expected[f"hidden_states.{model.config.num_hidden_layers}"]
    assert_close(out.last_hidden_state, last, "last_hidden_state", case["tolerance"])


def test_packed_sequences_block_diagonal_recorded():
    """transformers 5.x separates packed sequences; the fixture records it and test_case checks arcee_np."""
    assert _case("packed_sequences")["transformers_block_diagonal"] is True


def test_yarn_legacy_config_is_v4_spelling():
    cfg = json.loads((GOLDEN / "yarn_legacy_type" / "config.json").read_text())
    assert "rope_parameters" not in cfg and cfg["rope_scaling"]["type"] == "yarn" and "rope_theta" in cfg
    config = ArceeConfig.from_pretrained(GOLDEN / "yarn_legacy_type")
    assert config.rope_type == "yarn" and config.rope_theta == 20000.0


def test_sharded_case_is_sharded():
    assert len(list((GOLDEN / "sharded").glob("model-*-of-*.safetensors"))) >= 2
    assert not (GOLDEN / "sharded" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------ array_api_strict

STRICT_CASES = ["biases", "left_padding", "yarn_explicit", "labels", "float64", "float64_from_bfloat16"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", STRICT_CASES)
def test_array_api_strict_same_numbers(name, variant, loaded):
    pytest.importorskip("array_api_strict")
    case = _case(name)
    with tiles_of(variant):
        numpy_flat = run_case(loaded(name, "cpu", variant), name)
        strict_flat = run_case(loaded(name, "array_api_strict", variant), name)
    assert set(strict_flat) == set(numpy_flat)
    tight = TOLERANCES["array_api_strict_float64" if case["dtype"] == "float64" else "array_api_strict_float32"].atol
    for key, value in numpy_flat.items():
        assert type(strict_flat[key]).__module__.startswith("array_api_strict"), key
        assert_close(strict_flat[key], to_numpy(value), key, tight, None, f"{name} strict vs numpy")
    mask = _inputs(name).get("attention_mask") if case["compare"] == "mask" else None
    for fname, spec in case["expectations"].items():
        compare_all(strict_flat, load_file(str(GOLDEN / name / fname)), spec["tolerance"], mask,
                    f"{name}/{fname} (array_api_strict)")


def test_kv_cache_on_array_api_strict():
    pytest.importorskip("array_api_strict")
    name = "kv_cache"
    case = _case(name)
    model = ArceeForCausalLM.from_pretrained(GOLDEN / name, dtype="float32", device="array_api_strict")
    inputs = _inputs(name)
    expected = load_file(str(GOLDEN / name / "expected.safetensors"))
    cache = None
    for k, step in enumerate(case["steps"]):
        step_inputs = {arg: inputs[key] for arg, key in step["inputs"].items()}
        out = model(**step_inputs, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        assert_close(out.logits, expected[f"steps.{k}.logits"], "logits", case["tolerance"],
                     step_inputs["attention_mask"], f"array_api_strict step {k}")


# ------------------------------------------------------------------------------------------ blocks

ROPE = json.loads((GOLDEN / "blocks" / "rope.json").read_text())["cases"]
ROPE_T = load_file(str(GOLDEN / "blocks" / "rope.safetensors"))


def _rope_config(spec: dict) -> ArceeConfig:
    c = spec["config"]
    return ArceeConfig.from_dict(dict(c, vocab_size=8, intermediate_size=8, num_hidden_layers=1))


@pytest.mark.parametrize("name", sorted(ROPE))
def test_rope_block(name):
    spec = ROPE[name]
    tol = spec["tolerance"]
    config = _rope_config(spec)
    assert config.rope_type == spec["rope_type"]
    xp = namespace_for_device("cpu")
    inv_freq, scaling = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, xp, xp.float32)
    assert scaling == pytest.approx(spec["attention_scaling"], rel=1e-15, abs=0)
    ref_inv = ROPE_T[f"{name}.inv_freq"]
    # NumPy's float32 pow may differ from torch's by 1 ulp (docs/numerics.md): allow 2 ulp, no more
    np.testing.assert_allclose(to_numpy(inv_freq), ref_inv, rtol=2.5e-7, atol=0, err_msg=f"{name} inv_freq")
    pos = ROPE_T[f"{name}.position_ids"]
    # with transformers' own inv_freq, cos/sin must match to float32 rounding of cos/sin themselves
    cos, sin = rope_cos_sin(to_device(pos, xp), to_device(ref_inv, xp), spec["attention_scaling"], xp.float32)
    np.testing.assert_allclose(to_numpy(cos), ROPE_T[f"{name}.cos"], rtol=0, atol=tol["cos_sin"], err_msg=name)
    np.testing.assert_allclose(to_numpy(sin), ROPE_T[f"{name}.sin"], rtol=0, atol=tol["cos_sin"], err_msg=name)
    # and with arcee_np's own inv_freq, up to the angle error that 2 ulp of inv_freq gives at this position
    cos2, sin2 = rope_cos_sin(to_device(pos, xp), inv_freq, scaling, xp.float32)
    max_pos = float(pos.max())
    angle_tol = tol["cos_sin"] + max_pos * float(np.max(ref_inv)) * 2.5e-7 * spec["attention_scaling"]
    np.testing.assert_allclose(to_numpy(cos2), ROPE_T[f"{name}.cos"], rtol=0, atol=angle_tol, err_msg=name)
    np.testing.assert_allclose(to_numpy(sin2), ROPE_T[f"{name}.sin"], rtol=0, atol=angle_tol, err_msg=name)


@pytest.mark.parametrize("name", sorted(ROPE))
def test_rope_block_float64(name):
    """arcee_np's float64 tables against transformers' formula computed in float64 (lifted)."""
    spec = ROPE[name]
    config = _rope_config(spec)
    xp = namespace_for_device("cpu")
    inv_freq, scaling = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, xp, xp.float64)
    np.testing.assert_allclose(to_numpy(inv_freq), ROPE_T[f"{name}.lifted.inv_freq"], rtol=1e-14, atol=0)
    pos = to_device(ROPE_T[f"{name}.position_ids"], xp)
    cos, sin = rope_cos_sin(pos, inv_freq, scaling, xp.float64)
    tol = spec["tolerance"]["lifted"] * max(1.0, float(ROPE_T[f"{name}.position_ids"].max()))
    np.testing.assert_allclose(to_numpy(cos), ROPE_T[f"{name}.lifted.cos"], rtol=0, atol=tol)
    np.testing.assert_allclose(to_numpy(sin), ROPE_T[f"{name}.lifted.sin"], rtol=0, atol=tol)


RMS = json.loads((GOLDEN / "blocks" / "rms_norm.json").read_text())["cases"]
RMS_T = load_file(str(GOLDEN / "blocks" / "rms_norm.safetensors"))


@pytest.mark.parametrize("variant", ["f32", "f16", "f16_f32w"])
def test_rms_norm_block(variant):
    spec = RMS[variant]
    x, w = RMS_T[f"{variant}.input"], RMS_T[f"{variant}.weight"]
    expected = RMS_T[f"{variant}.output"]
    out = to_numpy(rms_norm(x, w, spec["eps"]))
    assert out.dtype == expected.dtype, (out.dtype, expected.dtype)
    err = float(np.max(np.abs(out.astype(np.float64) - expected.astype(np.float64))))
    assert err <= spec["tolerance"], f"{variant}: {err:.3g}"


def test_rms_norm_block_float64():
    eps = RMS["f64"]["eps"]
    out = to_numpy(rms_norm(RMS_T["f64.input"], RMS_T["f64.weight"], eps))
    assert out.dtype == np.float64
    assert np.max(np.abs(out - RMS_T["f64_lifted.output"])) <= 1e-12
    assert np.max(np.abs(out - RMS_T["f64.output"])) <= 1e-6


DL = json.loads((GOLDEN / "blocks" / "decoder_layer.json").read_text())
DL_T = load_file(str(GOLDEN / "blocks" / "decoder_layer.safetensors"))


@pytest.mark.parametrize("mask_kind", ["4d", "2d"])
def test_decoder_layer_block(mask_kind):
    """One decoder layer through arcee_np's block functions, with transformers' cos/sin and eager mask."""
    from arcee_np.model import step_mask
    from arcee_np.trace import trace

    config = ArceeConfig.from_dict(DL["config"])
    params = {f"layers.0.{k[len('weights.'):]}": v for k, v in DL_T.items() if k.startswith("weights.")}
    h = DL_T["hidden_states"]
    mask = step_mask(h, DL_T["causal_mask"] if mask_kind == "4d" else DL_T["attention_mask"], DL_T["position_ids"],
                     0, False)
    np.testing.assert_array_equal(to_numpy(mask.additive()), DL_T["causal_mask"])
    with trace("layers.0.*") as t:
        out, probs = decoder_layer(h, params, 0, config, DL_T["cos"], DL_T["sin"], mask, None)
    valid = DL_T["attention_mask"]
    tol = DL["tolerance"]
    assert_close(out, DL_T["output"], "output", tol, valid)
    assert_close(probs, DL_T["self_attn.attn_weights"], "attentions.0", tol, valid, "self_attn.attn_weights")
    named = {"layers.0.input_norm": "input_layernorm.output", "layers.0.attn.out": "self_attn.output",
             "layers.0.post_norm": "post_attention_layernorm.output", "layers.0.mlp.out": "mlp.output"}
    for ours, theirs in named.items():
        assert ours in t, f"trace has no {ours}; it has {sorted(t)}"
        assert_close(t[ours], DL_T[theirs], "hidden", tol, valid, theirs)


def test_decoder_layer_block_rope_tables():
    """arcee_np's cos/sin for the layer's positions equal the ones transformers fed the layer."""
    config = ArceeConfig.from_dict(DL["config"])
    xp = namespace_for_device("cpu")
    inv_freq, scaling = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, xp, xp.float32)
    cos, sin = rope_cos_sin(to_device(DL_T["position_ids"], xp), inv_freq, scaling, xp.float32)
    np.testing.assert_allclose(to_numpy(cos), DL_T["cos"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(to_numpy(sin), DL_T["sin"], rtol=0, atol=1e-6)


def test_every_fixture_tolerance_is_a_row_of_the_one_table():
    """The golden fixtures carry numbers; each is a row of arcee_np.oracle.tolerances.TOLERANCES, so the table is
    the one source of every tolerance (a fixture with a number of its own would fail here)."""
    tests = GOLDEN.parent
    seen = set()
    for path in sorted(tests.glob("golden*/**/case.json")):
        case = json.loads(path.read_text())
        values = [case["tolerance"]] if "tolerance" in case else []
        for spec in case.get("expectations", {}).values():
            values += [spec["tolerance"]] if "tolerance" in spec else [[spec["atol"], spec["rtol"]]]
        seen.update(golden_tolerance(value).what for value in values)
    assert len(seen) >= 6  # float32, float64 plain and lifted, float16, bfloat16, gradients
