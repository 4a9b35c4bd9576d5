"""Output records with transformers' field names; fields are read as attributes or ``out["logits"]``."""

from __future__ import annotations

from dataclasses import dataclass, fields


class ModelOutput:
    """Base of the output dataclasses: attribute access, ``out["name"]``, ``keys()`` of the set fields."""

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(f"{key!r} is not set on this output; set fields: {', '.join(self.keys())}")
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    """ArceeModel: ``last_hidden_state`` [B, T, D] (after the final norm); ``past_key_values`` KVCache;
    ``hidden_states`` L + 1 arrays [B, T, D]; ``attentions`` L arrays [B, H, T, S]."""

    last_hidden_state: object = None
    past_key_values: object = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class _LogitsOutputWithPast(ModelOutput):
    """The fields a head with logits and a KV cache returns (the two classes below differ only in the logits'
    shape): ``loss``, ``logits``, ``past_key_values``, ``hidden_states``, ``attentions``."""

    loss: object = None
    logits: object = None
    past_key_values: object = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class CausalLMOutputWithPast(_LogitsOutputWithPast):
    """ArceeForCausalLM: ``loss`` 0-d (when labels are given); ``logits`` [B, T', V]; the rest as above."""


@dataclass
class SequenceClassifierOutputWithPast(_LogitsOutputWithPast):
    """ArceeForSequenceClassification: ``loss`` 0-d (when labels are given); ``logits`` [B, num_labels] (pooled
    at each row's last non-pad token); ``past_key_values`` KVCache; ``hidden_states``, ``attentions`` as above."""


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    """ArceeForQuestionAnswering: ``loss`` 0-d (when start and end positions are given); ``start_logits`` and
    ``end_logits`` [B, T]; ``hidden_states``, ``attentions`` as above."""

    loss: object = None
    start_logits: object = None
    end_logits: object = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    """ArceeForTokenClassification: ``loss`` 0-d (when labels are given); ``logits`` [B, T, num_labels];
    ``hidden_states``, ``attentions`` as above."""

    loss: object = None
    logits: object = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
