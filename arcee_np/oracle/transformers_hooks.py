"""transformers as the reference: its Arcee model run once with forward hooks (and tensor hooks for the
backward) that record arcee_np's names (``transformers_trace``), and ``compare_with_transformers``.

torch and transformers are imported only when these functions run (the ``golden`` extra)."""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InputError
from ..trace import GRAD_PREFIX, Trace
from .report import Report, compare_traces
from .tracefile import as_numpy, describe_patterns, trace_model, versions


def transformers_trace(torch_model, input_ids, attention_mask=None, position_ids=None, patterns="*",
                       labels=None) -> Trace:
    """Run a transformers Arcee (or Llama-like) model once and record arcee_np's names with forward hooks.

    With ``labels`` ([B, T], -100 ignored) the call also computes the causal-LM loss and runs
    ``loss.backward()``: tensor hooks on the same tensors record their gradients as ``grad.`` + the name
    (``grad.attn.scores`` excepted: eager attention never materialises the scores it differentiates). The
    weights' ``.grad`` are left as they were.

    The model must use eager attention (load with ``attn_implementation="eager"``): the attention
    probabilities come from it. Mapping (docs/trace.md): ``embed`` = embed_tokens output; per layer
    ``input_norm`` / ``post_norm`` = input_layernorm / post_attention_layernorm outputs; ``attn.q|k|v`` =
    q_proj/k_proj/v_proj outputs split into heads; ``attn.q_rope|k_rope`` = what the modeling file's
    apply_rotary_pos_emb returns (wrapped while the call runs); ``attn.scores`` = ``q_rope @ repeat_kv(k_rope)^T *
    scaling`` (eager computes it without exposing it); ``attn.probs`` = the attention weights; ``attn.context``
    = o_proj's input; ``attn.out`` = o_proj's output; ``attn_residual`` = post_attention_layernorm's input;
    ``mlp.up|act|out`` = up_proj / act_fn / down_proj outputs; ``out`` = the decoder layer's output;
    ``final_norm`` = norm's output; ``logits`` = lm_head's output. The call runs without a cache.
    """
    import torch

    backbone = torch_model.model if hasattr(torch_model, "model") else torch_model
    layers = backbone.layers
    implementation = getattr(torch_model.config, "_attn_implementation", "eager")
    if implementation != "eager":
        raise InputError(f"the transformers model uses {implementation!r} attention, which returns no attention "
                         f"weights: load it with attn_implementation='eager' (or call "
                         f"model.set_attn_implementation('eager')).")
    modeling = sys.modules[type(layers[0].self_attn).__module__]
    t = Trace(patterns)
    state = {"layer": None}
    handles = []
    gradients = labels is not None

    def put(name, value, layout=None):
        """Record ``value`` (a tensor of the graph) as ``name``, and its gradient as ``grad.`` + name; ``layout``
        rearranges both into arcee_np's shape."""
        if t.wants(name):
            t[name] = as_numpy(layout(value) if layout else value)
        if gradients and value.requires_grad and t.wants(GRAD_PREFIX + name):
            value.register_hook(lambda grad: t.__setitem__(GRAD_PREFIX + name,
                                                           as_numpy(layout(grad) if layout else grad)))

    def on_output(name, layout=None, select=None):
        def hook(module, args, out):
            put(name, select(out) if select else out, layout)
        return hook

    def on_input(name):
        def hook(module, args):
            put(name, args[0])
        return hook

    def first(out):
        return out[0] if isinstance(out, (tuple, list)) else out

    n_heads = torch_model.config.num_attention_heads
    n_kv = getattr(torch_model.config, "num_key_value_heads", None) or n_heads
    handles.append(backbone.embed_tokens.register_forward_hook(on_output("embed")))
    for i, layer in enumerate(layers):
        attn, p = layer.self_attn, f"layers.{i}."

        def enter(module, args, i=i):
            state["layer"], state["module"] = i, module

        handles += [
            layer.input_layernorm.register_forward_hook(on_output(p + "input_norm")),
            attn.register_forward_pre_hook(enter),
            attn.q_proj.register_forward_hook(on_output(p + "attn.q", _split(n_heads))),
            attn.k_proj.register_forward_hook(on_output(p + "attn.k", _split(n_kv))),
            attn.v_proj.register_forward_hook(on_output(p + "attn.v", _split(n_kv))),
            attn.o_proj.register_forward_pre_hook(on_input(p + "attn.context")),
            attn.register_forward_hook(on_output(p + "attn.probs", select=_attention_weights)),
            attn.o_proj.register_forward_hook(on_output(p + "attn.out")),
            layer.post_attention_layernorm.register_forward_pre_hook(on_input(p + "attn_residual")),
            layer.post_attention_layernorm.register_forward_hook(on_output(p + "post_norm")),
            layer.mlp.up_proj.register_forward_hook(on_output(p + "mlp.up")),
            layer.mlp.act_fn.register_forward_hook(on_output(p + "mlp.act")),
            layer.mlp.down_proj.register_forward_hook(on_output(p + "mlp.out")),
            layer.register_forward_hook(on_output(p + "out", select=first)),
        ]
    handles.append(backbone.norm.register_forward_hook(on_output("final_norm")))
    if getattr(torch_model, "lm_head", None) is not None:
        handles.append(torch_model.lm_head.register_forward_hook(on_output("logits")))

    original_rope = modeling.apply_rotary_pos_emb

    def recording_rope(q, k, cos, sin, *args, **kwargs):
        q_rope, k_rope = original_rope(q, k, cos, sin, *args, **kwargs)
        p, module = f"layers.{state['layer']}.attn.", state["module"]
        put(p + "q_rope", q_rope)
        put(p + "k_rope", k_rope)
        if t.wants(p + "scores"):
            keys = modeling.repeat_kv(k_rope, module.num_key_value_groups)
            with torch.no_grad():  # recomputed for the record, outside the graph (so it has no gradient)
                t[p + "scores"] = as_numpy(torch.matmul(q_rope, keys.transpose(2, 3)) * module.scaling)
        return q_rope, k_rope

    kwargs = {"input_ids": _torch_long(input_ids), "use_cache": False}  # eager returns the weights anyway
    if attention_mask is not None:
        kwargs["attention_mask"] = _torch_long(attention_mask)
    if position_ids is not None:
        kwargs["position_ids"] = _torch_long(position_ids)
    if gradients:
        kwargs["labels"] = _torch_long(labels)
        saved_grads = [(p, p.grad) for p in torch_model.parameters()]
    modeling.apply_rotary_pos_emb = recording_rope
    try:
        with torch.enable_grad() if gradients else torch.no_grad():
            out = torch_model(**kwargs)
            if gradients:
                for p in torch_model.parameters():
                    p.grad = None
                out.loss.backward()
    finally:
        modeling.apply_rotary_pos_emb = original_rope
        for handle in handles:
            handle.remove()
        if gradients:
            for p, grad in saved_grads:
                p.grad = grad
    given = (("input_ids", input_ids), ("attention_mask", attention_mask), ("position_ids", position_ids),
             ("labels", labels))
    t.inputs = {k: as_numpy(v) for k, v in given if v is not None}
    dtype = str(next(torch_model.parameters()).dtype).replace("torch.", "")
    t.meta = {"producer": "transformers", "model": type(torch_model).__name__, "dtype": dtype, "device": "cpu",
              "config": torch_model.config.to_dict(), "versions": versions(), "patterns": describe_patterns(patterns),
              "attn_implementation": "eager"}
    return t


def _split(count):
    def transform(out):  # [B, T, count*hd] -> [B, count, T, hd]
        return out.view(*out.shape[:-1], count, -1).transpose(1, 2)
    return transform


def _attention_weights(out):
    weights = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
    if weights is None:
        raise InputError("the attention module returned no weights: load the model with attn_implementation='eager'.")
    return weights


def _torch_long(x):
    import torch

    return torch.tensor(np.array(as_numpy(x), dtype=np.int64))


def compare_with_transformers(model, torch_model, input_ids, attention_mask=None, position_ids=None, patterns="*",
                              tolerance=None, lifted: bool = False, labels=None) -> Report:
    """Trace arcee_np ``model`` and transformers ``torch_model`` (same weights, eager) on the same inputs and
    compare them, transformers as the reference. ``lifted=True`` when the torch model runs with its float32
    casts lifted (tests/torch_reference.py), which selects the float64 row (1e-9) instead of float64_plain (1e-4).
    With ``labels`` both sides also run the backward of the causal-LM loss and the ``grad.*`` names are compared."""
    ours = trace_model(model, input_ids, patterns, attention_mask=attention_mask, position_ids=position_ids,
                       labels=labels)
    theirs = transformers_trace(torch_model, input_ids, attention_mask, position_ids, patterns, labels=labels)
    theirs.meta["lifted"] = lifted
    return compare_traces(ours, theirs, tolerance, reference_label="transformers", candidate_label="arcee_np")


def load_transformers_model(path, dtype: str = "float32"):
    """transformers' ArceeForCausalLM from a local checkpoint folder of safetensors weights, in ``dtype``, with
    eager attention. The folder is checked first (it exists, its weights are safetensors, never a pickle) and
    transformers is told to read only local safetensors files; its own errors become CheckpointErrors."""
    from ..errors import CheckpointError
    from ..io.checkpoint import checkpoint_files

    checkpoint_files(path)  # a missing folder or pickle-only weights are refused before transformers sees them
    import torch
    import transformers

    torch_dtype = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}[dtype]
    transformers.utils.logging.disable_progress_bar()
    options = dict(attn_implementation="eager", use_safetensors=True, local_files_only=True)
    try:
        try:
            return transformers.ArceeForCausalLM.from_pretrained(path, dtype=torch_dtype, **options)
        except TypeError:  # transformers 4.x names it torch_dtype
            return transformers.ArceeForCausalLM.from_pretrained(path, torch_dtype=torch_dtype, **options)
    except Exception as err:  # noqa: BLE001 - transformers' errors on a checkpoint it cannot load, named
        reason = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())[:500]
        raise CheckpointError(f"transformers could not load {path} ({type(err).__name__}: {reason}).") from None
