"""The task heads over the backbone: sequence classification, extractive question answering, token
classification (transformers' ArceeFor* classes of the same names)."""

from __future__ import annotations

import warnings

import numpy as np

from .backend import to_numpy
from .blocks import (last_non_pad_index, linear, pool_positions, question_answering_loss, sequence_classification_loss,
                     split_start_end, token_classification_loss)
from .errors import ConfigError, InputError
from .outputs import QuestionAnsweringModelOutput, SequenceClassifierOutputWithPast, TokenClassifierOutput
from .pretrained import ArceePreTrainedModel
from .trace import record
from .validation.arguments import (ForwardInputs, check_class_labels, check_float_labels, check_span_positions,
                                   check_token_labels)
from .validation.config import PROBLEM_TYPES
from .validation.values import require_choice


class ArceeForSequenceClassification(ArceePreTrainedModel):
    """The decoder with a classification head read at each row's last non-pad token (transformers'
    ArceeForSequenceClassification): ``score`` [num_labels, D], no bias."""

    @classmethod
    def head_shapes(cls, config):
        return {"score.weight": (config.num_labels, config.hidden_size)}

    def _problem_type(self, labels) -> str:
        """``config.problem_type``, inferred and set on the config when None, as transformers does."""
        if self.config.problem_type is None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif np.asarray(to_numpy(labels)).dtype in (np.int32, np.int64):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        return self.config.problem_type

    def _check_labels(self, labels, batch: int):
        """The labels for this config's problem type as a backend array ([B] ints, [B] / [B, C] floats)."""
        problem_type, classes = self._problem_type(labels), self.config.num_labels
        require_choice("config.problem_type", problem_type, PROBLEM_TYPES, ConfigError)
        if problem_type == "single_label_classification":
            return check_class_labels(labels, batch, classes, self.xp)
        want = (batch,) if problem_type == "regression" and classes == 1 else (batch, classes)
        return check_float_labels(labels, want, problem_type, self.xp, "float64" if self.dtype == "float64" else
                                  "float32")

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, labels=None, use_cache=None, output_attentions=False, output_hidden_states=False):
        """input_ids [B, T] -> SequenceClassifierOutputWithPast with logits [B, num_labels] taken at each row's
        last token that is not ``config.pad_token_id`` (left or right padding; the mask is not consulted) and,
        with labels, the loss of ``config.problem_type`` (inferred and set when None: regression for one label,
        single-label for integer labels, else multi-label)."""
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                  use_cache, output_attentions, output_hidden_states)
        if self.config.pad_token_id is None and inputs.batch != 1:
            raise InputError("Cannot handle batch sizes > 1 if no padding token is defined: set config.pad_token_id "
                             "(the id your tokenizer pads with).")
        if labels is not None:
            labels = self._check_labels(labels, inputs.batch)
        return self._forward(inputs, labels)

    def _forward(self, inputs: ForwardInputs, labels=None):
        out = self._run_backbone(inputs)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["score.weight"]))  # [B, T, C]
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, labels))
        pad = self.config.pad_token_id
        if pad is not None and inputs.input_ids is not None:
            index = last_non_pad_index(inputs.input_ids, pad)
        else:
            if pad is not None:
                warnings.warn(f"{type(self).__name__} does not detect padding in inputs_embeds: it pools the last "
                              f"position of every row.", stacklevel=3)
            index = self.xp.full((inputs.batch,), inputs.length - 1, dtype=self.xp.int64)
        pooled = pool_positions(logits, index)  # [B, C]
        loss = None if labels is None else sequence_classification_loss(pooled, labels, self.config.problem_type)
        return SequenceClassifierOutputWithPast(loss, pooled, inputs.cache if inputs.return_cache else None,
                                                out.hidden_states, out.attentions)


class ArceeForQuestionAnswering(ArceePreTrainedModel):
    """The decoder with a span head (transformers' ArceeForQuestionAnswering): ``qa_outputs`` [2, D] with bias.
    The backbone sits under ``transformer.`` in the state dict, as in transformers."""

    prefix = "transformer."

    @classmethod
    def head_shapes(cls, config):
        return {"qa_outputs.weight": (2, config.hidden_size), "qa_outputs.bias": (2,)}

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=False,
                 output_hidden_states=False):
        """input_ids [B, T] -> QuestionAnsweringModelOutput with start_logits, end_logits [B, T] and, when both
        start_positions and end_positions ([B] integers) are given, the mean of the two cross-entropies;
        positions are clamped to [0, T] and T (past the end) is ignored."""
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, False,
                                  output_attentions, output_hidden_states)
        positions = [check_span_positions(name, value, inputs.batch, self.xp) for name, value in
                     (("start_positions", start_positions), ("end_positions", end_positions)) if value is not None]
        return self._forward(inputs, positions)

    def _forward(self, inputs: ForwardInputs, positions=()):
        out = self._run_backbone(inputs)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["qa_outputs.weight"],
                                         self.head_params["qa_outputs.bias"]))  # [B, T, 2]
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, positions))
        start_logits, end_logits = split_start_end(logits)
        loss = question_answering_loss(start_logits, end_logits, *positions) if len(positions) == 2 else None
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)


class ArceeForTokenClassification(ArceePreTrainedModel):
    """The decoder with a per-token classifier (transformers' ArceeForTokenClassification): ``score``
    [num_labels, D], with a bias when ``config.token_classification_bias`` (the default). Dropout before the
    head is an identity: arcee_np always runs in inference mode."""

    @classmethod
    def head_shapes(cls, config):
        shapes = {"score.weight": (config.num_labels, config.hidden_size)}
        if config.token_classification_bias:
            shapes["score.bias"] = (config.num_labels,)
        return shapes

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, labels=None, use_cache=None, output_attentions=False, output_hidden_states=False):
        """input_ids [B, T] -> TokenClassifierOutput with logits [B, T, num_labels] and, with labels [B, T]
        (class ids, -100 = ignored), the mean cross-entropy over the labelled tokens."""
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                  use_cache, output_attentions, output_hidden_states)
        if labels is not None:
            labels = check_token_labels(labels, inputs, self.config.num_labels, "num_labels", self.xp)
        return self._forward(inputs, labels)

    def _forward(self, inputs: ForwardInputs, labels=None):
        out = self._run_backbone(inputs)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["score.weight"],
                                         self.head_params.get("score.bias")))  # [B, T, C]
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, labels))
        loss = None if labels is None else token_classification_loss(logits, labels)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
