"""q, k and v weights stacked as the rows of one array (blocks/stacked.py) and multiplied as one product
(blocks/linear.py ``linear_stacked``): recognised only for the views ``stack_rows`` made, the same numbers as
three products (to the rounding of the products' order; float64 to 1e-12 against the float64 formula), and a
loaded model that stacks them computes what the same weights compute unstacked, also after a weight is
replaced."""

from __future__ import annotations

import importlib

import ml_dtypes
import numpy as np
import pytest

from arcee_np import ArceeConfig, ArceeForCausalLM, KVCache
from arcee_np.blocks import linear, linear_stacked, row_stack_of, stack_rows
from arcee_np.io.checkpoint import read_checkpoint
from arcee_np.io.safetensors import release_mapped_pages
from arcee_np.io.weights import StoredWeight

pretrained = importlib.import_module("arcee_np.pretrained")

CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
PROJECTIONS = [f"layers.{layer}.self_attn.{part}_proj.weight" for layer in range(2) for part in "qkv"]


def three_weights(rng, dtype=np.float32):
    return [rng.normal(size=(rows, 24)).astype(dtype) for rows in (16, 8, 8)]


def test_stack_rows_gives_equal_views_of_one_array(rng):
    weights = three_weights(rng)
    views = stack_rows(weights)
    stack = row_stack_of(views)
    assert stack is not None and stack.shape == (32, 24)
    for view, weight in zip(views, weights, strict=True):
        assert view.base is stack and view.flags.c_contiguous
        np.testing.assert_array_equal(view, weight)
    np.testing.assert_array_equal(stack, np.concatenate(weights))


def test_only_the_views_in_their_order_are_a_stack(rng):
    q, k, v = stack_rows(three_weights(rng))
    stack = q.base
    assert row_stack_of([q, k, v]) is stack
    assert row_stack_of([k, q, v]) is None  # another order
    assert row_stack_of([q, k]) is None  # a part of it
    assert row_stack_of([q, stack[16:24], v]) is None  # another view of the same rows
    assert row_stack_of([q, k.copy(), v]) is None  # a replaced weight
    assert row_stack_of(three_weights(rng)) is None  # separate arrays
    assert row_stack_of([StoredWeight(w.astype(ml_dtypes.bfloat16), np.float32, np.float32, "bfloat16")
                         for w in three_weights(rng)]) is None


def test_a_stack_is_forgotten_with_its_arrays(rng):
    stacks = importlib.import_module("arcee_np.blocks.stacked")._STACKS
    before = len(stacks)
    views = stack_rows(three_weights(rng))
    assert len(stacks) == before + 1
    del views
    assert len(stacks) == before


@pytest.mark.parametrize("batch", [1, 2, 16, 300])
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-5), (np.float64, 1e-12),
                                              (ml_dtypes.bfloat16, 1e-2), (np.float16, 2e-3)])
def test_one_product_equals_three(rng, batch, dtype, tolerance):
    weights = three_weights(rng, dtype)
    x = rng.normal(size=(batch, 1, 24)).astype(dtype)  # a decode step of ``batch`` sequences
    stacked = linear_stacked(x, stack_rows(weights), [None] * 3)
    separate = [linear(x, w) for w in weights]
    for got, expected, weight in zip(stacked, separate, weights, strict=True):
        assert got.shape == (batch, 1, weight.shape[0]) and got.dtype == x.dtype
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=tolerance,
                                   atol=tolerance)
        exact = x.astype(np.float64) @ weight.astype(np.float64).T
        np.testing.assert_allclose(got.astype(np.float64), exact, rtol=tolerance, atol=tolerance * 10)


def test_one_product_in_a_decode_step_only(rng, monkeypatch):
    """One new position per sequence (a decode step, any batch): the stack is multiplied once; a prompt runs
    the three products, so its numbers are the plain formulas' bit for bit."""
    module = importlib.import_module("arcee_np.blocks.linear")
    products, real = [], module.linear
    monkeypatch.setattr(module, "linear", lambda x, w, b=None: products.append(w.shape) or real(x, w, b))
    weights = stack_rows(three_weights(rng))
    module.linear_stacked(rng.normal(size=(3, 1, 24)).astype(np.float32), weights, [None] * 3)
    assert products == [(32, 24)]
    products.clear()
    x = rng.normal(size=(1, 2, 24)).astype(np.float32)
    got = module.linear_stacked(x, weights, [None] * 3)
    assert products == [(16, 24), (8, 24), (8, 24)]
    for part, weight in zip(got, weights, strict=True):
        np.testing.assert_array_equal(part, real(x, weight))


def test_biases_run_one_by_one(rng):
    """A bias is added in the product's dtype before its rounding, per weight: no stacked product then."""
    weights = stack_rows(three_weights(rng))
    biases = [rng.normal(size=w.shape[0]).astype(np.float32) for w in weights]
    x = rng.normal(size=(2, 1, 24)).astype(np.float32)  # a decode step
    for got, weight, bias in zip(linear_stacked(x, weights, biases), weights, biases, strict=True):
        np.testing.assert_array_equal(got, linear(x, weight, bias))


def unstacked_copy(model):
    """The same weights as three separate arrays per layer (no stacked product)."""
    for name in PROJECTIONS:
        model.params[name] = model.params[name].copy()
    return model


def test_a_loaded_model_stacks_and_computes_the_same(rng, tmp_path):
    model = ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3)
    for layer in range(2):
        names = [f"layers.{layer}.self_attn.{part}_proj.weight" for part in "qkv"]
        assert row_stack_of([model.params[name] for name in names]) is not None
    plain = unstacked_copy(ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3))
    ids = rng.integers(0, 64, (2, 40))
    np.testing.assert_allclose(model(ids).logits, plain(ids).logits, rtol=2e-5, atol=2e-5)
    steps = []
    for m in (model, plain):  # decode steps (the stacked product) after a prompt, batch 2
        cache = KVCache(2)
        m(ids[:, :30], past_key_values=cache, use_cache=True)
        steps.append([m(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits for t in range(30, 40)])
    np.testing.assert_allclose(np.stack(steps[0]), np.stack(steps[1]), rtol=2e-5, atol=2e-5)
    prompt = ids[:1, :5]
    np.testing.assert_array_equal(model.generate(prompt, max_new_tokens=12, do_sample=False),
                                  plain.generate(prompt, max_new_tokens=12, do_sample=False))
    model.save_pretrained(tmp_path)  # the views save as the three weights transformers names
    reloaded = ArceeForCausalLM.from_pretrained(tmp_path)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[name], value)


def test_a_replaced_weight_is_used_not_the_stack(rng):
    """After ``params[k] = new`` (an ablation, an optimizer step) the forward reads the new k."""
    model = ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3)
    name = "layers.1.self_attn.k_proj.weight"
    model.params[name] = np.zeros_like(model.params[name])
    state = {k: v for k, v in model.state_dict().items()}
    rebuilt = unstacked_copy(ArceeForCausalLM.from_state_dict(ArceeConfig(**CONFIG), state))
    ids = rng.integers(0, 64, (1, 20))
    np.testing.assert_allclose(model(ids).logits, rebuilt(ids).logits, rtol=2e-5, atol=2e-5)
    in_place = ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3)
    in_place.params[name][...] = 0  # a change in place reaches the stack the view belongs to
    np.testing.assert_allclose(in_place(ids).logits, rebuilt(ids).logits, rtol=2e-5, atol=2e-5)


def test_what_is_not_stacked(rng, tmp_path, monkeypatch):
    biased = ArceeForCausalLM.from_config(ArceeConfig(**CONFIG, attention_bias=True), seed=3)
    assert row_stack_of([biased.params[name] for name in PROJECTIONS[:3]]) is None
    stored = ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3, dtype="bfloat16", widen="per_use")
    assert row_stack_of([stored.params[name] for name in PROJECTIONS[:3]]) is None
    ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3).save_pretrained(tmp_path)
    mapped = ArceeForCausalLM.from_pretrained(tmp_path)  # read in place from the file, copied: a small model
    assert row_stack_of([mapped.params[name] for name in PROJECTIONS[:3]]) is not None
    assert not mapped.params[PROJECTIONS[0]].flags.writeable  # read-only, as the file's other weights
    assert not mapped.params["layers.0.mlp.up_proj.weight"].flags.writeable
    monkeypatch.setattr(pretrained, "STACK_COPY_BYTES", 0)
    spared = ArceeForCausalLM.from_pretrained(tmp_path)
    assert row_stack_of([spared.params[name] for name in PROJECTIONS[:3]]) is None
    ids = rng.integers(0, 64, (1, 20))
    np.testing.assert_allclose(mapped(ids).logits, spared(ids).logits, rtol=2e-5, atol=2e-5)


def test_released_file_pages_read_back_the_same(tmp_path):
    """The copied weights' file pages leave the process (io/safetensors.py release_mapped_pages); a weight whose
    pages were released still reads its values from the file."""
    ArceeForCausalLM.from_config(ArceeConfig(**CONFIG), seed=3).save_pretrained(tmp_path)
    tensors = read_checkpoint(tmp_path)
    weight = tensors["model.layers.0.mlp.up_proj.weight"]
    expected = weight.copy()
    release_mapped_pages(weight)
    np.testing.assert_array_equal(weight, expected)
    release_mapped_pages(expected)  # not a mapped file's array: nothing to release
    np.testing.assert_array_equal(weight, expected)
