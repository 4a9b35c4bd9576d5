"""Tiled attention: the online softmax over key tiles, so memory grows with the tile, not with T x S.

The softmax of a row needs its maximum and its sum over every key, but both can be kept as running values
(Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"; FlashAttention, Dao et al. 2022).
For one tile of queries, the keys and values stream past in tiles ``j``; each query row keeps a running
maximum ``m``, a running sum ``l`` and an unnormalised output ``acc``:

    s   = q k_j^T * scaling   (masked entries -inf)     the scores of this tile     [.., tq, tk]
    m'  = max(m, rowmax(s))
    p   = exp(s - m')
    l   = l * exp(m - m') + rowsum(p)
    acc = acc * exp(m - m') + p v_j
    m   = m'

and at the end ``out = acc / l``, which is ``softmax(s) v`` over all keys: each tile's terms were scaled by
``exp(-m')`` and later rescaled by ``exp(m' - m_final)``, so every term carries ``exp(-m_final)`` as in the
ordinary softmax. Key tiles that lie entirely above the causal diagonal are skipped, not masked; the keys on
the query tile's own diagonal get key tiles of their own (``key_spans``), so only those need the causal
mask, built for the tile alone (blocks/mask.py) and added to its scores in place. Scores and the softmax
run in float32 (float64 stays float64), as in eager attention; grouped KV heads are used without copies,
as in attention.py.

Each score costs three passes over its tile besides the two products (``online_rows``): the row maximum,
the subtraction (in place) and the ``exp``. The scale is applied to the queries before the product, and
``rowsum(p)`` comes out of the product with the values, which carry a last column of ones. The query
tiles are independent of each other: on NumPy they run side by side, one per core (blocks/tile_map.py).
"""

import math

from typing import NamedTuple

from .mask import allowed
from .namespace import array_namespace
from .precision import as_dtype, product_dtype
from .tile_map import map_tiles

# A tile of scores holds at most this many elements (8 MiB in float32): big enough that the products run at
# BLAS speed and the loop costs little, small enough to stay near the CPU's cache.
SCORE_TILE_ELEMENTS = 1 << 21
QUERY_TILE = 256
MIN_KEY_TILE = 64


class Tile(NamedTuple):
    """The tile of queries ``q0:q1`` (this step's rows) and keys ``k0:k1`` (cache indices)."""

    q0: int
    q1: int
    k0: int
    k1: int


def tile_sizes(batch, heads, query_length, key_length):
    """``(query_tile, key_tile)``: up to QUERY_TILE queries, and as many keys as keep a tile of scores
    ``[B, H, tq, tk]`` within SCORE_TILE_ELEMENTS (at least MIN_KEY_TILE, at most all of them)."""
    query_tile = min(query_length, QUERY_TILE)
    key_tile = max(MIN_KEY_TILE, SCORE_TILE_ELEMENTS // max(1, batch * heads * query_tile))
    return query_tile, min(key_length, key_tile)


def fits_one_tile(batch, heads, query_length, key_length):
    """Whether all ``[B, H, T, S]`` scores of a step fit one tile: the online softmax would then be a single
    tile, which eager attention computes with fewer steps (decode steps, short prompts)."""
    return batch * heads * query_length * key_length <= SCORE_TILE_ELEMENTS


def tiled_attention(q, k, v, mask, scaling, tap=None, query_tile=None, key_tile=None):
    """``softmax(q k^T * scaling + mask) v`` by the online softmax (module docstring), tile by tile.

    q: [B, H, T, hd]; k, v: [B, KV, S, hd] with ``S = mask.past_length + T`` (cached keys, then this
    step's); mask: the step's StepMask (blocks/mask.py): its causal, padding and packed parts are built per
    tile, a caller's 4-D mask is sliced per tile (then no tile is skipped); scaling: float; tap: unused (no
    probabilities are formed: the model picks eager attention when they are wanted); query_tile, key_tile:
    tile sizes (default ``tile_sizes``). A query row that may attend no key at all (a padding row) gets the
    mean of all values, as in eager attention, whose softmax over a row of equal masked scores is uniform.
    Returns (out [B, T, H * hd] in q's dtype, None): the signature of every attention implementation.

    float16/bfloat16: eager attention rounds the normalised probabilities to 16 bits before it multiplies
    them with V, which one pass cannot do (the sum is known only at the end); so these dtypes take two
    passes over the keys (``two_pass_rows``): the first finds each row's maximum and sum, the second forms
    the probabilities, rounds them as eager does and accumulates ``P V`` in float32.
    """
    xp = array_namespace(q, k, v)
    batch, heads, length, head_dim = q.shape
    kv_heads, key_length = k.shape[1], k.shape[2]
    n_rep = heads // kv_heads
    work = product_dtype(xp, q.dtype)
    default_q, default_k = tile_sizes(batch, heads, length, key_length)
    query_tile, key_tile = query_tile or default_q, key_tile or default_k
    one_pass = work == q.dtype
    if one_pass:  # [v | 1]: the row sums come out of P V
        v = with_column(as_dtype(v, work), 1.0)
    grouped = xp.reshape(q, (batch, kv_heads, n_rep, length, head_dim))  # query head n reads KV head n // n_rep
    out = xp.empty((batch, kv_heads, n_rep, length, head_dim), dtype=work)
    past = mask.past_length

    def query_tile_rows(q0):  # the rows of queries q0:q1 of every head, written into ``out``
        q1 = min(q0 + query_tile, length)
        queries = xp.reshape(as_dtype(grouped[:, :, :, q0:q1, :], work), (batch, kv_heads, n_rep * (q1 - q0),
                                                                         head_dim))
        spans = key_spans(key_length, key_tile, None if mask.given is not None else (past + q0, past + q1))

        def masked(scores, k0, k1):
            return masked_scores(scores, mask, Tile(q0, q1, k0, k1))

        if one_pass:
            normed, seen = online_rows(queries * scaling, k, v, spans, masked)
        else:
            normed, seen = two_pass_rows(queries, k, v, spans, masked, scaling, q.dtype)
        if not bool(xp.all(seen)):  # rows that may attend no key at all get what eager gives: the mean of V
            mean = xp.mean(as_dtype(v[:, :, :, :head_dim], work), axis=2, keepdims=True)  # [B, KV, 1, hd]
            normed = xp.where(seen, normed, mean)
        out[:, :, :, q0:q1, :] = xp.reshape(normed, (batch, kv_heads, n_rep, q1 - q0, head_dim))

    map_tiles(query_tile_rows, range(0, length, query_tile), xp)  # independent tiles: on every core (NumPy)
    merged = xp.permute_dims(xp.reshape(out, (batch, heads, length, head_dim)), (0, 2, 1, 3))  # [B, T, H, hd]
    return as_dtype(xp.reshape(merged, (batch, length, heads * head_dim)), q.dtype), None


def online_rows(queries, keys, values, spans, masked):
    """One pass of the online softmax (module docstring) for one tile of query rows.

    queries: [B, KV, rows, hd], already scaled; keys: [B, KV, S, hd]; values: [B, KV, S, hd + 1] with a last
    column of ones, so that ``p @ values`` holds ``[p v | rowsum(p)]``; spans: the key tiles ``(k0, k1)`` to
    visit; masked(scores, k0, k1): the tile's scores with its mask applied. Returns (out [B, KV, rows, hd],
    seen [B, KV, rows, 1] bool: whether the row may attend some key).
    """
    xp = array_namespace(queries, keys)
    head_dim = queries.shape[-1]
    top = xp.full((*queries.shape[:-1], 1), -math.inf, dtype=queries.dtype)  # running maximum m
    acc = xp.zeros((*queries.shape[:-1], head_dim + 1), dtype=queries.dtype)  # [acc | l]
    for k0, k1 in spans:
        scores = masked(queries @ xp.matrix_transpose(keys[:, :, k0:k1, :]), k0, k1)  # s: [B, KV, rows, tk]
        new_top = xp.maximum(top, xp.max(scores, axis=-1, keepdims=True))  # m'
        shift = xp.where(new_top == -math.inf, xp.zeros_like(new_top), new_top)  # rows that saw no key yet: 0
        scores -= shift
        acc = acc * xp.exp(top - shift) + xp.exp(scores) @ values[:, :, k0:k1, :]  # rescale, add [p v | rowsum]
        top = new_top
    total = acc[:, :, :, head_dim:]
    seen = total > 0
    return acc[:, :, :, :head_dim] / xp.where(seen, total, xp.ones_like(total)), seen


def two_pass_rows(queries, keys, values, spans, masked, scaling, dtype):
    """The softmax for one tile of query rows with eager's 16-bit rounding of the probabilities: pass 1
    finds each row's maximum ``m`` and sum ``l`` (online), pass 2 accumulates ``round(exp(s - m) / l) @ v``
    in float32.

    queries: [B, KV, rows, hd] in float32; keys, values: [B, KV, S, hd] in ``dtype`` (float16/bfloat16);
    spans, masked: as online_rows; scaling: float. Returns as online_rows.
    """
    xp = array_namespace(queries, keys)
    work = queries.dtype

    def scores_of(k0, k1):
        return masked(tile_scores(queries, keys[:, :, k0:k1, :], scaling, dtype), k0, k1)

    top = xp.full((*queries.shape[:-1], 1), -math.inf, dtype=work)
    total = xp.zeros_like(top)
    for k0, k1 in spans:
        scores = scores_of(k0, k1)
        new_top = xp.maximum(top, xp.max(scores, axis=-1, keepdims=True))
        shift = xp.where(new_top == -math.inf, xp.zeros_like(new_top), new_top)  # rows that saw no key yet
        total = total * xp.exp(top - shift) + xp.sum(xp.exp(scores - shift), axis=-1, keepdims=True)
        top = new_top
    seen = total > 0
    shift = xp.where(seen, top, xp.zeros_like(top))
    norm = xp.where(seen, total, xp.ones_like(total))
    acc = xp.zeros((*queries.shape[:-1], values.shape[-1]), dtype=work)
    for k0, k1 in spans:
        probs = xp.astype(xp.astype(xp.exp(scores_of(k0, k1) - shift) / norm, dtype), work)  # rounded as eager
        acc = acc + probs @ xp.astype(values[:, :, k0:k1, :], work)
    return acc, seen


def key_spans(key_length, key_tile, diagonal=None):
    """The key tiles ``(k0, k1)`` one tile of queries visits, at most ``key_tile`` keys each.

    diagonal: ``(first, stop)``, the cache indices of the tile's queries under the causal mask, or None (a
    mask given by the caller: every key). Causal keys after ``stop - 1`` are skipped; the keys before
    ``first`` are seen by every query of the tile, and the keys ``first:stop`` get tiles of their own, so
    that only those tiles need the causal mask.
    """
    if diagonal is None:
        return [(k0, min(k0 + key_tile, key_length)) for k0 in range(0, key_length, key_tile)]
    first, stop = min(diagonal[0], key_length), min(diagonal[1], key_length)
    return key_spans(first, key_tile) + [(k0, min(k0 + key_tile, stop)) for k0 in range(first, stop, key_tile)]


def with_column(x, value):
    """x [..., n] with one more last column, all ``value``: [..., n + 1] (a new array)."""
    xp = array_namespace(x)
    return xp.concat([x, xp.full((*x.shape[:-1], 1), value, dtype=x.dtype)], axis=-1)


def masked_scores(scores, mask, tile):
    """One tile's scores [B, KV, n_rep * tq, tk] with its mask added in place: the caller's additive 4-D mask
    (``mask.given``) sliced to the tile, or -inf where ``tile_keep`` forbids a pair (0 elsewhere).

    mask: the step's StepMask; tile: its Tile. Returns [B, KV, n_rep * tq, tk].
    """
    xp = array_namespace(scores)
    if mask.given is not None:
        extra = as_dtype(mask.given[:, :, tile.q0:tile.q1, tile.k0:tile.k1], scores.dtype)
    else:
        keep = tile_keep(xp, mask, tile)
        if keep is None:
            return scores
        extra = xp.where(keep, xp.asarray(0.0, dtype=scores.dtype), xp.asarray(-math.inf, dtype=scores.dtype))
    grouped = _grouped(scores, scores.shape[2] // (tile.q1 - tile.q0))
    grouped += extra[:, :, None, :, :]  # [B|1, 1, 1, tq, tk] over the query heads of each KV group
    return xp.reshape(grouped, scores.shape)


def tile_scores(queries, keys, scaling, dtype):
    """``queries keys^T * scaling`` of one tile, in the work dtype, rounded where eager rounds.

    queries: [B, KV, rows, hd] in the work dtype; keys: [B, KV, tk, hd]; dtype: the activation dtype.
    For float16/bfloat16 the product and the scaled scores are rounded to ``dtype`` as eager attention
    rounds them, so both see the same scores. Returns [B, KV, rows, tk] in the work dtype.
    """
    xp = array_namespace(queries, keys)
    work = queries.dtype
    scores = queries @ xp.matrix_transpose(as_dtype(keys, work))
    if work == dtype:
        return scores * scaling
    rounded = xp.astype(xp.astype(scores, dtype), work)
    return xp.astype(xp.astype(rounded * scaling, dtype), work)


def tile_keep(xp, mask, tile):
    """The causal, padding and packed mask of one tile, or None when it masks nothing.

    xp: the array namespace; mask: the step's StepMask (its queries sit at cache indices
    ``past_length + q0 ..``); tile: the Tile of queries ``q0:q1`` and keys ``k0:k1``. Returns bool
    [B or 1, 1, tq, tk] or None.
    """
    q0, q1, k0, k1 = tile
    past, key_mask, segments = mask.past_length, mask.key_mask, mask.segments
    causal = k1 - 1 > past + q0  # some key of the tile lies after the tile's first query
    padded = key_mask is not None and not bool(xp.all(key_mask[:, k0:k1] != 0))
    lo, hi = min(q0, k0), max(q1, k1)  # segments only grow along a row: one segment iff the span has one
    split = segments is not None and not bool(xp.all(segments[:, lo:hi] == segments[:, lo:lo + 1]))
    if not (causal or padded or split):
        return None
    return allowed(xp.arange(past + q0, past + q1), xp.arange(k0, k1),
                   None if key_mask is None else key_mask[:, k0:k1],
                   None if segments is None else segments[:, q0:q1], None if segments is None else segments[:, k0:k1])


def _grouped(scores, n_rep):
    """[B, KV, n_rep * tq, tk] -> [B, KV, n_rep, tq, tk]: the query heads of a KV group on their own axis."""
    xp = array_namespace(scores)
    batch, kv_heads, rows, keys = scores.shape
    return xp.reshape(scores, (batch, kv_heads, n_rep, rows // n_rep, keys))
