"""The attention mask: causal, padding, and packed sequences, as transformers builds it for eager.

Query row ``i`` of a step sits at cache index ``q = past_length + i``; it may attend key ``k`` iff
``k <= q``, the key is not padding and (packed rows) both belong to the same sequence. ``allowed`` states
that rule for any block of queries and keys, so the eager path builds the whole ``[B, 1, T, S]`` mask from
it and the tiled path only the tile at hand. In the additive form allowed entries are 0 and masked ones the
dtype's most negative finite number, so adding the mask to the scores and taking the softmax removes the
masked keys.

A forward step keeps its mask as its parts (``StepMask``, made by ``step_mask``): eager attention asks it
for the whole additive array, tiled attention builds each tile from the parts.
"""

from dataclasses import dataclass

from .namespace import array_namespace


def allowed(query_index, key_index, key_mask=None, query_segments=None, key_segments=None):
    """Which (query, key) pairs attention may use: causal order, padding, packed sequences.

    query_index: [Tq] cache indices of the queries; key_index: [Tk] cache indices of the keys; key_mask:
    [B, Tk] (1/True = token, 0 = padding) or None; query_segments, key_segments: [B, Tq] and [B, Tk]
    sequence numbers of packed rows, or None. Returns bool [B or 1, 1, Tq, Tk].
    """
    xp = array_namespace(query_index)
    keep = (key_index[None, :] <= query_index[:, None])[None, None, :, :]  # [1, 1, Tq, Tk]
    if key_mask is not None:
        keep = keep & xp.astype(key_mask, xp.bool)[:, None, None, :]  # [B, 1, Tq, Tk]
    if query_segments is not None:
        keep = keep & (query_segments[:, :, None] == key_segments[:, None, :])[:, None, :, :]
    return keep


def additive(keep, dtype):
    """0 where ``keep``, ``finfo(dtype).min`` elsewhere. keep: bool [B, 1, T, S]. Returns the same shape."""
    xp = array_namespace(keep)
    zero = xp.zeros((), dtype=dtype)
    return xp.where(keep, zero, xp.asarray(xp.finfo(dtype).min, dtype=dtype))


def causal_padding_mask(key_mask, query_length, dtype):
    """Additive mask for causal attention over a cache of ``S = key_mask.shape[1]`` keys.

    ``allowed[b, 0, i, k] = (k <= S - T + i) and key_mask[b, k]``: the last ``T`` keys are this step's
    queries, the ones before them the past.

    key_mask: [B, S] with 1 (or True) for real tokens and 0 for padding; query_length: T.
    Returns [B, 1, T, S] in ``dtype``.
    """
    xp = array_namespace(key_mask)
    key_length = key_mask.shape[1]
    query_index = xp.arange(key_length - query_length, key_length)  # [T] cache index of each query
    return additive(allowed(query_index, xp.arange(key_length), key_mask), dtype)


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
    index = xp.arange(segments.shape[1])
    return additive(allowed(index, index, query_segments=segments, key_segments=segments), dtype)


@dataclass
class StepMask:
    """The mask of one forward step, kept as its parts: the tiled path builds each tile from them, the eager
    path the whole additive ``[B, 1, T, S]`` array (``additive()``, built once, on first use).

    key_mask: the 2-D attention mask [B, S] (1 = token, 0 = padding, ``S = past_length + T``; all ones when
    the call gave none and T > 1, for eager's causal mask) or None; segments: [B, T] sequence numbers of
    packed rows or None; given: a caller's 4-D additive mask, used as given, or None; past_length: cached
    positions before this step; length: T; dtype: the activations'.
    """

    key_mask: object
    segments: object
    given: object
    past_length: int
    length: int
    dtype: object
    _additive: object = None

    def additive(self):
        """The additive mask [B, 1, T, S] of eager attention, or None when nothing needs masking."""
        if self._additive is None:
            self._additive = self._build_additive()
        return self._additive

    def _build_additive(self):
        if self.given is not None:
            return self.given
        if self.segments is not None:
            return packed_causal_mask(self.segments, self.dtype)
        if self.key_mask is None:
            return None  # one query and no padding: it may see every cached key
        return causal_padding_mask(self.key_mask, self.length, self.dtype)


def step_mask(embeds, attention_mask, position_ids, past_length, packed) -> StepMask:
    """What masks this step: the 2-D padding mask, packed sequences, or a 4-D mask as given.

    embeds: [B, T, D] (for the shape and dtype); attention_mask: None, a 2-D [B, S] key mask, or a 4-D
    additive mask; position_ids: [B, T] or [1, T]; ``packed``: no mask and no cache, with position_ids given:
    sequences packed in a row are separated where position_ids do not step by 1 (transformers v5 does the
    same). With no mask at all, attention is causal over every cached key.
    """
    xp = array_namespace(embeds)
    batch, length = embeds.shape[:2]
    key_mask = segments = given = None
    if attention_mask is not None and attention_mask.ndim == 4:
        given = xp.astype(attention_mask, embeds.dtype)
    elif attention_mask is not None:
        key_mask = attention_mask
    elif packed:
        found = packed_segments(xp.broadcast_to(position_ids, (batch, length)))
        segments = found if bool(xp.any(found[:, -1] != 0)) else None
    if key_mask is None and given is None and segments is None and length > 1:
        key_mask = xp.ones((batch, past_length + length), dtype=xp.int64)  # causal only (the eager mask needs it)
    return StepMask(key_mask, segments, given, past_length, length, embeds.dtype)
