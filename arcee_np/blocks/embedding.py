"""Token embedding: a row lookup in the embedding matrix."""

from .namespace import array_namespace


def embed(input_ids, weight):
    """``h[b, t] = weight[input_ids[b, t]]``.

    input_ids: [B, T] integers in [0, V); weight: [V, D]. Returns [B, T, D] in weight's dtype.
    """
    xp = array_namespace(input_ids, weight)
    batch, length = input_ids.shape
    rows = xp.take(weight, xp.reshape(input_ids, (-1,)), axis=0)  # [B*T, D]
    return xp.reshape(rows, (batch, length, weight.shape[1]))
