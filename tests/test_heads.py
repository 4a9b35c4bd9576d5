"""Sequence classification, question answering and token classification against transformers' stored outputs
(tests/golden_heads, written by scripts/make_golden_heads.py), plus their checkpoints, errors and blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import arcee_np
from arcee_np import (ArceeForQuestionAnswering, ArceeForSequenceClassification, ArceeForTokenClassification,
                      CheckpointError)
from arcee_np.backend import namespace_for_device, to_device, to_numpy
from arcee_np.blocks import (bce_with_logits, last_non_pad_index, mse_loss, pool_positions, question_answering_loss,
                             sequence_classification_loss, token_classification_loss)
from arcee_np.io.checkpoint import read_checkpoint

from arcee_np.oracle.testing import assert_close

from conftest import golden_tolerance, small_config

GOLDEN = Path(__file__).resolve().parent / "golden_heads"
META = json.loads((GOLDEN / "meta.json").read_text())
HEAD_CASES = [c for c in META["cases"] if (GOLDEN / c / "case.json").is_file()
              and json.loads((GOLDEN / c / "case.json").read_text())["kind"] == "head"]
CLASSES = {cls.__name__: cls for cls in (ArceeForSequenceClassification, ArceeForQuestionAnswering,
                                         ArceeForTokenClassification)}


def _load(case):
    meta = json.loads((GOLDEN / case / "case.json").read_text())
    inputs = load_file(str(GOLDEN / case / "inputs.safetensors"))
    expected = load_file(str(GOLDEN / case / "expected.safetensors"))
    return meta, inputs, expected


@pytest.mark.parametrize("case", HEAD_CASES)
def test_head_matches_transformers(case):
    meta, inputs, expected = _load(case)
    model = CLASSES[meta["class"]].from_pretrained(GOLDEN / case)
    out = model(**inputs, **meta["call"])
    for key, want in expected.items():
        got = np.asarray(to_numpy(out[key]), dtype=np.float64)
        assert got.shape == want.shape, (key, got.shape, want.shape)
        assert_close(got, want.astype(np.float64), f"{case}: {key}", tolerance=golden_tolerance(meta["tolerance"]))
    if "problem_type" in meta:
        assert model.config.problem_type == meta["problem_type"]  # inferred and set on the config


def test_pooling_picks_rightmost_non_pad_token():
    ids = np.array([[5, 6, 7, 0, 0], [0, 0, 8, 9, 4], [0, 0, 0, 0, 0], [3, 0, 3, 0, 3]])
    assert last_non_pad_index(ids, 0).tolist() == [2, 4, 0, 4]
    logits = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    np.testing.assert_array_equal(pool_positions(logits, np.array([2, 4, 0, 1])), logits[[0, 1, 2, 3], [2, 4, 0, 1]])


def test_pooling_ignores_the_attention_mask():
    model = ArceeForSequenceClassification.from_config(small_config(num_labels=3), seed=3)
    ids = np.array([[5, 6, 7, 8, 0, 0]])
    a = model(ids, attention_mask=np.array([[1, 1, 1, 1, 0, 0]])).logits
    b = model(ids[:, :4]).logits
    np.testing.assert_allclose(a, b, atol=1e-6)  # pooled at token 8 either way


def test_blocks_run_on_array_api_strict():
    xp = namespace_for_device("array_api_strict")
    rng = np.random.default_rng(0)
    ids = np.array([[5, 6, 0, 0], [0, 7, 8, 9]])
    logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
    labels_int, labels_float = np.array([2, 0]), rng.random((2, 3)).astype(np.float32)
    positions = np.array([1, 9])
    token_labels = np.array([[0, 1, -100, 2], [1, -100, 0, 0]])

    def run(to):
        idx = last_non_pad_index(to(ids), 0)
        pooled = pool_positions(to(logits), idx)
        return [to_numpy(v) for v in (
            idx, pooled, sequence_classification_loss(pooled, to(labels_int), "single_label_classification"),
            sequence_classification_loss(pooled, to(labels_float), "multi_label_classification"),
            sequence_classification_loss(pooled, to(labels_float), "regression"),
            question_answering_loss(to(logits[..., 0]), to(logits[..., 1]), to(positions), to(positions[::-1])),
            token_classification_loss(to(logits), to(token_labels)))]

    for strict, plain in zip(run(lambda a: to_device(a, xp)), run(np.asarray), strict=False):
        np.testing.assert_allclose(strict, plain, rtol=1e-6, atol=1e-7)


def test_losses_by_formula():
    x = np.array([[2.0, -1.0], [0.5, 30.0]], dtype=np.float32)
    y = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    naive = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(bce_with_logits(x, y), naive.mean(), rtol=1e-6)
    assert np.isfinite(bce_with_logits(np.array([[-200.0, 200.0]], np.float32), np.array([[1.0, 0.0]], np.float32)))
    np.testing.assert_allclose(mse_loss(x, y), ((x - y) ** 2).mean(), rtol=1e-6)
    # every QA position ignored -> NaN, as in PyTorch
    with np.errstate(invalid="ignore"):
        assert np.isnan(question_answering_loss(x, x, np.array([5, 7]), np.array([2, 2])))


@pytest.mark.parametrize("cls", [ArceeForSequenceClassification, ArceeForQuestionAnswering,
                                 ArceeForTokenClassification])
def test_save_and_reload_keeps_transformers_names(tmp_path, cls):
    config = small_config(num_labels=4, token_classification_bias=False)
    model = cls.from_config(config, seed=5)
    model.save_pretrained(tmp_path)
    names = set(read_checkpoint(tmp_path))
    prefix = "transformer." if cls is ArceeForQuestionAnswering else "model."
    assert f"{prefix}embed_tokens.weight" in names
    assert names - {n for n in names if n.startswith(prefix)} == set(cls.head_shapes(config))
    reloaded = cls.from_pretrained(tmp_path)
    ids = np.array([[3, 4, 5, 6]])
    a, b = model(ids), reloaded(ids)
    for key in a.keys():
        if key != "past_key_values":
            np.testing.assert_array_equal(a[key], b[key])


def test_head_weights_and_bias_follow_the_config():
    assert set(ArceeForTokenClassification.head_shapes(small_config(num_labels=3))) == {"score.weight", "score.bias"}
    assert set(ArceeForTokenClassification.head_shapes(
        small_config(num_labels=3, token_classification_bias=False))) == {"score.weight"}
    assert ArceeForSequenceClassification.head_shapes(small_config(num_labels=3)) == {"score.weight": (3, 32)}


def test_qa_checkpoint_with_wrong_head_is_refused(tmp_path):
    ArceeForSequenceClassification.from_config(small_config(num_labels=2)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="qa_outputs.weight"):
        ArceeForQuestionAnswering.from_pretrained(tmp_path)


def test_errors_name_the_problem():
    seq = ArceeForSequenceClassification.from_config(small_config(num_labels=3, pad_token_id=None))
    with pytest.raises(ValueError, match="Cannot handle batch sizes > 1"):
        seq(np.array([[3, 4], [5, 6]]))
    seq = ArceeForSequenceClassification.from_config(small_config(num_labels=3))
    with pytest.raises(ValueError, match=r"\[0, num_labels=3\)"):
        seq(np.array([[3, 4], [5, 6]]), labels=np.array([1, 3]))
    with pytest.raises(ValueError, match="2 class ids"):
        seq(np.array([[3, 4], [5, 6]]), labels=np.array([1, 2, 0]))
    multi = ArceeForSequenceClassification.from_config(small_config(num_labels=3))
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        multi(np.array([[3, 4], [5, 6]]), labels=np.ones((2, 2), np.float32))
    qa = ArceeForQuestionAnswering.from_config(small_config())
    with pytest.raises(ValueError, match="start_positions must be 2 integer"):
        qa(np.array([[3, 4], [5, 6]]), start_positions=np.array([1.0, 2.0]), end_positions=np.array([1, 1]))
    tok = ArceeForTokenClassification.from_config(small_config(num_labels=2))
    with pytest.raises(ValueError, match="labels must be"):
        tok(np.array([[3, 4], [5, 6]]), labels=np.array([[0, 1, 1], [0, 1, 1]]))
    with pytest.raises(TypeError, match="labels must hold integers"):
        tok(np.array([[3, 4]]), labels=np.array([[0.0, 1.0]]))


def test_inputs_embeds_pools_last_position_with_a_warning():
    model = ArceeForSequenceClassification.from_config(small_config(num_labels=2), seed=1)
    ids = np.array([[3, 4, 5]])
    embeds = model.params["embed_tokens.weight"][ids]
    with pytest.warns(UserWarning, match="does not detect padding"):
        out = model(inputs_embeds=embeds)
    np.testing.assert_allclose(out.logits, model(ids).logits, atol=1e-6)


def test_exported_from_the_package():
    for name in ("ArceeForSequenceClassification", "ArceeForQuestionAnswering", "ArceeForTokenClassification",
                 "SequenceClassifierOutputWithPast", "QuestionAnsweringModelOutput", "TokenClassifierOutput"):
        assert name in arcee_np.__all__ and hasattr(arcee_np, name)
