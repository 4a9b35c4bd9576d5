"""Long context against transformers: an AFM-shaped small model with YaRN (factor 8 over 512 original
positions) at 4,096 tokens, where YaRN's interpolation is in full effect and every position is past the
original context; float32 and float64 (against transformers with its float32 casts lifted), tiled and eager,
padding and packed rows; and KV-cache decode after a long prefill against the full forward.

Skipped unless torch and transformers import. transformers runs eager attention (its reference path).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch_reference import lifted_float32_casts, perturb_  # noqa: E402

from arcee_np import ArceeForCausalLM, KVCache  # noqa: E402

pytestmark = pytest.mark.live
torch.set_num_threads(2)
transformers.logging.set_verbosity_error()

LENGTH = 4096
# AFM-4.5B's proportions at a small size: head_dim 128, 5 query heads per KV head, ReLU², untied, YaRN
AFM_SMALL = dict(vocab_size=512, hidden_size=320, intermediate_size=640, num_hidden_layers=2, num_attention_heads=5,
                 num_key_value_heads=1, head_dim=128, hidden_act="relu2", max_position_embeddings=4096,
                 rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.05,
                 rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                  "original_max_position_embeddings": 512})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same perturbed random model saved in float32 and in float64."""
    paths = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        torch.manual_seed(0)
        model = transformers.ArceeForCausalLM(transformers.ArceeConfig(**AFM_SMALL, attn_implementation="eager"))
        perturb_(model, torch.Generator().manual_seed(0), std=0.05)
        paths[name] = tmp_path_factory.mktemp(f"afm_small_{name}")
        model.to(dtype).save_pretrained(paths[name])
    return paths


def transformers_logits(path, dtype, ids, mask=None, position_ids=None):
    context = lifted_float32_casts() if dtype == "float64" else warnings.catch_warnings()
    with context, torch.no_grad():
        model = transformers.ArceeForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype),
                                                              attn_implementation="eager").eval()
        kwargs = {"attention_mask": None if mask is None else torch.from_numpy(mask),
                  "position_ids": None if position_ids is None else torch.from_numpy(position_ids)}
        return model(torch.from_numpy(ids), use_cache=False, **kwargs).logits.double().numpy()


TOLERANCE = {"float32": (1e-4, 1e-5), "float64": (1e-9, 1e-10)}


def assert_close(got, expected, dtype, valid=None):
    atol, rtol = TOLERANCE[dtype]
    got = np.asarray(got, dtype=np.float64)
    if valid is not None:
        got, expected = got[valid], expected[valid]
    error = np.abs(got - expected)
    assert (error <= atol + rtol * np.abs(expected)).all(), f"max abs error {error.max():.3g}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("attn_implementation", ["tiled", "eager"])
def test_4096_tokens_with_yarn(checkpoints, dtype, attn_implementation):
    """One row of 4,096 tokens and a left-padded second row, every logit compared."""
    if attn_implementation == "eager" and dtype == "float64":
        pytest.skip("eager float64 at 4,096 tokens holds 5 x 4096 x 4096 float64 scores per layer; tiled covers it")
    ids = np.random.default_rng(1).integers(3, AFM_SMALL["vocab_size"], (2, LENGTH))
    mask = np.ones((2, LENGTH), dtype=np.int64)
    mask[1, :700] = 0
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    expected = transformers_logits(checkpoints[dtype], dtype, ids, mask, positions)
    model = ArceeForCausalLM.from_pretrained(checkpoints[dtype], dtype=dtype, attn_implementation=attn_implementation)
    got = model(ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    assert_close(got, expected, dtype, mask.astype(bool))


def test_4096_tokens_packed_rows(checkpoints):
    """Three sequences packed in one 4,096-token row (position_ids restart): block-diagonal causal attention."""
    ids = np.random.default_rng(2).integers(3, AFM_SMALL["vocab_size"], (1, LENGTH))
    positions = np.concatenate([np.arange(1500), np.arange(2000), np.arange(596)])[None, :]
    expected = transformers_logits(checkpoints["float32"], "float32", ids, position_ids=positions)
    model = ArceeForCausalLM.from_pretrained(checkpoints["float32"])
    assert_close(model(ids, position_ids=positions, use_cache=False).logits, expected, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decode_after_a_long_prefill_equals_the_full_forward(checkpoints, dtype):
    """Prefill 4,064 tokens, decode 32 one at a time through the KV cache: every step's logits equal the
    full 4,096-token forward's at that position (float32 ulps of the largest logit; float64 1e-12)."""
    ids = np.random.default_rng(3).integers(3, AFM_SMALL["vocab_size"], (1, LENGTH))
    model = ArceeForCausalLM.from_pretrained(checkpoints[dtype], dtype=dtype)
    full = np.asarray(model(ids, use_cache=False).logits, dtype=np.float64)
    cache = KVCache(AFM_SMALL["num_hidden_layers"], max_length=LENGTH)
    prefill = LENGTH - 32
    steps = [np.asarray(model(ids[:, :prefill], past_key_values=cache, use_cache=True).logits[:, -1:])]
    for t in range(prefill, LENGTH):
        steps.append(np.asarray(model(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits))
    decoded = np.concatenate(steps, axis=1).astype(np.float64)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(decoded, full[:, prefill - 1:], rtol=0, atol=tolerance)
    assert decoded.shape[1] == LENGTH - prefill + 1
