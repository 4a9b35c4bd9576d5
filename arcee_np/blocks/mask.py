"""The additive attention mask: causal, padding, and packed sequences, as transformers builds it for eager.

Query row ``i`` of a step sits at cache index ``q = past_length + i``; it may attend key ``k`` iff
``k <= q`` and the key is not padding. Allowed entries are 0, masked ones the dtype's most negative
finite number, so adding the mask to the scores and taking the softmax removes the masked keys.
"""

from .namespace import array_namespace


def _additive(allowed, dtype):
    """0 where ``allowed``, ``finfo(dtype).min`` elsewhere. allowed: bool [B, 1, T, S]."""
    xp = array_namespace(allowed)
    zero = xp.zeros((), dtype=dtype)
    return xp.where(allowed, zero, xp.asarray(xp.finfo(dtype).min, dtype=dtype))


def causal_padding_mask(key_mask, query_length, dtype):
    """Additive mask for causal attention over a cache of ``S = key_mask.shape[1]`` keys.

    ``allowed[b, 0, i, k] = (k <= S - T + i) and key_mask[b, k]``: the last ``T`` keys are this step's
    queries, the ones before them the past.

    key_mask: [B, S] with 1 (or True) for real tokens and 0 for padding; query_length: T.
    Returns [B, 1, T, S] in ``dtype``.
    """
    xp = array_namespace(key_mask)
    key_length = key_mask.shape[1]
    query_index = xp.arange(key_length - query_length, key_length)[:, None]  # [T, 1] cache index of each query
    key_index = xp.arange(key_length)[None, :]  # [1, S]
    causal = key_index <= query_index  # [T, S]
    keep = xp.astype(key_mask, xp.bool)[:, None, None, :]  # [B, 1, 1, S]
    return _additive(causal[None, None, :, :] & keep, dtype)


def packed_segments(position_ids):
    """Segment index of every token when several sequences are packed into one row.

    A new segment starts wherever ``position_ids`` does not step by exactly 1, so
    ``[0,1,2,0,1]`` gives ``[0,0,0,1,1]``. position_ids: [B, T]. Returns [B, T] integers.
    """
    xp = array_namespace(position_ids)
    steps = position_ids[:, 1:] - position_ids[:, :-1]  # [B, T-1]
    starts = xp.astype(steps != 1, xp.int64)
    first = xp.zeros((position_ids.shape[0], 1), dtype=xp.int64)
    return xp.cumulative_sum(xp.concat([first, starts], axis=1), axis=1)


def packed_causal_mask(segments, dtype):
    """Block-diagonal causal mask: token ``i`` sees token ``k <= i`` of its own segment only.

    This is transformers' mask when ``position_ids`` are given with no attention mask and no cache.
    segments: [B, T] from packed_segments. Returns [B, 1, T, T] in ``dtype``.
    """
    xp = array_namespace(segments)
    length = segments.shape[1]
    causal = xp.arange(length)[None, :] <= xp.arange(length)[:, None]  # [T, T]
    same = segments[:, :, None] == segments[:, None, :]  # [B, T, T]
    return _additive((causal[None, :, :] & same)[:, None, :, :], dtype)
