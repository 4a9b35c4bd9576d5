"""Generation against transformers' stored outputs (tests/golden_generation, scripts/make_golden_generation.py):
every processor and warper on the same scores (1e-6), and greedy / beam sequences token for token with their
scores, sequences_scores and beam_indices, n-gram blocking, stop strings, and generation configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import arcee_np.generation as generation
from arcee_np import ArceeForCausalLM, default_model_path
from arcee_np.backend import namespace_for_device, to_device, to_numpy
from arcee_np.io.tokenizer import ArceeTokenizer

GOLDEN = Path(__file__).resolve().parent / "golden_generation"
PROCESSORS = json.loads((GOLDEN / "processors" / "processors.json").read_text())
CASES = json.loads((GOLDEN / "cases" / "cases.json").read_text())
MODEL_TOLERANCE = 1e-4  # the model's logits against transformers' (tests/golden); processors alone: 1e-6


def assert_same_scores(got, want, label, tolerance=1e-6):
    got = np.asarray(to_numpy(got))
    assert got.shape == want.shape, label
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{label}: filtered entries differ")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=tolerance, atol=tolerance, err_msg=label)


def _processor(name):
    entry = PROCESSORS[name]
    return getattr(generation, entry["class"])(**entry["kwargs"])


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_processor_matches_transformers(name):
    data = load_file(str(GOLDEN / "processors" / f"{name}.safetensors"))
    got = _processor(name)(data["input_ids"], data["scores"].copy())
    if name == "remove_invalid_values":
        np.testing.assert_array_equal(got, data["expected"])
    else:
        assert_same_scores(got, data["expected"], name)


@pytest.mark.parametrize("name", ["min_p_inf", "typical_inf", "eta_inf_keep2", "top_h_inf", "no_repeat_ngram_2",
                                  "sequence_bias", "exponential_decay", "forced_eos", "renormalize"])
def test_processor_runs_on_array_api_strict(name):
    xp = namespace_for_device("array_api_strict")
    data = load_file(str(GOLDEN / "processors" / f"{name}.safetensors"))
    got = _processor(name)(to_device(data["input_ids"], xp), to_device(data["scores"], xp))
    assert_same_scores(got, data["expected"], name)


@pytest.fixture(scope="module")
def models():
    return {"tiny": ArceeForCausalLM.from_pretrained(GOLDEN / "model"),
            "shipped": ArceeForCausalLM.from_pretrained(default_model_path())}


def run_case(models, name):
    case = CASES[name]
    data = load_file(str(GOLDEN / "cases" / f"{name}.safetensors"))
    model = models[case["model"]]
    saved = model.generation_config
    if case["generation_config"] is not None:
        model.generation_config = case["generation_config"]
    extra = {"tokenizer": ArceeTokenizer.from_pretrained(default_model_path())} if "stop_strings" in case["call"] \
        else {}
    try:
        out = model.generate(data["input_ids"], attention_mask=data.get("attention_mask"),
                             return_dict_in_generate=True, output_scores=True, **extra, **case["call"])
    finally:
        model.generation_config = saved
    return case, data, out


@pytest.mark.parametrize("name", sorted(CASES))
def test_generate_matches_transformers(models, name):
    case, data, out = run_case(models, name)
    if "sequences" in case["outputs"]:
        np.testing.assert_array_equal(out.sequences, data["sequences"])
    if "scores" in case["outputs"]:
        assert len(out.scores) == data["scores"].shape[0]
        for step, (got, want) in enumerate(zip(out.scores, data["scores"], strict=True)):
            assert_same_scores(got, want, f"{name} step {step}", MODEL_TOLERANCE)
    if "sequences_scores" in case["outputs"]:
        np.testing.assert_allclose(out.sequences_scores, data["sequences_scores"], atol=MODEL_TOLERANCE)
    if "beam_indices" in case["outputs"]:
        np.testing.assert_array_equal(out.beam_indices, data["beam_indices"])


def test_issue_config_is_not_ignored(models):
    """The shipped folder's generation config with min_p, no_repeat_ngram_size and typical_p: all three applied."""
    config = CASES["shipped_config_min_p_no_repeat_typical"]["generation_config"]
    settings = generation.resolve_settings(3, 4096, 512, config, {})
    names = [type(p).__name__ for p in generation.build_processors(settings)]
    assert {"MinPLogitsWarper", "NoRepeatNGramLogitsProcessor", "TypicalLogitsWarper"} <= set(names)


def test_beam_sampling_structure_and_seed(models):
    """Beam sampling draws with NumPy's RNG (torch's cannot be matched): check its shape, its scores and that a
    seed reproduces it."""
    model = models["tiny"]
    ids = np.array([[1, 5, 9, 13], [1, 30, 31, 32]])
    kwargs = dict(max_new_tokens=8, do_sample=True, num_beams=3, num_return_sequences=2, return_dict_in_generate=True,
                  output_scores=True, top_k=10, temperature=1.3)
    a, b = model.generate(ids, seed=4, **kwargs), model.generate(ids, seed=4, **kwargs)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert a.sequences.shape[0] == 4 and a.beam_indices.shape == (4, a.sequences.shape[1] - 4)
    assert np.all(np.diff(a.sequences_scores.reshape(2, 2), axis=1) <= 0)  # best first per prompt
    rows = a.beam_indices
    assert ((rows == -1) | ((rows >= 0) & (rows < 6))).all()
    draws = {tuple(model.generate(ids, seed=s, **kwargs).sequences[0]) for s in range(6)}
    assert len(draws) > 1


# ---------------------------------------------------------------------------------------------- config keys
META = json.loads((GOLDEN / "meta.json").read_text())


def test_every_generation_config_key_is_handled():
    """Each key of transformers' GenerationConfig works (KNOBS), is refused by name (REFUSED) or is accepted
    quietly as metadata / without effect (NO_EFFECT): none is left unhandled."""
    from arcee_np.validation.generation import KNOBS, NO_EFFECT, REFUSED

    keys = set(META["generation_config_keys"])
    unhandled = keys - set(KNOBS) - set(REFUSED) - set(NO_EFFECT)
    assert not unhandled
    assert not (set(KNOBS) & set(REFUSED)) and not (set(REFUSED) & set(NO_EFFECT))


def test_a_config_with_every_default_key_generates_quietly(models, recwarn):
    """A generation_config.json as transformers writes it with every key at its default value."""
    model = models["tiny"]
    config = {key: None for key in META["generation_config_keys"]}
    config.update(transformers_version="5.24.0", _from_model_config=True, max_new_tokens=3, num_beams=1,
                  num_beam_groups=1, diversity_penalty=0.0, guidance_scale=1.0, encoder_repetition_penalty=1.0,
                  encoder_no_repeat_ngram_size=0, low_memory=False, output_attentions=False, penalty_alpha=None)
    saved = model.generation_config
    try:
        model.generation_config = config
        assert model.generate(np.array([[1, 5, 9]])).shape == (1, 6)
    finally:
        model.generation_config = saved
    assert not [w for w in recwarn if "generation setting" in str(w.message)]


@pytest.mark.parametrize("key, value, match", [
    ("penalty_alpha", 0.6, "contrastive search is not implemented"),
    ("dola_layers", "high", "DoLa decoding is not implemented"),
    ("watermarking_config", {"greenlist_ratio": 0.25}, "watermarking is not implemented"),
    ("num_beam_groups", 2, "group"),
    ("guidance_scale", 1.5, "classifier-free guidance"),
    ("encoder_no_repeat_ngram_size", 2, "decoder-only"),
    ("encoder_repetition_penalty", 1.2, "decoder-only"),
    ("output_attentions", True, "output_attentions=True"),
    ("constraints", [1], "constrained beam search"),
])
def test_unimplemented_keys_are_refused_by_name(models, key, value, match):
    model = models["tiny"]
    with pytest.raises(ValueError, match=f"{key}=.*{match}"):
        model.generate(np.array([[1, 5, 9]]), max_new_tokens=2, **{key: value})
    saved = model.generation_config
    try:
        model.generation_config = {key: value}
        with pytest.raises(ValueError, match=f"model.generation_config .*{key}="):
            model.generate(np.array([[1, 5, 9]]), max_new_tokens=2)
    finally:
        model.generation_config = saved


def test_unknown_key_warns_and_unknown_argument_is_refused(models, tmp_path):
    model = models["tiny"]
    with pytest.warns(UserWarning, match="unknown generation setting 'min_pp'"):
        model.generation_config = {"min_pp": 0.1}
    model.generation_config = {}
    with pytest.raises(ValueError, match=r"unknown arguments \['min_pp'\]"):
        model.generate(np.array([[1, 5, 9]]), max_new_tokens=2, min_pp=0.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_p=1.5), r"min_p must be a finite number in \[0, 1\]"),
    (dict(typical_p=0.0), r"typical_p must be a finite number in \(0, 1\]"),
    (dict(num_beams=0), "num_beams must be an integer >= 1"),
    (dict(early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
    (dict(bad_words_ids=[5]), "bad_words_ids must be a non-empty list of non-empty lists"),
    (dict(bad_words_ids=[[99]]), r"bad_words_ids \[99\] lies outside the vocabulary"),
    (dict(sequence_bias=[[[5], "x"]]), "sequence_bias must be a finite number"),
    (dict(stop_strings=["ok"]), "stop_strings needs the model's tokenizer"),
    (dict(num_return_sequences=2), "needs sampling"),
    (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences \(3\) has to be at most num_beams"),
    (dict(num_beams=2, streamer=type("S", (), {"put": lambda s, x: None, "end": lambda s: None})()),
     "streamer cannot be used with beam search"),
    (dict(exponential_decay_length_penalty=[2]), "must be a pair"),
])
def test_bad_new_knobs_are_refused(models, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        models["tiny"].generate(np.array([[1, 5, 9]]), max_new_tokens=3, **kwargs)


def test_pad_equal_to_eos_without_mask_warns(models):
    """transformers' warning: a batch without attention_mask whose pad id is an eos id attends its pads."""
    ids = np.array([[2, 2, 1, 5, 9], [1, 30, 31, 32, 33]])
    with pytest.warns(UserWarning, match="cannot be inferred from input because pad token is same as eos token"):
        models["tiny"].generate(ids, max_new_tokens=2, pad_token_id=2)


# ---------------------------------------------------------------------------------------------- the cache
def test_cache_reorder_and_crop():
    from arcee_np.cache import KVCache

    cache = KVCache(1)
    keys = np.arange(3 * 2 * 4 * 2, dtype=np.float32).reshape(3, 2, 4, 2)
    cache.update(keys, -keys, 0)
    cache.reorder(np.array([2, 2, 0]))
    np.testing.assert_array_equal(cache[0][0], keys[[2, 2, 0]])
    np.testing.assert_array_equal(cache[0][1], -keys[[2, 2, 0]])
    cache.crop(-3)
    assert cache.get_seq_length() == 1
    cache.crop(5)
    assert cache.get_seq_length() == 1


# ---------------------------------------------------------------------------------------------- speculative
@pytest.fixture(scope="module")
def drafts(tmp_path_factory):
    """A 1-layer draft with random weights, one made of the target's first layer (sliced: the checkpoint with
    layer 1 removed), and a copy of the target itself."""
    folder = tmp_path_factory.mktemp("sliced")
    config = json.loads((GOLDEN / "model" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=1)))
    weights = load_file(str(GOLDEN / "model" / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".layers.1." not in k}, str(folder / "model.safetensors"))
    sliced = ArceeForCausalLM.from_pretrained(folder)
    random_draft = ArceeForCausalLM.from_config(sliced.config, seed=3)
    return {"random": random_draft, "sliced": sliced, "same": ArceeForCausalLM.from_pretrained(GOLDEN / "model")}


PROMPT_SET = [np.random.default_rng(seed).integers(3, 48, size=(1, 3 + seed % 5)) for seed in range(12)]


@pytest.mark.parametrize("draft_name", ["random", "sliced", "same"])
def test_speculative_greedy_equals_plain_greedy_on_every_prompt(models, drafts, draft_name):
    target, accepted = models["tiny"], 0
    for prompt in PROMPT_SET:
        plain = target.generate(prompt, max_new_tokens=16, do_sample=False)
        out = target.generate(prompt, max_new_tokens=16, do_sample=False, assistant_model=drafts[draft_name],
                              return_dict_in_generate=True, output_scores=True)
        np.testing.assert_array_equal(out.sequences, plain)
        assert len(out.scores) == plain.shape[1] - prompt.shape[1]
        accepted += out.num_accepted_tokens
    if draft_name == "same":
        assert accepted > 0


def test_speculative_scores_equal_plain_scores(models, drafts):
    target, prompt = models["tiny"], PROMPT_SET[3]
    plain = target.generate(prompt, max_new_tokens=10, do_sample=False, return_dict_in_generate=True,
                            output_scores=True, repetition_penalty=1.2)
    out = target.generate(prompt, max_new_tokens=10, do_sample=False, return_dict_in_generate=True, output_scores=True,
                          repetition_penalty=1.2, assistant_model=drafts["same"], num_assistant_tokens=4)
    for got, want in zip(out.scores, plain.scores, strict=True):
        assert_same_scores(got, want, "assisted scores", 1e-5)


def test_prompt_lookup_greedy_equals_plain_greedy(models):
    target, accepted = models["tiny"], 0
    for prompt in PROMPT_SET:
        repeated = np.concatenate([prompt, prompt, prompt[:, :2]], axis=1)
        plain = target.generate(repeated, max_new_tokens=12, do_sample=False)
        out = target.generate(repeated, max_new_tokens=12, do_sample=False, prompt_lookup_num_tokens=4,
                              return_dict_in_generate=True)
        np.testing.assert_array_equal(out.sequences, plain)
        accepted += out.num_accepted_tokens
    assert accepted > 0


def test_speculative_sampling_is_seeded_and_heuristic_schedule_persists(models, drafts):
    target, draft = models["tiny"], drafts["same"]
    kwargs = dict(max_new_tokens=12, do_sample=True, temperature=1.2, top_k=0, assistant_model=draft,
                  return_dict_in_generate=True)
    a = target.generate(PROMPT_SET[0], seed=5, **kwargs)
    b = target.generate(PROMPT_SET[0], seed=5, **kwargs)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert a.num_accepted_tokens > 0  # a draft equal to the target: every candidate's ratio p / q is 1
    draft.generation_config = {"num_assistant_tokens_schedule": "heuristic", "num_assistant_tokens": 3}
    target.generate(PROMPT_SET[0], max_new_tokens=12, do_sample=False, assistant_model=draft)
    assert draft.generation_config["num_assistant_tokens"] != 3
    draft.generation_config = {}


def test_speculative_sampling_keeps_the_target_distribution():
    """Algorithm 1 on fixed distributions: the first token is distributed as p whatever q is."""
    rng = np.random.default_rng(0)
    p_scores = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], dtype=np.float32))
    q_scores = np.log(np.array([[0.1, 0.1, 0.8]], dtype=np.float32))
    draws = []
    for _ in range(6000):
        candidate = np.array([rng.choice(3, p=[0.1, 0.1, 0.8])])
        tokens, _ = generation.speculative_sampling(candidate, q_scores, p_scores, rng)
        draws.append(tokens[0])
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 6000, [0.5, 0.3, 0.2], atol=0.02)


def test_assisted_decoding_refuses_batches(models, drafts):
    with pytest.raises(ValueError, match="one prompt at a time"):
        models["tiny"].generate(np.array([[1, 5], [1, 6]]), max_new_tokens=3, assistant_model=drafts["same"])


def test_shipped_folder_with_min_p_no_repeat_typical(tmp_path):
    """The shipped model's folder with "min_p": 0.2, "no_repeat_ngram_size": 2, "typical_p": 0.3 added to its
    generation_config.json: all three shape the first step's scores exactly as transformers' do."""
    import shutil

    folder = tmp_path / "shipped"
    shutil.copytree(default_model_path(), folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(dict(config, min_p=0.2, no_repeat_ngram_size=2,
                                                                   typical_p=0.3)))
    model = ArceeForCausalLM.from_pretrained(folder)
    data = load_file(str(GOLDEN / "cases" / "shipped_config_min_p_no_repeat_typical.safetensors"))
    out = model.generate(data["input_ids"], max_new_tokens=1, return_dict_in_generate=True, output_scores=True)
    assert_same_scores(out.scores[0], data["scores"][0], "first step", MODEL_TOLERANCE)
    plain = ArceeForCausalLM.from_pretrained(default_model_path()).generate(
        data["input_ids"], max_new_tokens=1, return_dict_in_generate=True, output_scores=True)
    assert np.isfinite(plain.scores[0]).sum() > np.isfinite(out.scores[0]).sum()  # the knobs filtered more


def test_beams_and_assisted_decoding_run_on_array_api_strict(models):
    """Beam search (with its cache reordering) and assisted decoding (with cache crops) use array-API calls
    only: the same tokens and scores on array_api_strict (CuPy's proxy) as on NumPy."""
    strict = ArceeForCausalLM.from_pretrained(GOLDEN / "model", device="array_api_strict")
    ids = np.array([[1, 5, 9, 13, 17, 21], [1, 30, 31, 32, 33, 34]])
    beams = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2,
                 return_dict_in_generate=True, output_scores=True)
    want, got = models["tiny"].generate(ids, **beams), strict.generate(ids, **beams)
    np.testing.assert_array_equal(got.sequences, want.sequences)
    np.testing.assert_allclose(got.sequences_scores, want.sequences_scores, atol=1e-5)
    assisted = dict(max_new_tokens=10, do_sample=False, assistant_model=strict, return_dict_in_generate=True)
    np.testing.assert_array_equal(strict.generate(ids[:1], **assisted).sequences,
                                  models["tiny"].generate(ids[:1], max_new_tokens=10, do_sample=False))


def test_use_cache_false_and_max_time(models, drafts):
    model, ids = models["tiny"], np.array([[1, 5, 9, 13, 17, 21]])
    for extra in ({}, {"num_beams": 3}, {"assistant_model": drafts["same"]}, {"prompt_lookup_num_tokens": 2}):
        np.testing.assert_array_equal(model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, **extra),
                                      model.generate(ids, max_new_tokens=6, do_sample=False, **extra))
    assert model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=[], max_time=1e-9).shape == (1, 7)


def test_expand_beams_takes_the_best_sums():
    rng = np.random.default_rng(2)
    log_probs = np.log(rng.dirichlet(np.ones(7), size=(2, 3))).astype(np.float32)  # [B=2, K=3, V=7]
    running = np.array([[0.0, -1.0, -2.5], [-0.5, -0.7, -3.0]], dtype=np.float32)
    scores, beam, token = generation.expand_beams(log_probs, running, keep=4)
    for b in range(2):
        sums = sorted(((running[b, k] + log_probs[b, k, v], k, v) for k in range(3) for v in range(7)), reverse=True)
        np.testing.assert_allclose(scores[b], [s for s, _, _ in sums[:4]], rtol=1e-6)
        assert list(zip(beam[b], token[b], strict=True)) == [(k, v) for _, k, v in sums[:4]]


def test_counts_in_a_generation_config_are_not_token_ids(models):
    """max_new_tokens, num_assistant_tokens ... may exceed the vocabulary size; token ids may not."""
    model = models["tiny"]
    model.generation_config = {"max_new_tokens": 60, "num_assistant_tokens": 100, "prompt_lookup_num_tokens": 99}
    model.generation_config = {}
    with pytest.raises(ValueError, match=r"suppress_tokens \[99\] lies outside the vocabulary"):
        model.generation_config = {"suppress_tokens": [99]}


def test_pipeline_returns_every_sequence_and_passes_its_tokenizer():
    from arcee_np.pipeline import pipeline

    generate = pipeline("text-generation")
    out = generate(["ROMEO:", "JULIET:"], max_new_tokens=5, do_sample=True, num_return_sequences=3, seed=0)
    assert [len(rows) for rows in out] == [3, 3]
    assert all(row["generated_text"].startswith(p) for p, rows in zip(["ROMEO:", "JULIET:"], out, strict=True)
               for row in rows)
    case = CASES["shipped_stop_string"]
    data = load_file(str(GOLDEN / "cases" / "shipped_stop_string.safetensors"))
    text = generate("KING HENRY:", do_sample=False, **{k: v for k, v in case["call"].items() if k != "do_sample"})
    tok = ArceeTokenizer.from_pretrained(default_model_path())
    assert text[0]["generated_text"] == tok.decode(data["sequences"][0], skip_special_tokens=True)
