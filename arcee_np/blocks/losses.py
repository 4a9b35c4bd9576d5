"""Losses of transformers' Arcee heads: cross-entropy with ignore_index, and the shifted causal-LM loss."""

from array_api_compat import array_namespace

IGNORE_INDEX = -100


def log_softmax(logits, axis=-1):
    """``s - max s - log(sum exp(s - max s))``. logits: any shape. Returns the same shape."""
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX):
    """Mean of ``-log softmax(logits)[label]`` over the rows whose label is not ``ignore_index``.

    Computed in float32 (float64 stays float64), as transformers upcasts logits for the loss. With every
    row ignored the mean is 0/0 = NaN, as in PyTorch.
    logits: [N, C]; labels: [N] integers. Returns a 0-d array.
    """
    xp = array_namespace(logits, labels)
    work = logits if logits.dtype == xp.float64 else xp.astype(logits, xp.float32, copy=False)
    counted = labels != ignore_index  # [N]
    safe = xp.where(counted, labels, xp.zeros_like(labels))  # [N] any valid index where ignored
    picked = xp.take_along_axis(log_softmax(work), xp.astype(safe, xp.int64)[:, None], axis=1)[:, 0]  # [N]
    total = xp.sum(xp.where(counted, -picked, xp.zeros_like(picked)))
    return total / xp.sum(xp.astype(counted, work.dtype))


def causal_lm_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """Next-token cross-entropy: logits at position t are scored against ``labels[:, t + 1]``.

    logits: [B, T, V]; labels: [B, T] with ``ignore_index`` where no loss is wanted. Returns a 0-d array.
    """
    xp = array_namespace(logits, labels)
    vocab = logits.shape[-1]
    shifted_logits = xp.reshape(logits[:, :-1, :], (-1, vocab))  # [B*(T-1), V]
    shifted_labels = xp.reshape(labels[:, 1:], (-1,))  # [B*(T-1)]
    return cross_entropy(shifted_logits, shifted_labels, ignore_index)
