"""The whole forward on array_api_strict arrays: a hidden NumPy-only call in the blocks would fail here,
as it would on CuPy."""

import numpy as np
import pytest

array_api_strict = pytest.importorskip("array_api_strict")

from arcee_np import ArceeForCausalLM, KVCache  # noqa: E402
from arcee_np.backend import to_numpy  # noqa: E402

from conftest import random_model, small_config  # noqa: E402


@pytest.mark.parametrize("act", ["relu2", "relu", "silu", "gelu", "gelu_pytorch_tanh"])
def test_forward_on_strict_equals_numpy(tmp_path, act):
    model = random_model(small_config(hidden_act=act))
    model.save_pretrained(tmp_path)
    strict = ArceeForCausalLM.from_pretrained(tmp_path, device="array_api_strict")
    ids = np.random.default_rng(0).integers(0, 97, (2, 9))
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    labels = ids.copy()
    labels[:, :2] = -100
    kwargs = dict(attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    ours, ref = strict(ids, **kwargs), model(ids, **kwargs)
    assert type(ours.logits).__module__.startswith("array_api_strict")
    assert np.abs(to_numpy(ours.logits) - ref.logits).max() < 1e-6
    assert abs(float(to_numpy(ours.loss)) - float(ref.loss)) < 1e-6
    for a, b in zip(ours.hidden_states + ours.attentions, ref.hidden_states + ref.attentions, strict=False):
        assert np.abs(to_numpy(a) - b).max() < 1e-6


def test_cache_and_packed_sequences_on_strict(tmp_path):
    model = random_model()
    model.save_pretrained(tmp_path)
    strict = ArceeForCausalLM.from_pretrained(tmp_path, device="array_api_strict", dtype="float64")
    ids = np.random.default_rng(1).integers(0, 97, (1, 8))
    cache = KVCache(2)
    strict(ids[:, :5], past_key_values=cache)
    step = strict(ids[:, 5:], past_key_values=cache).logits
    full = strict(ids, use_cache=False).logits
    assert np.abs(to_numpy(step) - to_numpy(full)[:, 5:]).max() < 1e-9
    packed = strict(ids, position_ids=np.array([[0, 1, 2, 0, 1, 2, 3, 4]]), use_cache=False).logits
    second = strict(ids[:, 3:], use_cache=False).logits
    assert np.abs(to_numpy(packed)[:, 3:] - to_numpy(second)).max() < 1e-9
