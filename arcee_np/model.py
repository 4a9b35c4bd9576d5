"""The whole Arcee network as plain functions over ``(params, config, inputs)``.

``params`` is a flat dict of arrays named as in transformers' ArceeModel state dict
(``embed_tokens.weight``, ``layers.{i}.self_attn.q_proj.weight``, ``norm.weight`` ...). Inputs are
already validated arrays of the params' namespace (models.py checks them). Every named intermediate
passes through trace.record, the one hook point (names in docs/trace.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from .blocks.namespace import array_namespace

from .blocks import (apply_rope, attention, causal_padding_mask, embed, linear, mlp, packed_causal_mask,
                     packed_segments, rms_norm, rope_cos_sin, rope_frequencies)
from .trace import record, tap


@dataclass
class BackboneOutput:
    """What the backbone returns: ``last_hidden_state`` [B, T, D] (after the final norm), and when asked
    ``hidden_states`` (L + 1 arrays [B, T, D], the last after the final norm) and ``attentions``
    (L arrays [B, H, T, S])."""

    last_hidden_state: object
    hidden_states: tuple | None = None
    attentions: tuple | None = None


def attention_mask_for(embeds, attention_mask, position_ids, past_length, packed):
    """The additive mask [B, 1, T, S] for this step, or None when nothing needs masking.

    attention_mask: None, a 2-D [B, S] key mask (1 = token, 0 = padding, ``S = past_length + T``), or a
    4-D additive mask used as given. ``packed``: no mask and no cache, with position_ids given: sequences
    packed in a row are separated where position_ids do not step by 1 (transformers v5 does the same).
    """
    xp = array_namespace(embeds)
    batch, length = embeds.shape[:2]
    dtype = embeds.dtype
    if attention_mask is not None and attention_mask.ndim == 4:
        return xp.astype(attention_mask, dtype)
    if attention_mask is None and packed:
        segments = packed_segments(xp.broadcast_to(position_ids, (batch, length)))
        if bool(xp.any(segments[:, -1] != 0)):
            return packed_causal_mask(segments, dtype)
    if attention_mask is None:
        if length == 1:
            return None  # one query may see every cached key
        attention_mask = xp.ones((batch, past_length + length), dtype=xp.int64)
    return causal_padding_mask(attention_mask, length, dtype)


def mask_and_rope_tables(embeds, config, attention_mask, position_ids, past_length, packed):
    """What every layer of this step shares: the additive mask (attention_mask_for) and the RoPE tables.

    embeds: [B, T, D]; attention_mask, packed: as for attention_mask_for; position_ids: [B, T] / [1, T] or
    None (``past_length + arange(T)``). Returns (mask [B, 1, T, S] or None, cos [B, T, hd], sin [B, T, hd]).
    """
    xp = array_namespace(embeds)
    batch, length = embeds.shape[:2]
    if position_ids is None:
        position_ids = xp.arange(past_length, past_length + length, dtype=xp.int64)[None, :]  # [1, T]
    position_ids = xp.broadcast_to(position_ids, (batch, length))
    mask = attention_mask_for(embeds, attention_mask, position_ids, past_length, packed)
    table_dtype = xp.float64 if embeds.dtype == xp.float64 else xp.float32
    inv_freq, attention_scaling = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling,
                                                   xp, table_dtype)
    cos, sin = rope_cos_sin(position_ids, inv_freq, attention_scaling, embeds.dtype)  # [B, T, hd] each
    return mask, cos, sin


def self_attention(x, params, layer, config, cos, sin, mask, cache):
    """Grouped-query self-attention of layer ``layer``, with RoPE and the KV cache.

    x: [B, T, D] (normed); cos, sin: [B, T, hd]; mask: [B, 1, T, S] or None; cache: KVCache or None.
    Returns (out [B, T, D], probs [B, H, T, S]).
    """
    xp = array_namespace(x)
    p, name = f"layers.{layer}.self_attn.", f"layers.{layer}.attn"
    batch, length, _ = x.shape
    hd = config.head_dim

    def heads(proj, count):  # [B, T, count*hd] -> [B, count, T, hd]
        y = linear(x, params[p + proj + ".weight"], params.get(p + proj + ".bias"))
        return xp.permute_dims(xp.reshape(y, (batch, length, count, hd)), (0, 2, 1, 3))

    q = record(f"{name}.q", heads("q_proj", config.num_attention_heads))
    k = record(f"{name}.k", heads("k_proj", config.num_key_value_heads))
    v = record(f"{name}.v", heads("v_proj", config.num_key_value_heads))
    q = record(f"{name}.q_rope", apply_rope(q, cos, sin))
    k = record(f"{name}.k_rope", apply_rope(k, cos, sin))
    if cache is not None:
        k, v = cache.update(k, v, layer)  # [B, KV, S, hd]: the past and this step
    context, probs = attention(q, k, v, mask, hd**-0.5, tap=tap(name))
    context = record(f"{name}.context", context)  # [B, T, H*hd]
    out = linear(context, params[p + "o_proj.weight"], params.get(p + "o_proj.bias"))
    return record(f"{name}.out", out), probs


def decoder_layer(h, params, layer, config, cos, sin, mask, cache):
    """One pre-norm block: ``h += attn(norm(h)); h += mlp(norm(h))``.

    h: [B, T, D]. Returns (h [B, T, D], attention probs [B, H, T, S]).
    """
    p, name = f"layers.{layer}.", f"layers.{layer}"
    normed = record(f"{name}.input_norm", rms_norm(h, params[p + "input_layernorm.weight"], config.rms_norm_eps))
    attn_out, probs = self_attention(normed, params, layer, config, cos, sin, mask, cache)
    h = record(f"{name}.attn_residual", h + attn_out)
    normed = record(f"{name}.post_norm", rms_norm(h, params[p + "post_attention_layernorm.weight"],
                                                   config.rms_norm_eps))
    mlp_out = mlp(normed, params[p + "mlp.up_proj.weight"], params[p + "mlp.down_proj.weight"],
                  params.get(p + "mlp.up_proj.bias"), params.get(p + "mlp.down_proj.bias"),
                  config.hidden_act, tap=tap(f"{name}.mlp"))
    record(f"{name}.mlp.out", mlp_out)
    return record(f"{name}.out", h + mlp_out), probs


def backbone(params, config, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
             cache=None, output_hidden_states=False, output_attentions=False):
    """Embedding, the decoder layers and the final norm: transformers' ArceeModel.forward.

    input_ids: [B, T] integers, or inputs_embeds: [B, T, D]; attention_mask: [B, past + T], 4-D, or None;
    position_ids: [B, T] / [1, T] or None (``past + arange(T)``); cache: KVCache or None.
    Returns BackboneOutput.
    """
    h = embed(input_ids, params["embed_tokens.weight"]) if inputs_embeds is None else inputs_embeds
    h = record("embed", h)  # [B, T, D]
    past = cache.get_seq_length() if cache is not None else 0
    mask, cos, sin = mask_and_rope_tables(h, config, attention_mask, position_ids, past,
                                          packed=position_ids is not None and cache is None)
    hidden_states, attentions = [h], []
    for layer in range(config.num_hidden_layers):
        h, probs = decoder_layer(h, params, layer, config, cos, sin, mask, cache)
        if output_hidden_states:
            hidden_states.append(h)
        if output_attentions:
            attentions.append(probs)
    h = record("final_norm", rms_norm(h, params["norm.weight"], config.rms_norm_eps))
    if not output_hidden_states:
        return BackboneOutput(h, None, tuple(attentions) if output_attentions else None)
    hidden_states[-1] = h  # transformers reports the last layer's output after the final norm
    return BackboneOutput(h, tuple(hidden_states), tuple(attentions) if output_attentions else None)
