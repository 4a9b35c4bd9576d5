"""Every block's backward against finite differences of its forward (float64), and the whole model's
gradients on random small configs (hypothesis), needing neither torch nor transformers.

A vector-Jacobian product ``vjp(v)`` of ``f`` at ``x`` is right when ``<vjp(v), u> = <v, J u>`` for random
``u`` and ``v``; ``J u`` is the central difference ``(f(x + e u) - f(x - e u)) / 2e`` (error ~e^2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcee_np import (ArceeConfig, ArceeForCausalLM, ArceeForQuestionAnswering, ArceeForSequenceClassification,
                      ArceeForTokenClassification)
from arcee_np.blocks import (ACTIVATION_BACKWARDS, ACTIVATIONS, apply_rope, apply_rope_backward, attention,
                             attention_backward, bce_with_logits, bce_with_logits_backward, causal_lm_loss,
                             causal_lm_loss_backward, causal_padding_mask, cross_entropy, cross_entropy_backward,
                             embed, embed_backward, keep_positions, keep_positions_backward, linear, linear_backward,
                             lm_head, lm_head_backward, mlp, mlp_backward, mse_loss, mse_loss_backward,
                             pool_positions, pool_positions_backward, question_answering_loss,
                             question_answering_loss_backward, rms_norm, rms_norm_backward, rope_cos_sin,
                             rope_frequencies, sequence_classification_loss, sequence_classification_loss_backward,
                             split_start_end, split_start_end_backward, token_classification_loss,
                             token_classification_loss_backward)
from arcee_np.training import loss_and_gradients

from conftest import random_model, small_config

EPS = 1e-6


def directional(f, x, u):
    """``J u`` of ``f`` at ``x`` by central differences."""
    return (f(x + EPS * u) - f(x - EPS * u)) / (2 * EPS)


def assert_vjp(f, x, vjp, rng, tol=1e-7, cotangent_mask=None):
    """``<vjp(v), u> == <v, J u>`` for a random direction u and a random cotangent v (zero where
    ``cotangent_mask`` is False)."""
    u = rng.normal(size=x.shape)
    y = f(x)
    v = rng.normal(size=np.shape(y))
    if cotangent_mask is not None:
        v = v * cotangent_mask
    expected = float(np.sum(v * directional(f, x, u)))
    got = float(np.sum(vjp(v) * u))
    assert abs(got - expected) <= tol * max(1.0, abs(expected)), (got, expected)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ------------------------------------------------------------------------------------------ blocks


def test_rms_norm_backward(rng):
    x, w = rng.normal(size=(2, 3, 8)) * 2 + 0.3, 1 + 0.3 * rng.normal(size=8)
    assert_vjp(lambda x: rms_norm(x, w, 1e-5), x, lambda v: rms_norm_backward(v, x, w, 1e-5)[0], rng)
    assert_vjp(lambda w: rms_norm(x, w, 1e-5), w, lambda v: rms_norm_backward(v, x, w, 1e-5)[1], rng)


def test_rms_norm_backward_float32_matches_float64(rng):
    x, w, g = rng.normal(size=(4, 16)), 1 + 0.3 * rng.normal(size=16), rng.normal(size=(4, 16))
    dx64, dw64 = rms_norm_backward(g, x, w, 1e-5)
    dx32, dw32 = rms_norm_backward(*(a.astype(np.float32) for a in (g, x, w)), 1e-5)
    assert dx32.dtype == dw32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx64, atol=1e-5)
    np.testing.assert_allclose(dw32, dw64, atol=1e-5)


def test_rope_backward_is_the_inverse_rotation(rng):
    config = small_config(head_dim=8, num_attention_heads=4, hidden_size=32)
    import array_api_compat.numpy as xp

    inv_freq, scaling = rope_frequencies(8, 10000.0, config.rope_scaling, xp, xp.float64)
    cos, sin = rope_cos_sin(np.array([[0, 3, 7, 40]]), inv_freq, scaling, np.float64)
    x = rng.normal(size=(1, 2, 4, 8))
    assert_vjp(lambda x: apply_rope(x, cos, sin), x, lambda v: apply_rope_backward(v, cos, sin), rng)
    # a rotation's transpose is its inverse (YaRN's attention factor scales both ways, so divide it out)
    back = apply_rope_backward(apply_rope(x, cos, sin), cos, sin) / scaling**2
    np.testing.assert_allclose(back, x, atol=1e-12)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("padding", [False, True])
def test_attention_backward(rng, kv_heads, padding):
    B, H, T, hd = 2, 4, 5, 3
    q = rng.normal(size=(B, H, T, hd))
    k, v = rng.normal(size=(B, kv_heads, T, hd)), rng.normal(size=(B, kv_heads, T, hd))
    key_mask = np.ones((B, T), dtype=np.int64)
    if padding:
        key_mask[1, :2] = 0  # left padding: row 1's first two query rows see no key (uniform softmax)
    mask = causal_padding_mask(key_mask, T, np.float64)
    # A query row that sees no key has scores of exactly finfo.min whatever q and k are, so its output does
    # not change with them; the backward (like autograd) still passes its gradient through the additive mask.
    # Those rows are implementation-defined and not compared: their cotangent is zero.
    valid = key_mask[:, :, None].astype(np.float64)  # [B, T, 1] over the output [B, T, H*hd]
    scaling = hd**-0.5

    def grads(g):
        out, probs = attention(q, k, v, mask, scaling)
        return attention_backward(g, q, k, v, probs, out, scaling)

    for index, arg in enumerate((q, k, v)):
        def f(x, index=index):
            args = [q, k, v]
            args[index] = x
            return attention(*args, mask, scaling)[0]
        assert_vjp(f, arg, lambda g, index=index: grads(g)[index], rng, cotangent_mask=valid)


def test_linear_backward(rng):
    x, w, b = rng.normal(size=(2, 3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    assert_vjp(lambda x: linear(x, w, b), x, lambda g: linear_backward(g, x, w, True)[0], rng)
    assert_vjp(lambda w: linear(x, w, b), w, lambda g: linear_backward(g, x, w, True)[1], rng)
    assert_vjp(lambda b: linear(x, w, b), b, lambda g: linear_backward(g, x, w, True)[2], rng)
    assert linear_backward(rng.normal(size=(2, 3, 4)), x, w)[2] is None


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embed_backward_sums_repeated_ids(rng, padding_idx):
    ids = np.array([[2, 5, 5, 0], [5, 9, 2, 0]])
    grad = rng.normal(size=(2, 4, 3)).astype(np.float32)
    got = embed_backward(grad, ids, 10, padding_idx)
    expected = np.zeros((10, 3))
    np.add.at(expected, ids.reshape(-1), grad.reshape(-1, 3).astype(np.float64))
    if padding_idx is not None:
        expected[padding_idx] = 0
    assert got.dtype == np.float32 and got.shape == (10, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    w = rng.normal(size=(10, 3))
    assert_vjp(lambda w: embed(ids, w), w, lambda g: embed_backward(g, ids, 10), rng)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_backward(rng, activation):
    x = rng.normal(size=(3, 7)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep relu's kink out of the finite difference
    assert_vjp(ACTIVATIONS[activation], x, lambda g: ACTIVATION_BACKWARDS[activation](g, x), rng, tol=1e-6)


@pytest.mark.parametrize("activation", ["relu2", "gelu"])
def test_mlp_backward(rng, activation):
    x, wu, wd, bu, bd = (rng.normal(size=s) for s in ((2, 3, 4), (6, 4), (4, 6), (6,), (4,)))

    def grads(g):
        up = linear(x, wu, bu)
        return mlp_backward(g, x, up, ACTIVATIONS[activation](up), wu, wd, True, activation)

    assert_vjp(lambda x: mlp(x, wu, wd, bu, bd, activation), x, lambda g: grads(g)[0], rng, tol=1e-6)
    for name, value in (("up_proj.weight", wu), ("down_proj.weight", wd), ("up_proj.bias", bu),
                        ("down_proj.bias", bd)):
        def f(p, name=name):
            args = dict(up_proj_weight=wu, down_proj_weight=wd, up_proj_bias=bu, down_proj_bias=bd)
            args[name.replace(".", "_")] = p
            return mlp(x, args["up_proj_weight"], args["down_proj_weight"], args["up_proj_bias"],
                       args["down_proj_bias"], activation)
        assert_vjp(f, value, lambda g, name=name: grads(g)[1][name], rng, tol=1e-6)


@pytest.mark.parametrize("keep", [0, 2, np.array([4, 0, 4])])
def test_heads_backward(rng, keep):
    hidden, weight = rng.normal(size=(2, 5, 3)), rng.normal(size=(7, 3))
    assert_vjp(lambda h: keep_positions(h, keep), hidden, lambda g: keep_positions_backward(g, 5, keep), rng)
    assert_vjp(lambda h: lm_head(h, weight, keep), hidden, lambda g: lm_head_backward(g, hidden, weight, keep)[0], rng)
    assert_vjp(lambda w: lm_head(hidden, w, keep), weight, lambda g: lm_head_backward(g, hidden, weight, keep)[1],
               rng)
    index = np.array([4, 1])
    assert_vjp(lambda h: pool_positions(h, index), hidden, lambda g: pool_positions_backward(g, index, 5), rng)
    both = rng.normal(size=(2, 5, 2))
    assert_vjp(lambda x: np.stack(split_start_end(x), -1), both,
               lambda g: split_start_end_backward(g[..., 0], g[..., 1]), rng)


# ------------------------------------------------------------------------------------------ losses


def check_loss(forward, backward, x, rng, dtype=np.float64):
    """backward's loss equals forward's, and its gradient is the loss's derivative along random directions."""
    loss, grad = backward(x)
    assert float(loss) == pytest.approx(float(forward(x)), rel=1e-12)
    assert grad.dtype == x.dtype == dtype
    for _ in range(3):
        u = rng.normal(size=x.shape)
        assert float(np.sum(grad * u)) == pytest.approx(float(directional(forward, x, u)), rel=1e-6, abs=1e-9)


def test_cross_entropy_backward(rng):
    logits, labels = rng.normal(size=(6, 5)) * 3, np.array([0, 4, -100, 2, 2, -100])
    check_loss(lambda x: cross_entropy(x, labels), lambda x: cross_entropy_backward(x, labels), logits, rng)
    ignored = np.full(6, -100)
    with np.errstate(invalid="ignore"):  # 0 / 0
        loss, grad = cross_entropy_backward(logits, ignored)
    assert math.isnan(float(loss)) and not grad.any()  # as PyTorch: NaN loss, zero gradient


def test_causal_lm_loss_backward(rng):
    logits, labels = rng.normal(size=(2, 4, 6)), np.array([[1, 2, -100, 3], [0, 5, 5, -100]])
    check_loss(lambda x: causal_lm_loss(x, labels), lambda x: causal_lm_loss_backward(x, labels), logits, rng)
    assert not causal_lm_loss_backward(logits, labels)[1][:, -1].any()  # the last position predicts nothing


def test_other_losses_backward(rng):
    x = rng.normal(size=(3, 4))
    y = rng.normal(size=(3, 4))
    check_loss(lambda p: mse_loss(p, y), lambda p: mse_loss_backward(p, y), x, rng)
    targets = (rng.random((3, 4)) > 0.5).astype(np.float64)
    check_loss(lambda p: bce_with_logits(p, targets), lambda p: bce_with_logits_backward(p, targets), x * 20, rng)
    for problem, labels, shape in (("regression", rng.normal(size=3), (3, 1)), ("regression", y, (3, 4)),
                                   ("single_label_classification", np.array([1, -100, 3]), (3, 4)),
                                   ("multi_label_classification", targets, (3, 4))):
        pooled = rng.normal(size=shape)
        check_loss(lambda p, labels=labels, problem=problem: sequence_classification_loss(p, labels, problem),
                   lambda p, labels=labels, problem=problem: sequence_classification_loss_backward(p, labels, problem),
                   pooled, rng)
    token_labels = np.array([[1, -100, 3], [0, 2, -100]])
    check_loss(lambda p: token_classification_loss(p, token_labels),
               lambda p: token_classification_loss_backward(p, token_labels), rng.normal(size=(2, 3, 4)), rng)


def test_question_answering_loss_backward(rng):
    start, end = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    starts, ends = np.array([1, 50, 4]), np.array([0, 2, 5])  # 50 and 5 (= T) are ignored
    loss, d_start, d_end = question_answering_loss_backward(start, end, starts, ends)
    assert float(loss) == pytest.approx(float(question_answering_loss(start, end, starts, ends)), rel=1e-12)
    for grad, which in ((d_start, 0), (d_end, 1)):
        u = rng.normal(size=(3, 5))

        def f(x, which=which):
            args = [start, end]
            args[which] = x
            return question_answering_loss(*args, starts, ends)
        assert float(np.sum(grad * u)) == pytest.approx(float(directional(f, (start, end)[which], u)), rel=1e-6)


# ------------------------------------------------------------------------------------------ whole model


def perturbed(model, rng):
    """The model's weights in float64 with norms and biases moved off 1 / 0."""
    for store in (model.params, model.head_params):
        for name, value in store.items():
            store[name] = np.asarray(value, dtype=np.float64) + (0.2 * rng.normal(size=value.shape)
                                                                 if value.ndim == 1 else 0.0)
    return model


@st.composite
def small_configs(draw):
    kv = draw(st.sampled_from([1, 2]))
    heads = kv * draw(st.sampled_from([1, 2]))
    rope = None if draw(st.booleans()) else {"rope_type": "yarn", "factor": draw(st.sampled_from([2.0, 4.0])),
                                               "original_max_position_embeddings": 8}
    return ArceeConfig(vocab_size=draw(st.integers(5, 20)), hidden_size=8, intermediate_size=draw(st.integers(3, 12)),
                       num_hidden_layers=draw(st.integers(1, 2)), num_attention_heads=heads, num_key_value_heads=kv,
                       head_dim=draw(st.sampled_from([2, 4])), hidden_act=draw(st.sampled_from(sorted(ACTIVATIONS))),
                       max_position_embeddings=32, attention_bias=draw(st.booleans()), mlp_bias=draw(st.booleans()),
                       tie_word_embeddings=draw(st.booleans()), rope_scaling=rope, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2, num_labels=3, initializer_range=0.5)


HEADS = [ArceeForCausalLM, ArceeForSequenceClassification, ArceeForQuestionAnswering, ArceeForTokenClassification]


def targets_for(cls, rng, ids, mask, config):
    """The loss's targets for head ``cls``: next-token labels, a class per row, spans, a class per token."""
    batch, length = ids.shape
    if cls is ArceeForCausalLM:  # labels scored by a padded row's logits are ignored too (see the test below)
        scored_by_a_token = np.concatenate([np.ones((batch, 1), dtype=mask.dtype), mask[:, :-1]], axis=1)
        return {"labels": np.where((mask == 1) & (scored_by_a_token == 1), ids, -100)}
    if cls is ArceeForSequenceClassification:
        return {"labels": rng.integers(0, config.num_labels, batch)}
    if cls is ArceeForQuestionAnswering:
        starts = rng.integers(0, length, batch)
        starts[-1] = length + 1  # past the end: ignored
        return {"start_positions": starts, "end_positions": rng.integers(0, length, batch)}
    return {"labels": np.where(mask == 1, rng.integers(0, config.num_labels, (batch, length)), -100)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=small_configs(), cls=st.sampled_from(HEADS), seed=st.integers(0, 2**31 - 1),
       padding=st.sampled_from(["none", "left", "right"]), checkpointing=st.booleans())
def test_whole_model_gradients_by_finite_differences(config, cls, seed, padding, checkpointing):
    """The derivative of the loss along a random direction of every weight at once equals <grads, direction>.

    A left-padded query row that sees no key is uniform whatever the weights (its scores are exactly
    finfo.min), while the backward, like autograd, still passes a gradient through it; the losses here leave
    such rows out (question answering's softmax runs over every position, so it is drawn without left padding).
    """
    if cls is ArceeForQuestionAnswering and padding == "left":
        padding = "right"
    rng = np.random.default_rng(seed)
    model = perturbed(cls.from_config(config, seed=seed % 1000, dtype="float64"), rng)
    batch, length = 2, 5
    ids = rng.integers(1, config.vocab_size, (batch, length))
    mask = np.ones_like(ids)
    if padding == "left":
        mask[1, :2], ids[1, :2] = 0, 0
    elif padding == "right":
        mask[1, -2:], ids[1, -2:] = 0, 0
    call = dict(input_ids=ids, attention_mask=mask, **targets_for(cls, rng, ids, mask, config))
    loss, grads = loss_and_gradients(model, **call, checkpointing=checkpointing)
    assert float(loss) == pytest.approx(float(model(**call).loss), rel=1e-12)
    assert set(grads) == set(model.state_dict())
    weights = {name: value.copy() for name, value in model.state_dict().items()}
    direction = {name: rng.normal(size=value.shape) for name, value in weights.items()}
    # the pad token's embedding row is nn.Embedding's padding_idx: transformers gives it no gradient from the
    # lookup, though padded positions can reach the loss; the direction leaves it out
    direction[cls.prefix + "embed_tokens.weight"][config.pad_token_id] = 0.0

    def loss_at(t):
        moved = {name: weights[name] + t * direction[name] for name in weights}
        shifted = cls(config, {k[len(cls.prefix):]: v for k, v in moved.items() if k.startswith(cls.prefix)},
                      {k: v for k, v in moved.items() if not k.startswith(cls.prefix)}, dtype="float64")
        return float(shifted(**call).loss)

    expected = (loss_at(EPS) - loss_at(-EPS)) / (2 * EPS)
    got = sum(float(np.sum(grads[name] * direction[name])) for name in weights)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_tied_embeddings_have_one_gradient_with_both_uses(rng):
    config = small_config(tie_word_embeddings=True)
    model = random_model(config)
    ids = rng.integers(0, config.vocab_size, (2, 6))
    _, grads = loss_and_gradients(model, ids, labels=ids)
    assert "lm_head.weight" not in grads and set(grads) == set(model.state_dict())
    untied = ArceeForCausalLM(small_config(tie_word_embeddings=False), model.params,
                              {"lm_head.weight": model.params["embed_tokens.weight"]})
    _, separate = loss_and_gradients(untied, ids, labels=ids)
    np.testing.assert_allclose(grads["model.embed_tokens.weight"],
                               separate["model.embed_tokens.weight"] + separate["lm_head.weight"], atol=1e-6)


def test_pad_row_of_the_embedding_gets_no_gradient_from_the_lookup(rng):
    model = random_model(small_config(tie_word_embeddings=False))  # pad_token_id 0
    ids = np.array([[0, 0, 5, 6, 7, 8]])
    _, grads = loss_and_gradients(model, ids, attention_mask=(ids != 0).astype(np.int64), labels=ids)
    assert not grads["model.embed_tokens.weight"][0].any()
    assert grads["model.embed_tokens.weight"][5].any()


def test_bad_calls_fail_before_any_work():
    model = random_model()
    ids = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match="need labels"):
        loss_and_gradients(model, ids)
    with pytest.raises(ValueError, match="labels must be"):
        loss_and_gradients(model, ids, labels=np.array([[1, 2]]))
    with pytest.raises(TypeError, match="needs a model with a loss"):
        from arcee_np import ArceeModel

        loss_and_gradients(ArceeModel.from_config(small_config()), ids, labels=ids)
    qa = random_model(cls=ArceeForQuestionAnswering)
    with pytest.raises(ValueError, match="start_positions and end_positions"):
        loss_and_gradients(qa, ids, start_positions=np.array([1]))
