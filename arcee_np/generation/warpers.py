"""The sampling warpers of transformers' ``generate`` as plain functions of xp arrays.

Each takes ``scores`` [B, V] (float32, any array-API backend) and returns new scores [B, V]: filtered entries
become ``filter_value`` (-inf), so they get probability 0. transformers applies them only when sampling, in
the order temperature, top_h, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff. Where transformers
sorts with torch's unstable sort, tied scores are ordered here by vocabulary id (the lower id first, as argmax).
"""

from __future__ import annotations

import math

from ..blocks.namespace import array_namespace

NEG_INF = -math.inf


def _filled(xp, remove, scores, filter_value):
    """``scores`` with the entries where ``remove`` [B, V] holds set to ``filter_value``."""
    return xp.where(remove, xp.asarray(filter_value, dtype=scores.dtype), scores)


def log_softmax(scores):
    """``s - max(s) - log(sum(exp(s - max(s))))`` per row. scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    shifted = scores - xp.max(scores, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(scores):
    """``exp(log_softmax(s))`` per row. scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    return xp.exp(log_softmax(scores))


def entropy(scores):
    """``H = -sum(p * log p)`` per row, terms with ``p = 0`` counted as 0 (torch's Categorical). Returns [B]."""
    xp = array_namespace(scores)
    logp = log_softmax(scores)
    p = xp.exp(logp)
    return -xp.sum(p * _finite_where_likely(xp, p, logp), axis=-1)


def _finite_where_likely(xp, p, logp):
    """``logp`` where ``p > 0``, else 0: the terms ``p log p`` of tokens with ``p = 0`` count 0 (not NaN)."""
    return xp.where(p > 0, logp, xp.zeros_like(logp))


def descending_order(values):
    """Per row, the indices that sort ``values`` [B, V] from largest to smallest, ties by lower index first."""
    xp = array_namespace(values)
    return xp.argsort(values, axis=-1, descending=True, stable=True)


def _keep_best(xp, remove, ranking, keep: int):
    """``remove`` [B, V] with the ``keep`` entries ranked highest by ``ranking`` [B, V] cleared."""
    best = descending_order(ranking)[:, :min(keep, ranking.shape[-1])]  # [B, keep]
    vocab = xp.arange(ranking.shape[-1], dtype=best.dtype)
    kept = xp.any(best[:, :, None] == vocab[None, None, :], axis=1)  # [B, V]
    return remove & ~kept


def apply_temperature(scores, temperature: float):
    """``scores / temperature``. scores: [B, V]. Returns [B, V]."""
    return scores / temperature


def top_k_filter(scores, top_k: int, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Keep the ``k = min(max(top_k, min_tokens_to_keep), V)`` largest scores of each row; the rest become
    ``filter_value``. Ties with the k-th largest value survive (the test is ``s < kth``).

    scores: [B, V]. Returns [B, V].
    """
    xp = array_namespace(scores)
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = xp.sort(scores, axis=-1, descending=True)[:, k - 1:k]  # [B, 1]
    return _filled(xp, scores < kth, scores, filter_value)


def top_p_filter(scores, top_p: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Nucleus filtering: sort each row ascending, ``cum = cumsum(softmax(sorted))``; drop the entries with
    ``cum <= 1 - top_p`` except the last ``min_tokens_to_keep`` (the most likely); dropped scores become
    ``filter_value``. Tied scores are ordered by vocabulary index, the lower index counting as more likely
    (so it is kept first, as argmax prefers it); transformers' torch.sort orders ties arbitrarily.

    scores: [B, V]. Returns [B, V].
    """
    xp = array_namespace(scores)
    order = xp.flip(descending_order(scores), axis=-1)  # [B, V] ascending
    ordered = xp.take_along_axis(scores, order, axis=-1)
    shifted = xp.exp(ordered - ordered[:, -1:])  # softmax; the last entry is the row's maximum
    cumulative = xp.cumulative_sum(shifted / xp.sum(shifted, axis=-1, keepdims=True), axis=-1)
    remove = cumulative <= (1 - top_p)  # [B, V] in sorted order
    keep_tail = xp.arange(scores.shape[-1]) >= scores.shape[-1] - min_tokens_to_keep  # [V]
    remove = remove & ~keep_tail[None, :]
    inverse = xp.argsort(order, axis=-1)  # [B, V]: where each vocabulary entry sits in the sorted row
    remove = xp.take_along_axis(remove, inverse, axis=-1)  # back to vocabulary order
    return _filled(xp, remove, scores, filter_value)


def min_p_filter(scores, min_p: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """min-p: with ``p = softmax(s)``, drop the tokens with ``p < min_p * max(p)``, keeping the
    ``min_tokens_to_keep`` most likely. scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    probs = softmax(scores)
    remove = probs < min_p * xp.max(probs, axis=-1, keepdims=True)
    return _filled(xp, _keep_best(xp, remove, probs, min_tokens_to_keep), scores, filter_value)


def typical_filter(scores, mass: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Locally typical sampling: rank tokens by ``|-log p - H|`` (H the entropy), ascending; keep the
    smallest prefix of that ranking whose probability reaches ``mass`` (the first token with cumulative
    probability >= mass included, and every token ranked as close as it), at least ``min_tokens_to_keep``.

    scores: [B, V]. Returns [B, V].
    """
    xp = array_namespace(scores)
    logp = log_softmax(scores)
    p = xp.exp(logp)
    ent = -xp.sum(p * _finite_where_likely(xp, p, logp), axis=-1, keepdims=True)  # torch's nansum of p log p
    shifted = xp.abs(-logp - ent)  # [B, V]
    order = xp.argsort(shifted, axis=-1, stable=True)  # ascending
    sorted_shifted = xp.take_along_axis(shifted, order, axis=-1)
    cumulative = xp.cumulative_sum(softmax(xp.take_along_axis(scores, order, axis=-1)), axis=-1)
    last = xp.sum(xp.astype(cumulative < mass, xp.int64), axis=-1, keepdims=True)
    last = xp.minimum(last, xp.asarray(scores.shape[-1] - 1, dtype=last.dtype))  # [B, 1]
    remove = sorted_shifted > xp.take_along_axis(sorted_shifted, last, axis=-1)
    remove = remove & (xp.arange(scores.shape[-1]) >= min_tokens_to_keep)[None, :]
    remove = xp.take_along_axis(remove, xp.argsort(order, axis=-1), axis=-1)
    return _filled(xp, remove, scores, filter_value)


def _cutoff(xp, scores, threshold, min_tokens_to_keep: int, filter_value: float):
    """Drop the tokens with ``softmax(s) < threshold`` ([B, 1]) that lie below the ``min_tokens_to_keep``-th
    largest score."""
    k = min(min_tokens_to_keep, scores.shape[-1])
    kth = xp.sort(scores, axis=-1, descending=True)[:, k - 1:k]
    return _filled(xp, (softmax(scores) < threshold) & (scores < kth), scores, filter_value)


def epsilon_filter(scores, epsilon: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Epsilon sampling: drop the tokens with probability below ``epsilon``. scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    return _cutoff(xp, scores, epsilon, min_tokens_to_keep, filter_value)


def eta_filter(scores, epsilon: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Eta sampling: drop the tokens with probability below ``eta = min(epsilon, sqrt(epsilon) * exp(-H))``
    (H the row's entropy; computed in float32 as transformers does). scores: [B, V]. Returns [B, V]."""
    xp = array_namespace(scores)
    eps = xp.asarray(epsilon, dtype=scores.dtype)
    eta = xp.minimum(eps, xp.sqrt(eps) * xp.exp(-entropy(scores)))[:, None]  # [B, 1]
    return _cutoff(xp, scores, eta, min_tokens_to_keep, filter_value)


def top_h_filter(scores, top_h: float, top_n: int = 100, filter_value: float = NEG_INF):
    """Top-H: among the ``top_n`` best tokens (sorted by score, descending), with ``p`` their softmax and
    ``tau = top_h * H(p)``, keep them while the running sum of ``-p log p`` stays <= tau (the best always).

    scores: [B, V]. Returns [B, V].
    """
    xp = array_namespace(scores)
    n = min(top_n, scores.shape[-1])
    best = descending_order(scores)[:, :n]  # [B, n]
    top_logits = xp.take_along_axis(scores, best, axis=-1)
    probs = softmax(top_logits)
    tau = entropy(top_logits)[:, None] * top_h
    # -p log p is NaN in torch where p = 0, and so is every later running sum: those tokens are not selected
    terms = xp.where(probs > 0, -probs * xp.log(xp.where(probs > 0, probs, xp.ones_like(probs))),
                     xp.full_like(probs, math.nan))
    selected = xp.cumulative_sum(terms, axis=-1) <= tau
    selected = selected | (xp.arange(n) == 0)[None, :]
    vocab = xp.arange(scores.shape[-1], dtype=best.dtype)
    keep = xp.any((best[:, :, None] == vocab[None, None, :]) & selected[:, :, None], axis=1)  # [B, V]
    return _filled(xp, ~keep, scores, filter_value)
