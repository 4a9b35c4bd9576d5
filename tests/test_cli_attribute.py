"""``arcee-np attribute`` and the ``--html`` flag of ``compare`` and ``gguf-check`` (section (e) of gguf-check)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from arcee_np import ArceeForCausalLM
from arcee_np.cli import main
from tiny_lm import write_tiny_lm

pytest.importorskip("matplotlib")
GGUF = Path(__file__).resolve().parent / "golden_gguf"
IDS = "5 17 3 250 9 42 7 100"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(reference folder, candidate folder): the candidate's layer 1 down_proj weights are off by 2%."""
    root = tmp_path_factory.mktemp("attribute")
    reference = write_tiny_lm(root / "reference")
    candidate = root / "candidate"
    shutil.copytree(reference, candidate)
    model = ArceeForCausalLM.from_pretrained(reference)
    state = model.state_dict()
    state["model.layers.1.mlp.down_proj.weight"] = state["model.layers.1.mlp.down_proj.weight"] * 1.02
    ArceeForCausalLM.from_state_dict(model.config, state).save_pretrained(candidate)
    return reference, candidate


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_attribute_names_the_planted_block_and_writes_json_and_html(pair, tmp_path, capsys):
    reference, candidate = pair
    code, out, err = run(capsys, "attribute", candidate, "--reference", reference, "--ids", IDS,
                         "--json", tmp_path / "a.json", "--html", tmp_path / "a.html")
    assert code == 0, err
    assert "cause: layers.1.mlp.out" in out and "<-- cause" in out and "down_proj" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["cause"] == "layers.1.mlp.out" and data["single_cause"]
    site = {s["name"]: s["share"] for s in data["sites"]}
    assert site["layers.1.mlp.out"] >= 0.99 and max(site[n] for n in list(site)[:list(site).index(
        "layers.1.mlp.out")]) <= 0.01
    assert data["reference"] == str(reference) and data["candidate"] == str(candidate)
    page = (tmp_path / "a.html").read_text()
    assert '<section id="attribution">' in page and "cause: layers.1.mlp.out" in page


def test_attribute_a_lower_dtype_and_the_prompt(pair, tmp_path, capsys):
    reference, _ = pair
    code, out, err = run(capsys, "attribute", reference, "--reference", reference, "--prompt", "hello there",
                         "--candidate-dtype", "bfloat16", "--json", tmp_path / "b.json")
    assert code == 0, err
    data = json.loads((tmp_path / "b.json").read_text())
    assert not data["single_cause"] and data["cause"] is None and "no single block" in out
    assert sum(i["share"] for i in data["increments"]) == pytest.approx(data["sites"][-1]["share"])


@pytest.mark.parametrize("extra, needle", [
    (["--threshold", "0"], "(0, 1]"),
    (["--reference", "/nonexistent/folder"], "/nonexistent/folder"),
    ([], "exactly one of --prompt"),
])
def test_attribute_usage_errors(pair, capsys, extra, needle):
    reference, candidate = pair
    argv = ["attribute", candidate, "--reference", reference] + extra + (["--ids", IDS] if extra else [])
    code, _, err = run(capsys, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_attribute_refuses_another_architecture(pair, capsys):
    reference, _ = pair
    code, _, err = run(capsys, "attribute", GGUF / "kquants" / "hf", "--reference", reference, "--ids", IDS)
    assert code == 2 and "not the same architecture" in err


def test_compare_html_of_two_trace_files(pair, tmp_path, capsys):
    reference, candidate = pair
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    for model, out in ((reference, ours), (candidate, theirs)):
        assert run(capsys, "trace", "--model", model, "--ids", IDS, "--out", out)[0] == 0
    code, out, err = run(capsys, "compare", ours, theirs, "--html", tmp_path / "c.html")
    assert code == 1, err  # they diverge
    page = (tmp_path / "c.html").read_text()
    assert "first divergence at layers.1.mlp.out" in page
    for anchor in ("first-divergence", "per-layer", "attention", "logit-lens", "attribution", "table"):
        assert f'<section id="{anchor}">' in page
    assert "HTML report:" in out


def test_gguf_check_prints_the_attribution_and_writes_html(tmp_path, capsys):
    path, reference = GGUF / "kquants" / "kquants-Q4_K.gguf", GGUF / "kquants" / "hf"
    code, out, err = run(capsys, "gguf-check", path, "--reference", reference, "--length", "16", "--no-llama-cpp",
                         "--html", tmp_path / "g.html")
    assert code in (0, 1), err
    assert "(e) attribution" in out and "attn SNR dB" in out
    page = (tmp_path / "g.html").read_text()
    assert '<section id="gguf-layers">' in page and '<section id="first-divergence">' in page
    code, out, _ = run(capsys, "gguf-check", path, "--reference", reference, "--length", "16", "--no-llama-cpp",
                       "--no-attribution")
    assert "(e) attribution" not in out
    code, _, err = run(capsys, "gguf-check", path, "--reference", reference, "--no-attribution", "--html",
                       tmp_path / "x.html")
    assert code == 2 and "--no-attribution" in err
