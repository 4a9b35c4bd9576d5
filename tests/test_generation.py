"""Generation against transformers' stored outputs (tests/golden_heads): greedy sequences token for token,
each logits processor on the same random scores; plus sampling, seeds, streaming and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from arcee_np import ArceeForCausalLM
from arcee_np.backend import namespace_for_device, to_device, to_numpy
from arcee_np.generation import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor,
                                 RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                                 TopPLogitsWarper, generate_tokens, resolve_settings, sample_from_scores)

GOLDEN = Path(__file__).resolve().parent / "golden_heads"
META = json.loads((GOLDEN / "meta.json").read_text())
GENERATE_CASES = [c for c in META["cases"] if (GOLDEN / c / "case.json").is_file()
                  and json.loads((GOLDEN / c / "case.json").read_text())["kind"] == "generate"]
PROCESSORS = json.loads((GOLDEN / "processors" / "processors.json").read_text())


def _processor(name: str):
    """Our processor for a fixture, from the arguments transformers' processor got."""
    a = PROCESSORS[name]
    if name.startswith("repetition_penalty"):
        ignore = a.get("prompt_ignore_length")
        return RepetitionPenaltyLogitsProcessor(a["penalty"], None if ignore is None else np.array(ignore))
    if name == "temperature":
        return TemperatureLogitsWarper(a["temperature"])
    if name.startswith("top_k"):
        return TopKLogitsWarper(a["top_k"])
    if name.startswith("top_p"):
        return TopPLogitsWarper(a["top_p"])
    if name == "min_new_tokens":
        return MinNewTokensLengthLogitsProcessor(a["prompt_length_to_skip"], a["min_new_tokens"], a["eos_token_id"])
    return LogitsProcessorList([RepetitionPenaltyLogitsProcessor(a["repetition_penalty"]),
                                TemperatureLogitsWarper(a["temperature"]), TopKLogitsWarper(a["top_k"]),
                                TopPLogitsWarper(a["top_p"])])


def _assert_same_scores(got, want, label):
    got = np.asarray(to_numpy(got))
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{label}: filtered entries differ")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-6, err_msg=label)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_processor_matches_transformers(name):
    data = load_file(str(GOLDEN / "processors" / f"{name}.safetensors"))
    _assert_same_scores(_processor(name)(data["input_ids"], data["scores"].copy()), data["expected"], name)


@pytest.mark.parametrize("name", ["repetition_penalty_prompt_ignore", "top_p", "top_k", "min_new_tokens", "chain"])
def test_processor_runs_on_array_api_strict(name):
    xp = namespace_for_device("array_api_strict")
    data = load_file(str(GOLDEN / "processors" / f"{name}.safetensors"))
    got = _processor(name)(to_device(data["input_ids"], xp), to_device(data["scores"], xp))
    _assert_same_scores(got, data["expected"], name)


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_greedy_matches_transformers(case):
    meta = json.loads((GOLDEN / case / "case.json").read_text())
    inputs = load_file(str(GOLDEN / case / "inputs.safetensors"))
    expected = load_file(str(GOLDEN / case / "expected.safetensors"))["sequences"]
    model = ArceeForCausalLM.from_pretrained(GOLDEN / case)
    got = model.generate(**inputs, **meta["call"])
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def golden_model():
    return ArceeForCausalLM.from_pretrained(GOLDEN / "generate_eos")


PROMPTS = np.array([[1, 5, 9, 13, 17, 21], [1, 30, 31, 32, 33, 34]])


def test_generation_config_is_loaded_and_saved(tmp_path):
    model = ArceeForCausalLM.from_pretrained(GOLDEN / "generate_generation_config")
    assert model.generation_config["max_new_tokens"] == 7
    model.save_pretrained(tmp_path)
    assert ArceeForCausalLM.from_pretrained(tmp_path).generation_config == model.generation_config
    assert ArceeForCausalLM.from_config(model.config).generation_config == {}


def test_top_k_1_sampling_equals_greedy(golden_model):
    greedy = golden_model.generate(PROMPTS, max_new_tokens=8)
    sampled = golden_model.generate(PROMPTS, max_new_tokens=8, do_sample=True, top_k=1, temperature=0.8, seed=3)
    np.testing.assert_array_equal(sampled, greedy)


def test_seeded_sampling_is_reproducible(golden_model):
    a = golden_model.generate(PROMPTS, max_new_tokens=10, do_sample=True, top_k=0, temperature=1.5, seed=11)
    b = golden_model.generate(PROMPTS, max_new_tokens=10, do_sample=True, top_k=0, temperature=1.5, seed=11)
    c = golden_model.generate(PROMPTS, max_new_tokens=10, do_sample=True, top_k=0, temperature=1.5, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampling_draws_only_kept_tokens_in_proportion():
    rng = np.random.default_rng(0)
    scores = np.log(np.array([[0.0, 0.2, 0.3, 0.5]], dtype=np.float32) + 1e-45)
    scores[0, 0] = -np.inf
    draws = np.array([sample_from_scores(scores, rng)[0] for _ in range(4000)])
    assert (draws != 0).all()
    np.testing.assert_allclose(np.bincount(draws, minlength=4)[1:] / 4000, [0.2, 0.3, 0.5], atol=0.03)


class RecordingStreamer:
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, token_ids):
        self.chunks.append(np.asarray(token_ids))

    def end(self):
        self.ended = True


def test_streamer_gets_prompt_then_each_token(golden_model):
    streamer = RecordingStreamer()
    out = golden_model.generate(PROMPTS[:1], max_new_tokens=5, eos_token_id=[], streamer=streamer)
    assert streamer.ended
    np.testing.assert_array_equal(streamer.chunks[0], PROMPTS[:1])
    assert [c.shape for c in streamer.chunks[1:]] == [(1,)] * 5
    np.testing.assert_array_equal(np.concatenate([c.reshape(-1) for c in streamer.chunks]), out[0])


def test_loop_without_cache_equals_cached(golden_model):
    settings = resolve_settings(PROMPTS.shape[1], 48, 64, {}, {"eos_token_id": 2, "pad_token_id": 0},
                                max_new_tokens=6, repetition_penalty=1.2)

    def full_step(ids, mask, positions, cache):
        assert cache is None
        return golden_model(ids, attention_mask=mask, use_cache=False).logits[:, -1, :]

    uncached = generate_tokens(full_step, PROMPTS, settings)
    np.testing.assert_array_equal(uncached, golden_model.generate(PROMPTS, max_new_tokens=6, repetition_penalty=1.2))


def test_a_batch_equals_its_rows_run_alone(golden_model):
    left = np.array([[0, 0, 1, 5, 9, 13], [1, 30, 31, 32, 33, 34]])
    mask = (left != 0).astype(np.int64)
    batch = golden_model.generate(left, attention_mask=mask, max_new_tokens=6, eos_token_id=[])
    alone = golden_model.generate(left[:1, 2:], max_new_tokens=6, eos_token_id=[])
    np.testing.assert_array_equal(batch[0, 2:], alone[0])


def test_pad_defaults_to_eos_and_eos_list():
    settings = resolve_settings(3, 48, 64, {"eos_token_id": [7, 9]}, {"pad_token_id": None}, max_new_tokens=2)
    assert settings.eos_token_id == [7, 9] and settings.pad_token_id == 7
    default = resolve_settings(3, 48, 64, {}, {}, max_new_tokens=None)
    assert default.max_length == 23 and default.top_k == 50 and not default.do_sample
    assert resolve_settings(60, 48, 64, {}, {}).max_length == 64  # capped at max_position_embeddings
    assert resolve_settings(3, 48, 64, {"max_length": 10}, {}).max_length == 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_length=6), "nothing is left to generate"),
    (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
    (dict(do_sample=True, temperature=0.0), "temperature must be a finite number > 0"),
    (dict(top_p=1.5), r"top_p must be a finite number in \[0, 1\]"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(repetition_penalty=0), "repetition_penalty must be a finite number > 0"),
    (dict(repetition_penalty=1e-50), "repetition_penalty must be at least 1.18e-38"),  # 0 in float32 scores
    (dict(do_sample=True, temperature=1e-45), "temperature must be at least 1.18e-38"),  # subnormal there
    (dict(eos_token_id=99), r"eos_token_id \[99\] lies outside the vocabulary"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_bad_settings_are_refused_before_work(golden_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        golden_model.generate(PROMPTS, **kwargs)


def test_bad_prompt_shape(golden_model):
    with pytest.raises(ValueError, match=r"input_ids\[None, :\]"):
        golden_model.generate(np.array([1, 2, 3]))


def test_top_p_ties_keep_the_lower_id_first():
    """torch's unstable sort orders ties arbitrarily; arcee_np keeps the lower vocabulary id (docs/generation.md)."""
    scores = np.log(np.array([[0.1, 0.45, 0.45]], dtype=np.float32))
    out = TopPLogitsWarper(0.4)(np.zeros((1, 1), np.int64), scores.copy())
    assert np.isfinite(out).tolist() == [[False, True, False]]
    out = TopPLogitsWarper(0.5)(np.zeros((1, 1), np.int64), scores.copy())
    assert np.isfinite(out).tolist() == [[False, True, True]]


def test_generate_on_array_api_strict_matches_the_golden_tokens():
    """The loop and the processors use only array-API calls: the same tokens on array_api_strict (CuPy's proxy)."""
    case = GOLDEN / "generate_left_padding"
    meta = json.loads((case / "case.json").read_text())
    inputs = load_file(str(case / "inputs.safetensors"))
    model = ArceeForCausalLM.from_pretrained(case, device="array_api_strict")
    got = model.generate(**inputs, **meta["call"])
    np.testing.assert_array_equal(got, load_file(str(case / "expected.safetensors"))["sequences"])
    sampled = dict(do_sample=True, top_k=5, top_p=0.9, temperature=0.7, seed=1, max_new_tokens=4)
    np.testing.assert_array_equal(model.generate(**inputs, **sampled),
                                  ArceeForCausalLM.from_pretrained(case).generate(**inputs, **sampled))


def test_right_padding_warns(golden_model):
    ids = np.array([[1, 5, 9, 0], [1, 30, 31, 32]])
    with pytest.warns(UserWarning, match="Pad on the left"):
        golden_model.generate(ids, attention_mask=(ids != 0).astype(np.int64), max_new_tokens=2)
