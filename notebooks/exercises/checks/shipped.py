"""The shipped Shakespeare model, its weights and arcee_np's traces, shared by every check."""

from __future__ import annotations

from functools import lru_cache

import arcee_np
import numpy as np
from arcee_np import ArceeForCausalLM
from arcee_np.io.tokenizer import ArceeTokenizer
from arcee_np.oracle.testing import reference_trace

TEXT = "ROMEO:\nBut, soft! what light through yonder window breaks?"
PADDED = ["JULIET:\nO Romeo, Romeo!", "ROMEO:\nShe speaks."]      # two lines, the shorter left-padded


# ---------------------------------------------------------------------------------------------- the shipped model
@lru_cache(maxsize=None)
def model() -> ArceeForCausalLM:
    return ArceeForCausalLM.from_pretrained(arcee_np.default_model_path())


@lru_cache(maxsize=None)
def tokenizer() -> ArceeTokenizer:
    return ArceeTokenizer.from_pretrained(arcee_np.default_model_path())


@lru_cache(maxsize=None)
def weights() -> dict:
    """Every weight of the shipped model as a NumPy array, named as in model.params (no ``model.`` prefix)."""
    return {name[len("model."):] if name.startswith("model.") else name: np.asarray(value)
            for name, value in model().state_dict().items()}


def layer_weights(layer: int) -> dict:
    """The weights of one layer, without the ``layers.{i}.`` prefix (``self_attn.q_proj.weight`` ...)."""
    prefix = f"layers.{layer}."
    return {name[len(prefix):]: value for name, value in weights().items() if name.startswith(prefix)}


@lru_cache(maxsize=None)
def reference():
    """arcee_np's trace of every named tensor on TEXT."""
    ids = np.array([tokenizer().encode(TEXT)])
    return reference_trace(model(), ids)


@lru_cache(maxsize=None)
def padded_reference():
    """arcee_np's trace of two left-padded lines (attention_mask in ``.inputs``; pad rows are not compared)."""
    batch = tokenizer()(PADDED, padding=True, padding_side="left", return_tensors="np")
    mask = batch["attention_mask"]
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return reference_trace(model(), batch["input_ids"], attention_mask=mask, position_ids=positions)


def shapes():
    c = model().config
    return c.num_attention_heads, c.num_key_value_heads, c.head_dim


def describe_ids(ids) -> str:
    return f"{ids.shape[1]} tokens of {TEXT!r} on the shipped model"


def softmax(s, axis=-1, dtype=np.float32):
    """exp(s - max s) / sum(exp(s - max s)) along ``axis``, computed in ``dtype``."""
    s = np.asarray(s, dtype=dtype)
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def token_words(ids) -> str:
    return ", ".join(repr(tokenizer().decode([int(i)])) for i in ids)


