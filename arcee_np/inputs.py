"""Checking and converting a forward call's inputs before any work, with errors that name the fix."""

from __future__ import annotations

import warnings

import numpy as np

from .backend import to_device, to_numpy


def _host(x, name: str) -> np.ndarray:
    """``x`` as a NumPy array for checking (cheap for the small integer inputs this is used on)."""
    try:
        return to_numpy(x) if not isinstance(x, (list, tuple)) else np.asarray(x)
    except Exception as err:
        raise TypeError(f"{name} must be an array (NumPy or the model's backend), got {type(x).__name__}.") from err


def _integer_matrix(x, name: str) -> np.ndarray:
    host = _host(x, name)
    if host.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {host.dtype}; convert with .astype('int64').")
    if host.ndim != 2:
        hint = f" Add the batch axis: {name}[None, :]." if host.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D [batch, seq], got shape {tuple(host.shape)}.{hint}")
    return host


def check_inputs(config, xp, dtype, input_ids=None, inputs_embeds=None, attention_mask=None,
                 position_ids=None, past_length=0, labels=None):
    """Validate a forward call and move its arrays to the model's namespace.

    Returns (input_ids, inputs_embeds, attention_mask, position_ids, labels) as ``xp`` arrays (None where
    not given). Raises ValueError/TypeError naming the argument and the fix.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids ([batch, seq] token ids) or inputs_embeds "
                         "([batch, seq, hidden_size]); got " + ("both." if input_ids is not None else "neither."))
    if input_ids is not None:
        ids = _integer_matrix(input_ids, "input_ids")
        batch, length = ids.shape
        if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
            bad = ids[(ids < 0) | (ids >= config.vocab_size)]
            raise ValueError(f"input_ids must lie in [0, vocab_size={config.vocab_size}); found {bad[:5].tolist()}. "
                             f"Check the tokenizer matches the model.")
        input_ids = to_device(ids.astype(np.int64, copy=False), xp)
    else:
        shape = tuple(inputs_embeds.shape)
        if len(shape) != 3 or shape[2] != config.hidden_size:
            raise ValueError(f"inputs_embeds must be [batch, seq, hidden_size={config.hidden_size}], got {shape}.")
        batch, length = shape[:2]
        inputs_embeds = to_device(inputs_embeds, xp, dtype)
    if length == 0:
        raise ValueError("the input sequence is empty: give at least one token.")
    total = past_length + length
    if attention_mask is not None:
        # a 4-D additive mask is float [B, 1, T, S]: check its shape only, never copy it to the host
        mask = attention_mask if len(getattr(attention_mask, "shape", ())) == 4 else _host(attention_mask,
                                                                                             "attention_mask")
        if mask.ndim == 2:
            if mask.shape != (batch, total):
                raise ValueError(
                    f"attention_mask must be [batch, past + seq] = [{batch}, {total}] (it covers the cached tokens "
                    f"too), got {tuple(mask.shape)}."
                )
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("a 2-D attention_mask holds 1 for tokens and 0 for padding; found other values.")
            attention_mask = to_device(mask.astype(np.int64, copy=False), xp)
        elif mask.ndim == 4:
            if tuple(mask.shape) not in ((batch, 1, length, total), (1, 1, length, total)):
                raise ValueError(f"a 4-D attention_mask must be additive [batch, 1, seq, past + seq] = "
                                 f"[{batch}, 1, {length}, {total}], got {tuple(mask.shape)}.")
            attention_mask = to_device(mask, xp, dtype)
        else:
            raise ValueError(f"attention_mask must be 2-D [batch, past + seq] or 4-D additive, got shape "
                             f"{tuple(mask.shape)}.")
    if position_ids is not None:
        pos = _integer_matrix(position_ids, "position_ids")
        if pos.shape not in ((batch, length), (1, length)):
            raise ValueError(f"position_ids must be [batch, seq] = [{batch}, {length}] or [1, {length}], "
                             f"got {tuple(pos.shape)}.")
        if pos.size and pos.min() < 0:
            raise ValueError("position_ids must be non-negative.")
        top = int(pos.max()) + 1
        position_ids = to_device(pos.astype(np.int64, copy=False), xp)
    else:
        top = total
    if top > config.max_position_embeddings:
        warnings.warn(f"positions reach {top}, past max_position_embeddings={config.max_position_embeddings}: "
                      f"the model was not trained that far and its output may degrade.", stacklevel=3)
    if labels is not None:
        lab = _integer_matrix(labels, "labels")
        if lab.shape != (batch, length):
            raise ValueError(f"labels must be [batch, seq] = [{batch}, {length}], got {tuple(lab.shape)}.")
        labels = to_device(lab.astype(np.int64, copy=False), xp)
    return input_ids, inputs_embeds, attention_mask, position_ids, labels
