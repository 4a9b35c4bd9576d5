"""The logit lens: each layer's residual stream read out through the final norm and the LM head.

``lens = logit_lens(model, t)`` takes a trace of ``model``'s forward that holds ``embed`` and every
``layers.{i}.out`` (``trace(LAYER_LEVEL)`` records them) and returns, per stage,
``lm_head(RMSNorm(h_i))`` [B, T, V]: what the model would predict if it stopped after that layer. The last
layer's lens is the model's logits exactly (the same norm and head on the same tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy
from ..blocks import lm_head, rms_norm
from ..errors import InputError


@dataclass
class LogitLens:
    """names: the stages read (``embed``, ``layers.0.out`` ...); logits: [stages, B, T, V] on the host."""

    names: list
    logits: np.ndarray

    def probabilities(self) -> np.ndarray:
        """softmax over the vocabulary, in float64: [stages, B, T, V]."""
        work = self.logits.astype(np.float64)
        work = np.exp(work - work.max(axis=-1, keepdims=True))
        return work / work.sum(axis=-1, keepdims=True)

    def top_tokens(self) -> np.ndarray:
        """The most likely next token at each stage and position: [stages, B, T] integers."""
        return self.logits.argmax(axis=-1)

    def probability_of(self, tokens) -> np.ndarray:
        """The probability each stage gives to ``tokens`` ([B, T] ids, e.g. the final layer's choices):
        [stages, B, T]."""
        tokens = np.asarray(tokens)
        probs = self.probabilities()
        return np.take_along_axis(probs, np.broadcast_to(tokens[None, ..., None], probs.shape[:-1] + (1,)),
                                  axis=-1)[..., 0]


def logit_lens(model, recorded, stages=None) -> LogitLens:
    """Read ``recorded`` (a Trace or ``{name: array}`` of ``model``'s forward) through ``model``'s final norm
    and LM head: ``logits_i = lm_head(RMSNorm(h_i))`` for ``h_i`` = ``embed`` and each ``layers.{i}.out``
    (or the names in ``stages``). model: an ArceeForCausalLM (its ``norm.weight`` and LM head weight)."""
    if not hasattr(model, "lm_head_weight"):
        raise InputError(f"logit_lens needs a causal LM with an LM head (ArceeForCausalLM); got "
                         f"{type(model).__name__}.")
    config = model.config
    names = list(stages) if stages is not None else ["embed"] + [f"layers.{i}.out"
                                                                for i in range(config.num_hidden_layers)]
    missing = [name for name in names if name not in recorded]
    if missing:
        raise InputError(f"logit_lens: the trace lacks {', '.join(missing[:3])}; record them with "
                         f"trace(LAYER_LEVEL) (from arcee_np.trace) or trace('*').")
    xp = model.xp
    norm = model.params["norm.weight"]
    out = []
    for name in names:
        h = recorded[name]
        h = h if isinstance(h, type(norm)) else xp.asarray(to_numpy(h))
        out.append(to_numpy(lm_head(rms_norm(h, norm, config.rms_norm_eps), model.lm_head_weight)))
    return LogitLens(names, np.stack(out))
