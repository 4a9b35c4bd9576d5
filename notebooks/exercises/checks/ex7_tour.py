"""The checks of exercises 14-15: counting the parameters of a config, layer 0's queries from the weights."""

from __future__ import annotations

import dataclasses

import numpy as np
from arcee_np import ArceeConfig, ArceeForCausalLM
from arcee_np.blocks import rms_norm as ref_rms_norm
from arcee_np.io.checkpoint import parameter_count
from arcee_np.oracle.testing import reference_trace

from checking import Exercise, Failure, against_trace, array, call, check, first_match, fmt

from .shipped import describe_ids, model, reference

AFM = ArceeConfig(vocab_size=128004, hidden_size=2560, intermediate_size=18432, num_hidden_layers=36,
                  num_attention_heads=20, num_key_value_heads=4, head_dim=128, max_position_embeddings=65536,
                  tie_word_embeddings=False)


def _count_cases():
    """(config, what): every term of the count matters in one of them."""
    small = dict(vocab_size=96, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=32)
    yield model().config, "the shipped model (tied embedding, 8 query heads sharing 2 KV heads)"
    yield ArceeConfig(**small, tie_word_embeddings=False), "a small untied model whose H * hd (32) is not D (24)"
    yield ArceeConfig(**{**small, "num_key_value_heads": 4}, attention_bias=True, mlp_bias=True), \
        "a small model with attention and MLP biases (multi-head: KV = H)"
    yield ArceeConfig(**{**small, "num_key_value_heads": 1, "num_hidden_layers": 1}), "one layer, one KV head"


def _true_count(config) -> int:
    if config.vocab_size > 10_000:      # AFM-4.5B: counted from its shapes, without creating 4.6e9 numbers
        return parameter_count(config) + (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)
    return ArceeForCausalLM.from_config(config, seed=0).num_parameters()


def _count_mistakes(config) -> dict:
    D, inter, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    true = _true_count(config)
    head = 0 if config.tie_word_embeddings else V * D
    bias = L * (((H + 2 * KV) * hd + D) if config.attention_bias else 0) + L * ((inter + D) if config.mlp_bias else 0)
    return {
        "you counted k_proj and v_proj as [H*hd, D]: with grouped-query attention they are [KV*hd, D]":
            true + 2 * L * D * (H - KV) * hd,
        "you counted the LM head although the embedding is tied to it (config.tie_word_embeddings)":
            true + (V * D if config.tie_word_embeddings else 0),
        "you left out the LM head: with tie_word_embeddings False it is its own [V, D] matrix": true - head,
        "you left out the norms (two per layer and the final one, D numbers each)": true - (2 * L + 1) * D,
        "you left out the final norm (model.norm.weight)": true - D,
        "you counted a gate_proj: Arcee's MLP has only up_proj and down_proj": true + L * inter * D,
        "you took the attention width as hidden_size; it is num_heads * head_dim (q_proj is [H*hd, D])":
            true - L * 2 * D * (H * hd - D) - L * 2 * D * (KV * hd - KV * D // H),
        "you left out the biases (config.attention_bias / config.mlp_bias)": true - bias,
    }


@check("count_parameters")
def check_count_parameters(count_parameters):
    hint = ("V*D (embedding) + L * (D*H*hd + 2*D*KV*hd + H*hd*D [q, k, v, o] + 2*D*I [up, down] + 2*D [norms] + "
            "biases when set) + D (final norm) + V*D when tie_word_embeddings is False")
    cases = [*_count_cases(), (AFM, "AFM-4.5B (untied, 20 query heads sharing 4 KV heads of 128)")]
    for config, what in cases:
        checked = f"count_parameters(config) for {what}"
        got = call(count_parameters, "count_parameters", checked, config)
        want = _true_count(config)
        if not isinstance(got, (int, np.integer)) or int(got) != want:
            looks = "; or ".join(m for m, n in _count_mistakes(config).items() if n != want and got == n)
            raise Failure(checked, f"returned {got!r}; the model holds {want:,} numbers "
                          f"(ArceeForCausalLM.num_parameters(){' of a model built from it' if want < 1e8 else ''})",
                          looks, hint)
    return [f"checked: {len(cases)} configs, tied and untied, with and without biases, H*hd != D, and AFM-4.5B: "
            f"{_true_count(AFM):,} parameters"]


@check("first_layer_queries")
def check_first_layer_queries(first_layer_queries):
    ref, base = reference(), model()
    ids = ref.inputs["input_ids"]
    config = base.config
    B, T = ids.shape
    H, hd = config.num_attention_heads, config.head_dim
    state = {name: np.asarray(value) for name, value in base.state_dict().items()}
    checked = f"first_layer_queries(model.state_dict(), config, input_ids) on {describe_ids(ids)}"
    hint = ("h = E[ids] (model.embed_tokens.weight); x = rms_norm(h, model.layers.0.input_layernorm.weight, eps); "
            "q = x @ model.layers.0.self_attn.q_proj.weight.T ([B, T, H*hd]); reshape to [B, T, H, hd], then "
            "transpose to [B, H, T, hd]")
    q = array(call(first_layer_queries, "first_layer_queries", checked, state, config, ids), "first_layer_queries",
              checked, (B, H, T, hd), "[B, H, T, hd]", hint)

    def mistakes():
        h = state["model.embed_tokens.weight"][ids]
        x = ref["layers.0.input_norm"]
        Wq = state["model.layers.0.self_attn.q_proj.weight"]

        def heads(y):
            return y.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        post = np.asarray(ref_rms_norm(h, state["model.layers.0.post_attention_layernorm.weight"],
                                       config.rms_norm_eps))
        return first_match(q, {
            "you skipped the input norm: q_proj multiplies rms_norm(h), not the embedding itself": heads(h @ Wq.T),
            "you multiplied by q_proj.weight, not its transpose: weights are stored [out, in], y = x @ W.T":
                heads(x @ Wq),
            "you reshaped [B, T, H*hd] straight to [B, H, T, hd]; reshape to [B, T, H, hd], then transpose(0, 2, 1, "
            "3)": (x @ Wq.T).reshape(B, H, T, hd),
            "you used post_attention_layernorm's weight; the norm before attention is input_layernorm":
                heads(post @ Wq.T),
        }, ref["layers.0.attn.q"])

    err = against_trace({"embed": ref["embed"], "layers.0.input_norm": ref["layers.0.input_norm"],
                         "layers.0.attn.q": q}, ref, checked, mistakes, hint)
    return [f"checked: {checked} against layers.0.attn.q (max abs error {fmt(err)})"]


def _reference_queries(state_dict, config, input_ids):
    params = {name.removeprefix("model."): value for name, value in state_dict.items()}
    base = ArceeForCausalLM(dataclasses.replace(config), params, {})
    return reference_trace(base, input_ids, "layers.0.attn.q")["layers.0.attn.q"]


EXERCISES = {
    "count_parameters": Exercise("ex7_tour", ("count_parameters",), check_count_parameters),
    "first_layer_queries": Exercise("ex7_tour", ("first_layer_queries",), check_first_layer_queries),
}
REFERENCE = {
    "count_parameters": _true_count,
    "first_layer_queries": _reference_queries,
}
