"""Fuzzing call arguments: every argument of the forward, of generate, of the heads and of the tokenizer, given
values of every type and shape (arrays of any dtype, scalars, strings, lists, caches that do not fit).

A call either works (its output has the shapes the arguments ask for, finite logits, tokens in the
vocabulary) or raises one of arcee_np's errors naming the argument, before any work.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from arcee_np import ArceeError, ArceeForTokenClassification, KVCache
from arcee_np.io.tokenizer import ArceeTokenizer

from conftest import random_model, small_config
from fuzzing import JSON_SCALARS, assert_refused
from tiny_lm import write_tokenizer

MODEL = random_model(small_config())  # vocab 97, hidden 32, 2 layers, 2 KV heads of 8, max positions 256
IDS = np.array([[5, 6, 7]])
DTYPES = ["int64", "int32", "uint8", "float32", "float64", "bool", "float16"]


@st.composite
def arrays(draw):
    """Arrays of any of DTYPES, 0 to 4 dimensions of 0 to 4, values around the edges of every range."""
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    values = draw(st.lists(st.sampled_from([0, 1, 2, -1, -100, 3, 96, 97, 256, 1e9, float("nan")]),
                           min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(draw(st.sampled_from(DTYPES))).reshape(shape)


def fitting_arrays(shape):
    """Arrays of the shape an argument wants, with values of every kind."""
    return st.tuples(st.sampled_from(DTYPES), st.sampled_from([0, 1, 2, -1, 3, 97, -100])).map(
        lambda p: np.full(shape, p[1]).astype(p[0]))


ANY_VALUE = st.one_of(arrays(), fitting_arrays((1, 3)), fitting_arrays((1, 3, 32)), fitting_arrays((1, 1, 3, 3)),
                      JSON_SCALARS, st.lists(st.integers(-3, 100), max_size=4))
CACHES = st.one_of(st.builds(KVCache, st.integers(1, 4)), st.just("cache"), st.lists(st.integers(), max_size=3),
                   st.just(((np.zeros((1, 2, 3, 8)), np.zeros((1, 2, 3, 8))),) * 2),
                   st.just(((np.zeros((2, 2, 3, 8)), np.zeros((2, 2, 3, 8))),) * 2))
FORWARD_ARGUMENTS = ["input_ids", "attention_mask", "position_ids", "labels", "logits_to_keep", "inputs_embeds",
                     "use_cache", "output_attentions", "output_hidden_states"]


@given(st.sampled_from(FORWARD_ARGUMENTS), ANY_VALUE)
def test_forward_arguments_work_or_are_refused_by_name(name, value):
    kwargs = {"input_ids": IDS, name: value}
    if name == "inputs_embeds":
        kwargs["input_ids"] = None
    try:
        with np.errstate(all="ignore"):
            out = MODEL(**kwargs)
    except ArceeError as err:
        assert_refused(err, name)
        return
    assert np.isfinite(out.logits).all() and out.logits.shape[-1] == 97
    if name == "labels" and value is not None and (np.asarray(value) != -100).any():
        assert np.isfinite(out.loss)


@given(CACHES, st.integers(1, 3))
def test_caches_that_do_not_fit_are_refused(cache, batch):
    ids = np.tile(IDS, (batch, 1))
    try:
        out = MODEL(ids, past_key_values=cache)
    except ArceeError as err:
        assert_refused(err, "past_key_values")
        return
    past = 3 if isinstance(cache, tuple) else 0
    assert out.past_key_values.get_seq_length() == past + 3 and np.isfinite(out.logits).all()


KNOBS = ["max_new_tokens", "max_length", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
         "repetition_penalty", "eos_token_id", "pad_token_id", "seed", "attention_mask", "input_ids", "streamer"]


@given(st.sampled_from(KNOBS), st.one_of(JSON_SCALARS, arrays(), fitting_arrays((1, 3)),
                                         st.lists(st.integers(-2, 100), max_size=3)))
def test_generate_arguments_work_or_are_refused_by_name(name, value):
    kwargs = {"input_ids": IDS, "max_new_tokens": 4, name: value}
    if name == "max_length":
        del kwargs["max_new_tokens"]  # max_new_tokens wins over max_length
    try:
        out = MODEL.generate(**kwargs)
    except ArceeError as err:
        assert_refused(err, name)
        return
    prompt = np.asarray(kwargs["input_ids"])
    assert out.dtype == np.int64 and out.shape[0] == prompt.shape[0] and out.shape[1] > prompt.shape[1]
    assert (out >= 0).all() and (out < 97).all() and out.shape[1] <= 256


TOKEN_MODEL = ArceeForTokenClassification.from_config(small_config(num_labels=3))


@given(ANY_VALUE)
def test_head_labels_work_or_are_refused_by_name(labels):
    try:
        with np.errstate(invalid="ignore"):  # every label -100: the mean over no tokens is NaN, as in PyTorch
            out = TOKEN_MODEL(IDS, labels=labels)
    except ArceeError as err:
        assert_refused(err, "labels")
        return
    assert labels is None or np.isfinite(out.loss) or (np.asarray(labels) == -100).all()


TOKENIZER = None


def tokenizer(tmp_path_factory):
    global TOKENIZER
    if TOKENIZER is None:
        TOKENIZER = ArceeTokenizer.from_pretrained(write_tokenizer(tmp_path_factory.mktemp("tok")))
    return TOKENIZER


@given(st.one_of(ANY_VALUE, st.lists(st.integers(-5, 400), max_size=5), st.text(max_size=5)))
def test_decode_works_or_refuses_ids_outside_the_vocabulary(tmp_path_factory, ids):
    tok = tokenizer(tmp_path_factory)
    try:
        text = tok.decode(ids)
    except ArceeError as err:
        assert_refused(err, "token_ids")
        return
    flat = np.asarray(ids).reshape(-1)
    assert isinstance(text, str) and (flat.size == 0 or (flat.min() >= 0 and flat.max() < len(tok)))


@given(st.one_of(st.text(max_size=6), JSON_SCALARS, st.just("a\udc80b")))
def test_encode_works_or_refuses_what_is_not_text(tmp_path_factory, text):
    tok = tokenizer(tmp_path_factory)
    try:
        ids = tok.encode(text)
    except ArceeError as err:
        assert_refused(err, "text", "string")
        return
    assert all(0 <= i < len(tok) for i in ids)
