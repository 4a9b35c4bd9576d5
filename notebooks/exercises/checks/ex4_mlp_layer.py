"""The checks of exercises 9-10: the ReLU² MLP and one decoder layer."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
from arcee_np import KVCache as ReferenceKVCache
from arcee_np.blocks import causal_padding_mask as ref_mask
from arcee_np.blocks import default_inv_freq, rope_cos_sin
from arcee_np.blocks import mlp as ref_mlp
from arcee_np.blocks import relu2 as ref_relu2
from arcee_np.blocks import StepMask
from arcee_np.model import decoder_layer as ref_decoder_layer
from arcee_np.oracle.compare import TOLERANCES
from arcee_np.trace import LAYER_STAGES, trace

from checking import (FLOAT32, Exercise, Failure, against_array, against_trace, array, call, check, first_match, fmt)

from .shipped import describe_ids, layer_weights, model, padded_reference, reference, shapes


# ---------------------------------------------------------------------------------------------- 9 the MLP
@check("mlp")
def check_mlp(relu2, mlp):
    grid = np.linspace(-3, 3, 13, dtype=np.float32)
    checked = f"relu2(x) on x = {np.round(grid, 1).tolist()}"
    hint = "relu2(x) = max(x, 0) ** 2: 0 for every x <= 0, x**2 above"
    got = array(call(relu2, "relu2", checked, grid), "relu2", checked, grid.shape, "[13]", hint)
    against_array(got, ref_relu2(grid), "relu2", checked, FLOAT32, lambda: first_match(got, {
        "you returned relu(x); square it": np.maximum(grid, 0),
        "you squared without the relu: negative inputs must give 0": grid * grid,
        "that is SiLU, Llama's activation; Arcee's is relu(x)**2": grid / (1 + np.exp(-grid)),
    }), hint)

    ref = reference()
    layer = 1
    W = layer_weights(layer)
    x, up = ref[f"layers.{layer}.post_norm"], ref[f"layers.{layer}.mlp.up"]
    checked = (f"relu2 and mlp(x, up_weight, down_weight) as layer {layer}'s MLP, "
               f"{describe_ids(ref.inputs['input_ids'])}")
    hint = ("mlp(x) = relu2(x @ up_weight.T) @ down_weight.T: weights are [out, in], up_weight [I, D], "
            "down_weight [D, I]; there is no gate")
    act = array(call(relu2, "relu2", checked, up), "relu2", checked, up.shape, "[B, T, I]")
    out = array(call(mlp, "mlp", checked, x, W["mlp.up_proj.weight"], W["mlp.down_proj.weight"]), "mlp", checked,
                x.shape, "[B, T, D]", hint)
    down = W["mlp.down_proj.weight"]
    err = against_trace({f"layers.{layer}.post_norm": x, f"layers.{layer}.mlp.up": up, f"layers.{layer}.mlp.act": act,
                         f"layers.{layer}.mlp.out": out}, ref, checked, lambda: first_match(out, {
                             "your MLP applies relu, not relu squared": np.maximum(up, 0) @ down.T,
                             "your MLP squares without the relu": (up * up) @ down.T,
                         }, ref[f"layers.{layer}.mlp.out"]), hint)
    return [f"checked: relu2 on a grid and {checked} (max abs error {fmt(err)})"]


# ---------------------------------------------------------------------------------------------- 10 one decoder layer
DECODER_NAMES = tuple(LAYER_STAGES)


@check("decoder_layer")
def check_decoder_layer(decoder_layer):
    config = model().config
    hint = ("h_in -> input_norm -> q, k, v -> RoPE on q and k -> (cache) -> attention -> o_proj -> + h_in = "
            "attn_residual -> post_norm -> mlp -> + attn_residual = out; return them in a dict under those names")
    errors = []
    for ref, layer, what in ((reference(), 1, describe_ids(reference().inputs["input_ids"])),
                             (padded_reference(), 2, "a left-padded batch of 2")):
        checked = f"decoder_layer(h, weights, cos, sin, mask, config) as layer {layer} on {what}"
        h, cos, sin, mask = _layer_inputs(ref, layer)
        out = _layer_dict(call(decoder_layer, "decoder_layer", checked, h, layer_weights(layer), cos, sin, mask,
                               config), checked, layer, h.shape, hint)
        valid = ref.inputs.get("attention_mask")
        errors.append(against_trace({f"layers.{layer - 1}.out": h, **out}, ref, checked, hint=hint, valid=valid))

    ref, layer = reference(), 1
    h, cos, sin, mask = _layer_inputs(ref, layer)
    prompt, T = 6, h.shape[1]
    cache = ReferenceKVCache(config.num_hidden_layers)
    checked = (f"decoder_layer with a KV cache (cache=KVCache, layer={layer}): positions 0-{prompt - 1} at once, then "
               f"{prompt} to {T - 1} one at a time")
    hint_cache = ("after RoPE, when a cache is given: k, v = cache.update(k, v, layer), so this step's queries "
                  "attend to the past keys too; a single new query needs no mask (mask is None)")
    for start, stop in [(0, prompt)] + [(i, i + 1) for i in range(prompt, T)]:
        step_mask = np.asarray(ref_mask(np.ones((1, stop), dtype=np.int64), stop - start, np.float32)) \
            if stop - start > 1 else None
        out = _layer_dict(call(decoder_layer, "decoder_layer", checked, h[:, start:stop], layer_weights(layer),
                               cos[:, start:stop], sin[:, start:stop], step_mask, config, cache=cache, layer=layer),
                          checked, layer, h[:, start:stop].shape, hint_cache)
        if cache.get_seq_length(layer) != stop:
            raise Failure(checked, f"after positions {start}-{stop - 1} the cache holds "
                          f"{cache.get_seq_length(layer)} positions of layer {layer}; expected {stop}",
                          "your layer does not call cache.update(k, v, layer)" if cache.get_seq_length(layer) == 0
                          else None, hint_cache)
        expected = ref[f"layers.{layer}.out"][:, start:stop]
        errors.append(against_array(out[f"layers.{layer}.out"], expected, f"out at positions {start}-{stop - 1}",
                                    checked, TOLERANCES["float32"], hint=hint_cache))
    return [f"checked: layers 1 and 2 on the shipped model (with and without padding) and with a KV cache, token "
            f"by token (max abs error {fmt(max(errors))})"]


def _layer_inputs(ref, layer):
    _, _, hd = shapes()
    ids = ref.inputs["input_ids"]
    key_mask = ref.inputs.get("attention_mask", np.ones(ids.shape, dtype=np.int64))
    positions = ref.inputs.get("position_ids", np.arange(ids.shape[1])[None, :])
    inv = np.asarray(default_inv_freq(hd, model().config.rope_theta, xp, xp.float32))
    cos, sin = (np.asarray(a) for a in rope_cos_sin(positions, inv, 1.0, xp.float32))
    mask = np.asarray(ref_mask(key_mask, ids.shape[1], np.float32))
    return ref[f"layers.{layer - 1}.out"], cos, sin, mask


def _layer_dict(value, checked, layer, shape, hint) -> dict:
    if not isinstance(value, dict):
        raise Failure(checked, f"`decoder_layer` returned a {type(value).__name__}; return a dict of the layer's "
                      f"tensors, at least {{'out': ...}}", hint=hint)
    unknown = sorted(set(value) - set(DECODER_NAMES))
    if unknown:
        raise Failure(checked, f"your dict has keys {unknown} that are not names of a layer's tensors; use names of "
                      f"docs/trace.md without the 'layers.i.' prefix: {', '.join(DECODER_NAMES)}", hint=hint)
    if "out" not in value:
        raise Failure(checked, "your dict has no 'out' (the layer's output, h after both residual adds)", hint=hint)
    out = {f"layers.{layer}.{name}": array(v, f"decoder_layer(...)[{name!r}]", checked) for name, v in value.items()}
    array(value["out"], "decoder_layer(...)['out']", checked, shape, "[B, T, D]", hint)
    return out


def _reference_decoder_layer(h, weights, cos, sin, mask, config, cache=None, layer=0):
    params = {f"layers.{layer}.{name}": value for name, value in weights.items()}
    past = cache.get_seq_length(layer) if cache is not None else 0
    step = StepMask(key_mask=None, segments=None, given=mask, past_length=past, length=h.shape[1], dtype=h.dtype)
    with trace(f"layers.{layer}.*") as t:
        ref_decoder_layer(h, params, layer, config, cos, sin, step, cache, attn_implementation="eager")
    return {name[len(f"layers.{layer}."):]: value for name, value in t.items()}


EXERCISES = {  # the exercises of this notebook: the names each asks for, its check
    "mlp": Exercise("ex4_mlp_layer", ("relu2", "mlp"), check_mlp),
    "decoder_layer": Exercise("ex4_mlp_layer", ("decoder_layer",), check_decoder_layer),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "relu2": ref_relu2,
    "mlp": lambda x, up_weight, down_weight: ref_mlp(x, up_weight, down_weight),
    "decoder_layer": _reference_decoder_layer,
}
