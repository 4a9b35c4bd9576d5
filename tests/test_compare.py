"""compare.py: per-tensor errors, the tolerance table, the first divergence and its explanation, and the
``arcee-np trace`` / ``arcee-np compare`` commands (run through arcee_np.cli.main, without torch)."""

import json

import numpy as np
import pytest

from arcee_np.oracle.compare import _STAGES, TOLERANCES, Tolerance, compare_arrays, compare_traces, tolerance_for
from arcee_np.cli import main
from arcee_np.cli.checks import parse_token_ids as parse_ids
from arcee_np.trace import LAYER_LEVEL, LAYER_STAGES, Trace
from arcee_np.oracle.tracefile import load_trace, save_trace, trace_model
from conftest import random_model

IDS = np.array([[3, 14, 15, 9, 26, 5], [5, 35, 8, 96, 7, 1]])


@pytest.fixture(scope="module")
def reference():
    return trace_model(random_model(), IDS)


def copy_of(t, **changes):
    """A candidate trace equal to ``t`` except ``changes`` (name -> function of the array)."""
    out = Trace()
    out.update({k: np.array(v) for k, v in t.items()})
    for name, change in changes.items():
        out[name.replace("__", ".")] = change(out[name.replace("__", ".")])
    return out


def bump(amount, where=(Ellipsis,)):
    def change(a):
        a = a.copy()
        a[where] += amount
        return a
    return change


def test_identical_traces_agree(reference):
    report = compare_traces(copy_of(reference), reference)
    assert report.ok and report.first is None
    assert [r.name for r in report.rows] == list(reference)
    assert all(r.status == "ok" and r.max_abs == 0 for r in report.rows)
    assert report.summary().startswith("all 35 compared tensors agree")


def test_tolerance_table_is_the_contract():
    assert TOLERANCES["float32"].atol == 1e-4 and TOLERANCES["float64"].atol == 1e-9
    plain = TOLERANCES["float64_plain"]  # plain transformers float64 is float32-accurate at its casts
    assert (plain.atol, plain.rtol) == (1e-4, 1e-5) and TOLERANCES["kv_cache"].atol == 1e-5
    assert tolerance_for("float32") is TOLERANCES["float32"]
    assert tolerance_for(np.dtype("float64")) is TOLERANCES["float64"]
    assert tolerance_for("float64", against="transformers") is TOLERANCES["float64_plain"]
    assert tolerance_for("float16", tolerance=(1, 2)) == Tolerance(1.0, 2.0, "given")
    with pytest.raises(ValueError, match="no tolerance for dtype 'int8'"):
        tolerance_for("int8")
    with pytest.raises(ValueError, match="unknown tolerance"):
        tolerance_for(tolerance="float31")


def test_tolerance_is_absolute_plus_relative():
    tol = TOLERANCES["float32"]
    ref = np.array([0.0, 1000.0], dtype=np.float32)
    assert not compare_arrays(ref + np.array([5e-5, 0]), ref, tol).failed  # under atol
    assert compare_arrays(ref + np.array([2e-4, 0]), ref, tol).failed      # over atol at 0
    assert not compare_arrays(ref + np.array([0, 5e-3]), ref, tol).failed  # 1e-4 + 1e-5 * 1000 = 1.01e-2
    row = compare_arrays(ref + np.array([0, 2e-2]), ref, tol, "x")
    assert row.failed and row.worst == (1,) and row.max_abs == pytest.approx(2e-2, rel=1e-3)
    assert row.max_rel == pytest.approx(2e-5, rel=1e-3)


def test_dtype_picks_the_tolerance(reference):
    f64 = Trace()
    f64.update({k: v.astype(np.float64) for k, v in reference.items()})
    small = copy_of(f64, logits=bump(1e-7))
    assert compare_traces(small, f64).first.name == "logits"              # float64: 1e-9
    assert compare_traces(small, f64, against="transformers").ok          # plain transformers float64: 1e-6


def test_first_divergence_names_the_tensor_and_clears_its_inputs(reference):
    candidate = copy_of(reference, **{"layers__1__attn__v": bump(1e-2, (0, 1, 2, 3))})
    report = compare_traces(candidate, reference)
    assert not report.ok and report.first.name == "layers.1.attn.v"
    assert report.first.worst == (0, 1, 2, 3) and report.first.positions == [2] and report.first.heads == [1]
    assert report.explanation.startswith("first divergence at layers.1.attn.v (max abs 0.01 at (0, 1, 2, 3)")
    assert "v differs while the input RMSNorm output (layers.1.input_norm, max abs 0) agrees" in report.explanation
    assert "v_proj" in report.explanation
    assert "<-- first divergence" in report.table().splitlines()[list(reference).index("layers.1.attn.v") + 1]


def test_every_stage_has_an_explanation():
    assert set(_STAGES) == set(LAYER_STAGES) | {"embed", "final_norm", "logits"}


def test_explanations_follow_the_failing_stage(reference):
    cases = {
        "layers.0.attn.q_rope": ("RoPE layout", "q (layers.0.attn.q"),
        "layers.0.attn.probs": ("the mask", "scores (layers.0.attn.scores"),
        "layers.0.mlp.act": ("relu2", "up_proj's output"),
        "layers.1.post_norm": ("RMSNorm", "attention residual"),
        "logits": ("lm_head", "final RMSNorm"),
    }
    for name, (suspect, source) in cases.items():
        report = compare_traces(copy_of(reference, **{name.replace(".", "__"): bump(1.0)}), reference)
        assert report.first.name == name
        assert suspect in report.explanation and source in report.explanation, report.explanation


def test_when_inputs_were_not_recorded_the_gap_is_named(reference):
    theirs = {k: np.array(v) for k, v in reference.items() if LAYER_LEVEL.fullmatch(k)}
    theirs["layers.1.out"] = theirs["layers.1.out"] + 1.0
    report = compare_traces(theirs, reference)
    assert report.first.name == "layers.1.out"
    assert "were not compared" in report.explanation and "last agreeing tensor is layers.0.out" in report.explanation
    # the suspect is the whole gap, not the residual add that computes layers.1.out
    assert report.explanation.endswith('any of the 16 steps from layers.1.input_norm to layers.1.out: record those '
                                       'names (for example trace("layers.1.*")) and compare again to see which one '
                                       'differs first'), report.explanation


def test_a_short_gap_names_each_step_that_could_be_wrong(reference):
    theirs = {k: np.array(reference[k]) for k in ("layers.0.attn.q_rope", "layers.0.attn.k_rope")}
    theirs["layers.0.attn.probs"] = np.array(reference["layers.0.attn.probs"])[..., ::-1]
    report = compare_traces(theirs, reference)
    assert report.first.name == "layers.0.attn.probs"
    assert "scores: q k^T * head_dim**-0.5" in report.explanation and "or the attention probabilities: the mask" \
        in report.explanation, report.explanation
    assert any("not in the candidate" in note for note in report.notes)


def test_shape_nonfinite_and_missing(reference):
    theirs = {"embed": reference["embed"], "layers.0.attn.q": np.swapaxes(reference["layers.0.attn.q"], 1, 2)}
    report = compare_traces(theirs, reference)
    assert report.first.status == "SHAPE" and "layout" in report.explanation
    assert {r.status for r in report.rows} == {"ok", "SHAPE", "MISSING"}
    nan = copy_of(reference, layers__0__mlp__up=bump(np.nan, (0, 0, 0)))
    report = compare_traces(nan, reference)
    assert report.first.name == "layers.0.mlp.up" and report.first.nonfinite == 1
    assert "NaN/Inf where the reference is finite" in report.explanation
    empty = compare_traces({"something": np.zeros(1)}, reference)
    assert not empty.ok and "share no tensor names" in empty.summary()


def test_padded_query_rows_are_not_compared():
    model = random_model()
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    ref = trace_model(model, IDS, attention_mask=mask)
    theirs = copy_of(ref, layers__0__out=bump(5.0, (0, 1)), layers__0__attn__probs=bump(5.0, (0, slice(None), 0)))
    assert compare_traces(theirs, ref).ok
    theirs["layers.0.out"][0, 2] += 5.0  # a real token
    assert compare_traces(theirs, ref).first.name == "layers.0.out"


def test_gqa_heads_are_localized(reference):
    wrong = copy_of(reference, layers__0__attn__scores=lambda a: a[:, [0, 2, 1, 3]])
    report = compare_traces(wrong, reference)
    assert report.first.heads == [1, 2] and report.first.num_heads == 4
    assert "GQA head mapping" in report.explanation


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    random_model().save_pretrained(path)
    return path


def test_cli_trace_and_compare(tmp_path, checkpoint, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["trace", "--model", str(checkpoint), "--ids", "3 14 15 9", "--out", str(a)]) == 0
    assert "35 tensors (float32, cpu) written" in capsys.readouterr().out
    t = load_trace(a)
    assert t.inputs["input_ids"].tolist() == [[3, 14, 15, 9]] and t.meta["model_path"] == str(checkpoint)
    assert main(["compare", str(a), str(a), "--json", str(tmp_path / "r.json")]) == 0
    assert "all 35 compared tensors agree" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True

    broken = copy_of(t, **{"layers__1__mlp__out": bump(0.5)})
    broken.inputs, broken.meta = t.inputs, t.meta
    save_trace(broken, b)
    assert main(["compare", str(a), str(b), "--failures-only"]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("first divergence at layers.1.mlp.out")
    assert "layers.0.out" not in out  # --failures-only
    assert main(["compare", str(a), str(b), "--atol", "1.0"]) == 0
    assert main(["compare", str(a), str(b), "--pattern", "layers.0.*"]) == 0


def test_cli_layers_only_stop_after_and_nonfinite(tmp_path, checkpoint, capsys):
    out = tmp_path / "l.safetensors"
    assert main(["trace", "--model", str(checkpoint), "--ids", "[[1, 2], [3, 4]]", "--out", str(out),
                 "--layers-only", "--stop-after", "layers.0.out"]) == 0
    assert list(load_trace(out)) == ["embed", "layers.0.out"]
    hot = random_model(dtype="float16")
    hot.params["layers.0.mlp.up_proj.weight"] = hot.params["layers.0.mlp.up_proj.weight"] * np.float16(2000)
    hot.save_pretrained(tmp_path / "hot")
    with np.errstate(over="ignore", invalid="ignore"):
        code = main(["trace", "--model", str(tmp_path / "hot"), "--ids", "1 2 3", "--dtype", "float16",
                     "--out", str(out), "--stop-on-nonfinite"])
    assert code == 1 and "non-finite values in layers.0.mlp.act" in capsys.readouterr().err
    assert list(load_trace(out))[-1] == "layers.0.mlp.up"


def test_cli_usage_errors(tmp_path, checkpoint, capsys):
    assert main(["compare", str(tmp_path / "only-one.safetensors")]) == 2
    assert main(["compare", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]) == 2
    assert "no trace file at" in capsys.readouterr().err
    assert main(["trace", "--model", str(checkpoint), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "exactly one of --prompt TEXT or --ids IDS" in capsys.readouterr().err
    bad_ids = ["trace", "--model", str(checkpoint), "--ids", "1 2 9999", "--out", str(tmp_path / "y.safetensors")]
    assert main(bad_ids) == 2  # outside the vocabulary
    with pytest.raises(SystemExit) as info:
        main(["compare", "--tolerance"])  # argparse's own usage error
    assert info.value.code == 2
    assert parse_ids("1, 2,3").tolist() == [[1, 2, 3]]
    assert parse_ids("1 2\n3 4").tolist() == [[1, 2], [3, 4]]


def test_registered_in_the_arcee_np_cli_with_prompts(tmp_path, capsys):
    from arcee_np.cli import main as arcee_np_main
    from arcee_np.io.tokenizer import ArceeTokenizer
    from tiny_lm import write_tiny_lm

    folder = write_tiny_lm(tmp_path / "lm")
    out = tmp_path / "p.safetensors"
    assert arcee_np_main(["trace", "--model", str(folder), "--prompt", "ROMEO: But soft", "--out", str(out)]) == 0
    ids = ArceeTokenizer.from_pretrained(folder).encode("ROMEO: But soft")
    assert load_trace(out).inputs["input_ids"].tolist() == [ids]  # encoded as `arcee-np generate` does
    broken = load_trace(out)
    broken["layers.0.attn.q_rope"] = broken["layers.0.attn.q_rope"] * 1.5
    save_trace(broken, tmp_path / "q.safetensors")
    capsys.readouterr()
    assert arcee_np_main(["compare", str(out), str(tmp_path / "q.safetensors")]) == 1
    assert "first divergence at layers.0.attn.q_rope" in capsys.readouterr().out
    assert arcee_np_main(["compare", str(out)]) == 2


def test_cli_rtol_alone_is_honoured_and_the_report_states_both_numbers(tmp_path, checkpoint, capsys):
    """numpy.allclose semantics: --rtol alone replaces the row's rtol and the atol keeps the row's value
    (float32: 1e-4); --atol alone likewise; the report states the two numbers it used."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["trace", "--model", str(checkpoint), "--ids", "3 14 15 9", "--out", str(a)]) == 0
    t = load_trace(a)
    broken = copy_of(t, **{"layers__1__mlp__out": lambda x: x * 1.5})  # a relative error of 0.5 everywhere
    broken.inputs, broken.meta = t.inputs, t.meta
    save_trace(broken, b)
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 1  # the float32 row: 1e-4 + 1e-5 |ref|
    assert "with atol 0.0001, rtol 1e-05 (float32" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--rtol", "1e9"]) == 0  # honoured, not dropped
    out = capsys.readouterr().out
    assert "with atol 0.0001, rtol 1e+09 (--rtol, the rest from the float32 row)" in out
    assert "agree within tol 1e-04 + 1e+09*|ref|" in out
    assert main(["compare", str(a), str(b), "--rtol", "0.4"]) == 1  # 0.5 relative is past 0.4
    assert main(["compare", str(a), str(b), "--rtol", "0.6"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--atol", "0.1", "--tolerance", "float64"]) == 1  # max abs 0.25
    assert "with atol 0.1, rtol 1e-10 (--atol, the rest from the float64 row)" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--atol", "0", "--rtol", "0.6"]) == 0
