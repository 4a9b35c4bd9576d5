"""Interventions through the one hook point: every name of docs/trace.md, exactness, contexts (threads, asyncio)
and the helpers (patch_from, ablate_heads, the logit lens)."""

import asyncio
import threading

import numpy as np
import pytest

from arcee_np import InputError, trace
from arcee_np.intervene import ablate_heads, intervene, patch_from
from arcee_np.oracle.lens import logit_lens
from arcee_np.trace import LAYER_LEVEL, _active, split_name, trace_names, tracing
from conftest import random_model, small_attention_tiles, small_config

IDS_A = np.array([[3, 14, 15, 9, 26, 5], [5, 35, 8, 96, 7, 11]])
IDS_B = np.array([[7, 1, 42, 9, 60, 2], [13, 3, 8, 50, 70, 9]])
NAMES = trace_names(2)
EAGER_ONLY = ("attn.scores", "attn.probs", "mlp.up", "mlp.act")  # what a tiled forward does not compute


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def test_identity_intervention_changes_nothing_bit_for_bit(model):
    eager = random_model(attn_implementation="eager")
    plain = eager(IDS_A).logits
    with intervene({"*": lambda value, name: value.copy()}) as edit:
        out = eager(IDS_A).logits
    assert edit.applied == NAMES  # every name went through it, in order
    same(out, plain)
    with small_attention_tiles():  # the tiled path: every name it records
        plain = model(IDS_A).logits
        with intervene({lambda n: split_name(n)[1] not in EAGER_ONLY: lambda value, name: value.copy()}):
            out = model(IDS_A).logits
    same(out, plain)


def test_patching_every_tensor_of_run_a_with_run_b_gives_b_exactly(model):
    with trace() as b:
        logits_b = model(IDS_B).logits
    for patterns in ("*", lambda n: n != "logits", LAYER_LEVEL, "layers.1.out"):
        with intervene(patch_from(b, patterns)):
            same(model(IDS_A).logits, logits_b)


def test_intervention_on_layer_k_leaves_every_tensor_before_it_unchanged(model):
    with trace() as plain:
        model(IDS_A)
    with intervene({"layers.1.attn.v": lambda v, n: v * 3}), trace() as edited:
        model(IDS_A)
    cut = NAMES.index("layers.1.attn.v")
    for name in NAMES[:cut]:
        same(edited[name], plain[name])
    same(edited["layers.1.attn.v"], plain["layers.1.attn.v"] * 3)  # the trace records the changed value
    assert not np.array_equal(edited["logits"], plain["logits"])


def test_logit_lens_of_the_last_layer_equals_the_logits(model):
    with trace(LAYER_LEVEL) as t:
        logits = model(IDS_A).logits
    lens = logit_lens(model, t)
    assert lens.names == ["embed", "layers.0.out", "layers.1.out"]
    assert lens.logits.shape == (3,) + logits.shape
    same(lens.logits[-1], logits)
    np.testing.assert_allclose(lens.probabilities().sum(-1), 1.0, rtol=1e-12)
    same(lens.top_tokens()[-1], logits.argmax(-1))
    with pytest.raises(InputError, match="trace lacks"):
        logit_lens(model, {"embed": t["embed"]})


def _forward_in_thread(model, results, key, barrier, edits=None, repeats=20):
    barrier.wait()
    for _ in range(repeats):
        if edits is None:
            results.setdefault(key, []).append(model(IDS_A).logits)
        else:
            with intervene(edits), trace("embed") as t:
                results.setdefault(key, []).append(model(IDS_B).logits)
            results.setdefault("embed_shapes", []).append(t["embed"].shape)


def test_an_intervention_never_reaches_another_threads_forward(model):
    reference = model(IDS_A).logits
    results, barrier = {}, threading.Barrier(2)
    threads = [threading.Thread(target=_forward_in_thread, args=(model, results, "plain", barrier)),
               threading.Thread(target=_forward_in_thread,
                                args=(model, results, "edited", barrier, {"embed": lambda v, n: v * 0}))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results["plain"]) == 20
    for logits in results["plain"]:
        same(logits, reference)
    assert all(not np.array_equal(e, reference) for e in results["edited"])
    assert set(results["embed_shapes"]) == {IDS_B.shape + (model.config.hidden_size,)}  # only its own forward


def test_traces_and_interventions_belong_to_their_asyncio_task(model):
    async def traced():
        with trace("embed") as t, intervene({"logits": lambda v, n: v + 1}):
            await asyncio.sleep(0.01)
            out = model(IDS_B).logits
        return t, out

    async def plain():
        await asyncio.sleep(0.005)
        assert not _active.get()
        return model(IDS_A).logits

    async def both():
        return await asyncio.gather(traced(), plain())

    (t, edited), untouched = asyncio.run(both())
    same(untouched, model(IDS_A).logits)
    same(edited, model(IDS_B).logits + 1)
    assert t["embed"].shape[:2] == IDS_B.shape
    assert not tracing() and _active.get() == ()


def test_ablate_heads_zero_and_mean(model):
    config = model.config
    hd = config.head_dim
    with intervene(ablate_heads(0, [1, 3])), trace("layers.0.attn.*") as t:
        model(IDS_A)
    context = t["layers.0.attn.context"]
    assert not context[..., hd:2 * hd].any() and not context[..., 3 * hd:].any()
    assert context[..., :hd].any()
    with trace("layers.0.attn.context") as plain:
        model(IDS_A)
    same(context[..., :hd], plain["layers.0.attn.context"][..., :hd])
    with intervene(ablate_heads(0, 2, mode="mean")), trace("layers.0.attn.context") as m:
        model(IDS_A)
    expected = plain["layers.0.attn.context"][..., 2 * hd:3 * hd].mean(axis=(0, 1))
    np.testing.assert_allclose(m["layers.0.attn.context"][..., 2 * hd:3 * hd],
                               np.broadcast_to(expected, (2, 6, hd)), rtol=1e-6)
    with pytest.raises(InputError, match="mode"):
        ablate_heads(0, 1, mode="drop")
    with pytest.raises(InputError, match="heads"), intervene(ablate_heads(0, 9)):
        model(IDS_A)


def test_bad_interventions_are_refused_with_the_name():
    from arcee_np import InputTypeError

    model = random_model()
    with pytest.raises(InputTypeError, match="dict"):
        intervene([("embed", 0)]).__enter__()
    with pytest.raises(InputTypeError, match="function"):
        intervene({"embed": "zero"}).__enter__()
    with pytest.raises(InputError, match=r"layers\.0\.attn\.q gives shape"), intervene({"layers.0.attn.q": np.ones(3)}):
        model(IDS_A)
    with pytest.raises(InputTypeError, match="returned NoneType"), intervene({"embed": lambda v, n: None}):
        model(IDS_A)
    with pytest.raises(InputError, match="no name"):
        patch_from({"embed": np.ones(2)}, "logits")
    assert _active.get() == ()


def _weights(shape, name):
    """A fixed factor per name in [0.5, 1.5]: neither a scale nor a shift (RMSNorm and softmax ignore those)."""
    return np.random.default_rng(len(name)).uniform(0.5, 1.5, shape)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("implementation", ["eager", "tiled"])
@pytest.mark.parametrize("name", NAMES)
def test_every_name_can_be_changed_with_cache_batches_every_dtype(name, implementation, dtype):
    """The forward goes on from the changed value: the trace holds it, every tensor before it is unchanged, the
    logits move; with the KV cache, the prefill's change reaches the next step through the cache (or the
    residual stream); both attention implementations (small tiles make the tiled one run its online softmax)."""
    model = random_model(small_config(num_hidden_layers=2), dtype=dtype, attn_implementation=implementation)
    stage = split_name(name)[1] if name.startswith("layers.1.") else ""
    recorded = [n for n in NAMES if implementation == "eager" or split_name(n)[1] not in EAGER_ONLY or n == name]

    def edit(value, _name):
        return value * np.asarray(_weights(value.shape, _name)).astype(value.dtype)

    with small_attention_tiles(), np.errstate(all="ignore"):
        with trace(recorded) as plain:
            out_plain = model(IDS_A, use_cache=True)
        step_plain = model(IDS_A[:, :1], past_key_values=out_plain.past_key_values).logits
        with intervene({name: edit}) as active, trace(recorded) as edited:
            out = model(IDS_A, use_cache=True)
        step = model(IDS_A[:, :1], past_key_values=out.past_key_values).logits
    assert active.applied == [name]
    cut = recorded.index(name)
    for before in recorded[:cut]:
        same(edited[before], plain[before])
    expected = plain[name] * _weights(plain[name].shape, name).astype(plain[name].dtype)
    same(edited[name], expected)
    same(out.logits, edited["logits"])
    assert not np.array_equal(np.asarray(out.logits, np.float64), np.asarray(out_plain.logits, np.float64))
    reaches_cache = NAMES.index(name) <= NAMES.index("layers.1.attn.k_rope") and stage not in ("attn.q", "attn.q_rope")
    if reaches_cache:  # the changed prefill is in the KV cache of layer 1, which the next step reads
        length = IDS_A.shape[1]
        cached = [np.asarray(c.past_key_values[1][i][:, :, :length], np.float64) for c in (out, out_plain)
                  for i in (0, 1)]
        assert not (np.array_equal(cached[0], cached[2]) and np.array_equal(cached[1], cached[3]))
        assert step.shape == step_plain.shape


def test_a_gradient_can_be_changed_and_the_backward_goes_on_with_it(model):
    from arcee_np.training import loss_and_gradients

    weight = "model.layers.0.self_attn.q_proj.weight"
    plain = loss_and_gradients(model, IDS_A, labels=IDS_A)[1][weight]
    with intervene({"grad.layers.1.out": lambda g, n: 0 * g}) as edit:
        _, grads = loss_and_gradients(model, IDS_A, labels=IDS_A)
    assert edit.applied == ["grad.layers.1.out"]
    assert not grads[weight].any() and plain.any()  # nothing flows back past a zeroed gradient
