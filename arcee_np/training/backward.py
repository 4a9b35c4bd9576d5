"""The backbone's backward pass: the blocks' vector-Jacobian products in reverse order, reading the
activations the one forward (``model.backbone``) saved.

``backbone_forward`` runs ``model.backbone`` with a ``SavedActivations`` to fill (attention is then eager:
its backward reads the probabilities): per layer the arrays its backward reads, under their trace names
(or, with checkpointing, only the layer's input, from which the backward runs the layer again).
``backbone_backward`` takes the gradient of the final hidden state and returns the gradient of every
backbone weight, named as ``params`` (``layers.3.mlp.up_proj.weight`` ...). Nothing is global: the saved
activations are an ordinary value the caller holds.

While a trace is active the backward records the gradient of each named intermediate under ``grad.`` +
its forward name (``grad.layers.0.attn.q``, ``grad.final_norm`` ...; docs/trace.md), and goes on with the
value ``record`` returns, as the forward does.
"""

from __future__ import annotations

from ..blocks import (apply_rope_backward, attention_backward, embed_backward, linear_backward, mlp_backward,
                      rms_norm_backward)
from ..blocks.namespace import array_namespace
from ..model import SavedActivations, backbone, decoder_layer
from ..trace import record, tap

_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def layer_backward(grad, saved, params, layer, config, cos, sin, grads):
    """The vector-Jacobian product of layer ``layer`` from the activations its forward saved.

    grad: [B, T, D], the gradient of the layer's output; saved: the layer's dict (model.SavedActivations:
    ``"h"`` and the trace names of its intermediates). Adds the gradients of the layer's weights to
    ``grads`` (named as ``params``). Returns the gradient of the layer's input [B, T, D].
    """
    xp = array_namespace(grad)
    p, name = f"layers.{layer}.", f"layers.{layer}"
    batch, length, _ = grad.shape
    eps = config.rms_norm_eps
    grad = record(f"grad.{name}.out", grad)
    # out = attn_residual + mlp(post_norm(attn_residual))
    d_mlp = record(f"grad.{name}.mlp.out", grad)
    d_post, mlp_grads = mlp_backward(d_mlp, saved["post_norm"], saved["mlp.up"], saved["mlp.act"],
                                     params[p + "mlp.up_proj.weight"], params[p + "mlp.down_proj.weight"],
                                     config.mlp_bias, config.hidden_act, tap=tap(f"grad.{name}.mlp"))
    grads.update({p + "mlp." + k: v for k, v in mlp_grads.items()})
    d_post = record(f"grad.{name}.post_norm", d_post)
    d_mid, grads[p + "post_attention_layernorm.weight"] = rms_norm_backward(
        d_post, saved["attn_residual"], params[p + "post_attention_layernorm.weight"], eps)
    d_mid = record(f"grad.{name}.attn_residual", grad + d_mid)
    # attn_residual = h + o_proj(attention(rope(q), rope(k), v))
    d_out = record(f"grad.{name}.attn.out", d_mid)
    d_context, grads[p + "self_attn.o_proj.weight"], d_bias = linear_backward(
        d_out, saved["attn.context"], params[p + "self_attn.o_proj.weight"], config.attention_bias)
    if d_bias is not None:
        grads[p + "self_attn.o_proj.bias"] = d_bias
    d_context = record(f"grad.{name}.attn.context", d_context)
    dq, dk, dv = attention_backward(d_context, saved["attn.q_rope"], saved["attn.k_rope"], saved["attn.v"],
                                    saved["attn.probs"], saved["attn.context"], config.head_dim**-0.5,
                                    tap=tap(f"grad.{name}.attn"))
    dk = record(f"grad.{name}.attn.k_rope", dk)  # recorded in the reverse of the forward's order
    dq = record(f"grad.{name}.attn.q_rope", dq)
    dv = record(f"grad.{name}.attn.v", dv)
    dk = record(f"grad.{name}.attn.k", apply_rope_backward(dk, cos, sin))
    dq = record(f"grad.{name}.attn.q", apply_rope_backward(dq, cos, sin))
    d_normed = None
    for proj, d_heads in zip(_PROJECTIONS, (dq, dk, dv), strict=True):
        d_y = xp.reshape(xp.permute_dims(d_heads, (0, 2, 1, 3)), (batch, length, -1))  # [B, T, count*hd]
        dx, grads[f"{p}self_attn.{proj}.weight"], d_bias = linear_backward(
            d_y, saved["input_norm"], params[f"{p}self_attn.{proj}.weight"], config.attention_bias)
        if d_bias is not None:
            grads[f"{p}self_attn.{proj}.bias"] = d_bias
        d_normed = dx if d_normed is None else d_normed + dx
    d_normed = record(f"grad.{name}.input_norm", d_normed)
    d_h, grads[p + "input_layernorm.weight"] = rms_norm_backward(d_normed, saved["h"],
                                                                  params[p + "input_layernorm.weight"], eps)
    return d_mid + d_h


def backbone_forward(params, config, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
                     packed=False, checkpointing=False):
    """model.backbone (no cache), saving what the backward needs.

    input_ids: [B, T] integers, or inputs_embeds: [B, T, D]; attention_mask: [B, T], 4-D additive, or None;
    position_ids: [B, T] / [1, T] or None; packed: separate packed sequences (position_ids given, no mask and
    no cache, as transformers does; see blocks/mask.py step_mask); checkpointing: keep only each layer's
    input and run the layer again during the backward (less memory, one more forward of the layers).
    Returns (last_hidden_state [B, T, D] after the final norm, SavedActivations).
    """
    saved = SavedActivations(checkpointing=checkpointing)
    out = backbone(params, config, input_ids, inputs_embeds, attention_mask, position_ids, packed=packed,
                   saved=saved)
    return out.last_hidden_state, saved


def backbone_backward(grad, saved, params, config):
    """The gradient of every backbone weight from the gradient of the final hidden state.

    grad: [B, T, D] (of last_hidden_state); saved: backbone_forward's SavedActivations (its layers'
    activations are released as the backward passes them). Returns (grads, d_embeds): grads named as
    ``params`` (a weight the call did not use, such as the embedding matrix with inputs_embeds, gets zeros;
    transformers leaves its ``.grad`` None), d_embeds [B, T, D] the gradient of the embeddings (of
    inputs_embeds when given).
    """
    xp = array_namespace(grad)
    grad = record("grad.final_norm", grad)
    grads = {}
    grad, grads["norm.weight"] = rms_norm_backward(grad, saved.last, params["norm.weight"], config.rms_norm_eps)
    saved.last = None
    for layer in reversed(range(config.num_hidden_layers)):
        activations = saved.layers.pop()
        if saved.checkpointing:  # the layer's input only: run the layer again, saving this time
            activations = {"h": activations}
            decoder_layer(activations["h"], params, layer, config, saved.cos, saved.sin, saved.mask,
                          saved=activations)
        grad = layer_backward(grad, activations, params, layer, config, saved.cos, saved.sin, grads)
        del activations
    grad = record("grad.embed", grad)
    weight = params["embed_tokens.weight"]
    if saved.input_ids is not None:
        grads["embed_tokens.weight"] = embed_backward(grad, saved.input_ids, weight.shape[0], config.pad_token_id)
    else:
        grads["embed_tokens.weight"] = xp.zeros(weight.shape, dtype=grad.dtype)
    return {name: grads[name] for name in params}, grad
