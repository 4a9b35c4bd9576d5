"""Live comparison against transformers through forward hooks (arcee_np.oracle.compare.transformers_trace).

Skipped unless torch and transformers import. A tiny random transformers Arcee (GQA, YaRN, biases,
norms perturbed) is saved and loaded by arcee_np; every name of docs/trace.md must be captured on the
transformers side and agree (float32 at 1e-4, float64 with the float32 casts lifted at 1e-9), a
perturbed transformers weight must be pinned to the tensor it feeds, and ``arcee-np compare --against
transformers`` must exit 0 / 1 accordingly.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch_reference import lifted_float32_casts, perturb_  # noqa: E402

from arcee_np import ArceeForCausalLM  # noqa: E402
from arcee_np.oracle.compare import compare_with_transformers, load_transformers_model, transformers_trace  # noqa: E402
from arcee_np.cli import main  # noqa: E402
from arcee_np.trace import trace_names  # noqa: E402
from arcee_np.oracle.tracefile import save_trace, trace_model  # noqa: E402

pytestmark = pytest.mark.live
torch.set_num_threads(1)  # the comparisons are under test, not torch's speed
transformers.logging.set_verbosity_error()

IDS = np.array([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
MASK = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # left padding


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = transformers.ArceeConfig(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 16})
    torch.manual_seed(0)
    model = transformers.ArceeForCausalLM(config).eval()
    perturb_(model, torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("live_compare")
    model.save_pretrained(path)
    return path


def test_every_name_is_captured_and_agrees_in_float32(checkpoint):
    ours = ArceeForCausalLM.from_pretrained(checkpoint)
    theirs = load_transformers_model(checkpoint, "float32")
    report = compare_with_transformers(ours, theirs, IDS, attention_mask=MASK)
    assert [r.name for r in report.compared] == trace_names(2), [r.name for r in report.rows if r.status != "ok"]
    assert report.ok, str(report)
    assert report.tolerance.atol == 1e-4
    assert max(r.max_abs for r in report.rows) < 1e-5  # typically ~1e-6


def test_float64_with_lifted_casts_agrees_to_1e_9(checkpoint):
    ours = ArceeForCausalLM.from_pretrained(checkpoint, dtype="float64")
    with lifted_float32_casts():
        theirs = load_transformers_model(checkpoint, "float64")
        report = compare_with_transformers(ours, theirs, IDS, attention_mask=MASK, lifted=True)
    assert report.tolerance.atol == 1e-9
    assert report.ok and len(report.compared) == 35, str(report)
    plain = compare_with_transformers(ours, load_transformers_model(checkpoint, "float64"), IDS)
    assert plain.tolerance.atol == 1e-4 and plain.ok, str(plain)  # plain transformers float64: float32-accurate
    logits = next(r for r in plain.rows if r.name == "logits")
    assert logits.max_abs < 1e-6  # a tiny model on a short input keeps design.md's fixture bound


def test_float16_agrees_at_the_float16_row(checkpoint):
    ours = ArceeForCausalLM.from_pretrained(checkpoint, dtype="float16")
    report = compare_with_transformers(ours, load_transformers_model(checkpoint, "float16"), IDS[:1])
    assert report.tolerance.atol == 1e-2 and report.ok, str(report)


def test_a_perturbed_weight_is_pinned_to_its_tensor(checkpoint):
    ours = ArceeForCausalLM.from_pretrained(checkpoint)
    theirs = load_transformers_model(checkpoint, "float32")
    with torch.no_grad():
        theirs.model.layers[1].self_attn.k_proj.weight[5, 3] += 0.05
    report = compare_with_transformers(ours, theirs, IDS)
    assert report.first.name == "layers.1.attn.k"
    assert "k_proj" in report.explanation and "input RMSNorm output (layers.1.input_norm" in report.explanation


def test_hooks_are_removed_and_rope_restored(checkpoint):
    theirs = load_transformers_model(checkpoint, "float32")
    modeling = sys.modules[type(theirs.model.layers[0].self_attn).__module__]
    original = modeling.apply_rotary_pos_emb

    def hooks():  # transformers registers some of its own
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in theirs.modules())

    before = hooks()
    t = transformers_trace(theirs, IDS, patterns="layers.0.attn.*")
    assert list(t)[0] == "layers.0.attn.q" and "layers.0.attn.scores" in t and "embed" not in t
    assert modeling.apply_rotary_pos_emb is original
    assert hooks() == before


def test_cli_against_transformers(tmp_path, checkpoint, capsys):
    ours = ArceeForCausalLM.from_pretrained(checkpoint)
    good = trace_model(ours, IDS[:1], model_path=str(checkpoint))
    save_trace(good, tmp_path / "good.safetensors")
    assert main(["compare", str(tmp_path / "good.safetensors"), "--against", "transformers"]) == 0
    assert "all 35 compared tensors agree" in capsys.readouterr().out
    good["layers.0.attn.q_rope"] = good["layers.0.attn.q_rope"][..., ::-1].copy()
    save_trace(good, tmp_path / "bad.safetensors")
    assert main(["compare", str(tmp_path / "bad.safetensors"), "--against", "transformers"]) == 1
    assert "first divergence at layers.0.attn.q_rope" in capsys.readouterr().out
    assert main(["compare", "--against", "transformers", "--model", str(checkpoint), "--ids", "3 4 5",
                 "--pattern", "layers.1.*"]) == 0


def test_sdpa_models_are_refused_with_the_fix(checkpoint):
    sdpa = transformers.ArceeForCausalLM.from_pretrained(checkpoint, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        transformers_trace(sdpa, IDS)


# ------------------------------------------------------------------------------------------ gradients


LABELS = np.where(MASK == 1, IDS, -100)


def test_every_gradient_is_captured_and_agrees_in_float32(checkpoint):
    """With labels both sides run the backward: every grad.* name (but the scores, which eager attention never
    materialises in transformers) agrees at the float32 gradient row."""
    ours = ArceeForCausalLM.from_pretrained(checkpoint)
    theirs = load_transformers_model(checkpoint, "float32")
    report = compare_with_transformers(ours, theirs, IDS, attention_mask=MASK, labels=LABELS)
    expected = [n for n in trace_names(2, gradients=True) if not n.endswith("grad.layers.1.attn.scores")
                and not n.endswith("grad.layers.0.attn.scores")]
    assert [r.name for r in report.compared] == expected
    assert report.ok, str(report)
    assert all(p.grad is None for p in theirs.parameters())  # the weights' .grad are left as they were


def test_gradients_in_float64_with_lifted_casts(checkpoint):
    ours = ArceeForCausalLM.from_pretrained(checkpoint, dtype="float64")
    with lifted_float32_casts():
        theirs = load_transformers_model(checkpoint, "float64")
        report = compare_with_transformers(ours, theirs, IDS, attention_mask=MASK, lifted=True, labels=LABELS)
    assert report.gradient_tolerance.atol == 1e-10 and report.ok, str(report)
    assert max(r.max_abs for r in report.compared if r.name.startswith("grad.")) < 1e-13


def test_cli_compares_gradients_against_transformers(tmp_path, checkpoint, capsys):
    assert main(["compare", "--against", "transformers", "--model", str(checkpoint), "--ids", "3 4 5 6",
                 "--grad"]) == 0
    out = capsys.readouterr().out
    assert "grad.layers.0.attn.q " in out and "(gradients 1e-05 + 1e-04*|ref|)" in out
