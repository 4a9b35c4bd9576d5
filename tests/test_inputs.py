"""Bad forward inputs are refused before any work, with an error naming the argument and the fix."""

import warnings

import numpy as np
import pytest

from arcee_np import KVCache


def test_both_or_neither_of_ids_and_embeds(model):
    with pytest.raises(ValueError, match="exactly one of input_ids .* got neither"):
        model()
    with pytest.raises(ValueError, match="got both"):
        model(np.array([[1, 2]]), inputs_embeds=np.zeros((1, 2, 32), np.float32))


@pytest.mark.parametrize("ids, error, fragment", [
    (np.array([[1, 97]]), ValueError, r"\[0, vocab_size=97\); found \[97\]"),
    (np.array([[-1, 2]]), ValueError, r"found \[-1\]"),
    (np.array([1, 2, 3]), ValueError, r"Add the batch axis: input_ids\[None, :\]"),
    (np.array([[1.0, 2.0]]), TypeError, "must hold integers"),
    (np.zeros((1, 0), np.int64), ValueError, "empty"),
])
def test_bad_input_ids(model, ids, error, fragment):
    with pytest.raises(error, match=fragment):
        model(ids)


def test_mask_shape_must_cover_the_cache(model):
    ids = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"attention_mask must be \[batch, past \+ seq\] = \[1, 3\]"):
        model(ids, attention_mask=np.ones((1, 4), np.int64))
    cache = KVCache(2)
    model(ids, past_key_values=cache)
    with pytest.raises(ValueError, match=r"= \[1, 4\]"):
        model(np.array([[4]]), attention_mask=np.ones((1, 1), np.int64), past_key_values=cache)
    with pytest.raises(ValueError, match="holds 1 for tokens and 0 for padding"):
        model(ids, attention_mask=np.full((1, 3), 2))


def test_position_ids_and_labels_shapes(model):
    ids = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"position_ids must be \[batch, seq\]"):
        model(ids, position_ids=np.array([[0, 1]]))
    with pytest.raises(ValueError, match="non-negative"):
        model(ids, position_ids=np.array([[-1, 0, 1]]))
    with pytest.raises(ValueError, match=r"labels must be \[batch, seq\]"):
        model(ids, labels=np.array([[1, 2]]))
    with pytest.raises(ValueError, match="leave logits_to_keep at 0"):
        model(ids, labels=ids, logits_to_keep=1)
    with pytest.raises(ValueError, match=r"inputs_embeds must be \[batch, seq, hidden_size=32\]"):
        model(inputs_embeds=np.zeros((1, 3, 8), np.float32))


def test_positions_past_the_maximum_warn(model):
    with pytest.warns(UserWarning, match="past max_position_embeddings=256"):
        model(np.array([[1, 2]]), position_ids=np.array([[300, 301]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(np.array([[1, 2]]))


def test_logits_to_keep_and_inputs_embeds(model):
    ids = np.array([[5, 6, 7, 8]])
    full = model(ids).logits
    # a matrix product over fewer rows may round differently in the last bit: compare to 1e-6
    assert model(ids, logits_to_keep=1).logits.shape == (1, 1, 97)
    assert np.abs(model(ids, logits_to_keep=1).logits - full[:, -1:]).max() < 1e-6
    assert np.abs(model(ids, logits_to_keep=np.array([0, 2])).logits - full[:, [0, 2]]).max() < 1e-6
    embeds = model.params["embed_tokens.weight"][ids]
    assert np.array_equal(model(inputs_embeds=embeds).logits, full)
