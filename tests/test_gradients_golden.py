"""arcee_np's gradients against transformers' ``loss.backward()``, from the fixtures in tests/golden_gradients/
(written by ``scripts/make_golden.py --gradients``; needs neither torch nor transformers).

Every case names a committed checkpoint (tests/golden/<case> or tests/golden_heads/<case>), the inputs with
the loss's targets, and per dtype the loss and every weight's gradient from transformers: float32, and
float64 against transformers with its float32 casts lifted. Each is compared with the case's tolerance
(``|ours - theirs| <= atol + rtol * |theirs|``; float64: 1e-10); checkpointing must give the same numbers;
a few cases also run on array_api_strict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import arcee_np
from arcee_np.backend import to_numpy
from arcee_np.oracle.testing import assert_close
from arcee_np.training import loss_and_gradients

from conftest import golden_tolerance

TESTS = Path(__file__).resolve().parent
GRADIENTS = TESTS / "golden_gradients"
META = json.loads((GRADIENTS / "meta.json").read_text())
CASES = {name: json.loads((GRADIENTS / name / "case.json").read_text()) for name in META["cases"]}
EXPECTATIONS = [(name, dtype) for name, case in CASES.items() for dtype in case["expectations"]]


def gradients_of(name: str, dtype: str, device: str = "cpu", checkpointing: bool = False, widen: str = "auto"):
    """(loss, grads) of arcee_np on case ``name``, its checkpoint loaded in ``dtype`` on ``device``."""
    case = CASES[name]
    model = getattr(arcee_np, case["class"]).from_pretrained(TESTS / case["source"], dtype=dtype, device=device,
                                                             widen=widen)
    inputs = {k: (v.astype(dtype) if v.dtype.kind == "f" else v)
              for k, v in load_file(str(GRADIENTS / name / "inputs.safetensors")).items()}
    return loss_and_gradients(model, **inputs, **case["call"], checkpointing=checkpointing)


def assert_gradients_close(ours: dict, expected: dict, spec: dict, where: str) -> None:
    """Every tensor of ``expected`` within the case's tolerance, ``|ours - ref| <= atol + rtol |ref|``: the
    row of TOLERANCES its ``atol`` / ``rtol`` are (golden_tolerance), through arcee_np.oracle.testing."""
    tolerance = golden_tolerance([spec["atol"], spec["rtol"]])
    for key, ref in expected.items():
        got = np.asarray(to_numpy(ours[key]), dtype=np.float64)
        assert got.shape == ref.shape, f"{key}: shape {got.shape} != {ref.shape}"
        assert_close(got, ref.astype(np.float64), f"{where}: {key}", tolerance=tolerance)


def test_meta_lists_every_case_folder():
    assert sorted(p.name for p in GRADIENTS.iterdir() if p.is_dir()) == sorted(CASES)
    covered = {case["class"] for case in CASES.values()}
    assert covered == {"ArceeForCausalLM", "ArceeForSequenceClassification", "ArceeForQuestionAnswering",
                       "ArceeForTokenClassification"}


@pytest.mark.parametrize("name,dtype", EXPECTATIONS, ids=[f"{n}-{d}" for n, d in EXPECTATIONS])
def test_gradients_equal_transformers(name, dtype):
    spec = CASES[name]["expectations"][dtype]
    expected = load_file(str(GRADIENTS / name / spec["file"]))
    loss, grads = gradients_of(name, dtype)
    ours = dict(grads, loss=loss)
    assert set(ours) == set(expected), f"names differ: {sorted(set(ours) ^ set(expected))}"
    for value in grads.values():
        assert str(to_numpy(value).dtype) == dtype
    assert_gradients_close(ours, expected, spec, f"{name} {dtype}")


@pytest.mark.parametrize("name", ["left_padding", "tied_embeddings", "heads_question_answering", "float64_yarn"])
def test_checkpointing_gives_the_same_gradients(name):
    dtype = "float64" if "float64" in CASES[name]["expectations"] else "float32"
    loss, grads = gradients_of(name, dtype)
    loss_ck, grads_ck = gradients_of(name, dtype, checkpointing=True)
    assert float(loss) == float(loss_ck)
    for key in grads:
        np.testing.assert_array_equal(to_numpy(grads_ck[key]), to_numpy(grads[key]), err_msg=key)


STRICT = ["biases", "left_padding", "tied_embeddings", "float64_yarn", "heads_seq_cls_multi_label",
          "heads_question_answering", "heads_token_cls"]


@pytest.mark.parametrize("name", STRICT)
def test_gradients_on_array_api_strict(name):
    """The whole backward on array_api_strict arrays: a NumPy-only call in a backward would fail here."""
    pytest.importorskip("array_api_strict")
    dtype = "float64" if "float64" in CASES[name]["expectations"] else "float32"
    loss, grads = gradients_of(name, dtype, device="array_api_strict")
    assert type(loss).__module__.startswith("array_api_strict")
    spec = CASES[name]["expectations"][dtype]
    expected = load_file(str(GRADIENTS / name / spec["file"]))
    assert_gradients_close(dict(grads, loss=loss), expected, spec, f"{name} {dtype} on array_api_strict")


@pytest.mark.parametrize("name,dtype", [("bf16_checkpoint", "float32"), ("biases", "float64"),
                                        ("tied_embeddings", "float64"), ("heads_token_cls", "float64")])
def test_gradients_with_weights_widened_per_use(name, dtype):
    """Stored weights (kept in the file's dtype, widened tile by tile where used) give the fixtures' gradients:
    linear_backward widens row tiles for dx, the embedding's gradient needs no weight at all."""
    loss, grads = gradients_of(name, dtype, widen="per_use")
    model = getattr(arcee_np, CASES[name]["class"]).from_pretrained(TESTS / CASES[name]["source"], dtype=dtype,
                                                                    widen="per_use")
    assert any(hasattr(w, "widened_rows") for w in model.params.values())  # the path under test
    spec = CASES[name]["expectations"][dtype]
    expected = load_file(str(GRADIENTS / name / spec["file"]))
    assert_gradients_close(dict(grads, loss=loss), expected, spec, f"{name} {dtype} per use")
