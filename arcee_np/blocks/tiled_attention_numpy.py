"""Tiled attention with cheaper passes over each tile: the online softmax of tiled_attention.py, laid out for NumPy.

The reference (blocks/tiled_attention.py) computes a tile of scores ``[rows, tk]`` and passes over it for
the row maximum (a reduction along the short last axis, which NumPy does row by row), the shift, the
``exp`` into a new array, and the product with ``[v | 1]`` whose last column carries the row sums. This path
computes the same online softmax with the tile transposed, ``s^T = k_j q^T``, ``[tk, rows]``:

* the maximum over the keys is a reduction over the *first* axis, an elementwise ``maximum`` of whole rows
  that NumPy vectorises (about half the cost per score of the reduction along the last axis, measured on a
  64 x 256 tile of 12 heads);
* the product, the shift and the ``exp`` write in place into one buffer allocated per query tile
  (``out=``), so no pass over the tile allocates (no fresh pages to fault in) and the tile stays in the
  core's cache (its size comes from blocks/tile_budget.py);
* the product with the values ``p [v_j | 1]`` (whose last column carries the row sums, as in the reference)
  takes the transposed tile as it is: BLAS reads it transposed, with no copy.

Per tile: two products and three passes (max, subtract, exp), all over a tile that stays in L2. The
arithmetic is the reference's, in another order: the results agree with it (and with eager attention) to
float32 rounding, which tests/test_tiled_attention.py checks for every mask kind and tile size. ``out=`` is
NumPy's, so on any other namespace, and for float16/bfloat16 (whose two-pass rounding the reference does),
this path runs the reference.
"""

import math

from array_api_compat import is_numpy_namespace

from .namespace import array_namespace
from .precision import as_dtype, product_dtype
from .tile_map import map_tiles
from .tiled_attention import Tile, key_spans, tile_keep, tile_sizes, tiled_attention, with_column


def tiled_attention_numpy(q, k, v, mask, scaling, tap=None, query_tile=None, key_tile=None):
    """``softmax(q k^T * scaling + mask) v`` by the online softmax over transposed tiles (module docstring).

    Arguments and result as tiled_attention (the signature of every attention implementation): q [B, H, T,
    hd]; k, v [B, KV, S, hd]; mask: the step's StepMask; scaling: float; tap: unused; query_tile, key_tile:
    tile sizes (default ``tile_sizes``). Returns (out [B, T, H * hd], None).
    """
    xp = array_namespace(q, k, v)
    if not is_numpy_namespace(xp) or product_dtype(xp, q.dtype) != q.dtype:
        return tiled_attention(q, k, v, mask, scaling, tap, query_tile, key_tile)
    batch, heads, length, head_dim = q.shape
    kv_heads, key_length = k.shape[1], k.shape[2]
    n_rep = heads // kv_heads
    default_q, default_k = tile_sizes(batch, heads, length, key_length)
    query_tile, key_tile = query_tile or default_q, key_tile or default_k
    grouped = xp.reshape(q, (batch, kv_heads, n_rep, length, head_dim))
    values = with_column(v, 1.0)  # [v | 1]: the row sums come out of p v
    out = xp.empty((batch, kv_heads, n_rep, length, head_dim), dtype=q.dtype)
    past = mask.past_length

    def query_tile_rows(q0):  # the rows of queries q0:q1 of every head, written into ``out``
        q1 = min(q0 + query_tile, length)
        rows = n_rep * (q1 - q0)
        queries_t = xp.matrix_transpose(xp.reshape(grouped[:, :, :, q0:q1, :] * scaling,
                                                   (batch, kv_heads, rows, head_dim)))  # [B, KV, hd, rows]
        spans = key_spans(key_length, key_tile, None if mask.given is not None else (past + q0, past + q1))

        def mask_tile(scores_t, k0, k1):  # scores_t [B, KV, tk, rows] += the tile's mask, transposed
            if mask.given is not None:
                extra = as_dtype(mask.given[:, :, q0:q1, k0:k1], q.dtype)  # [B|1, 1, tq, tk]
            else:
                keep = tile_keep(xp, mask, Tile(q0, q1, k0, k1))
                if keep is None:
                    return
                extra = xp.where(keep, xp.asarray(0.0, dtype=q.dtype), xp.asarray(-math.inf, dtype=q.dtype))
            split = xp.reshape(scores_t, (batch, kv_heads, k1 - k0, n_rep, q1 - q0))
            split += xp.permute_dims(extra, (0, 1, 3, 2))[:, :, :, None, :]  # [B|1, 1, tk, 1, tq]

        normed, seen = online_rows_transposed(queries_t, k, values, spans, mask_tile)
        if not bool(xp.all(seen)):  # rows that may attend no key at all get what eager gives: the mean of V
            normed = xp.where(seen, normed, xp.mean(v, axis=2, keepdims=True))
        out[:, :, :, q0:q1, :] = xp.reshape(normed, (batch, kv_heads, n_rep, q1 - q0, head_dim))

    map_tiles(query_tile_rows, range(0, length, query_tile), xp)  # independent tiles: on every core
    merged = xp.permute_dims(xp.reshape(out, (batch, heads, length, head_dim)), (0, 2, 1, 3))  # [B, T, H, hd]
    return xp.reshape(merged, (batch, length, heads * head_dim)), None


def online_rows_transposed(queries_t, keys, values, spans, mask_tile):
    """The online softmax for one tile of query rows, over transposed score tiles, in place.

    queries_t: [B, KV, hd, rows], already scaled; keys: [B, KV, S, hd]; values: [B, KV, S, hd + 1] with a
    last column of ones (``p v`` then carries the row sums, as in online_rows); spans: the key tiles
    ``(k0, k1)``; mask_tile(scores_t, k0, k1): adds the tile's mask to ``scores_t`` [B, KV, tk, rows] in
    place. Returns (out [B, KV, rows, hd], seen [B, KV, rows, 1] bool), as online_rows.
    """
    xp = array_namespace(queries_t, keys)
    batch, kv_heads, head_dim, rows = queries_t.shape
    buffer = xp.empty((batch, kv_heads, max(k1 - k0 for k0, k1 in spans), rows), dtype=queries_t.dtype)
    top = xp.full((batch, kv_heads, 1, rows), -math.inf, dtype=queries_t.dtype)  # running maximum m
    acc = xp.zeros((batch, kv_heads, rows, head_dim + 1), dtype=queries_t.dtype)  # [acc | l]
    for k0, k1 in spans:
        scores_t = buffer[:, :, :k1 - k0, :]
        xp.matmul(keys[:, :, k0:k1, :], queries_t, out=scores_t)  # s^T: [B, KV, tk, rows]
        mask_tile(scores_t, k0, k1)
        new_top = xp.maximum(top, xp.max(scores_t, axis=2, keepdims=True))  # m'
        shift = xp.where(new_top == -math.inf, xp.zeros_like(new_top), new_top)  # rows that saw no key yet: 0
        scores_t -= shift
        xp.exp(scores_t, out=scores_t)  # p^T
        acc *= xp.matrix_transpose(xp.exp(top - shift))  # rescale [acc | l] to the new maximum
        acc += xp.matrix_transpose(scores_t) @ values[:, :, k0:k1, :]  # add [p v | rowsum p]
        top = new_top
    total = acc[:, :, :, head_dim:]
    seen = total > 0
    return acc[:, :, :, :head_dim] / xp.where(seen, total, xp.ones_like(total)), seen
