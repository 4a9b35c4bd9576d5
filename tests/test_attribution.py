"""Error attribution by activation patching: planted bugs in seven different places are attributed to their block
and step (the planted site removes >= 99% of the final error, every earlier site <= 1%), a patchable port works
like a model, and quantized GGUF files (Q8_0 and Q4_K of one checkpoint) are attributed."""

import json
from pathlib import Path

import numpy as np
import pytest

from arcee_np import ArceeConfig, ArceeForCausalLM
from arcee_np.blocks import relu2, rope_cos_sin, rope_frequencies
from arcee_np.oracle.attribution import attribute, coarse_sites, unpatchable_report
from arcee_np.oracle.compare import compare_traces
from arcee_np.oracle.tracefile import trace_model
from conftest import random_model, small_config

GGUF = Path(__file__).resolve().parent / "golden_gguf"
IDS = np.array([[3, 14, 15, 9, 26, 5, 35, 8], [5, 35, 8, 96, 7, 11, 2, 40]])
LAYER = 2
CONFIG = small_config(num_hidden_layers=4, tie_word_embeddings=False, attention_bias=False, mlp_bias=False)


@pytest.fixture(scope="module")
def reference():
    return random_model(CONFIG)


def with_weight(model, name, change):
    """A copy of ``model`` with one weight changed: ``change(array) -> array``."""
    state = model.state_dict()
    state[name] = change(state[name]).astype(np.float32)
    return ArceeForCausalLM.from_state_dict(model.config, state)


def interleaved_rope(x, cos, sin):
    """Pairs (2j, 2j+1): the GPT-J layout, wrong for transformers' checkpoints."""
    half = x.shape[-1] // 2
    c, s = cos[:, None, :, :half], sin[:, None, :, :half]
    even, odd = x[..., 0::2], x[..., 1::2]
    return np.stack([even * c - odd * s, odd * c + even * s], axis=-1).reshape(x.shape)


def remember(seen):
    """An edit that changes nothing and keeps the tensor under the last part of its name (a bug reads it later)."""
    def keep(value, name):
        seen[name.rsplit(".", 1)[1]] = value
        return value
    return keep


def rope_bug(config):
    """Layer LAYER's q and k rotated with the interleaved layout."""
    seen = {}
    keep = remember(seen)

    def rotate(value, name):
        x = seen["q" if name.endswith("q_rope") else "k"]
        inv_freq, scaling = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, np, np.float32)
        cos, sin = rope_cos_sin(np.arange(x.shape[2])[None, :], inv_freq, scaling, x.dtype)  # [1, T, hd]
        return interleaved_rope(x, cos, sin)

    p = f"layers.{LAYER}.attn."
    return {p + "q": keep, p + "k": keep, p + "q_rope": rotate, p + "k_rope": rotate}


def gqa_bug(config):
    """Query head n reads KV head n % KV (instead of n // n_rep) in layer LAYER's scores."""
    seen = {}
    keep = remember(seen)

    def scores(value, name):
        q, k = seen["q_rope"], seen["k_rope"]
        kv = k.shape[1]
        return np.stack([q[:, n] @ k[:, n % kv].swapaxes(-1, -2) for n in range(q.shape[1])], axis=1) * \
            np.float32(config.head_dim ** -0.5)

    p = f"layers.{LAYER}.attn."
    return {p + "q_rope": keep, p + "k_rope": keep, p + "scores": scores}


def relu_instead_of_relu2(config):
    """Layer LAYER's MLP applies relu, not relu²."""
    seen = {}
    return {f"layers.{LAYER}.mlp.up": remember(seen),
            f"layers.{LAYER}.mlp.act": lambda value, name: np.sqrt(relu2(seen["up"])).astype(value.dtype)}


def planted(reference, bug):
    """(candidate model, its edits) for each planted bug."""
    p = f"layers.{LAYER}."
    config = reference.config
    if bug == "rope":
        return reference, rope_bug(config)
    if bug == "gqa":
        return reference, gqa_bug(config)
    if bug == "mlp_activation":
        return reference, relu_instead_of_relu2(config)
    if bug == "residual":  # the residual connection around attention forgotten: attn_residual = attn.out
        seen = {}
        return reference, {f"{p}attn.out": remember(seen), f"{p}attn_residual": lambda value, name: seen["out"]}
    if bug == "rms_norm":
        return with_weight(reference, f"model.{p}post_attention_layernorm.weight", lambda w: w * 1.3), None
    if bug == "v_proj":
        return with_weight(reference, f"model.{p}self_attn.v_proj.weight", lambda w: w[::-1]), None
    if bug == "lm_head":
        return with_weight(reference, "lm_head.weight", lambda w: w + 0.05), None
    raise AssertionError(bug)


# bug -> (the block's output: the cause, the step inside it)
PLANTED = {
    "rope": (f"layers.{LAYER}.attn.out", f"layers.{LAYER}.attn.q_rope+attn.k_rope"),
    "gqa": (f"layers.{LAYER}.attn.out", f"layers.{LAYER}.attn.scores"),
    "v_proj": (f"layers.{LAYER}.attn.out", f"layers.{LAYER}.attn.v"),
    "rms_norm": (f"layers.{LAYER}.mlp.out", f"layers.{LAYER}.post_norm"),
    "mlp_activation": (f"layers.{LAYER}.mlp.out", f"layers.{LAYER}.mlp.act"),
    "residual": (f"layers.{LAYER}.attn_residual", f"layers.{LAYER}.attn_residual"),
    "lm_head": ("logits", "logits"),
}


@pytest.mark.parametrize("bug", list(PLANTED))
def test_a_planted_bug_is_attributed_to_its_block_and_step(reference, bug):
    candidate, edits = planted(reference, bug)
    result = attribute(candidate, reference, IDS, edits=edits)
    cause, step = PLANTED[bug]
    assert result.error > 0 and result.kl > 0
    assert [s.name for s in result.sites] == coarse_sites(4)
    planted_site = next(s for s in result.sites if s.name == cause)
    assert planted_site.share >= 0.99 and planted_site.kl_share >= 0.99
    for earlier in result.sites[:result.sites.index(planted_site)]:
        assert earlier.share <= 0.01 and earlier.kl_share <= 0.01, earlier
    assert result.cause is planted_site and result.single_cause
    assert result.step_cause.name == step
    assert f"cause: {cause}" in result.summary()
    if step != cause:
        assert f"inside it, {step} is the first tensor" in result.summary()
    if cause != "logits":
        assert "later site(s) also remove it" in result.summary() and result.downstream[-1] == "logits"
    data = json.loads(json.dumps(result.to_dict()))
    assert data["cause"] == cause and data["step_cause"] == step
    assert [s["name"] for s in data["sites"]] == coarse_sites(4)


def test_no_error_and_bad_arguments(reference):
    from arcee_np import InputError, InputTypeError

    clean = attribute(reference, reference, IDS)
    assert clean.error == 0 and clean.cause is None and "no error" in clean.summary()
    with pytest.raises(InputTypeError, match="reference"):
        attribute(reference, object(), IDS)
    with pytest.raises(InputError, match="threshold"):
        attribute(reference, reference, IDS, threshold=1.5)
    with pytest.raises(InputError, match="layers"):
        attribute(random_model(small_config()), reference, IDS)


def test_a_patchable_port_is_attributed_and_a_trace_only_port_gets_what_can_be_said(reference):
    """A port that takes replacements {name: array} is attributed like a model; its trace alone gives the first
    divergence, the growth per layer and how to make it patchable."""
    candidate, _ = planted(reference, "rms_norm")

    def port(input_ids, replacements):
        from arcee_np.intervene import intervene

        with intervene(replacements):
            return candidate(input_ids).logits

    result = attribute(port, reference, IDS)
    assert result.cause.name == PLANTED["rms_norm"][0] and result.step_cause.name == PLANTED["rms_norm"][1]
    text = unpatchable_report(compare_traces(trace_model(candidate, IDS), trace_model(reference, IDS)))
    assert f"first divergence at layers.{LAYER}.post_norm" in text
    assert "layers.3.out" in text and "make the port patchable" in text


def test_bfloat16_candidate_has_no_single_cause(reference):
    candidate = ArceeForCausalLM.from_state_dict(CONFIG, reference.state_dict(), dtype="bfloat16")
    result = attribute(candidate, reference, IDS)
    assert result.error > 0
    assert not result.single_cause and "no single block" in result.summary()
    increments = result.layer_increments()
    assert [name for name, _ in increments] == ["embed"] + [f"layers.{i}.out" for i in range(4)] + \
        ["final_norm", "logits"]
    assert sum(share for _, share in increments) == pytest.approx(result.sites[-1].share)  # the logits' own
    assert 0.5 < result.sites[-1].share < 1  # bfloat16 cannot hold the reference's logits exactly


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_K"])
def test_quantized_gguf_files_of_one_checkpoint_are_attributed(tmp_path, kind):
    """The kquants checkpoint as llama.cpp's Q4_K (tests/golden_gguf) and as arcee_np's own Q8_0."""
    from arcee_np.io.gguf_writer import convert_checkpoint

    folder = GGUF / "kquants" / "hf"
    path = GGUF / "kquants" / "kquants-Q4_K.gguf"
    if kind == "Q8_0":
        path = tmp_path / "kquants-Q8_0.gguf"
        convert_checkpoint(folder, path, "Q8_0")
    reference = ArceeForCausalLM.from_pretrained(folder)
    config = ArceeConfig.from_pretrained(folder)
    candidate = ArceeForCausalLM.from_gguf(path, config=config)  # the checkpoint's settings: only the weights differ
    ids = np.arange(3, 3 + 24)[None, :] % config.vocab_size
    result = attribute(candidate, reference, ids)
    print(kind, result, sep="\n")
    assert result.error > 0
    assert result.sites[-1].share == 1.0  # the reference's logits themselves
    assert not result.single_cause and "no single block explains it" in result.summary()
    assert sum(share for _, share in result.layer_increments()) == pytest.approx(1.0)
    limit = {"Q8_0": 0.05, "Q4_K": 0.5}[kind]  # what a 8- / 4.5-bit weight format leaves in these logits
    assert result.error < limit * float(np.sqrt(np.mean(np.asarray(reference(ids).logits, np.float64) ** 2)))
