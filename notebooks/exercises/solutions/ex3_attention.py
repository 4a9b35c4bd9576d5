"""Solutions: the causal + padding mask, grouped-query attention, the KV cache."""

import numpy as np


def causal_padding_mask(key_mask, query_length, dtype):
    """Additive mask [B, 1, T, S]: 0 where query i may see key k, finfo(dtype).min elsewhere."""
    batch, key_length = key_mask.shape
    query_index = np.arange(key_length - query_length, key_length)[:, None]   # [T, 1]: cache index of each query
    key_index = np.arange(key_length)[None, :]                                # [1, S]
    allowed = (key_index <= query_index)[None] & key_mask[:, None, :].astype(bool)   # [B, T, S]
    mask = np.where(allowed, 0, np.finfo(dtype).min).astype(dtype)
    return mask[:, None]                                                      # [B, 1, T, S]


def softmax(scores):
    """Over the last axis, in float32, the maximum subtracted first."""
    s = scores.astype(np.float32)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v, mask):
    """softmax(q k^T / sqrt(hd) + mask) v; query head n reads KV head n // (H / KV).

    q [B, H, T, hd]; k, v [B, KV, S, hd]; mask [B, 1, T, S] or None. Returns (context [B, T, H*hd], probs).
    """
    batch, heads, length, head_dim = q.shape
    n_rep = heads // k.shape[1]
    k, v = np.repeat(k, n_rep, axis=1), np.repeat(v, n_rep, axis=1)          # [B, H, S, hd]: k0 k0 k0 k0 k1 ...
    scores = (q @ k.swapaxes(-1, -2)) * head_dim ** -0.5                     # [B, H, T, S]
    if mask is not None:
        scores = scores + mask
    probs = softmax(scores).astype(q.dtype)
    context = probs @ v                                                       # [B, H, T, hd]
    return context.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim), probs


class KVCache:
    """Per layer, the keys (after RoPE) and values of every position so far, [B, KV, S, hd]."""

    def __init__(self, num_layers):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    def get_seq_length(self, layer=0):
        return 0 if self.keys[layer] is None else self.keys[layer].shape[2]

    def update(self, keys, values, layer):
        """Append this step's keys and values ([B, KV, T, hd]); return all of this layer's."""
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = keys, values
        else:
            self.keys[layer] = np.concatenate([self.keys[layer], keys], axis=2)
            self.values[layer] = np.concatenate([self.values[layer], values], axis=2)
        return self.keys[layer], self.values[layer]
