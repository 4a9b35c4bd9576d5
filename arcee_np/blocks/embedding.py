"""Token embedding: a row lookup in the embedding matrix."""

from .namespace import array_namespace
from .precision import as_dtype
from .stored import is_stored


def embed(input_ids, weight, dtype=None):
    """``h[b, t] = weight[input_ids[b, t]]``.

    input_ids: [B, T] integers in [0, V); weight: [V, D], an array or a stored weight (blocks/stored.py: only
    the gathered rows are widened); dtype: the result's dtype (default: the weight's). Returns [B, T, D].
    """
    xp = array_namespace(input_ids)
    flat = xp.reshape(input_ids, (-1,))  # [B*T]
    rows = weight.widened_take(flat) if is_stored(weight) else xp.take(weight, flat, axis=0)  # [B*T, D]
    rows = as_dtype(rows, weight.dtype if dtype is None else dtype)
    return xp.reshape(rows, (*input_ids.shape, weight.shape[1]))


def embed_backward(grad, input_ids, num_embeddings, padding_idx=None):
    """The vector-Jacobian product of embed: every row of the matrix collects the gradients of the
    positions that read it, ``dweight[v] = sum over (b, t) with input_ids[b, t] == v of grad[b, t]``.

    The array API has no scatter-add, so the sum is built from sorting and running sums: sort the positions
    by token id, take the cumulative sum of their gradient rows (in float64, so the differences below lose
    nothing for float32 gradients), and read each token's sum as the difference of the running sum at the
    two ends of its run (``searchsorted``); ids that never occur get 0. The row of ``padding_idx`` (the
    pad token of ``nn.Embedding(..., padding_idx)``) gets no gradient, as in transformers.

    grad: [B, T, D]; input_ids: [B, T] integers in [0, V); num_embeddings: V; padding_idx: int or None.
    Returns [V, D] in grad's dtype.
    """
    xp = array_namespace(grad, input_ids)
    ids = xp.reshape(input_ids, (-1,))  # [N]
    order = xp.argsort(ids, stable=True)
    sorted_ids = xp.take(ids, order)
    rows = xp.astype(xp.take(xp.reshape(grad, (-1, grad.shape[-1])), order, axis=0), xp.float64)  # [N, D]
    running = xp.cumulative_sum(rows, axis=0, include_initial=True)  # [N + 1, D]; row i = sum of rows < i
    vocabulary = xp.arange(num_embeddings, dtype=sorted_ids.dtype)
    if padding_idx is not None:
        vocabulary = xp.where(vocabulary == padding_idx, xp.asarray(-1, dtype=sorted_ids.dtype), vocabulary)
    first = xp.searchsorted(sorted_ids, vocabulary, side="left")  # [V]: where each id's run starts ...
    last = xp.searchsorted(sorted_ids, vocabulary, side="right")  # ... and ends (equal when it never occurs)
    sums = xp.take(running, last, axis=0) - xp.take(running, first, axis=0)  # [V, D]
    return xp.astype(sums, grad.dtype)
