"""Torch-side helpers for the golden fixtures and the live differential suite.

Only ``scripts/make_golden.py`` and ``tests/live/`` import this module; the plain test run
(``tests/test_golden.py``) needs neither torch nor transformers.

What is here:

* :func:`lifted_float32_casts` -- a context manager that monkeypatches
  ``transformers.models.arcee.modeling_arcee`` so that a float64 transformers model stays in float64
  end to end. Plain transformers, even with float64 weights, rounds through float32 at:

  1. ``ArceeRMSNorm.forward``: ``hidden_states.to(torch.float32)``;
  2. ``ArceeRotaryEmbedding``: ``inv_freq`` is built in float32 (``torch.float`` in the default init and in
     ``modeling_rope_utils._compute_yarn_parameters``), and ``forward`` computes
     ``position_ids.float() * inv_freq.float()`` and cos/sin in float32;
  3. ``eager_attention_forward``: ``softmax(..., dtype=torch.float32)``;

  and, outside the modeling file,

  4. ``loss_utils.ForCausalLMLoss`` and ``loss_utils.ForTokenClassification``: ``logits.float()`` (for float64
     logits this is a *down*-cast).

  Inside the context all four compute in ``promote_types(input dtype, float32)``: float64 stays
  float64, while float32 and float16 models behave exactly as without the patch. Everything is
  restored on exit. arcee_np's float64 mode is compared to the lifted model at 1e-9.

* :func:`perturb_` -- re-initialise a freshly built model so that norms and biases matter.
* :func:`flatten_outputs` -- turn a transformers ``CausalLMOutputWithPast`` into the flat
  ``{name: tensor}`` layout used by the fixtures (``logits``, ``loss``, ``hidden_states.{i}``,
  ``attentions.{i}``, ``past_key_values.{layer}.keys`` / ``.values``).
"""

from __future__ import annotations

import contextlib
import types

import torch

import transformers.loss.loss_utils as loss_utils
import transformers.modeling_rope_utils as rope_utils
import transformers.models.arcee.modeling_arcee as modeling_arcee

__all__ = [
    "lifted_float32_casts",
    "lifted_inv_freq",
    "perturb_",
    "flatten_outputs",
    "cache_of",
]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a lifted cast computes in: float64 stays float64, anything narrower uses float32."""
    return torch.promote_types(dtype, torch.float32)


class _TorchWithWideFloat(types.ModuleType):
    """A stand-in for the ``torch`` module in which ``torch.float``/``torch.float32`` mean float64.

    Swapped into ``modeling_rope_utils`` while transformers' own RoPE init functions run, so that the
    float64 ``inv_freq`` follows exactly transformers' formula (same ops, same order), only wider.
    """

    def __init__(self):
        super().__init__("torch")

    float = torch.float64
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def lifted_inv_freq(config, rope_type: str) -> tuple[torch.Tensor, float]:
    """transformers' ``inv_freq`` and ``attention_scaling`` for ``config``, computed in float64.

    ``default``: ``1 / theta ** (arange(0, d, 2) / d)`` in float64 (mirrors
    ``ArceeRotaryEmbedding.compute_default_rope_parameters``). Other types: transformers'
    ``ROPE_INIT_FUNCTIONS[rope_type]`` run with ``torch.float``/``torch.float32`` meaning float64.
    """
    if rope_type == "default":
        base = config.rope_parameters["rope_theta"]
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        return inv_freq, 1.0
    fn = rope_utils.ROPE_INIT_FUNCTIONS[rope_type]
    saved = rope_utils.torch
    rope_utils.torch = _TorchWithWideFloat()
    try:
        inv_freq, scaling = fn(config)
    finally:
        rope_utils.torch = saved
    assert inv_freq.dtype == torch.float64, inv_freq.dtype
    return inv_freq, scaling


def _lifted_rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(_compute_dtype(input_dtype))  # was: .to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)


def _make_lifted_rotary_forward(original_forward):
    def forward(self, x, position_ids):
        cdt = _compute_dtype(x.dtype)
        if cdt == torch.float32:
            return original_forward(self, x, position_ids)
        if self.rope_type not in ("default", "linear", "yarn"):
            raise NotImplementedError(f"lifted RoPE only covers default, linear and yarn, not {self.rope_type!r}")
        cached = getattr(self, "_lifted_inv_freq", None)
        if cached is None:
            inv_freq, scaling = lifted_inv_freq(self.config, self.rope_type)
            assert scaling == self.attention_scaling, (scaling, self.attention_scaling)
            self._lifted_inv_freq = cached = inv_freq
        freqs = position_ids[..., None].to(cdt) * cached.to(device=x.device, dtype=cdt)  # was: float32
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    return forward


def _lifted_eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    repeat_kv = modeling_arcee.repeat_kv
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=_compute_dtype(query.dtype))  # was: float32
    attn_weights = attn_weights.to(query.dtype)
    attn_weights = torch.nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _make_lifted_causal_lm_loss(original):
    def ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100,
                        shift_labels=None, **kwargs):
        if _compute_dtype(logits.dtype) == torch.float32:
            return original(logits, labels, vocab_size, num_items_in_batch=num_items_in_batch,
                            ignore_index=ignore_index, shift_labels=shift_labels, **kwargs)
        # same as transformers, without the `logits.float()` down-cast
        if shift_labels is None:
            labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
            shift_labels = labels[..., 1:].contiguous()
        logits = logits.view(-1, vocab_size)
        shift_labels = shift_labels.view(-1).to(logits.device)
        return loss_utils.fixed_cross_entropy(logits, shift_labels, num_items_in_batch, ignore_index, **kwargs)

    return ForCausalLMLoss


def _make_lifted_token_classification_loss(original):
    def ForTokenClassification(logits, labels, config, **kwargs):
        if _compute_dtype(logits.dtype) == torch.float32:
            return original(logits, labels, config, **kwargs)
        # same as transformers, without the `logits.float()` down-cast
        logits = logits.view(-1, config.num_labels)
        labels = labels.view(-1).to(logits.device)
        return loss_utils.fixed_cross_entropy(logits, labels, **kwargs)

    return ForTokenClassification


_LIFTED_LOSSES = {"ForCausalLM": _make_lifted_causal_lm_loss,
                  "ForTokenClassification": _make_lifted_token_classification_loss}


@contextlib.contextmanager
def lifted_float32_casts(rms_norm: bool = True, rope: bool = True, softmax: bool = True, loss: bool = True):
    """Lift transformers' float32 casts in Arcee so that float64 models compute in float64 throughout.

    Patches (and restores on exit) ``ArceeRMSNorm.forward``, ``ArceeRotaryEmbedding.forward``
    (float64 inv_freq/angles/cos/sin), ``modeling_arcee.eager_attention_forward`` (softmax dtype) and
    ``LOSS_MAPPING["ForCausalLM"]`` / ``["ForTokenClassification"]`` (no ``logits.float()``). Float32/float16
    models are unaffected.
    Use with ``attn_implementation="eager"``; build/load the model inside or outside the context.
    """
    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)))
        setattr(obj, name, value)

    try:
        if rms_norm:
            patch(modeling_arcee.ArceeRMSNorm, "forward", _lifted_rms_norm_forward)
        if rope:
            original = modeling_arcee.ArceeRotaryEmbedding.__dict__["forward"]
            patch(modeling_arcee.ArceeRotaryEmbedding, "forward", _make_lifted_rotary_forward(original))
        if softmax:
            patch(modeling_arcee, "eager_attention_forward", _lifted_eager_attention_forward)
        if loss:
            mapping = loss_utils.LOSS_MAPPING
            for key, make_lifted in _LIFTED_LOSSES.items():
                saved.append((mapping, f"__item__{key}", mapping[key]))
                mapping[key] = make_lifted(mapping[key])
        yield
    finally:
        for obj, name, value in reversed(saved):
            if name.startswith("__item__"):
                obj[name[len("__item__"):]] = value
            else:
                setattr(obj, name, value)


@torch.no_grad()
def perturb_(model: torch.nn.Module, generator: torch.Generator, std: float = 0.15,
             norm_spread: float = 0.25, bias_std: float = 0.2) -> torch.nn.Module:
    """Re-initialise ``model`` in place, deterministically from ``generator``.

    Matrices (Linear/Embedding weights) ~ N(0, std) so attention is far from uniform; RMSNorm weights
    ~ 1 + N(0, norm_spread) and biases ~ N(0, bias_std), because random init sets norms to 1 and biases
    to 0, which would hide bugs (a missing norm weight, a dropped bias). Shared (tied) parameters are
    visited once. Values are drawn in float64 and cast to the parameter dtype.
    """
    for name, p in model.named_parameters():  # de-duplicates tied parameters
        if name.endswith("norm.weight"):
            values = 1.0 + norm_spread * torch.randn(p.shape, generator=generator, dtype=torch.float64)
        elif name.endswith(".bias"):
            values = bias_std * torch.randn(p.shape, generator=generator, dtype=torch.float64)
        else:
            values = std * torch.randn(p.shape, generator=generator, dtype=torch.float64)
        p.copy_(values.to(p.dtype))
    return model


def cache_of(output):
    """The cache object of a transformers output (v5 names it ``cache``; v4 ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    return cache


def cache_tensors(cache) -> dict[str, torch.Tensor]:
    """``{"past_key_values.{layer}.keys": [B, KV, S, hd], ... .values}`` from a transformers cache."""
    out = {}
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for i, layer in enumerate(layers):
            out[f"past_key_values.{i}.keys"] = layer.keys
            out[f"past_key_values.{i}.values"] = layer.values
    else:  # very old caches: key_cache / value_cache lists
        for i, (k, v) in enumerate(zip(cache.key_cache, cache.value_cache, strict=False)):
            out[f"past_key_values.{i}.keys"] = k
            out[f"past_key_values.{i}.values"] = v
    return out


def flatten_outputs(output) -> dict[str, torch.Tensor]:
    """Flat ``{name: tensor}`` view of a transformers CausalLM output (only the fields it has)."""
    flat: dict[str, torch.Tensor] = {"logits": output.logits}
    if getattr(output, "loss", None) is not None:
        flat["loss"] = output.loss
    if getattr(output, "hidden_states", None) is not None:
        for i, h in enumerate(output.hidden_states):
            flat[f"hidden_states.{i}"] = h
    if getattr(output, "attentions", None) is not None:
        for i, a in enumerate(output.attentions):
            flat[f"attentions.{i}"] = a
    cache = cache_of(output)
    if cache is not None:
        flat.update(cache_tensors(cache))
    return flat


def start_fixture_run(out) -> None:
    """What every fixture script does first: one deterministic torch thread, quiet transformers, and a fresh
    ``out`` folder (deleted and re-created)."""
    import shutil

    import transformers

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
