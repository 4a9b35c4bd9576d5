"""Token windows for training and the held-out loss of a causal LM, over NumPy arrays of token ids.

Training batches are random windows ``[bos] + (seq_len - 1)`` tokens; the held-out loss cuts the ids into
consecutive windows of the same shape, so every token is scored exactly once (the first of a window from
bos alone), and reports nats per token.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy


def random_windows(ids: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator, bos_token_id: int,
                   starts: np.ndarray | None = None) -> np.ndarray:
    """[batch_size, seq_len] training windows: ``bos`` then ``seq_len - 1`` consecutive tokens of ``ids``.

    starts: the allowed first positions (e.g. where a speech begins); default every position that leaves a
    full window. ids must hold at least ``seq_len - 1`` tokens.
    """
    n = seq_len - 1
    if starts is None:
        starts = np.arange(len(ids) - n + 1)
    chosen = starts[rng.integers(0, len(starts), size=batch_size)]
    rows = np.stack([ids[s : s + n] for s in chosen]).astype(np.int64)  # [B, seq_len - 1]
    return np.concatenate([np.full((batch_size, 1), bos_token_id, dtype=np.int64), rows], axis=1)


def eval_batches(ids: np.ndarray, seq_len: int, bos_token_id: int, pad_token_id: int, batch_size: int = 16,
                 max_windows: int | None = None):
    """``ids`` cut into consecutive windows ``[bos] + (seq_len - 1)`` tokens, yielded as padded batches
    ``(input_ids [b, <= seq_len], attention_mask)`` of up to ``batch_size`` windows (the last window may be short)."""
    n = seq_len - 1
    chunks = [ids[i : i + n] for i in range(0, len(ids), n)][:max_windows]
    for i in range(0, len(chunks), batch_size):
        group = chunks[i : i + batch_size]
        width = max(len(c) for c in group)
        x = np.full((len(group), width + 1), pad_token_id, dtype=np.int64)
        mask = np.zeros_like(x)
        x[:, 0] = bos_token_id
        for r, c in enumerate(group):
            x[r, 1 : len(c) + 1] = c
            mask[r, : len(c) + 1] = 1
        yield x, mask


def next_token_nll(logits, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[float, int]:
    """The summed next-token negative log-likelihood (nats, in float64) over the valid targets of one batch,
    and how many there are. logits: [b, t, V] (any array; read on the host); input_ids, attention_mask: [b, t]."""
    logits = np.asarray(to_numpy(logits))[:, :-1].astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, input_ids[:, 1:, None], axis=-1)[..., 0]
    valid = attention_mask[:, 1:].astype(bool)
    return float(nll[valid].sum()), int(valid.sum())


def heldout_loss(model, ids: np.ndarray, seq_len: int, bos_token_id: int, pad_token_id: int,
                 max_windows: int | None = None) -> tuple[float, int]:
    """``(summed nats, tokens)`` of an arcee_np causal LM on ``ids`` (eval_batches; no gradients, no cache);
    the mean loss is their ratio."""
    total, count = 0.0, 0
    for x, mask in eval_batches(ids, seq_len, bos_token_id, pad_token_id, max_windows=max_windows):
        s, c = next_token_nll(model(x, attention_mask=mask, use_cache=False).logits, x, mask)
        total, count = total + s, count + c
    return total, count
