"""Live tests of the heads, generation, the tokenizer, the pipeline and the shipped model against transformers.

Skipped unless torch and transformers import (``pip install -e ".[golden,test]"``). Random transformers
models (norms and biases perturbed) are saved with ``save_pretrained`` and loaded by arcee_np:

* the three heads: logits and every loss kind, left and right padding;
* greedy ``generate`` token for token (plain, repetition penalty, eos stopping, batched left padding,
  min_new_tokens), and the sampling chain's processed scores (RNGs differ, so scores are compared);
* each logits processor against transformers' own class on random scores;
* the tokenizer against AutoTokenizer (encode, decode, padding, chat template), the text-generation
  pipeline against transformers' pipeline, and the shipped Shakespeare checkpoint's logits.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_lm import TEXT, write_tokenizer  # noqa: E402
from torch_reference import perturb_  # noqa: E402

import arcee_np  # noqa: E402
from arcee_np.backend import to_numpy  # noqa: E402
from arcee_np.generation import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor,  # noqa: E402
                                 RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                                 TopPLogitsWarper)
from arcee_np.pipeline import pipeline  # noqa: E402
from arcee_np.io.tokenizer import ArceeTokenizer  # noqa: E402

from transformers.generation import logits_process as hf_lp  # noqa: E402

pytestmark = pytest.mark.live
torch.set_num_threads(1)  # the comparisons are under test, not torch's speed
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
TOL = 1e-4


def hf_config(**overrides):
    settings = dict(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
                    eos_token_id=2, attention_bias=True, num_labels=3)
    settings.update(overrides)
    return transformers.ArceeConfig(**settings)


def saved_pair(tmp_path, hf_cls, np_cls, config, seed=0, std=0.15):
    """A perturbed transformers model (eager, eval) and arcee_np's load of its save_pretrained folder."""
    with torch.no_grad():
        model = perturb_(hf_cls(config), torch.Generator().manual_seed(seed), std=std)
    model.save_pretrained(tmp_path)
    hf = hf_cls.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    return hf, np_cls.from_pretrained(tmp_path)


def close(ours, theirs, label):
    a = np.asarray(to_numpy(ours), dtype=np.float64)
    b = theirs.detach().double().numpy()
    assert a.shape == b.shape, (label, a.shape, b.shape)
    err = float(np.max(np.abs(a - b)))
    assert err <= TOL, f"{label}: max abs error {err:.3g}"


IDS = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [0, 0, 10, 11, 12, 13, 14], [15, 16, 17, 18, 19, 20, 21]])
MASK = (IDS != 0).long()


# ---------------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("num_labels, labels", [
    (3, torch.tensor([0, 2, -100])), (1, torch.tensor([0.3, -1.0, 2.5])),
    (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))])
def test_sequence_classification(tmp_path, num_labels, labels):
    hf, ours = saved_pair(tmp_path, transformers.ArceeForSequenceClassification,
                          arcee_np.ArceeForSequenceClassification, hf_config(num_labels=num_labels), seed=num_labels)
    with torch.no_grad():
        want = hf(input_ids=IDS, attention_mask=MASK, labels=labels)
    got = ours(IDS.numpy(), attention_mask=MASK.numpy(), labels=labels.numpy())
    close(got.logits, want.logits, "logits")
    close(got.loss, want.loss, "loss")
    assert ours.config.problem_type == hf.config.problem_type


def test_question_answering(tmp_path):
    hf, ours = saved_pair(tmp_path, transformers.ArceeForQuestionAnswering, arcee_np.ArceeForQuestionAnswering,
                          hf_config(), seed=4)
    starts, ends = torch.tensor([0, 3, 40]), torch.tensor([7, 5, 6])
    with torch.no_grad():
        want = hf(input_ids=IDS, attention_mask=MASK, start_positions=starts, end_positions=ends)
    got = ours(IDS.numpy(), attention_mask=MASK.numpy(), start_positions=starts.numpy(), end_positions=ends.numpy())
    for key in ("start_logits", "end_logits", "loss"):
        close(got[key], want[key], key)


@pytest.mark.parametrize("bias", [True, False])
def test_token_classification(tmp_path, bias):
    hf, ours = saved_pair(tmp_path, transformers.ArceeForTokenClassification, arcee_np.ArceeForTokenClassification,
                          hf_config(num_labels=4, token_classification_bias=bias), seed=5)
    labels = torch.where(MASK.bool(), IDS % 4, torch.full_like(IDS, -100))
    with torch.no_grad():
        want = hf(input_ids=IDS, attention_mask=MASK, labels=labels)
    got = ours(IDS.numpy(), attention_mask=MASK.numpy(), labels=labels.numpy())
    close(got.logits, want.logits, "logits")
    close(got.loss, want.loss, "loss")


def test_arcee_np_saved_heads_load_in_transformers(tmp_path):
    for np_cls, hf_cls in ((arcee_np.ArceeForSequenceClassification, transformers.ArceeForSequenceClassification),
                           (arcee_np.ArceeForQuestionAnswering, transformers.ArceeForQuestionAnswering),
                           (arcee_np.ArceeForTokenClassification, transformers.ArceeForTokenClassification)):
        folder = tmp_path / np_cls.__name__
        config = arcee_np.ArceeConfig(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=3)
        ours = np_cls.from_config(config, seed=1)
        ours.save_pretrained(folder)
        hf = hf_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            want = hf(input_ids=IDS[:, 2:])
        got = ours(IDS[:, 2:].numpy())
        for key in got.keys():
            if key != "past_key_values":
                close(got[key], want[key], f"{np_cls.__name__}.{key}")


# ---------------------------------------------------------------------------------------------- generation
PROMPTS = torch.tensor([[1, 5, 9, 13, 17, 21], [1, 30, 31, 32, 33, 34]])


@pytest.fixture(scope="module")
def lm_pair(tmp_path_factory):
    return saved_pair(tmp_path_factory.mktemp("lm"), transformers.ArceeForCausalLM, arcee_np.ArceeForCausalLM,
                      hf_config(eos_token_id=None, pad_token_id=None, attention_bias=False), seed=47, std=0.5)


@pytest.mark.parametrize("kwargs", [dict(), dict(repetition_penalty=1.4), dict(repetition_penalty=0.8),
                                    dict(eos_token_id=[3, 4, 5, 6, 7, 8]), dict(min_new_tokens=5, eos_token_id=9)])
def test_greedy_generate_token_for_token(lm_pair, kwargs):
    hf, ours = lm_pair
    with torch.no_grad():
        want = hf.generate(PROMPTS, max_new_tokens=10, do_sample=False, **kwargs)
    got = ours.generate(PROMPTS.numpy(), max_new_tokens=10, do_sample=False, **kwargs)
    np.testing.assert_array_equal(got, want.numpy())


def test_greedy_generate_left_padding(lm_pair):
    hf, ours = lm_pair
    ids = torch.tensor([[0, 0, 0, 1, 5, 9, 13], [1, 30, 31, 32, 33, 34, 35], [0, 1, 40, 41, 42, 43, 44]])
    mask = (ids != 0).long()
    for kwargs in (dict(), dict(repetition_penalty=1.3)):
        with torch.no_grad():
            want = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0, **kwargs)
        got = ours.generate(ids.numpy(), attention_mask=mask.numpy(), max_new_tokens=8, do_sample=False,
                            pad_token_id=0, **kwargs)
        np.testing.assert_array_equal(got, want.numpy())


def test_sampling_chain_scores(lm_pair):
    """Sampling draws differ across RNGs: compare the processed scores of the first step instead."""
    hf, ours = lm_pair
    knobs = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.85, repetition_penalty=1.2)
    with torch.no_grad():
        want = hf.generate(PROMPTS, max_new_tokens=1, output_scores=True, return_dict_in_generate=True, **knobs)
    from arcee_np.generation import build_processors, resolve_settings

    settings = resolve_settings(PROMPTS.shape[1], 61, 128, max_new_tokens=1, **knobs)
    logits = ours(PROMPTS.numpy(), logits_to_keep=1).logits[:, -1, :].astype(np.float32)
    scores = build_processors(settings)(PROMPTS.numpy(), logits)
    expected = want.scores[0].numpy()
    np.testing.assert_array_equal(np.isneginf(scores), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(scores[finite], expected[finite], atol=TOL)


@pytest.mark.parametrize("seed", range(4))
def test_processors_match_transformers_classes(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = 4 * torch.randn(3, 97, generator=generator)
    ids = torch.randint(0, 97, (3, 12), generator=generator)
    pairs = [
        (hf_lp.RepetitionPenaltyLogitsProcessor(1.6), RepetitionPenaltyLogitsProcessor(1.6)),
        (hf_lp.RepetitionPenaltyLogitsProcessor(1.6, prompt_ignore_length=torch.tensor([2, 0, 5])),
         RepetitionPenaltyLogitsProcessor(1.6, np.array([2, 0, 5]))),
        (hf_lp.TemperatureLogitsWarper(0.55), TemperatureLogitsWarper(0.55)),
        (hf_lp.TopKLogitsWarper(7), TopKLogitsWarper(7)),
        (hf_lp.TopKLogitsWarper(500), TopKLogitsWarper(500)),
        (hf_lp.TopPLogitsWarper(0.6), TopPLogitsWarper(0.6)),
        (hf_lp.TopPLogitsWarper(0.999), TopPLogitsWarper(0.999)),
        (hf_lp.TopPLogitsWarper(0.0), TopPLogitsWarper(0.0)),
        (hf_lp.MinNewTokensLengthLogitsProcessor(10, 3, [4, 8]), MinNewTokensLengthLogitsProcessor(10, 3, [4, 8])),
        (hf_lp.MinNewTokensLengthLogitsProcessor(5, 3, 4), MinNewTokensLengthLogitsProcessor(5, 3, 4)),
        (hf_lp.LogitsProcessorList([hf_lp.RepetitionPenaltyLogitsProcessor(1.2), hf_lp.TemperatureLogitsWarper(1.7),
                                    hf_lp.TopKLogitsWarper(30), hf_lp.TopPLogitsWarper(0.7)]),
         LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(1.7),
                              TopKLogitsWarper(30), TopPLogitsWarper(0.7)])),
    ]
    for theirs, mine in pairs:
        want = theirs(ids, scores.clone()).numpy()
        got = mine(ids.numpy(), scores.numpy().copy())
        label = type(theirs).__name__
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=label)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-6, err_msg=label)


# ---------------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def tokenizer_folders(tmp_path_factory):
    return [write_tokenizer(tmp_path_factory.mktemp("tok")), arcee_np.default_model_path()]


def test_tokenizer_matches_auto_tokenizer(tokenizer_folders):
    for folder in tokenizer_folders:
        ours, theirs = ArceeTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
        assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, len(ours)) == (
            theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id, len(theirs))
        for text in TEXT + ["", " leading space", "<|pad|> specials <|end_of_text|> inline"]:
            for special in (True, False):
                ids = theirs.encode(text, add_special_tokens=special)
                assert ours.encode(text, add_special_tokens=special) == ids, (folder, text, special)
                for skip in (True, False):
                    assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        for side in ("left", "right"):
            a = ours(TEXT, padding=True, padding_side=side, return_tensors="np")
            b = theirs(TEXT, padding=True, padding_side=side, return_tensors="np")
            np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
            np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])


def test_chat_template_matches_transformers(tokenizer_folders):
    folder = tokenizer_folders[0]
    ours, theirs = ArceeTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    chat = [{"role": "system", "content": "Speak in verse. "}, {"role": "user", "content": "Who art thou?"},
            {"role": "assistant", "content": "A humble servant"}]
    for kwargs in (dict(add_generation_prompt=True), dict(add_generation_prompt=False),
                   dict(continue_final_message=True)):
        messages = chat if kwargs.get("continue_final_message") else chat[:2]
        assert ours.apply_chat_template(messages, tokenize=False, **kwargs) == \
            theirs.apply_chat_template(messages, tokenize=False, **kwargs)
        assert ours.apply_chat_template(messages, return_dict=False, **kwargs) == \
            list(theirs.apply_chat_template(messages, return_dict=False, **kwargs))


# ---------------------------------------------------------------------------------------------- shipped model
@pytest.fixture(scope="module")
def shipped():
    path = arcee_np.default_model_path()
    hf = transformers.ArceeForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    return path, hf, arcee_np.ArceeForCausalLM.from_pretrained(path)


def test_shipped_checkpoint_logits_match_transformers(shipped):
    path, hf, ours = shipped
    tok = ArceeTokenizer.from_pretrained(path)
    ids = tok(["ROMEO:\nBut soft, what light through yonder window breaks?", "JULIET:\nO Romeo"], padding=True,
              padding_side="left", return_tensors="np")
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids["input_ids"]), attention_mask=torch.from_numpy(ids["attention_mask"]))
    got = ours(ids["input_ids"], attention_mask=ids["attention_mask"]).logits
    valid = ids["attention_mask"].astype(bool)
    err = float(np.max(np.abs(got[valid] - want.logits.numpy()[valid])))
    assert err <= TOL, f"shipped model logits: max abs error {err:.3g}"


def test_shipped_model_greedy_generate_and_pipeline(shipped):
    path, hf, ours = shipped
    theirs = transformers.pipeline("text-generation", model=hf,
                                   tokenizer=transformers.AutoTokenizer.from_pretrained(path))
    mine = pipeline("text-generation", model=ours, tokenizer=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prompt in ("ROMEO:", "First Citizen:\nBefore we proceed"):
            kwargs = dict(max_new_tokens=24, do_sample=False, repetition_penalty=1.1)
            assert mine(prompt, **kwargs) == theirs(prompt, **kwargs)
            assert mine(prompt, return_full_text=False, **kwargs) == theirs(prompt, return_full_text=False, **kwargs)
