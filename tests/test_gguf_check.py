"""gguf-check: nothing on clean conversions, each ignored setting found with the effect llama.cpp really has,
broken conversions found, the command's exit status.

The effects are compared with llama.cpp's own logits stored in the fixtures (made by llama-cpp-python on the
converter's files, flash attention off, F32 KV cache); tests that run llama.cpp live skip without it.
"""

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from arcee_np.cli import main
from arcee_np.io import gguf_writer
from arcee_np.io.checkpoint import read_checkpoint
from arcee_np.io.gguf_writer import convert_checkpoint
from arcee_np.oracle.gguf_check import gguf_check

FIXTURES = Path(__file__).parent / "golden_gguf"
GOLDEN = Path(__file__).parent / "golden"
GGUF_FILES = sorted(FIXTURES.glob("*/*.gguf"))
CLEAN = [p for p in GGUF_FILES if p.parent.name in ("default_rope", "yarn_gqa_tied", "kquants")]


def fixture_ids(case: str) -> np.ndarray:
    return load_file(FIXTURES / case / "expected.safetensors")["input_ids"]


def llama_cpp_gap(case: str) -> float:
    """How far llama.cpp's logits (stored) are from transformers' on the converter's F32 file."""
    llama = load_file(FIXTURES / case / "llama_cpp.safetensors")["F32"]
    return float(np.abs(llama - load_file(FIXTURES / case / "expected.safetensors")["logits_float32"][0]).max())


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.stem)
def test_clean_conversions_have_no_findings(path):
    report = gguf_check(path, path.parent / "hf", llama_cpp=False)
    assert report.ok, report.findings
    assert report.settings == [] and report.combined is None
    assert report.summary().startswith("gguf-check: clean:")


def test_explicit_yarn_settings_are_found_with_llama_cpps_effect():
    case = "yarn_explicit"
    report = gguf_check(FIXTURES / case / f"{case}-F32.gguf", FIXTURES / case / "hf", fixture_ids(case),
                        llama_cpp=False)
    found = {s.setting: s for s in report.settings if s.finding}
    assert set(found) == {"attention_factor", "beta_fast/beta_slow", "truncate"}
    assert all(s.max_abs > 0.1 for s in found.values())
    # transformers' config vs llama.cpp's reading, both on the reference weights, is what llama.cpp really differs by
    assert report.combined.max_abs == pytest.approx(llama_cpp_gap(case), abs=1e-3)
    assert "arcee.rope.scaling.attn_factor=float:" in report.fix and "--yarn-beta-fast 16" in report.fix
    assert "not expressible in llama.cpp: truncate" in report.fix
    assert report.fix_overrides["arcee.rope.scaling.attn_factor"] == pytest.approx(1 / (1 + 0.1 * math.log(8)))
    assert len(report.findings) == 3 and not report.ok


def test_mscale_is_found_and_the_fix_makes_the_file_clean(tmp_path):
    case = "yarn_mscale_mqa"
    path, hf = FIXTURES / case / f"{case}-F32.gguf", FIXTURES / case / "hf"
    report = gguf_check(path, hf, fixture_ids(case), llama_cpp=False)
    assert [s.setting for s in report.settings if s.finding] == ["mscale/mscale_all_dim"]
    assert report.combined.max_abs == pytest.approx(llama_cpp_gap(case), abs=1e-3)
    fixed = tmp_path / "fixed.gguf"
    convert_checkpoint(hf, fixed, metadata=report.fix_overrides)  # the override written into the file
    assert gguf_check(fixed, hf, llama_cpp=False).ok


def test_yarn_lost_in_conversion(tmp_path):
    """An older converter wrote no YaRN keys for Arcee: llama.cpp then runs plain RoPE."""
    hf = FIXTURES / "yarn_gqa_tied" / "hf"
    path = tmp_path / "no-yarn.gguf"
    convert_checkpoint(hf, path, metadata={f"arcee.rope.scaling.{k}": None
                                           for k in ("type", "factor", "original_context_length")})
    report = gguf_check(path, hf, llama_cpp=False)
    (check,) = report.settings
    assert check.setting == "rope_type" and check.finding and check.max_abs > 0.01
    assert report.summary().startswith("gguf-check: found 1: rope_type yarn -> default")


def test_unpermuted_rotary_rows_are_found(tmp_path, monkeypatch):
    hf = FIXTURES / "default_rope" / "hf"
    path = tmp_path / "unpermuted.gguf"
    monkeypatch.setattr(gguf_writer, "permute_rotary_rows", lambda weight, heads: weight)
    convert_checkpoint(hf, path)
    report = gguf_check(path, hf, llama_cpp=False)
    bad = {t.name for t in report.tensors if t.finding}
    assert bad == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in "qk"}
    assert report.forward["first_divergence"] == "layers.0.attn.q"


def test_swapped_tensor_and_missing_tensor(tmp_path):
    hf = FIXTURES / "default_rope" / "hf"
    tensors = dict(read_checkpoint(hf))
    from arcee_np import ArceeConfig

    config = ArceeConfig.from_pretrained(hf)
    up = "model.layers.1.mlp.up_proj.weight"
    swapped = {**tensors, up: tensors["model.layers.0.mlp.up_proj.weight"]}
    gguf_writer.write_gguf(tmp_path / "swapped.gguf", config, swapped, "Q8_0")
    report = gguf_check(tmp_path / "swapped.gguf", hf, llama_cpp=False)
    assert [t.name for t in report.tensors if t.finding] == [up]
    missing = {k: v for k, v in tensors.items() if k != "model.layers.0.self_attn.o_proj.weight"}
    gguf_writer.write_gguf(tmp_path / "missing.gguf", config, missing)
    report = gguf_check(tmp_path / "missing.gguf", hf, llama_cpp=False)
    assert report.findings == ["blk.0.attn_output.weight (model.layers.0.self_attn.o_proj.weight) is missing from "
                               "the file"]
    assert "skipped" in report.forward


def test_activation_llama_cpp_cannot_run(tmp_path):
    hf = GOLDEN / "act_silu"
    convert_checkpoint(hf, tmp_path / "silu.gguf")
    report = gguf_check(tmp_path / "silu.gguf", hf, llama_cpp=False)
    assert [s.setting for s in report.settings if s.finding] == ["hidden_act"]
    assert "not expressible in llama.cpp: hidden_act" in report.fix


def test_biases_llama_cpp_will_not_load(tmp_path):
    hf = GOLDEN / "biases"
    convert_checkpoint(hf, tmp_path / "biases.gguf")
    report = gguf_check(tmp_path / "biases.gguf", hf, llama_cpp=False)
    assert len(report.findings) == 1 and "refuses the file" in report.findings[0]
    assert all(not t.finding for t in report.tensors)  # the values themselves are exact


def test_another_checkpoint_as_reference():
    report = gguf_check(FIXTURES / "kquants" / "kquants-Q4_K.gguf", FIXTURES / "default_rope" / "hf",
                        llama_cpp=False)
    (finding,) = report.findings
    assert finding.startswith("the file is not a conversion of the reference: hidden_size 256 in the file, 32 in")


# ---------------------------------------------------------------------------------------------- the command
def test_command_exit_status(capsys):
    case = FIXTURES / "yarn_gqa_tied"
    assert main(["gguf-check", str(case / "yarn_gqa_tied-F32.gguf"), "--reference", str(case / "hf"),
                 "--no-llama-cpp"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("gguf-check: clean:")
    case = FIXTURES / "yarn_explicit"
    assert main(["gguf-check", str(case / "yarn_explicit-F32.gguf"), "--reference", str(case / "hf"),
                 "--no-llama-cpp", "--length", "16"]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("gguf-check: found 3: attention_factor")
    assert main(["gguf-check", str(case / "missing.gguf"), "--reference", str(case / "hf")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_json_report(tmp_path):
    import json

    case = FIXTURES / "kquants"
    out = tmp_path / "report.json"
    assert main(["gguf-check", str(case / "kquants-Q4_K_M.gguf"), "--reference", str(case / "hf"), "--no-llama-cpp",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["ok"] and set(data["by_type"]) == {"F32", "Q4_K", "Q6_K"}


# ---------------------------------------------------------------------------------------------- llama.cpp live
def test_llama_cpp_section_confirms_the_findings():
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install llama-cpp-python")
    case = "yarn_explicit"
    report = gguf_check(FIXTURES / case / f"{case}-F32.gguf", FIXTURES / case / "hf", fixture_ids(case))
    d = report.llama_cpp
    assert d["vs_arcee_np_prediction"]["max_abs"] < 1e-4  # arcee_np's reading is what llama.cpp computes
    assert d["vs_reference"]["max_abs"] == pytest.approx(report.combined.max_abs, abs=1e-3)
    truncate = next(s for s in report.settings if s.setting == "truncate")
    # the fix restores attention_factor and the betas; what remains is truncate=False, which nothing expresses
    assert d["with_fix"]["max_abs"] == pytest.approx(truncate.max_abs, abs=1e-3)
    assert 1e-3 < d["flash_attention_vs_not"]["max_abs"] < 5e-2


def test_near_zero_rows_are_no_alarm(tmp_path):
    """A row of tiny weights (an unused token's embedding) loses its few bits to Q8_0's float16 scale; its
    error is negligible against an average row's energy, so it is not a finding."""
    import shutil

    from arcee_np import ArceeConfig
    from arcee_np.io.checkpoint import write_checkpoint

    hf = tmp_path / "hf"
    shutil.copytree(FIXTURES / "default_rope" / "hf", hf)
    tensors = {k: np.array(v) for k, v in read_checkpoint(hf).items()}
    tensors["model.embed_tokens.weight"][5] *= 1e-6
    write_checkpoint(hf, tensors)
    gguf_writer.write_gguf(tmp_path / "tiny.gguf", ArceeConfig.from_pretrained(hf), tensors, "Q8_0")
    assert gguf_check(tmp_path / "tiny.gguf", hf, llama_cpp=False).ok
