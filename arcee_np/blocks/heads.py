"""Output heads over the final hidden state: which positions to keep, the LM head, sequence pooling, QA split."""

from .namespace import array_namespace

from .linear import linear, linear_backward


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


# ---------------------------------------------------------------------------------------------- backward


def keep_positions_backward(grad, length, logits_to_keep):
    """The vector-Jacobian product of keep_positions: the kept rows' gradients back in place, 0 elsewhere.

    grad: [B, T', D]; length: T (the full sequence length); logits_to_keep: as for keep_positions (an int,
    or a 1-D integer array; a position kept twice collects both gradients). Returns [B, T, D].
    """
    xp = array_namespace(grad)
    batch, kept, features = grad.shape
    if isinstance(logits_to_keep, int):
        if kept == length:
            return grad
        return xp.concat([xp.zeros((batch, length - kept, features), dtype=grad.dtype), grad], axis=1)
    chosen = xp.astype(xp.arange(length)[None, :] == xp.astype(logits_to_keep, xp.int64)[:, None], grad.dtype)
    return xp.matrix_transpose(chosen) @ grad  # [T, T'] @ [B, T', D] -> [B, T, D]


def lm_head_backward(grad, hidden, weight, logits_to_keep=0):
    """The vector-Jacobian product of lm_head: ``dhidden = keep^T(grad @ weight)``, ``dweight = grad^T h``.

    grad: [B, T', V]; hidden: [B, T, D]; weight: [V, D]. With tied embeddings ``dweight`` is the head's share
    of the embedding matrix's gradient (add the embedding's own). Returns (dhidden [B, T, D], dweight [V, D]).
    """
    dkept, dweight, _ = linear_backward(grad, keep_positions(hidden, logits_to_keep), weight)
    return keep_positions_backward(dkept, hidden.shape[1], logits_to_keep), dweight


def pool_positions_backward(grad, index, length):
    """The vector-Jacobian product of pool_positions: row ``b``'s gradient at position ``index[b]``, 0 elsewhere.

    grad: [B, C]; index: [B] integers in [0, T); length: T. Returns [B, T, C].
    """
    xp = array_namespace(grad, index)
    chosen = xp.arange(length)[None, :] == xp.astype(index, xp.int64)[:, None]  # [B, T]
    return xp.where(chosen[:, :, None], grad[:, None, :], xp.zeros((), dtype=grad.dtype))


def split_start_end_backward(grad_start, grad_end):
    """The vector-Jacobian product of split_start_end: the two gradients stacked back into [B, T, 2].

    grad_start, grad_end: [B, T]. Returns [B, T, 2].
    """
    xp = array_namespace(grad_start, grad_end)
    return xp.stack([grad_start, grad_end], axis=-1)
