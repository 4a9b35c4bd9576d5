"""Output heads over the final hidden state: which positions to keep, and the LM head."""

from array_api_compat import array_namespace

from .linear import linear


def keep_positions(hidden, logits_to_keep):
    """The positions a head is applied to, as transformers' ``logits_to_keep``.

    An int ``k`` keeps the last ``k`` positions (``0`` keeps all); a 1-D integer array keeps those indices.
    hidden: [B, T, D]. Returns [B, T', D].
    """
    if isinstance(logits_to_keep, int):
        return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:, :]
    xp = array_namespace(hidden, logits_to_keep)
    return xp.take(hidden, logits_to_keep, axis=1)


def lm_head(hidden, weight, logits_to_keep=0):
    """``logits = hidden[:, keep] @ weight.T``: no bias, no scaling, in the activation dtype.

    hidden: [B, T, D]; weight: [V, D] (the embedding matrix when tied). Returns [B, T', V].
    """
    return linear(keep_positions(hidden, logits_to_keep), weight)
