"""Live differential tests of generation against transformers: hypothesis over knob combinations.

Skipped unless torch and transformers import (``pip install -e ".[golden,test]"``). A random transformers
ArceeForCausalLM (norms perturbed) is saved and loaded by arcee_np; then

* the processor chain (every processor and warper, sampling and beam settings) that transformers' generate
  builds from a GenerationConfig, applied to the same random scores, equals ``build_processors`` at 1e-6;
* greedy and beam ``generate`` (length_penalty, early_stopping, num_return_sequences, n-gram blocking, bad
  words, sequence bias, suppression, forced eos, min lengths) equal transformers' sequences token for token,
  with sequences_scores, beam_indices and per-step scores (at the model's 1e-4);
* assisted decoding (a draft model, prompt lookup) gives transformers' sequences;
* stop strings: arcee_np's criterion equals transformers' StopStringCriteria on random token rows of the
  shipped tokenizer, and generate stops where transformers does.

Sampled tokens are not compared (the RNGs differ); their processed scores are.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from torch_reference import perturb_  # noqa: E402

import arcee_np  # noqa: E402
from arcee_np.generation import StopStringCriteria, build_processors, resolve_settings  # noqa: E402
from arcee_np.io.tokenizer import ArceeTokenizer  # noqa: E402

from transformers.generation.stopping_criteria import StopStringCriteria as HfStopStringCriteria  # noqa: E402

pytestmark = pytest.mark.live
torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

EXAMPLES = int(os.environ.get("ARCEE_LIVE_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VOCAB, MODEL_TOL = 48, 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    config = transformers.ArceeConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    with torch.no_grad():
        model = perturb_(transformers.ArceeForCausalLM(config), torch.Generator().manual_seed(47), std=0.5)
    model.save_pretrained(folder)
    hf = transformers.ArceeForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return hf.eval(), arcee_np.ArceeForCausalLM.from_pretrained(folder)


def token_lists(min_size=1, max_size=3):
    return st.lists(st.integers(3, VOCAB - 1), min_size=min_size, max_size=max_size)


@st.composite
def processor_knobs(draw):
    """Knobs of the processors that also run greedily (each one off or on)."""
    knobs = {}
    optional = {
        "repetition_penalty": st.sampled_from([0.8, 1.3]),
        "no_repeat_ngram_size": st.integers(1, 4),
        "bad_words_ids": st.lists(token_lists(1, 2), min_size=1, max_size=3),
        "sequence_bias": st.lists(st.tuples(token_lists(1, 2), st.floats(-3, 3)), min_size=1, max_size=3).map(
            lambda pairs: [[ids, bias] for ids, bias in pairs]),
        "suppress_tokens": token_lists(),
        "begin_suppress_tokens": token_lists(),
        "min_length": st.integers(5, 14),
        "min_new_tokens": st.integers(1, 5),
        "forced_eos_token_id": st.integers(3, VOCAB - 1),
        "exponential_decay_length_penalty": st.tuples(st.integers(0, 4), st.floats(1.05, 2.0)).map(list),
        "renormalize_logits": st.just(True),
        "remove_invalid_values": st.just(True),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            knobs[name] = draw(strategy)
    if knobs.get("forced_eos_token_id") in knobs.get("suppress_tokens", []):
        del knobs["forced_eos_token_id"]  # both refuse forcing a suppressed token
    return knobs


@st.composite
def warper_knobs(draw):
    knobs = {"do_sample": True}
    optional = {
        "temperature": st.floats(0.3, 2.0), "top_k": st.integers(0, 60), "top_p": st.floats(0.05, 1.0),
        "min_p": st.floats(0.0, 0.9), "typical_p": st.floats(0.05, 1.0), "epsilon_cutoff": st.floats(0.0, 0.2),
        "eta_cutoff": st.floats(0.0, 0.2), "top_h": st.floats(0.05, 1.0),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            knobs[name] = draw(strategy)
    return knobs


def hf_processors(hf, knobs, ids):
    config = transformers.GenerationConfig(**{**hf.generation_config.to_dict(), **knobs})
    config.max_length = ids.shape[1] + 10
    config._eos_token_tensor = torch.tensor([2])
    return hf._get_logits_processor(config, input_ids_seq_length=ids.shape[1], encoder_input_ids=ids,
                                    logits_processor=transformers.LogitsProcessorList(), device="cpu",
                                    model_kwargs={})


@SETTINGS
@given(greedy=processor_knobs(), warpers=warper_knobs(), beams=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_processor_chain_matches_transformers(pair, greedy, warpers, beams, seed):
    """The whole chain transformers builds from a GenerationConfig, on the same random scores: 1e-6."""
    hf, _ = pair
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 12, (2, 9), generator=generator)  # a small alphabet: n-grams and biases match
    scores = 3 * torch.randn(2, VOCAB, generator=generator)
    knobs = {**greedy, **warpers, "num_beams": beams}
    want = hf_processors(hf, knobs, ids)(ids, scores.clone()).numpy()
    settings = resolve_settings(ids.shape[1], VOCAB, 64, {}, {"eos_token_id": 2, "pad_token_id": 0},
                                max_new_tokens=10, **knobs)
    got = np.asarray(build_processors(settings)(ids.numpy(), scores.numpy().copy()))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-6)


@st.composite
def beam_knobs(draw):
    beams = draw(st.integers(1, 4))
    knobs = {"num_beams": beams, "do_sample": False, "max_new_tokens": draw(st.integers(1, 10))}
    if beams > 1:
        knobs.update(length_penalty=draw(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0])),
                     early_stopping=draw(st.sampled_from([True, False, "never"])),
                     num_return_sequences=draw(st.integers(1, beams)))
    if draw(st.booleans()):
        knobs["eos_token_id"] = draw(st.sampled_from([2, [2, 41], [2, 5, 41]]))
    return knobs


@SETTINGS
@given(search=beam_knobs(), processors=processor_knobs(), padded=st.booleans(), seed=st.integers(0, 2**16))
def test_greedy_and_beam_generate_match_transformers(pair, search, processors, padded, seed):
    hf, ours = pair
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 6), generator=generator)
    mask = None
    if padded:
        ids[0, :2] = 0
        mask = (torch.arange(6) >= 2).long()[None, :].repeat(2, 1)
        mask[1] = 1
    processors.pop("remove_invalid_values", None)
    knobs = {**search, **processors}
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **knobs)
    got = ours.generate(ids.numpy(), attention_mask=None if mask is None else mask.numpy(),
                        return_dict_in_generate=True, output_scores=True, **knobs)
    # rows that are placeholders (score -1e9: fewer finished hypotheses than num_return_sequences) are picked by
    # torch.topk's unspecified order of ties; arcee_np takes them in index order (docs/generation.md)
    real = slice(None) if search["num_beams"] == 1 else want.sequences_scores.numpy() > -1e8
    np.testing.assert_array_equal(got.sequences[real], want.sequences.numpy()[real])
    assert len(got.scores) == len(want.scores)
    for mine, theirs in zip(got.scores, want.scores, strict=True):
        theirs = theirs.numpy()
        np.testing.assert_array_equal(np.isneginf(mine), np.isneginf(theirs))
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(mine[finite], theirs[finite], atol=MODEL_TOL, rtol=MODEL_TOL)
    if search["num_beams"] > 1:
        np.testing.assert_allclose(got.sequences_scores, want.sequences_scores.numpy(), atol=MODEL_TOL)
        np.testing.assert_array_equal(got.beam_indices[real], want.beam_indices.numpy()[real])


@settings(max_examples=max(EXAMPLES // 4, 5), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), lookup=st.booleans(), tokens=st.integers(1, 6))
def test_assisted_generate_matches_transformers(pair, seed, lookup, tokens):
    hf, ours = pair
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(seed))
    prompt = torch.cat([prompt, prompt[:, :3]], dim=1)
    knobs = {"max_new_tokens": 12, "do_sample": False}
    if lookup:
        with torch.no_grad():
            want = hf.generate(prompt, prompt_lookup_num_tokens=tokens, **knobs)
        got = ours.generate(prompt.numpy(), prompt_lookup_num_tokens=tokens, **knobs)
    else:
        with torch.no_grad():
            want = hf.generate(prompt, assistant_model=hf, **knobs)
        got = ours.generate(prompt.numpy(), assistant_model=ours, num_assistant_tokens=tokens, **knobs)
    np.testing.assert_array_equal(got, want.numpy())


@pytest.fixture(scope="module")
def tokenizers():
    path = arcee_np.default_model_path()
    return ArceeTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


@SETTINGS
@given(data=st.data())
def test_stop_string_criterion_matches_transformers(tokenizers, data):
    ours, theirs = tokenizers
    texts = ours.token_texts()
    rows = data.draw(st.lists(st.lists(st.integers(3, len(texts) - 1), min_size=1, max_size=8), min_size=1,
                              max_size=4).filter(lambda r: len({len(x) for x in r}) == 1))
    # stop strings cut from the rows' own text, so that they often match
    row_text = b"".join(texts[t] for t in rows[0]).decode("utf-8", errors="ignore")
    start = data.draw(st.integers(0, max(0, len(row_text) - 1)))
    cut = row_text[start:start + data.draw(st.integers(1, 6))] or "e"
    stops = [cut] + data.draw(st.lists(st.sampled_from(["e", " the", "\n", "ing", "!"]), max_size=2))
    ids = torch.tensor(rows)
    want = HfStopStringCriteria(theirs, stops)(ids, None).numpy()
    got = StopStringCriteria(texts, stops)(ids.numpy())
    np.testing.assert_array_equal(got, want)


def test_stop_strings_generate_matches_transformers(tokenizers):
    ours_tok, theirs_tok = tokenizers
    path = arcee_np.default_model_path()
    hf = transformers.ArceeForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    ours = arcee_np.ArceeForCausalLM.from_pretrained(path)
    prompt = torch.tensor([theirs_tok.encode("ROMEO:")])
    for stops in (["\n"], [" the", "thou"], ["ing"]):
        with torch.no_grad():
            want = hf.generate(prompt, max_new_tokens=40, do_sample=False, stop_strings=stops, tokenizer=theirs_tok)
        got = ours.generate(prompt.numpy(), max_new_tokens=40, do_sample=False, stop_strings=stops,
                            tokenizer=ours_tok)
        np.testing.assert_array_equal(got, want.numpy())


def test_every_generation_config_key_is_handled():
    from arcee_np.validation.generation import KNOBS, NO_EFFECT, REFUSED

    keys = set(transformers.GenerationConfig().to_dict())
    assert not keys - set(KNOBS) - set(REFUSED) - set(NO_EFFECT)
