"""Output heads over the final hidden state: which positions to keep, the LM head, sequence pooling, QA split."""

from .namespace import array_namespace

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


def last_non_pad_index(input_ids, pad_token_id):
    """Where sequence classification pools each row: the rightmost token that is not padding.

    ``idx_b = argmax_t(t * [input_ids[b, t] != pad_token_id])``: handles left and right padding alike; a row
    of only pads gives 0. The attention mask is not consulted (transformers does the same).
    input_ids: [B, T] integers; pad_token_id: int. Returns [B] int64.
    """
    xp = array_namespace(input_ids)
    positions = xp.arange(input_ids.shape[-1], dtype=xp.int64)  # [T]
    not_pad = xp.astype(input_ids != pad_token_id, xp.int64)  # [B, T]
    return xp.argmax(positions[None, :] * not_pad, axis=-1)


def pool_positions(logits, index):
    """``pooled[b] = logits[b, index[b]]``: one position per row.

    logits: [B, T, C]; index: [B] integers in [0, T). Returns [B, C].
    """
    xp = array_namespace(logits, index)
    gather = xp.broadcast_to(xp.astype(index, xp.int64)[:, None, None], (logits.shape[0], 1, logits.shape[2]))
    return xp.take_along_axis(logits, gather, axis=1)[:, 0, :]  # [B, 1, C] -> [B, C]


def split_start_end(logits):
    """Question answering: ``start_logits = logits[..., 0]``, ``end_logits = logits[..., 1]``.

    logits: [B, T, 2] (the ``qa_outputs`` projection). Returns (start_logits [B, T], end_logits [B, T]).
    """
    return logits[..., 0], logits[..., 1]
