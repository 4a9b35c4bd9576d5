"""Solution: attention of one query tile over key tiles, with the online softmax."""

import numpy as np


def online_attention(q, k, v, keep, key_tile):
    """softmax(q k^T / sqrt(hd), masked) v, visiting the keys key_tile at a time and keeping per row a running
    maximum m, a running sum total and an unnormalised output acc. Rows that may see no key get the mean of v
    (what eager attention's finfo.min mask gives).

    q: [T, hd]; k, v: [S, hd]; keep: [T, S] bool (True: may attend); key_tile: int >= 1. Returns [T, hd] float32.
    """
    q, k, v = (a.astype(np.float32) for a in (q, k, v))
    scale = np.float32(q.shape[-1] ** -0.5)
    m = np.full((q.shape[0], 1), -np.inf, dtype=np.float32)        # running max
    total = np.zeros((q.shape[0], 1), dtype=np.float32)                # running sum of exp(s - m)
    acc = np.zeros((q.shape[0], v.shape[1]), dtype=np.float32)     # running sum of exp(s - m) v
    for k0 in range(0, k.shape[0], key_tile):
        s = (q @ k[k0:k0 + key_tile].T) * scale
        s = np.where(keep[:, k0:k0 + key_tile], s, -np.inf)
        new_m = np.maximum(m, s.max(axis=-1, keepdims=True))
        shift = np.where(np.isneginf(new_m), 0, new_m)             # a row with no key yet: nothing to subtract
        p = np.exp(s - shift)
        correction = np.exp(m - shift)                             # rescale what was summed under the old max
        total = total * correction + p.sum(axis=-1, keepdims=True)
        acc = acc * correction + p @ v[k0:k0 + key_tile]
        m = new_m
    seen = total > 0
    return np.where(seen, acc / np.where(seen, total, 1), v.mean(axis=0, keepdims=True))
