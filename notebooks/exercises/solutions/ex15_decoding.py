"""Solutions: min-p filtering, one step of beam search (and a finished hypothesis' score), and the acceptance
rule of speculative sampling."""

import numpy as np


def softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def min_p_filter(scores, min_p):
    """Drop the tokens whose probability is below min_p times the row's largest probability."""
    probs = softmax(scores.astype(np.float64))                           # [B, V]
    threshold = min_p * probs.max(axis=-1, keepdims=True)                 # [B, 1]: relative to the best token
    return np.where(probs < threshold, -np.inf, scores)


def beam_step(log_probs, running_scores, num_beams):
    """The num_beams best continuations over every beam and token, best first."""
    vocab = log_probs.shape[-1]
    totals = (running_scores[:, None] + log_probs).reshape(-1)           # [K * V]: whole-sequence log-probs
    best = np.argsort(-totals, kind="stable")[:num_beams]                 # ties: the lower flat index first
    return totals[best], best // vocab, best % vocab                     # scores, origin beams, tokens


def hypothesis_score(sum_log_probs, generated_length, length_penalty):
    """A finished hypothesis: its summed log-probability over generated_length ** length_penalty."""
    return sum_log_probs / generated_length ** length_penalty


def draw(probs, u):
    """The first token (in vocabulary order) whose cumulative probability exceeds u."""
    cdf = np.cumsum(probs / probs.sum())
    return int(min(np.searchsorted(cdf, u, side="right"), len(probs) - 1))


def speculative_accept(candidates, p, q, u):
    """Keep draft token i while u[i] <= p_i / q_i; at the first rejection draw from max(p - q, 0)
    normalised, after k acceptances from p[k]; the draw uses u[k]."""
    k = len(candidates)
    for i, token in enumerate(candidates):
        if u[i] > p[i, token] / q[i, token]:                              # rejected, with probability 1 - p/q
            residual = np.maximum(p[i] - q[i], 0.0)
            return np.append(candidates[:i], draw(residual, u[k])).astype(np.int64), i
    return np.append(candidates, draw(p[k], u[k])).astype(np.int64), k
