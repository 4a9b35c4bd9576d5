"""Token embedding: a row lookup in the embedding matrix."""

from .namespace import array_namespace
from .precision import as_dtype


def embed(input_ids, weight, dtype=None):
    """``h[b, t] = weight[input_ids[b, t]]``.

    input_ids: [B, T] integers in [0, V); weight: [V, D], an array or a stored weight (see ``linear``),
    of which only the gathered rows are widened; dtype: the result's dtype (default: the weight's).
    Returns [B, T, D].
    """
    xp = array_namespace(input_ids)
    batch, length = input_ids.shape
    flat = xp.reshape(input_ids, (-1,))  # [B*T]
    if hasattr(weight, "widened_take"):
        rows = weight.widened_take(flat)
    else:
        rows = xp.take(weight, flat, axis=0)  # [B*T, D]
    rows = as_dtype(rows, weight.dtype if dtype is None else dtype)
    return xp.reshape(rows, (batch, length, weight.shape[1]))
