"""Solutions: the sampling step (temperature, top-k, top-p, the draw) and the loss."""

import numpy as np


def softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def apply_temperature(scores, temperature):
    """scores / temperature. scores [B, V]."""
    return scores / temperature


def top_k_filter(scores, k):
    """Keep the k largest scores of each row (ties with the k-th too); the rest become -inf."""
    kth = np.sort(scores, axis=-1)[:, -k][:, None]             # [B, 1]: the k-th largest
    return np.where(scores < kth, -np.inf, scores)


def top_p_filter(scores, p):
    """Keep the smallest set of most likely tokens whose probability reaches p; the rest become -inf."""
    order = np.argsort(-scores, axis=-1, kind="stable")         # most likely first (ties: lower id first)
    probs = np.take_along_axis(softmax(scores.astype(np.float64)), order, axis=-1)
    before = np.cumsum(probs, axis=-1) - probs                  # the mass of the tokens ranked above each one
    keep_sorted = before < p
    keep_sorted[:, 0] = True                                    # the most likely token always stays
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)        # back to vocabulary order
    return np.where(keep, scores, -np.inf)


def draw(scores, u):
    """For each row, the first token (in vocabulary order) whose cumulative probability exceeds u[b]."""
    cdf = np.cumsum(softmax(scores.astype(np.float64)), axis=-1)   # [B, V]; -inf scores add 0
    return np.argmax(cdf > u[:, None] * cdf[:, -1:], axis=-1)


def sample_next(scores, temperature, top_k, top_p, u):
    """transformers' order: temperature, top-k (0: off), top-p (1.0: off), then the draw."""
    scores = apply_temperature(scores, temperature)
    if top_k > 0:
        scores = top_k_filter(scores, top_k)
    if top_p < 1.0:
        scores = top_p_filter(scores, top_p)
    return draw(scores, u)


def log_softmax(logits):
    """s - max s - log(sum(exp(s - max s))) over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def causal_lm_loss(logits, labels, ignore_index=-100):
    """Mean of -log p(token t+1 | tokens up to t) over the labels that are not ignore_index."""
    logits, labels = logits[:, :-1].astype(np.float32), labels[:, 1:]      # position t predicts token t + 1
    counted = labels != ignore_index
    logp = log_softmax(logits)[counted]                                     # [N, V]
    return -np.mean(logp[np.arange(len(logp)), labels[counted]])
