"""The logits processors of transformers' ``generate`` (those that also run when decoding greedily or with
beams) as plain functions of xp arrays.

Each takes ``scores`` [B, V] (float32, any array-API backend) and what it needs of the sequence so far
(``input_ids`` [B, S] integers on the same backend, or plain numbers) and returns new scores [B, V].
transformers' order (``_get_logits_processor``): sequence_bias, repetition_penalty, no_repeat_ngram_size,
bad_words_ids, min_length, min_new_tokens, forced_bos_token_id, forced_eos_token_id, remove_invalid_values,
exponential_decay_length_penalty, suppress_tokens, begin_suppress_tokens; then the sampling warpers
(warpers.py); renormalize_logits last. The n-gram and sequence matching runs on the host (token ids only).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_device, to_numpy
from ..blocks.namespace import array_namespace
from .warpers import log_softmax

NEG_INF = -math.inf


def token_presence(input_ids, vocab_size: int, ignore_before=None):
    """``present[b, v]``: does token ``v`` occur in row ``b`` of ``input_ids`` (from ``ignore_before[b]`` on)?

    input_ids: [B, S] integers; ignore_before: [B] integers or None (left-padding lengths: those positions
    are skipped). Returns [B, V] bool. Compares in chunks of positions so memory stays near B * V * 4096.
    """
    xp = array_namespace(input_ids)
    batch, length = input_ids.shape
    vocab = xp.arange(vocab_size, dtype=input_ids.dtype)  # [V]
    positions = xp.arange(length, dtype=xp.int64)  # [S]
    present = xp.zeros((batch, vocab_size), dtype=xp.bool)
    chunk = max(1, (1 << 24) // max(1, batch * vocab_size))
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        ids = input_ids[:, start:stop]  # [B, c]
        hits = ids[:, :, None] == vocab[None, None, :]  # [B, c, V]
        if ignore_before is not None:
            counted = positions[None, start:stop] >= ignore_before[:, None]  # [B, c]
            hits = hits & counted[:, :, None]
        present = present | xp.any(hits, axis=1)
    return present


def repetition_penalty(scores, input_ids, penalty: float, ignore_before=None):
    """Penalise every token already in the sequence, once however often it occurs (CTRL's penalty):
    ``s < 0 ? s * penalty : s / penalty``.

    scores: [B, V]; input_ids: [B, S] (prompt and generated tokens); ignore_before: [B] left-padding
    lengths (those positions are not counted, as transformers v5 does) or None. Returns [B, V].
    """
    xp = array_namespace(scores, input_ids)
    present = token_presence(input_ids, scores.shape[-1], ignore_before)
    penalised = xp.where(scores < 0, scores * penalty, scores / penalty)
    return xp.where(present, penalised, scores)


def token_mask(xp, vocab_size: int, token_ids):
    """[V] bool: True at each id of ``token_ids`` (a list of ints)."""
    vocab = xp.arange(vocab_size, dtype=xp.int64)
    hit = xp.zeros(vocab_size, dtype=xp.bool)
    for token in token_ids:
        hit = hit | (vocab == token)
    return hit


def suppress_tokens(scores, token_ids):
    """``scores[:, token_ids] = -inf`` (suppress_tokens; min_length, min_new_tokens and
    begin_suppress_tokens use it while they apply). scores: [B, V]; token_ids: a list of ints. Returns [B, V]."""
    xp = array_namespace(scores)
    hit = token_mask(xp, scores.shape[-1], token_ids)
    return xp.where(hit[None, :], xp.asarray(NEG_INF, dtype=scores.dtype), scores)


def force_tokens(scores, token_ids):
    """Every score -inf except ``token_ids``, which get 0 (forced_bos_token_id at the first position,
    forced_eos_token_id at the last). scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    hit = token_mask(xp, scores.shape[-1], token_ids)
    return xp.where(hit[None, :], xp.zeros_like(scores), xp.full_like(scores, NEG_INF))


def banned_ngram_tokens(input_ids: np.ndarray, ngram_size: int, vocab_size: int) -> np.ndarray:
    """``banned[b, v]``: would token ``v`` repeat an n-gram (n = ngram_size) already in row ``b``? The last
    n - 1 tokens are the prefix; every earlier window ``w`` of n tokens whose first n - 1 equal it bans
    ``w[-1]``. input_ids: [B, S] host integers. Returns [B, V] bool (all False while S < n)."""
    batch, length = input_ids.shape
    banned = np.zeros((batch, vocab_size), dtype=bool)
    if length < ngram_size:
        return banned
    windows = np.lib.stride_tricks.sliding_window_view(input_ids, ngram_size, axis=1)  # [B, S - n + 1, n]
    prefix = input_ids[:, length + 1 - ngram_size:]  # [B, n - 1]
    matches = (windows[:, :, :-1] == prefix[:, None, :]).all(axis=-1)  # [B, S - n + 1]
    rows, where = np.nonzero(matches)
    tokens = windows[rows, where, -1]
    inside = tokens < vocab_size
    banned[rows[inside], tokens[inside]] = True
    return banned


def no_repeat_ngram(scores, input_ids, ngram_size: int):
    """transformers' NoRepeatNGramLogitsProcessor: the tokens that would repeat an n-gram get -inf.
    scores: [B, V]; input_ids: [B, S]. Returns [B, V]."""
    xp = array_namespace(scores)
    banned = banned_ngram_tokens(np.asarray(to_numpy(input_ids)), ngram_size, scores.shape[-1])
    return xp.where(to_device(banned, xp), xp.asarray(NEG_INF, dtype=scores.dtype), scores)


def sequence_bias_of(input_ids: np.ndarray, biases: dict, vocab_size: int) -> np.ndarray:
    """The bias each token gets: ``biases`` maps a token sequence (a tuple) to a float; a 1-token sequence
    always biases its token; a longer one biases its last token in the rows whose last tokens equal the rest.
    Biases of one token add up (float32). input_ids: [B, S] host ints. Returns [B, V] float32."""
    batch, length = input_ids.shape
    bias = np.zeros((batch, vocab_size), dtype=np.float32)
    for sequence, value in biases.items():
        if len(sequence) == 1:
            bias[:, sequence[0]] = value
    for sequence, value in biases.items():
        prefix = sequence[:-1]
        if len(sequence) > 1 and len(prefix) <= length:
            matching = (input_ids[:, length - len(prefix):] == np.asarray(prefix)).all(axis=-1)  # [B]
            bias[:, sequence[-1]] += np.where(matching, np.float32(value), np.float32(0.0))
    return bias


def sequence_bias(scores, input_ids, biases: dict):
    """transformers' SequenceBiasLogitsProcessor: ``scores + bias`` (sequence_bias_of); bad_words_ids is the
    same with every bias -inf. scores: [B, V]; input_ids: [B, S]; biases: {tuple of ids: float}. Returns [B, V]."""
    xp = array_namespace(scores)
    return scores + to_device(sequence_bias_of(np.asarray(to_numpy(input_ids)), biases, scores.shape[-1]), xp)


def exponential_decay_length_penalty(scores, length: int, start: int, factor: float, eos_token_id):
    """transformers' ExponentialDecayLengthPenalty: once the sequence is longer than ``start`` (prompt
    length + the configured start), the eos scores grow by ``|s| * (factor ** (length - start) - 1)``
    (non-finite eos scores unchanged). scores: [B, V]; length: the current sequence length. Returns [B, V]."""
    if length <= start:
        return scores
    xp = array_namespace(scores)
    hit = token_mask(xp, scores.shape[-1], eos_token_id)[None, :]
    penalty = xp.abs(scores) * xp.asarray(factor ** (length - start) - 1, dtype=scores.dtype)
    return scores + xp.where(hit & xp.isfinite(scores), penalty, xp.zeros_like(scores))


def remove_invalid_values(scores):
    """transformers' InfNanRemoveLogitsProcessor: NaN -> 0, +inf -> the dtype's largest, -inf -> its
    smallest finite value. scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    info = xp.finfo(scores.dtype)
    out = xp.where(xp.isnan(scores), xp.zeros_like(scores), scores)
    out = xp.where(scores == math.inf, xp.asarray(info.max, dtype=scores.dtype), out)
    return xp.where(scores == -math.inf, xp.asarray(info.min, dtype=scores.dtype), out)


def renormalize(scores):
    """transformers' LogitNormalization (renormalize_logits): ``log_softmax(scores)``. Returns [B, V]."""
    return log_softmax(scores)
