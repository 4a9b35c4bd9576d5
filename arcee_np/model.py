"""The whole Arcee network as plain functions over ``(params, config, inputs)``, in the order of the diagram:

    h = embed(input_ids)                                   [B, T, D]
    for each layer:  h = h + attention(rms_norm(h))        (self_attention)
                     h = h + mlp(rms_norm(h))              (decoder_mlp)
    return rms_norm(h)                                     the final norm

``params`` is a flat dict of arrays named as in transformers' ArceeModel state dict
(``embed_tokens.weight``, ``layers.{i}.self_attn.q_proj.weight``, ``norm.weight`` ...). Inputs are
already validated arrays of the params' namespace (models.py checks them). Every named intermediate
passes through trace.record, the one hook point (names in docs/trace.md), and the forward goes on with
the value ``record`` returns. This is the only forward: the backward (training/backward.py) reads the
activations it saves here (``saved``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from array_api_compat import is_numpy_namespace

from .blocks import (StepMask, apply_rope, eager_attention, embed, linear, linear_stacked, mlp, rms_norm, rope_tables,
                     step_mask, step_positions, tiled_attention)
from .blocks.namespace import array_namespace
from .blocks.tiled_attention import fits_one_tile
from .blocks.tiled_attention_numpy import tiled_attention_numpy
from .trace import record, tracing, wanted

# StepMask (the type of every ``mask`` argument here) and step_mask are the blocks' (blocks/mask.py).
__all__ = ["ATTENTION_CHOICES", "ATTENTION_IMPLEMENTATIONS", "BackboneOutput", "MLP_CHUNK_ELEMENTS",
           "SavedActivations", "StepMask", "backbone", "block_tap", "choose_attention", "decoder_layer",
           "decoder_mlp", "layer_notes", "self_attention", "step_mask"]

# Every attention implementation has one signature: (q, k, v, mask: StepMask, scaling, tap) -> (context
# [B, T, H*hd], probs [B, H, T, S] or None). choose_attention picks one per layer and step. "tiled_numpy" is
# the online softmax of "tiled" laid out for NumPy's in-place passes (blocks/tiled_attention_numpy.py).
ATTENTION_IMPLEMENTATIONS = {"tiled": tiled_attention, "eager": eager_attention,
                             "tiled_numpy": tiled_attention_numpy}
# What a model may be asked for: an implementation by name, or "auto" (the models' default: choose_attention).
ATTENTION_CHOICES = ("auto", *ATTENTION_IMPLEMENTATIONS)

# The MLP's intermediate activations [B, T, I] are computed this many elements at a time (64 MiB in
# float32) when nothing traces them: at long prompts they would otherwise be the largest arrays of all.
MLP_CHUNK_ELEMENTS = 1 << 24


@dataclass
class BackboneOutput:
    """What the backbone returns: ``last_hidden_state`` [B, T, D] (after the final norm), and when asked
    ``hidden_states`` (L + 1 arrays [B, T, D], the last after the final norm) and ``attentions``
    (L arrays [B, H, T, S])."""

    last_hidden_state: object
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class SavedActivations:
    """What a forward keeps for its backward (training/backward.py): its ``input_ids`` [B, T] (None with
    inputs_embeds), the step's ``mask`` and RoPE tables ``cos``/``sin``; per layer a dict of the layer's
    input ``"h"`` and the intermediates of LAYER_NAMES under their trace names, or with ``checkpointing``
    the layer's input alone (the backward runs the layer again); ``last``, the final norm's input [B, T, D]."""

    # The intermediates of a layer its backward reads (the rest are not kept: attn.scores alone would double
    # the memory of the probabilities).
    LAYER_NAMES = ("input_norm", "attn.q_rope", "attn.k_rope", "attn.v", "attn.probs", "attn.context",
                   "attn_residual", "post_norm", "mlp.up", "mlp.act")

    checkpointing: bool = False
    input_ids: object = None
    mask: object = None
    cos: object = None
    sin: object = None
    layers: list = field(default_factory=list)
    last: object = None

    def next_layer(self, h) -> dict:
        """The dict the next layer (input ``h`` [B, T, D]) saves into: kept, or with checkpointing only h is."""
        kept = {"h": h}
        self.layers.append(h if self.checkpointing else kept)
        return kept


def backbone(params, config, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
             cache=None, output_hidden_states=False, output_attentions=False, attn_implementation="tiled",
             packed=None, saved=None):
    """Embedding, the decoder layers and the final norm: transformers' ArceeModel.forward.

    input_ids: [B, T] integers, or inputs_embeds: [B, T, D]; attention_mask: [B, past + T], 4-D, or None;
    position_ids: [B, T] / [1, T] or None (``past + arange(T)``); cache: KVCache or None;
    attn_implementation: a key of ATTENTION_IMPLEMENTATIONS (choose_attention); packed: separate sequences
    packed in a row (blocks/mask.py step_mask; default: position_ids given and no cache, as transformers);
    saved: a SavedActivations the forward fills for the backward, or None. Returns BackboneOutput.
    """
    dtype = params["norm.weight"].dtype  # the activation dtype: norm weights are kept in the model's dtype
    h = embed(input_ids, params["embed_tokens.weight"], dtype) if inputs_embeds is None else inputs_embeds
    h = record("embed", h)  # [B, T, D]
    batch, length, _ = h.shape
    past = cache.get_seq_length() if cache is not None else 0
    positions = step_positions(position_ids, past, batch, length, array_namespace(h))  # [B, T]
    if packed is None:  # as transformers: position_ids without a cache may separate packed sequences
        packed = position_ids is not None and cache is None
    mask = step_mask(h, attention_mask, positions, past, packed)
    cos, sin = rope_tables(positions, config.head_dim, config.rope_theta, config.rope_scaling, h.dtype)
    if saved is not None:
        saved.input_ids, saved.mask, saved.cos, saved.sin = input_ids, mask, cos, sin
    hidden_states, attentions = [h], []
    for layer in range(config.num_hidden_layers):
        h, probs = decoder_layer(h, params, layer, config, cos, sin, mask, cache, attn_implementation,
                                 output_attentions, None if saved is None else saved.next_layer(h))
        if output_hidden_states:
            hidden_states.append(h)
        if output_attentions:
            attentions.append(probs)
    if saved is not None:
        saved.last = h
    h = record("final_norm", rms_norm(h, params["norm.weight"], config.rms_norm_eps))
    if output_hidden_states:
        hidden_states[-1] = h  # transformers reports the last layer's output after the final norm
    return BackboneOutput(h, tuple(hidden_states) if output_hidden_states else None,
                          tuple(attentions) if output_attentions else None)


def decoder_layer(h, params, layer, config, cos, sin, mask, cache=None, attn_implementation="tiled",
                  output_attentions=False, saved=None):
    """One pre-norm block: ``h += attn(norm(h)); h += mlp(norm(h))``.

    h: [B, T, D]; cos, sin: [B, T, hd] (blocks/rope.py rope_tables); mask: the step's StepMask; cache:
    KVCache or None; attn_implementation, output_attentions: as for self_attention; saved: a dict the
    layer keeps its intermediates in for the backward (SavedActivations), or None. Returns (h [B, T, D],
    attention probs [B, H, T, S] or None).
    """
    p, note = f"layers.{layer}.", layer_notes(layer, saved)
    normed = note("input_norm", rms_norm(h, params[p + "input_layernorm.weight"], config.rms_norm_eps))
    attn_out, probs = self_attention(normed, params, layer, config, cos, sin, mask, cache, attn_implementation,
                                     output_attentions, saved)
    h = note("attn_residual", h + attn_out)
    normed = note("post_norm", rms_norm(h, params[p + "post_attention_layernorm.weight"], config.rms_norm_eps))
    mlp_out = note("mlp.out", decoder_mlp(normed, params, layer, config, saved))
    return note("out", h + mlp_out), probs


def self_attention(x, params, layer, config, cos, sin, mask, cache=None, attn_implementation="tiled",
                   output_attentions=False, saved=None):
    """Grouped-query self-attention of layer ``layer``, with RoPE and the KV cache.

    x: [B, T, D] (normed); cos, sin: [B, T, hd]; mask: the step's StepMask; cache: KVCache or None;
    attn_implementation: the caller's choice (choose_attention has the last word); output_attentions:
    return the probabilities; saved: as for decoder_layer. Returns (out [B, T, D], probs [B, H, T, S] or None).
    """
    xp = array_namespace(x)
    p, note = f"layers.{layer}.self_attn.", layer_notes(layer, saved)
    batch, length, _ = x.shape
    hd = config.head_dim

    def heads(y, count):  # [B, T, count*hd] -> [B, count, T, hd]
        return xp.permute_dims(xp.reshape(y, (batch, length, count, hd)), (0, 2, 1, 3))

    projections = [p + name for name in ("q_proj", "k_proj", "v_proj")]  # one product when stacked at load
    q, k, v = linear_stacked(x, [params[name + ".weight"] for name in projections],
                             [params.get(name + ".bias") for name in projections])
    q = note("attn.q", heads(q, config.num_attention_heads))
    k = note("attn.k", heads(k, config.num_key_value_heads))
    v = note("attn.v", heads(v, config.num_key_value_heads))
    q = note("attn.q_rope", apply_rope(q, cos, sin))
    k = note("attn.k_rope", apply_rope(k, cos, sin))
    if cache is not None:
        k, v = cache.update(k, v, layer)  # [B, KV, S, hd]: the past and this step
    chosen = choose_attention(attn_implementation, layer, q, k, output_attentions or saved is not None)
    context, probs = ATTENTION_IMPLEMENTATIONS[chosen](q, k, v, mask, hd**-0.5, block_tap(note, "attn", saved))
    context = note("attn.context", context)  # [B, T, H*hd]
    out = linear(context, params[p + "o_proj.weight"], params.get(p + "o_proj.bias"))
    return note("attn.out", out), probs


def choose_attention(requested, layer, q, k, probabilities_needed=False) -> str:
    """Which of ATTENTION_IMPLEMENTATIONS computes layer ``layer``'s attention this step.

    Eager attention (the whole [B, H, T, S] probability array, blocks/attention.py) runs when

    * the caller asked for it (``requested == "eager"``);
    * the probabilities are needed: ``probabilities_needed`` (``output_attentions``, or a backward that
      reads them), or an active trace wants this layer's ``attn.scores`` / ``attn.probs`` (to record them
      or to change them: only eager attention forms them);
    * all of the step's scores fit one tile (a decode step, a short prompt): the online softmax would be a
      single tile, which eager attention computes with fewer steps.

    Otherwise tiled attention (the online softmax, blocks/tiled_attention.py): the same numbers, with
    memory that grows with the tile rather than with T x S; as ``requested``, or for ``"auto"`` (the
    models' default) its NumPy layout "tiled_numpy" on NumPy (fewer passes over each tile, in place) and
    the reference "tiled" on every other namespace. q: [B, H, T, hd]; k: [B, KV, S, hd].
    """
    name = f"layers.{layer}.attn"
    batch, heads, length, _ = q.shape
    if requested == "eager" or probabilities_needed or wanted(f"{name}.scores") or wanted(f"{name}.probs") or \
            fits_one_tile(batch, heads, length, k.shape[2]):
        return "eager"
    if requested == "auto":
        return "tiled_numpy" if is_numpy_namespace(array_namespace(q)) else "tiled"
    return requested


def decoder_mlp(x, params, layer, config, saved=None):
    """Layer ``layer``'s MLP over x [B, T, D], in chunks of positions when its [B, T, I] activations are
    big and neither a trace nor the backward (``saved``) wants them (every position is independent).
    Returns [B, T, D]."""
    p, note = f"layers.{layer}.mlp.", layer_notes(layer, saved)
    weights = (params[p + "up_proj.weight"], params[p + "down_proj.weight"], params.get(p + "up_proj.bias"),
               params.get(p + "down_proj.bias"))
    batch, length, _ = x.shape
    step = max(1, MLP_CHUNK_ELEMENTS // (batch * config.intermediate_size))
    if length <= step or saved is not None or wanted(f"layers.{layer}.mlp.up") or wanted(f"layers.{layer}.mlp.act"):
        return mlp(x, *weights, config.hidden_act, tap=block_tap(note, "mlp", saved))
    xp = array_namespace(x)
    return xp.concat([mlp(x[:, start:start + step, :], *weights, config.hidden_act)
                      for start in range(0, length, step)], axis=1)


def layer_notes(layer, saved=None):
    """``note(part, x)`` for layer ``layer``: ``record(f"layers.{layer}.{part}", x)``; when a backward's dict
    is given, what record returns is also kept in ``saved[part]`` for the parts the backward reads
    (SavedActivations.LAYER_NAMES). Returns what record returns."""
    prefix = f"layers.{layer}."
    if saved is None:
        return lambda part, x: record(prefix + part, x)

    def note(part, x):
        x = record(prefix + part, x)
        if part in SavedActivations.LAYER_NAMES:
            saved[part] = x
        return x

    return note


def block_tap(note, block, saved=None):
    """The ``tap(name, x)`` a block (attention, mlp) is given: ``note(f"{block}.{name}", x)``; None when
    nothing traces and nothing is saved (the block then skips its taps)."""
    if saved is None and not tracing():
        return None
    return lambda name, x: note(f"{block}.{name}", x)


def __getattr__(name: str):
    """``mask_and_rope_tables``, which moved to the blocks (step_mask, rope_tables), with a DeprecationWarning."""
    if name != "mask_and_rope_tables":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn("arcee_np.model.mask_and_rope_tables is deprecated: use arcee_np.blocks.rope.step_positions, "
                  "arcee_np.blocks.mask.step_mask and arcee_np.blocks.rope.rope_tables", DeprecationWarning,
                  stacklevel=2)

    def mask_and_rope_tables(embeds, config, attention_mask, position_ids, past_length, packed):
        positions = step_positions(position_ids, past_length, *embeds.shape[:2], array_namespace(embeds))
        return (step_mask(embeds, attention_mask, positions, past_length, packed),
                *rope_tables(positions, config.head_dim, config.rope_theta, config.rope_scaling, embeds.dtype))

    return mask_and_rope_tables
