"""Whole-model gradients: ``loss, grads = loss_and_gradients(model, input_ids, labels=labels)``.

One call runs the model's forward with its loss, then the backward, and returns the loss and the gradient of
every weight named exactly as the model's state dict (``model.layers.3.mlp.up_proj.weight``,
``lm_head.weight``, ``score.weight``, ``transformer.norm.weight`` ...), for ArceeForCausalLM and the three
task heads. The numbers are those of transformers' ``loss.backward()`` (eval mode or dropout 0: arcee_np has
no dropout), checked against it in the golden and live suites (docs/training.md).

This module sits beside models.py (it reads a model's weights and checks its inputs as the model's call
does); the backward itself (training/backward.py and the blocks) knows nothing of the model classes.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from ..blocks import (causal_lm_loss_backward, last_non_pad_index, linear, linear_backward, lm_head,
                      lm_head_backward, pool_positions, pool_positions_backward, question_answering_loss_backward,
                      sequence_classification_loss_backward, split_start_end, split_start_end_backward,
                      token_classification_loss_backward)
from ..errors import InputError, InputTypeError
from ..models import (ArceeForCausalLM, ArceeForQuestionAnswering, ArceeForSequenceClassification,
                      ArceeForTokenClassification)
from ..validation.arguments import check_span_positions, check_token_labels
from ..trace import record
from .backward import backbone_backward, backbone_forward

HEADS = (ArceeForCausalLM, ArceeForSequenceClassification, ArceeForQuestionAnswering, ArceeForTokenClassification)


def loss_and_gradients(model, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                       labels=None, start_positions=None, end_positions=None, use_cache=None,
                       checkpointing=False):
    """The loss of ``model`` on one batch and the gradient of every weight: ``(loss, grads)``.

    model: an ArceeForCausalLM, ArceeForSequenceClassification, ArceeForQuestionAnswering or
    ArceeForTokenClassification. The inputs are those of the model's call: input_ids [B, T] (or
    inputs_embeds [B, T, D]), attention_mask [B, T] (1 = token, 0 = padding) or 4-D additive, position_ids;
    the targets of the head: ``labels`` (causal LM: [B, T] with -100 ignored, scored against the next token;
    sequence classification: as its ``config.problem_type``; token classification: [B, T] with -100), or
    ``start_positions`` and ``end_positions`` ([B]) for question answering.

    use_cache: as in the forward, only for the mask it implies: transformers creates a cache unless
    ``use_cache`` (default ``config.use_cache``) is off or gradient checkpointing is on, and only without a
    cache does it separate packed sequences (position_ids given, no attention_mask). checkpointing: keep only
    each layer's input during the forward and recompute the layer in the backward (transformers'
    ``activation_checkpointing_enable()``, formerly ``gradient_checkpointing_enable()``): the same gradients
    for less memory and about a quarter more time.

    Returns ``(loss, grads)``: loss a 0-d array, grads a dict ``{state-dict name: gradient}`` with one entry
    per weight of ``model.state_dict()`` (a tied embedding has one gradient, under
    ``model.embed_tokens.weight``, holding both of its uses), each in the model's dtype on its backend.
    """
    if not isinstance(model, HEADS):
        raise InputTypeError(f"loss_and_gradients needs a model with a loss (ArceeForCausalLM or a task head), got "
                             f"{type(model).__name__}.")
    config = model.config
    inputs = model._check_call(input_ids, attention_mask, position_ids, inputs_embeds=inputs_embeds,
                               use_cache=False)
    input_ids, inputs_embeds = inputs.input_ids, inputs.inputs_embeds
    attention_mask, position_ids = inputs.attention_mask, inputs.position_ids
    targets = _head_targets(model, inputs, labels, start_positions, end_positions)
    cache = (config.use_cache if use_cache is None else use_cache) and not checkpointing
    packed = position_ids is not None and not cache
    hidden, saved = backbone_forward(model.params, config, input_ids, inputs_embeds, attention_mask, position_ids,
                                     packed, checkpointing)
    if isinstance(model, ArceeForCausalLM):
        loss, d_hidden, head_grads = _causal_lm_head(model, hidden, targets)
    else:
        loss, d_hidden, head_grads = _task_head(model, hidden, input_ids, targets)
    grads, _ = backbone_backward(d_hidden, saved, model.params, config)
    if isinstance(model, ArceeForCausalLM) and config.tie_word_embeddings:
        grads["embed_tokens.weight"] = grads["embed_tokens.weight"] + head_grads.pop("lm_head.weight")
    out = {model.prefix + name: value for name, value in grads.items()}
    out.update(head_grads)
    return loss, out


def _causal_lm_head(model, hidden, labels):
    """The LM head and the shifted cross-entropy: (loss, d_hidden, {"lm_head.weight": ...})."""
    weight = model.lm_head_weight
    logits = record("logits", lm_head(hidden, weight))
    loss, d_logits = causal_lm_loss_backward(logits, labels)
    d_logits = record("grad.logits", d_logits)
    del logits
    d_hidden, d_weight = lm_head_backward(d_logits, hidden, weight)
    return loss, d_hidden, {"lm_head.weight": d_weight}


def _head_targets(model, inputs, labels, start_positions, end_positions):
    """The head's targets checked before any work, on the model's backend, as the model's call checks them:
    per-token labels [B, T], QA positions ([B], [B]) or sequence-classification labels."""
    batch = inputs.batch
    if isinstance(model, ArceeForQuestionAnswering):
        if start_positions is None or end_positions is None:
            raise InputError("question answering's gradients need start_positions and end_positions ([batch] "
                             "token positions).")
        return [check_span_positions(name, value, batch, model.xp) for name, value in
                (("start_positions", start_positions), ("end_positions", end_positions))]
    if labels is None:
        hint = " (usually input_ids, with -100 where no loss is wanted)" if isinstance(model, ArceeForCausalLM) else ""
        raise InputError(f"{type(model).__name__}'s gradients need labels{hint}.")
    if isinstance(model, ArceeForCausalLM):
        return check_token_labels(labels, inputs, model.config.vocab_size, "vocab_size", model.xp)
    if isinstance(model, ArceeForTokenClassification):
        return check_token_labels(labels, inputs, model.config.num_labels, "num_labels", model.xp)
    if model.config.pad_token_id is None and batch != 1:
        raise InputError("Cannot handle batch sizes > 1 if no padding token is defined: set config.pad_token_id "
                         "(the id your tokenizer pads with).")
    return model._check_labels(labels, batch)


def _task_head(model, hidden, input_ids, targets):
    """A task head's logits, loss and backward: (loss, d_hidden, head weight gradients)."""
    xp, params = model.xp, model.head_params
    if isinstance(model, ArceeForSequenceClassification):
        logits = record("logits", linear(hidden, params["score.weight"]))  # [B, T, C]
        batch, length = logits.shape[:2]
        pad = model.config.pad_token_id
        if pad is not None and input_ids is not None:
            index = last_non_pad_index(input_ids, pad)
        else:
            index = xp.full((batch,), length - 1, dtype=xp.int64)
        loss, d_pooled = sequence_classification_loss_backward(pool_positions(logits, index), targets,
                                                               model.config.problem_type)
        d_logits = record("grad.logits", pool_positions_backward(d_pooled, index, length))
        d_hidden, d_weight, _ = linear_backward(d_logits, hidden, params["score.weight"])
        return loss, d_hidden, {"score.weight": d_weight}
    if isinstance(model, ArceeForQuestionAnswering):
        logits = record("logits", linear(hidden, params["qa_outputs.weight"], params["qa_outputs.bias"]))  # [B, T, 2]
        loss, d_start, d_end = question_answering_loss_backward(*split_start_end(logits), *targets)
        d_logits = record("grad.logits", split_start_end_backward(d_start, d_end))
        d_hidden, d_weight, d_bias = linear_backward(d_logits, hidden, params["qa_outputs.weight"], True)
        return loss, d_hidden, {"qa_outputs.weight": d_weight, "qa_outputs.bias": d_bias}
    has_bias = "score.bias" in params
    logits = record("logits", linear(hidden, params["score.weight"], params.get("score.bias")))  # [B, T, C]
    loss, d_logits = token_classification_loss_backward(logits, targets)
    d_logits = record("grad.logits", d_logits)
    d_hidden, d_weight, d_bias = linear_backward(d_logits, hidden, params["score.weight"], has_bias)
    return loss, d_hidden, {"score.weight": d_weight} | ({"score.bias": d_bias} if has_bias else {})


class ModelParameters(MutableMapping):
    """A model's weights under their state-dict names, read from and written to the model itself.

    ``model_parameters(model)["model.layers.0.mlp.up_proj.weight"]`` is ``model.params["layers.0.mlp.up_proj.weight"]``;
    assigning replaces the model's array, so an optimizer given this mapping updates the model (AdamW(
    model_parameters(model), ...) with loss_and_gradients' names). A tied embedding is one entry. No keys
    can be added or removed.
    """

    def __init__(self, model):
        self.model = model

    def _locate(self, name):
        prefix = self.model.prefix
        if name.startswith(prefix) and name[len(prefix):] in self.model.params:
            return self.model.params, name[len(prefix):]
        if name in self.model.head_params and not (name == "lm_head.weight" and self.model.config.tie_word_embeddings):
            return self.model.head_params, name
        raise KeyError(name)

    def __getitem__(self, name):
        store, key = self._locate(name)
        return store[key]

    def __setitem__(self, name, value):
        store, key = self._locate(name)
        store[key] = value

    def __delitem__(self, name):
        raise TypeError("a model's weights cannot be removed.")

    def __iter__(self):
        yield from (self.model.prefix + name for name in self.model.params)
        yield from (name for name in self.model.head_params
                    if not (name == "lm_head.weight" and self.model.config.tie_word_embeddings))

    def __len__(self):
        return sum(1 for _ in self)


def model_parameters(model) -> ModelParameters:
    """The weights of ``model`` as a mutable mapping under their state-dict names (see ModelParameters)."""
    return ModelParameters(model)
