"""The backbone's backward pass: a forward that keeps what each block's backward needs, then the blocks'
vector-Jacobian products in reverse order.

``backbone_forward`` runs the same blocks as ``model.backbone`` (same casting points, same trace names) and
returns a ``BackboneRecord``: per layer the arrays its backward reads (or, with checkpointing, only the
layer's input, from which the backward recomputes them). ``backbone_backward`` takes the gradient of the
final hidden state and returns the gradient of every backbone weight, named as ``params``
(``layers.3.mlp.up_proj.weight`` ...). Nothing is global: the record is an ordinary value the caller holds.

While a trace is active the backward records the gradient of each named intermediate under ``grad.`` +
its forward name (``grad.layers.0.attn.q``, ``grad.final_norm`` ...; docs/trace.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..blocks import (ACTIVATIONS, apply_rope, apply_rope_backward, attention, attention_backward, embed,
                      embed_backward, linear, linear_backward, mlp_backward, rms_norm, rms_norm_backward)
from ..blocks.namespace import array_namespace
from ..model import mask_and_rope_tables
from ..trace import record, tap

_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


@dataclass
class LayerRecord:
    """What one decoder layer's backward reads, all from its forward.

    ``h``: the layer's input [B, T, D]; ``normed`` / ``post``: the two RMSNorm outputs [B, T, D]; ``q``, ``k``:
    after RoPE ([B, H, T, hd], [B, KV, T, hd]); ``v`` [B, KV, T, hd]; ``probs`` [B, H, T, T]; ``context``
    [B, T, H*hd]; ``mid``: the attention residual [B, T, D]; ``up``, ``act``: the MLP's [B, T, I].
    """

    h: object
    normed: object
    q: object
    k: object
    v: object
    probs: object
    context: object
    mid: object
    post: object
    up: object
    act: object


@dataclass
class BackboneRecord:
    """A forward's memory for its backward: the inputs, the shared tables, and per layer a LayerRecord (or,
    with checkpointing, the layer's input only), plus the last layer's output (the final norm's input)."""

    input_ids: object
    mask: object
    cos: object
    sin: object
    layers: list = field(default_factory=list)
    last: object = None
    checkpointing: bool = False


def layer_forward(h, params, layer, config, cos, sin, mask):
    """Decoder layer ``layer`` as model.decoder_layer computes it, keeping its intermediates.

    h: [B, T, D]; cos, sin: [B, T, hd]; mask: the step's StepMask (attention here is eager: its backward
    needs the probabilities). Returns (out [B, T, D], LayerRecord).
    """
    xp = array_namespace(h)
    p, name = f"layers.{layer}.", f"layers.{layer}"
    batch, length, _ = h.shape
    hd, eps = config.head_dim, config.rms_norm_eps
    normed = record(f"{name}.input_norm", rms_norm(h, params[p + "input_layernorm.weight"], eps))

    def heads(proj, count):  # [B, T, count*hd] -> [B, count, T, hd]
        y = linear(normed, params[f"{p}self_attn.{proj}.weight"], params.get(f"{p}self_attn.{proj}.bias"))
        return xp.permute_dims(xp.reshape(y, (batch, length, count, hd)), (0, 2, 1, 3))

    q = record(f"{name}.attn.q", heads("q_proj", config.num_attention_heads))
    k = record(f"{name}.attn.k", heads("k_proj", config.num_key_value_heads))
    v = record(f"{name}.attn.v", heads("v_proj", config.num_key_value_heads))
    q = record(f"{name}.attn.q_rope", apply_rope(q, cos, sin))
    k = record(f"{name}.attn.k_rope", apply_rope(k, cos, sin))
    context, probs = attention(q, k, v, mask.additive(), hd**-0.5, tap=tap(f"{name}.attn"))
    context = record(f"{name}.attn.context", context)  # [B, T, H*hd]
    attn_out = record(f"{name}.attn.out", linear(context, params[p + "self_attn.o_proj.weight"],
                                                 params.get(p + "self_attn.o_proj.bias")))
    mid = record(f"{name}.attn_residual", h + attn_out)
    post = record(f"{name}.post_norm", rms_norm(mid, params[p + "post_attention_layernorm.weight"], eps))
    up = record(f"{name}.mlp.up", linear(post, params[p + "mlp.up_proj.weight"], params.get(p + "mlp.up_proj.bias")))
    act = record(f"{name}.mlp.act", ACTIVATIONS[config.hidden_act](up))
    mlp_out = record(f"{name}.mlp.out", linear(act, params[p + "mlp.down_proj.weight"],
                                               params.get(p + "mlp.down_proj.bias")))
    out = record(f"{name}.out", mid + mlp_out)
    return out, LayerRecord(h, normed, q, k, v, probs, context, mid, post, up, act)


def layer_backward(grad, saved, params, layer, config, cos, sin, grads):
    """The vector-Jacobian product of layer ``layer`` from its LayerRecord.

    grad: [B, T, D], the gradient of the layer's output. Adds the gradients of the layer's weights to
    ``grads`` (named as ``params``). Returns the gradient of the layer's input [B, T, D].
    """
    xp = array_namespace(grad)
    p, name = f"layers.{layer}.", f"layers.{layer}"
    batch, length, _ = grad.shape
    eps = config.rms_norm_eps
    record(f"grad.{name}.out", grad)
    # h_out = mid + mlp(post_norm(mid))
    record(f"grad.{name}.mlp.out", grad)
    d_post, mlp_grads = mlp_backward(grad, saved.post, saved.up, saved.act, params[p + "mlp.up_proj.weight"],
                                     params[p + "mlp.down_proj.weight"], config.mlp_bias, config.hidden_act,
                                     tap=_grad_tap(f"{name}.mlp"))
    grads.update({p + "mlp." + k: v for k, v in mlp_grads.items()})
    record(f"grad.{name}.post_norm", d_post)
    d_mid, grads[p + "post_attention_layernorm.weight"] = rms_norm_backward(
        d_post, saved.mid, params[p + "post_attention_layernorm.weight"], eps)
    d_mid = record(f"grad.{name}.attn_residual", grad + d_mid)
    # mid = h + o_proj(attention(rope(q), rope(k), v))
    record(f"grad.{name}.attn.out", d_mid)
    d_context, grads[p + "self_attn.o_proj.weight"], d_bias = linear_backward(
        d_mid, saved.context, params[p + "self_attn.o_proj.weight"], config.attention_bias)
    if d_bias is not None:
        grads[p + "self_attn.o_proj.bias"] = d_bias
    record(f"grad.{name}.attn.context", d_context)
    dq, dk, dv = attention_backward(d_context, saved.q, saved.k, saved.v, saved.probs, saved.context,
                                    config.head_dim**-0.5, tap=_grad_tap(f"{name}.attn"))
    record(f"grad.{name}.attn.k_rope", dk)  # recorded in the reverse of the forward's order
    record(f"grad.{name}.attn.q_rope", dq)
    record(f"grad.{name}.attn.v", dv)
    dk = record(f"grad.{name}.attn.k", apply_rope_backward(dk, cos, sin))
    dq = record(f"grad.{name}.attn.q", apply_rope_backward(dq, cos, sin))
    d_normed = None
    for proj, d_heads in zip(_PROJECTIONS, (dq, dk, dv)):
        d_y = xp.reshape(xp.permute_dims(d_heads, (0, 2, 1, 3)), (batch, length, -1))  # [B, T, count*hd]
        dx, grads[f"{p}self_attn.{proj}.weight"], d_bias = linear_backward(
            d_y, saved.normed, params[f"{p}self_attn.{proj}.weight"], config.attention_bias)
        if d_bias is not None:
            grads[f"{p}self_attn.{proj}.bias"] = d_bias
        d_normed = dx if d_normed is None else d_normed + dx
    record(f"grad.{name}.input_norm", d_normed)
    d_h, grads[p + "input_layernorm.weight"] = rms_norm_backward(d_normed, saved.h,
                                                                  params[p + "input_layernorm.weight"], eps)
    return d_mid + d_h


def _grad_tap(prefix: str):
    """A block ``tap`` that records gradients as ``grad.{prefix}.{name}``; None when nothing traces."""
    return tap(f"grad.{prefix}")


def backbone_forward(params, config, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
                     packed=False, checkpointing=False):
    """The backbone as model.backbone computes it (no cache), remembering what the backward needs.

    input_ids: [B, T] integers, or inputs_embeds: [B, T, D]; attention_mask: [B, T], 4-D additive, or None;
    position_ids: [B, T] / [1, T] or None; packed: separate packed sequences (position_ids given, no mask and
    no cache, as transformers does; see model.step_mask); checkpointing: keep only each layer's
    input and recompute the layer during the backward (less memory, one more forward of the layers).
    Returns (last_hidden_state [B, T, D] after the final norm, BackboneRecord).
    """
    dtype = params["norm.weight"].dtype  # the activation dtype (model.backbone reads it there too)
    h = embed(input_ids, params["embed_tokens.weight"], dtype) if inputs_embeds is None else inputs_embeds
    h = record("embed", h)  # [B, T, D]
    mask, cos, sin = mask_and_rope_tables(h, config, attention_mask, position_ids, 0, packed)
    saved = BackboneRecord(input_ids, mask, cos, sin, checkpointing=checkpointing)
    for layer in range(config.num_hidden_layers):
        out, layer_record = layer_forward(h, params, layer, config, cos, sin, mask)
        saved.layers.append(h if checkpointing else layer_record)
        h = out
    saved.last = h
    return record("final_norm", rms_norm(h, params["norm.weight"], config.rms_norm_eps)), saved


def backbone_backward(grad, saved, params, config):
    """The gradient of every backbone weight from the gradient of the final hidden state.

    grad: [B, T, D] (of last_hidden_state); saved: backbone_forward's BackboneRecord (its layer records are
    released as the backward passes them). Returns (grads, d_embeds): grads named as ``params`` (a weight the
    call did not use, such as the embedding matrix with inputs_embeds, gets zeros; transformers leaves
    its ``.grad`` None), d_embeds [B, T, D] the gradient of the embeddings (of inputs_embeds when given).
    """
    xp = array_namespace(grad)
    record("grad.final_norm", grad)
    grads = {}
    grad, grads["norm.weight"] = rms_norm_backward(grad, saved.last, params["norm.weight"], config.rms_norm_eps)
    saved.last = None
    for layer in reversed(range(config.num_hidden_layers)):
        layer_record = saved.layers.pop()
        if saved.checkpointing:
            _, layer_record = layer_forward(layer_record, params, layer, config, saved.cos, saved.sin, saved.mask)
        grad = layer_backward(grad, layer_record, params, layer, config, saved.cos, saved.sin, grads)
        del layer_record
    record("grad.embed", grad)
    weight = params["embed_tokens.weight"]
    if saved.input_ids is not None:
        grads["embed_tokens.weight"] = embed_backward(grad, saved.input_ids, weight.shape[0], config.pad_token_id)
    else:
        grads["embed_tokens.weight"] = xp.zeros(weight.shape, dtype=grad.dtype)
    return {name: grads[name] for name in params}, grad
