"""Scaled dot-product attention with grouped KV heads (MHA, GQA, MQA), as transformers' eager path."""

from .namespace import array_namespace
from .precision import as_dtype, matmul, product_dtype, reduction_dtype


def softmax(scores, axis=-1):
    """``exp(s - max s) / sum exp(s - max s)`` along ``axis``, computed in float32 (float64 stays float64).

    As transformers' eager attention, the result is returned in the computation dtype; the caller casts
    back. scores: any shape. Returns the same shape.
    """
    xp = array_namespace(scores)
    work = as_dtype(scores, reduction_dtype(xp, scores.dtype))
    shifted = work - xp.max(work, axis=axis, keepdims=True)
    weights = xp.exp(shifted)
    return weights / xp.sum(weights, axis=axis, keepdims=True)


def repeat_kv(x, n_rep):
    """Repeat each KV head ``n_rep`` times in a row: query head ``n`` reads KV head ``n // n_rep``.

    x: [B, KV, S, hd]. Returns [B, KV * n_rep, S, hd]. (attention_scores and attention_output use the
    same grouping without copying; this is the explicit form transformers uses, kept for learners.)
    """
    xp = array_namespace(x)
    batch, kv_heads, length, head_dim = x.shape
    expanded = xp.broadcast_to(x[:, :, None, :, :], (batch, kv_heads, n_rep, length, head_dim))
    return xp.reshape(expanded, (batch, kv_heads * n_rep, length, head_dim))


def attention_scores(q, k, scaling):
    """``q k^T * scaling`` per head; query head ``n`` uses KV head ``n // (H / KV)``.

    For float16/bfloat16 the product runs in float32 and is rounded, then scaled in float32 (the scale
    itself is not rounded to 16 bits) and rounded again, as torch does.

    The ``H / KV`` query heads of a group are stacked and multiplied with their shared KV head at once,
    which gives the same dot products as transformers' repeat_kv without copying K.

    q: [B, H, T, hd]; k: [B, KV, S, hd]; scaling: float (``hd ** -0.5``). Returns [B, H, T, S].
    """
    xp = array_namespace(q, k)
    batch, heads, length, head_dim = q.shape
    kv_heads = k.shape[1]
    grouped = xp.reshape(q, (batch, kv_heads, heads // kv_heads * length, head_dim))  # [B, KV, n_rep*T, hd]
    scores = matmul(grouped, xp.matrix_transpose(k))  # [B, KV, n_rep*T, S]
    work = product_dtype(xp, scores.dtype)
    scores = as_dtype(as_dtype(scores, work) * scaling, scores.dtype)
    return xp.reshape(scores, (batch, heads, length, k.shape[2]))


def attention_probs(scores, mask, dtype):
    """``softmax(scores + mask)`` in float32 (float64 in golden mode), cast to ``dtype``.

    scores: [B, H, T, S]; mask: additive [B, 1, T, S] or None. Returns [B, H, T, S].
    """
    if mask is not None:
        scores = scores + mask
    return as_dtype(softmax(scores), dtype)


def attention_output(probs, v):
    """``probs @ v`` per head, heads merged back: query head ``n`` reads KV head ``n // (H / KV)``.

    probs: [B, H, T, S]; v: [B, KV, S, hd]. Returns [B, T, H * hd].
    """
    xp = array_namespace(probs, v)
    batch, heads, length, key_length = probs.shape
    kv_heads, head_dim = v.shape[1], v.shape[3]
    grouped = xp.reshape(probs, (batch, kv_heads, heads // kv_heads * length, key_length))  # [B, KV, n_rep*T, S]
    out = xp.reshape(matmul(grouped, v), (batch, heads, length, head_dim))  # [B, H, T, hd]
    return xp.reshape(xp.permute_dims(out, (0, 2, 1, 3)), (batch, length, heads * head_dim))  # [B, T, H*hd]


def attention(q, k, v, mask, scaling, tap=None):
    """``softmax(q k^T * scaling + mask) v``: eager attention of transformers, all steps in one call.

    q: [B, H, T, hd]; k, v: [B, KV, S, hd]; mask: additive [B, 1, T, S] or None; scaling: float;
    tap: optional ``tap(name, array)`` shown ``"scores"`` and ``"probs"`` ([B, H, T, S]), whose returned
    arrays are the ones attention goes on with (as the trace does). Returns (out [B, T, H * hd], probs
    [B, H, T, S]).
    """
    scores = attention_scores(q, k, scaling)
    if tap is not None:
        scores = tap("scores", scores)
    probs = attention_probs(scores, mask, q.dtype)
    if tap is not None:
        probs = tap("probs", probs)
    return attention_output(probs, v), probs


def eager_attention(q, k, v, mask, scaling, tap=None):
    """``attention`` under the step's StepMask (blocks/mask.py), whose whole additive [B, 1, T, S] array it
    uses: the signature of every attention implementation. Returns (out [B, T, H * hd], probs [B, H, T, S])."""
    return attention(q, k, v, mask.additive(), scaling, tap)


def attention_backward(grad_out, q, k, v, probs, out, scaling, tap=None):
    """The vector-Jacobian product of eager attention ``O = softmax(q k^T * scaling + mask) v``.

    With ``P`` the probabilities and ``dO`` the output gradient, per head:

    * ``dV = P^T dO`` and ``dP = dO V^T``;
    * softmax: ``dS = P * (dP - sum_s P dP)``, in float32 (float64 stays float64); the row sum equals
      ``sum_d dO O``, which is cheaper ([T, hd] instead of [T, S]); masked keys have ``P = 0``, so no
      gradient reaches them (the additive mask itself gets none);
    * ``dq = dS k * scaling`` and ``dk = dS^T q * scaling``.

    The ``H / KV`` query heads of a group are stacked as in the forward, so ``dk`` and ``dv`` come out summed
    over each KV head's query group.

    grad_out, out: [B, T, H * hd] (the forward's output and its gradient); q: [B, H, T, hd];
    k, v: [B, KV, S, hd]; probs: [B, H, T, S]; scaling: float; tap: optional ``tap(name, array)`` shown
    ``"probs"`` (dP) and ``"scores"`` (dS), both [B, H, T, S]. Returns (dq [B, H, T, hd], dk, dv [B, KV, S, hd]).
    """
    xp = array_namespace(grad_out, q, k, v, probs)
    batch, heads, length, head_dim = q.shape
    kv_heads, key_length = k.shape[1], k.shape[2]
    group = heads // kv_heads * length

    def grouped_heads(x):  # [B, T, H*hd] -> [B, KV, n_rep*T, hd]
        x = xp.permute_dims(xp.reshape(x, (batch, length, heads, head_dim)), (0, 2, 1, 3))  # [B, H, T, hd]
        return xp.reshape(x, (batch, kv_heads, group, head_dim))

    d_out, out = grouped_heads(grad_out), grouped_heads(out)
    p = xp.reshape(probs, (batch, kv_heads, group, key_length))  # [B, KV, n_rep*T, S]
    dv = xp.matrix_transpose(p) @ d_out  # [B, KV, S, hd]
    dp = d_out @ xp.matrix_transpose(v)  # [B, KV, n_rep*T, S]
    if tap is not None:
        dp = xp.reshape(tap("probs", xp.reshape(dp, probs.shape)), dp.shape)
    work = reduction_dtype(xp, p.dtype)
    row = xp.sum(xp.astype(d_out * out, work, copy=False), axis=-1, keepdims=True)  # [B, KV, n_rep*T, 1]
    ds = xp.astype(p, work, copy=False) * (xp.astype(dp, work, copy=False) - row)
    ds = xp.astype(ds, q.dtype, copy=False)
    if tap is not None:
        ds = xp.reshape(tap("scores", xp.reshape(ds, probs.shape)), ds.shape)
    dq = (ds @ k) * scaling  # [B, KV, n_rep*T, hd]
    dk = (xp.matrix_transpose(ds) @ xp.reshape(q, (batch, kv_heads, group, head_dim))) * scaling  # [B, KV, S, hd]
    return xp.reshape(dq, (batch, heads, length, head_dim)), dk, dv
