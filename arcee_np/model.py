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
                     packed_segments, rms_norm, rope_cos_sin, rope_frequencies, tiled_attention)
from .blocks.tiled_attention import SCORE_TILE_ELEMENTS, fits_one_tile
from .trace import record, tap, wanted


@dataclass
class BackboneOutput:
    """What the backbone returns: ``last_hidden_state`` [B, T, D] (after the final norm), and when asked
    ``hidden_states`` (L + 1 arrays [B, T, D], the last after the final norm) and ``attentions``
    (L arrays [B, H, T, S])."""

    last_hidden_state: object
    hidden_states: tuple | None = None
    attentions: tuple | None = None


ATTENTION_IMPLEMENTATIONS = ("tiled", "eager")


@dataclass
class StepMask:
    """The mask of one forward step, kept as its parts: the tiled path builds each tile from them, the eager
    path the whole additive ``[B, 1, T, S]`` array (``additive()``, built once, on first use).

    key_mask: the 2-D attention mask [B, S] (1 = token, 0 = padding, ``S = past_length + T``; all ones when
    the call gave none and T > 1, for eager's causal mask) or None; segments: [B, T] sequence numbers of
    packed rows or None; given: a caller's 4-D additive mask, used as given, or None; past_length: cached
    positions before this step; length: T; dtype: the activations'.
    """

    key_mask: object
    segments: object
    given: object
    past_length: int
    length: int
    dtype: object
    _additive: object = None

    def additive(self):
        """The additive mask [B, 1, T, S] of eager attention, or None when nothing needs masking."""
        if self._additive is None:
            self._additive = self._build_additive()
        return self._additive

    def _build_additive(self):
        if self.given is not None:
            return self.given
        if self.segments is not None:
            return packed_causal_mask(self.segments, self.dtype)
        if self.key_mask is None:
            return None  # one query and no padding: it may see every cached key
        return causal_padding_mask(self.key_mask, self.length, self.dtype)


def step_mask(embeds, attention_mask, position_ids, past_length, packed) -> StepMask:
    """What masks this step: the 2-D padding mask, packed sequences, or a 4-D mask as given.

    attention_mask: None, a 2-D [B, S] key mask, or a 4-D additive mask. ``packed``: no mask and no cache,
    with position_ids given: sequences packed in a row are separated where position_ids do not step by 1
    (transformers v5 does the same). With no mask at all, attention is causal over every cached key.
    """
    xp = array_namespace(embeds)
    batch, length = embeds.shape[:2]
    key_mask = segments = given = None
    if attention_mask is not None and attention_mask.ndim == 4:
        given = xp.astype(attention_mask, embeds.dtype)
    elif attention_mask is not None:
        key_mask = attention_mask
    elif packed:
        found = packed_segments(xp.broadcast_to(position_ids, (batch, length)))
        segments = found if bool(xp.any(found[:, -1] != 0)) else None
    if key_mask is None and given is None and segments is None and length > 1:
        key_mask = xp.ones((batch, past_length + length), dtype=xp.int64)  # causal only (the eager mask needs it)
    return StepMask(key_mask, segments, given, past_length, length, embeds.dtype)


def mask_and_rope_tables(embeds, config, attention_mask, position_ids, past_length, packed):
    """What every layer of this step shares: its StepMask (step_mask) and the RoPE tables.

    embeds: [B, T, D]; attention_mask, packed: as for step_mask; position_ids: [B, T] / [1, T] or None
    (``past_length + arange(T)``). Returns (StepMask, cos [B, T, hd], sin [B, T, hd]).
    """
    xp = array_namespace(embeds)
    batch, length = embeds.shape[:2]
    if position_ids is None:
        position_ids = xp.arange(past_length, past_length + length, dtype=xp.int64)[None, :]  # [1, T]
    position_ids = xp.broadcast_to(position_ids, (batch, length))
    mask = step_mask(embeds, attention_mask, position_ids, past_length, packed)
    table_dtype = xp.float64 if embeds.dtype == xp.float64 else xp.float32
    inv_freq, attention_scaling = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling,
                                                   xp, table_dtype)
    cos, sin = rope_cos_sin(position_ids, inv_freq, attention_scaling, embeds.dtype)  # [B, T, hd] each
    return mask, cos, sin


def self_attention(x, params, layer, config, cos, sin, mask, cache, attn_implementation="tiled",
                   output_attentions=False):
    """Grouped-query self-attention of layer ``layer``, with RoPE and the KV cache.

    x: [B, T, D] (normed); cos, sin: [B, T, hd]; mask: StepMask; cache: KVCache or None;
    attn_implementation: "tiled" (the online softmax, blocks/tiled_attention.py) or "eager" (the whole
    probability array, blocks/attention.py). Eager runs whenever the probabilities are wanted (with
    ``output_attentions`` or a trace that records this layer's ``attn.scores`` / ``attn.probs``) and when
    all of the step's scores fit one tile (a decode step, a short prompt), where it is the same computation
    in fewer steps. Returns (out [B, T, D], probs [B, H, T, S] or None).
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
    eager = attn_implementation == "eager" or output_attentions or wanted(f"{name}.scores") or \
        wanted(f"{name}.probs") or fits_one_tile(batch, config.num_attention_heads, length, k.shape[2])
    if eager:
        context, probs = attention(q, k, v, mask.additive(), hd**-0.5, tap=tap(name))
    else:
        context, probs = tiled_attention(q, k, v, hd**-0.5, mask.past_length, mask.key_mask, mask.segments,
                                         mask.given), None
    context = record(f"{name}.context", context)  # [B, T, H*hd]
    out = linear(context, params[p + "o_proj.weight"], params.get(p + "o_proj.bias"))
    return record(f"{name}.out", out), probs


# The MLP's intermediate activations [B, T, I] are computed this many elements at a time (64 MiB in
# float32) when nothing traces them: at long prompts they would otherwise be the largest arrays of all.
MLP_CHUNK_ELEMENTS = 1 << 24


def decoder_layer(h, params, layer, config, cos, sin, mask, cache, attn_implementation="tiled",
                  output_attentions=False):
    """One pre-norm block: ``h += attn(norm(h)); h += mlp(norm(h))``.

    h: [B, T, D]; mask: StepMask; the rest as self_attention. Returns (h [B, T, D], attention probs
    [B, H, T, S] or None).
    """
    p, name = f"layers.{layer}.", f"layers.{layer}"
    normed = record(f"{name}.input_norm", rms_norm(h, params[p + "input_layernorm.weight"], config.rms_norm_eps))
    attn_out, probs = self_attention(normed, params, layer, config, cos, sin, mask, cache, attn_implementation,
                                     output_attentions)
    h = record(f"{name}.attn_residual", h + attn_out)
    normed = record(f"{name}.post_norm", rms_norm(h, params[p + "post_attention_layernorm.weight"],
                                                   config.rms_norm_eps))
    mlp_out = record(f"{name}.mlp.out", decoder_mlp(normed, params, layer, config))
    return record(f"{name}.out", h + mlp_out), probs


def working_bytes(config, batch: int, tokens: int, itemsize: int, past: int = 0, all_logits: bool = False) -> int:
    """About how much memory one forward of ``batch`` x ``tokens`` needs besides the weights (tiled attention,
    the MLP in chunks): the activations alive at once, one tile of attention scores, the KV cache of
    ``past + tokens`` positions, and the logits (of the last position, or of all with ``all_logits``).
    itemsize: bytes per number of the activation dtype (4 for float32)."""
    hd, heads, kv_heads = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    rows = batch * tokens
    chunk = min(rows, max(batch, MLP_CHUNK_ELEMENTS // config.intermediate_size))
    activations = rows * (4 * config.hidden_size + 4 * heads * hd + 4 * kv_heads * hd) + 2 * chunk * \
        config.intermediate_size
    scores = 3 * min(SCORE_TILE_ELEMENTS, batch * heads * tokens * (past + tokens))
    cache = 2 * config.num_hidden_layers * batch * (past + tokens) * kv_heads * hd
    logits = batch * (tokens if all_logits else 1) * config.vocab_size
    return itemsize * (activations + cache + logits) + 4 * scores


def decoder_mlp(x, params, layer, config):
    """Layer ``layer``'s MLP over x [B, T, D], in chunks of positions when its [B, T, I] activations are
    big and no trace records them (every position is independent). Returns [B, T, D]."""
    p, name = f"layers.{layer}.mlp.", f"layers.{layer}.mlp"
    weights = (params[p + "up_proj.weight"], params[p + "down_proj.weight"], params.get(p + "up_proj.bias"),
               params.get(p + "down_proj.bias"))
    batch, length, _ = x.shape
    step = max(1, MLP_CHUNK_ELEMENTS // (batch * config.intermediate_size))
    if length <= step or wanted(f"{name}.up") or wanted(f"{name}.act"):
        return mlp(x, *weights, config.hidden_act, tap=tap(name))
    xp = array_namespace(x)
    return xp.concat([mlp(x[:, start:start + step, :], *weights, config.hidden_act)
                      for start in range(0, length, step)], axis=1)


def backbone(params, config, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
             cache=None, output_hidden_states=False, output_attentions=False, attn_implementation="tiled"):
    """Embedding, the decoder layers and the final norm: transformers' ArceeModel.forward.

    input_ids: [B, T] integers, or inputs_embeds: [B, T, D]; attention_mask: [B, past + T], 4-D, or None;
    position_ids: [B, T] / [1, T] or None (``past + arange(T)``); cache: KVCache or None;
    attn_implementation: "tiled" or "eager" (self_attention). Returns BackboneOutput.
    """
    dtype = params["norm.weight"].dtype  # the activation dtype: norm weights are kept in the model's dtype
    h = embed(input_ids, params["embed_tokens.weight"], dtype) if inputs_embeds is None else inputs_embeds
    h = record("embed", h)  # [B, T, D]
    past = cache.get_seq_length() if cache is not None else 0
    mask, cos, sin = mask_and_rope_tables(h, config, attention_mask, position_ids, past,
                                          packed=position_ids is not None and cache is None)
    hidden_states, attentions = [h], []
    for layer in range(config.num_hidden_layers):
        h, probs = decoder_layer(h, params, layer, config, cos, sin, mask, cache, attn_implementation,
                                 output_attentions)
        if output_hidden_states:
            hidden_states.append(h)
        if output_attentions:
            attentions.append(probs)
    h = record("final_norm", rms_norm(h, params["norm.weight"], config.rms_norm_eps))
    if not output_hidden_states:
        return BackboneOutput(h, None, tuple(attentions) if output_attentions else None)
    hidden_states[-1] = h  # transformers reports the last layer's output after the final norm
    return BackboneOutput(h, tuple(hidden_states), tuple(attentions) if output_attentions else None)
