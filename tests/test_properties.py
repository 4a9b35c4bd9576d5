"""Properties the forward must have whatever the weights: cache == recompute, batching and padding invariance."""

import numpy as np
from hypothesis import given, settings, strategies as st

from arcee_np import KVCache
from arcee_np.blocks import apply_rope, default_inv_freq, rope_cos_sin
import array_api_compat.numpy as xp

from conftest import random_model, small_config

MODEL = random_model()
GQA_MQA_MODELS = {kv: random_model(small_config(num_key_value_heads=kv, attention_bias=False)) for kv in (1, 4)}
SEQUENCES = st.integers(1, 96)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 12), st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_cache_decode_equals_full_forward(seed, prefill, steps):
    rng = np.random.default_rng(seed)
    total = prefill + sum(steps)
    ids = rng.integers(0, 97, (2, total))
    full = MODEL(ids, use_cache=False).logits
    cache = KVCache(2)
    start, pieces = 0, []
    for n in [prefill, *steps]:
        pieces.append(MODEL(ids[:, start:start + n], past_key_values=cache).logits)
        start += n
    assert cache.get_seq_length() == total
    assert np.abs(np.concatenate(pieces, axis=1) - full).max() < 1e-5


def test_cache_grows_by_doubling_and_respects_max_length():
    ids = np.random.default_rng(0).integers(0, 97, (1, 20))
    cache = KVCache(2)
    MODEL(ids[:, :17], past_key_values=cache)
    first = cache._keys[0]
    assert first.shape[2] == 17
    MODEL(ids[:, 17:18], past_key_values=cache)
    assert cache._keys[0].shape[2] == 34  # doubled, not one more
    grown = cache._keys[0]
    MODEL(ids[:, 18:19], past_key_values=cache)
    assert cache._keys[0] is grown  # written in place
    fixed = KVCache(2, max_length=18)
    MODEL(ids[:, :18], past_key_values=fixed)
    try:
        MODEL(ids[:, 18:19], past_key_values=fixed)
    except ValueError as err:
        assert "larger max_length" in str(err)
    else:
        raise AssertionError("a full fixed-size cache must refuse another token")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 4), st.integers(1, 20))
def test_batch_equals_rows_run_alone(seed, batch, length):
    ids = np.random.default_rng(seed).integers(0, 97, (batch, length))
    together = MODEL(ids).logits
    for row in range(batch):
        assert np.abs(MODEL(ids[row:row + 1]).logits[0] - together[row]).max() < 1e-5


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 20), st.integers(1, 8), st.booleans())
def test_padding_does_not_change_valid_rows(seed, length, pad, left):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 97, (1, length))
    alone = MODEL(ids).logits[0]
    filler = np.zeros((1, pad), dtype=np.int64)
    padded = np.concatenate([filler, ids] if left else [ids, filler], axis=1)
    mask = np.concatenate([filler, np.ones_like(ids)] if left else [np.ones_like(ids), filler], axis=1)
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    out = MODEL(padded, attention_mask=mask, position_ids=positions).logits[0]
    valid = out[pad:] if left else out[:length]
    assert np.abs(valid - alone).max() < 1e-5


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31), SEQUENCES)
def test_gqa_and_mqa_match_explicitly_repeated_heads(seed, length):
    """Grouped attention equals MHA whose K/V heads are the repeated KV heads (transformers' repeat_kv)."""
    ids = np.random.default_rng(seed).integers(0, 97, (1, min(length, 24)))
    for kv, grouped in GQA_MQA_MODELS.items():
        config = small_config(num_key_value_heads=4, attention_bias=False)
        tensors = {k[len("model."):]: v for k, v in grouped.state_dict().items() if k.startswith("model.")}
        n_rep, hd = 4 // kv, config.head_dim
        for layer in range(config.num_hidden_layers):
            for proj in ("k_proj", "v_proj"):
                name = f"layers.{layer}.self_attn.{proj}.weight"
                heads = tensors[name].reshape(kv, hd, -1)
                tensors[name] = np.repeat(heads, n_rep, axis=0).reshape(4 * hd, -1)
        repeated = type(grouped)(config, tensors, grouped.head_params)
        assert np.abs(repeated(ids).logits - grouped(ids).logits).max() < 1e-5


@given(st.integers(0, 500), st.integers(0, 500), st.integers(0, 2**31))
@settings(max_examples=25, deadline=None)
def test_rope_scores_depend_only_on_relative_position(m, n, seed):
    """<rope(q, m), rope(k, n)> = <rope(q, m + s), rope(k, n + s)>: RoPE encodes relative position."""
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(2, 1, 1, 1, 16))
    inv = default_inv_freq(16, 10000.0, xp, xp.float64)

    def score(i, j):
        ci, si = rope_cos_sin(np.array([[i]]), inv, 1.0, xp.float64)
        cj, sj = rope_cos_sin(np.array([[j]]), inv, 1.0, xp.float64)
        return float((apply_rope(q, ci, si) * apply_rope(k, cj, sj)).sum())

    assert abs(score(m, n) - score(m + 37, n + 37)) < 1e-9
