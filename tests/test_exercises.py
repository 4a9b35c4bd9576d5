"""The exercises in notebooks/exercises/: every solution passes its check, every untouched stub fails it with
the check's own message (never an exception), and classic wrong answers get the diagnosis meant for them."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
sys.path.insert(0, str(EXERCISES_DIR))

import checking  # noqa: E402
import checks  # noqa: E402
from solutions import (ex1_embeddings_rmsnorm as s1, ex2_rope_yarn as s2, ex3_attention as s3,  # noqa: E402
                       ex4_mlp_layer as s4, ex5_sampling_loss as s5, ex6_your_arcee as s6)

SOLUTIONS = {"ex1_embeddings_rmsnorm": s1, "ex2_rope_yarn": s2, "ex3_attention": s3, "ex4_mlp_layer": s4,
             "ex5_sampling_loss": s5, "ex6_your_arcee": s6}
NAMES = list(checks.EXERCISES)


def test_there_are_at_least_eleven_exercises_in_six_notebooks():
    assert len(checks.EXERCISES) >= 11
    assert sorted(checks.NOTEBOOKS) == sorted(SOLUTIONS)
    separate = {"ex15_decoding"}   # its checks live in checks_decoding.py (tests/test_exercises_decoding.py)
    assert sorted(p.stem for p in EXERCISES_DIR.glob("*.ipynb") if p.stem not in separate) == sorted(SOLUTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_each_exercise_has_a_stub_a_check_cell_and_a_solution(name):
    exercise = checks.EXERCISES[name]
    stubs = "\n".join(source for _, source in checking.exercise_cells(exercise.notebook))
    for function in exercise.names:
        assert f"def {function}(" in stubs or f"class {function}" in stubs, f"no stub of {function}"
        assert hasattr(SOLUTIONS[exercise.notebook], function), f"no solution of {function}"
    cells = json.loads((EXERCISES_DIR / f"{exercise.notebook}.ipynb").read_text())["cells"]
    calls = [c for c in cells if c["cell_type"] == "code" and f"{exercise.check.__name__}(" in "".join(c["source"])]
    assert calls, f"{exercise.notebook} never runs {exercise.check.__name__}"


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_passes(name):
    verdict = checks.run_exercise(name, vars(SOLUTIONS[checks.EXERCISES[name].notebook]))
    assert verdict.passed, str(verdict)
    assert str(verdict).startswith(f"✓ {name}: matches arcee_np")


@pytest.mark.parametrize("name", NAMES)
def test_the_untouched_stub_fails_with_the_checks_message(name):
    verdict = checks.run_exercise(name, checks.your_code(checks.EXERCISES[name].notebook))
    assert not verdict.passed
    text = str(verdict)
    assert text.startswith(f"✗ {name}: not right yet") and "is not written yet" in text and "hint:" in text, text


def test_a_missing_function_is_reported_not_raised():
    verdict = checks.run_exercise("embed", {})
    assert not verdict.passed and "defines no `embed`" in str(verdict)


# ---------------------------------------------------------------------------------------------- wrong answers
def _interleaved_rope(x, cos, sin):
    half = x.shape[-1] // 2
    c, s = cos[:, None, :, :half], sin[:, None, :, :half]
    even, odd = x[..., 0::2], x[..., 1::2]
    return np.stack([even * c - odd * s, odd * c + even * s], axis=-1).reshape(x.shape)


def _gqa_modulo(q, k, v, mask):
    heads, kv = q.shape[1], k.shape[1]
    index = [n % kv for n in range(heads)]   # the classic slip: n % KV instead of n // (H / KV)
    return s3.attention(q, k[:, index], v[:, index], mask) if kv > 1 else s3.attention(q, k, v, mask)


def _mask_with_inf(key_mask, query_length, dtype):
    mask = s3.causal_padding_mask(key_mask, query_length, dtype)
    return np.where(mask == 0, 0, -np.inf).astype(dtype)


class _CacheReturningOnlyNew(s3.KVCache):
    def update(self, keys, values, layer):
        super().update(keys, values, layer)
        return keys, values


class _CacheCountingCalls(s3.KVCache):
    def __init__(self, num_layers):
        super().__init__(num_layers)
        self.calls = 0

    def get_seq_length(self, layer=0):
        return self.calls

    def update(self, keys, values, layer):
        self.calls += keys.shape[2]
        return super().update(keys, values, layer)


def _top_p_dropping_the_crossing_token(scores, p):
    order = np.argsort(-scores, axis=-1, kind="stable")
    probs = np.take_along_axis(s5.softmax(scores.astype(np.float64)), order, axis=-1)
    keep_sorted = np.cumsum(probs, -1) <= p
    keep_sorted[:, 0] = True
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return np.where(keep, scores, -np.inf)


def _loss_without_shift(logits, labels):
    counted = labels != -100
    logp = s5.log_softmax(logits.astype(np.float32))[counted]
    return -logp[np.arange(len(logp)), labels[counted]].mean()


def _layer_adding_the_normed_input(h, weights, cos, sin, mask, config, cache=None, layer=0):
    out = s4.decoder_layer(h, weights, cos, sin, mask, config, cache, layer)
    out["attn_residual"] = out["input_norm"] + out["attn.out"]
    return out


def _forward_without_final_norm(params, config, input_ids, cache=None):
    out = s6.arcee_forward(params, config, input_ids, cache)
    h = out[f"layers.{config.num_hidden_layers - 1}.out"]
    return {**out, "final_norm": h, "logits": h @ params["embed_tokens.weight"].T}


WRONG = {  # exercise, the wrong functions, what the verdict must say
    "embed scaled like Gemma": ("embed", [lambda ids, w: w[ids] * math.sqrt(w.shape[1])],
                                ["first divergence at embed", "sqrt(D) times too large"]),
    "embed of the columns": ("embed", [lambda ids, w: w.T[:, ids]], ["returned shape (256, 1,", "[B, T, D]"]),
    "rms_norm with 1 + weight": ("rms_norm", [lambda x, w, eps: (1 + w) * x / np.sqrt(
        np.mean(x * x, -1, keepdims=True) + eps)], ["first divergence at layers.2.input_norm", "1 + weight"]),
    "rms_norm without the float32 upcast": ("rms_norm", [lambda x, w, eps: w * x / np.sqrt(
        np.mean(x * x, -1, keepdims=True) + eps)], ["float16", "overflowed"]),
    "RoPE exponent j / hd": ("rope_tables", [lambda hd, theta: (theta ** (-np.arange(hd // 2) / hd)).astype(
        np.float32), s2.rope_tables], ["rope_inv_freq(32, 10000)", "exponent is j / head_dim"]),
    "interleaved RoPE": ("apply_rope", [_interleaved_rope], ["first divergence at layers.0.attn.q_rope",
                                                            "RoPE layout", "adjacent pairs"]),
    "YaRN without truncation": ("yarn", [lambda hd, theta, factor, original, beta_fast=32.0, beta_slow=1.0:
                                         _yarn_untruncated(hd, theta, factor, original, beta_fast, beta_slow),
                                         s2.yarn_attention_factor], ["floors low and ceils high"]),
    "mask with -inf": ("mask", [_mask_with_inf], ["-inf", "NaN"]),
    "mask that forgets padding": ("mask", [lambda key_mask, t, dtype: s3.causal_padding_mask(
        np.ones_like(key_mask), t, dtype)], ["first divergence at layers.0.attn.probs", "is padding"]),
    "GQA n % KV": ("attention", [_gqa_modulo], ["first divergence at layers.0.attn.probs", "GQA head mapping",
                                                "only heads [1, 3, 4, 6] of 8 differ"]),
    "attention without the scale": ("attention", [lambda q, k, v, mask: s3.attention(
        q * q.shape[-1] ** 0.5, k, v, mask)], ["without the 1 / sqrt(head_dim) scale"]),
    "cache returning only the new keys": ("kv_cache", [_CacheReturningOnlyNew], ["decode step 1",
                                                                                  "must return the past ones too"]),
    "cache counting calls": ("kv_cache", [_CacheCountingCalls], ["get_seq_length() returned 24; expected 6",
                                                                 "count update calls"]),
    "relu instead of relu2": ("mlp", [lambda x: np.maximum(x, 0), s4.mlp], ["you returned relu(x); square it"]),
    "residual of the normed input": ("decoder_layer", [_layer_adding_the_normed_input],
                                     ["first divergence at layers.1.attn_residual", "the residual add"]),
    "layer ignoring the cache": ("decoder_layer", [lambda *a, cache=None, layer=0: s4.decoder_layer(*a)],
                                 ["does not call cache.update"]),
    "top-k filling with 0": ("sampling", [s5.apply_temperature, lambda s, k: np.where(
        s5.top_k_filter(s, k) == -np.inf, 0.0, s), s5.top_p_filter, s5.draw, s5.sample_next],
                             ["removed tokens hold 0; they must be -inf"]),
    "top-p one token short": ("sampling", [s5.apply_temperature, s5.top_k_filter, _top_p_dropping_the_crossing_token,
                                           s5.draw, s5.sample_next], ["you dropped the token that makes the mass"]),
    "loss without the shift": ("loss", [s5.log_softmax, _loss_without_shift], ["position t predicts token t + 1"]),
    "forward without the final norm": ("arcee_forward", [_forward_without_final_norm],
                                       ["first divergence at final_norm", "RMSNorm"]),
}


def _yarn_untruncated(hd, theta, factor, original, beta_fast, beta_slow):
    j = np.arange(hd // 2)
    plain = theta ** (-2 * j / hd)

    def corr(n):
        return hd * math.log(original / (2 * math.pi * n)) / (2 * math.log(theta))

    ramp = np.clip((j - corr(beta_fast)) / (corr(beta_slow) - corr(beta_fast)), 0, 1)
    return (plain * (1 - ramp) + plain / factor * ramp).astype(np.float32)


@pytest.mark.parametrize("mistake", sorted(WRONG))
def test_a_classic_mistake_gets_its_diagnosis(mistake):
    name, functions, fragments = WRONG[mistake]
    verdict = checks.EXERCISES[name].check(*functions)
    text = " ".join(str(verdict).split())   # the verdict wraps long lines
    assert not verdict.passed
    for fragment in fragments:
        assert fragment in text, f"{mistake}: {fragment!r} not in\n{verdict}"


def test_an_exception_in_your_code_names_the_line():
    def embed(input_ids, weight):
        rows = weight @ input_ids      # a mistake that raises
        return rows

    text = str(checks.check_embed(embed))
    assert "`embed` raised ValueError" in text and "rows = weight @ input_ids" in text, text


# ---------------------------------------------------------------------------------------------- your code, loaded
def test_yours_or_reference_takes_your_passing_code_and_arcee_nps_otherwise(tmp_path, monkeypatch):
    """The loader runs a saved notebook's exercise cells: solved ones (here: cells importing the solutions) are used,
    unsolved ones fall back to arcee_np's functions."""
    for path in EXERCISES_DIR.glob("*.ipynb"):
        shutil.copy(path, tmp_path / path.name)
    solved = tmp_path / "ex1_embeddings_rmsnorm.ipynb"
    nb = json.loads(solved.read_text())
    for cell in nb["cells"]:
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            names = [n for n in ("embed", "rms_norm") if f"def {n}(" in "".join(cell["source"])]
            cell["source"] = [f"from solutions.ex1_embeddings_rmsnorm import {', '.join(names)}\n"]
    solved.write_text(json.dumps(nb))
    monkeypatch.setattr(checking, "HERE", tmp_path)
    monkeypatch.setattr(checks, "HERE", tmp_path)
    embed, rms_norm, attention = checks.yours_or_reference("embed", "rms_norm", "attention", quiet=True)
    assert embed is s1.embed
    assert rms_norm is s1.rms_norm
    assert attention is checks.REFERENCE["attention"]
    namespace = checks.your_code("ex4_mlp_layer")      # later notebooks see the earlier functions
    assert namespace["rms_norm"] is s1.rms_norm and namespace["attention"] is checks.REFERENCE["attention"]


def test_reference_functions_pass_every_check():
    """The fallbacks behind yours_or_reference are arcee_np's own functions in the exercises' signatures."""
    for name in NAMES:
        verdict = checks.run_exercise(name, checks.REFERENCE)
        assert verdict.passed, str(verdict)


def test_generate_text_with_the_solutions_equals_arcee_nps_generate():
    verdict = checks.generate_text(s6.arcee_forward, s3.KVCache, s5.sample_next, max_new_tokens=24, seed=3)
    assert verdict.passed, str(verdict)
    assert "token for token" in str(verdict)
