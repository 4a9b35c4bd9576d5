"""The KV cache: per layer, the keys (after RoPE, before head repetition) and values of every past token.

Buffers are preallocated ``[B, KV, capacity, hd]`` and written in place; when a step would overflow them
they grow to ``max_length`` (when given) or by doubling, so a decode step never copies the whole cache.
The layout and contents are those of transformers' DynamicCache.
"""

from __future__ import annotations

import numbers

import numpy as np

from .backend import to_device, to_numpy
from .blocks.namespace import array_namespace
from .errors import CacheError, InputError

_MIN_CAPACITY = 16


def _short(value) -> str:
    """``repr(value)``, shortened to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(name: str, value, low: int) -> int:
    """``value`` as an int >= ``low`` (a Python or NumPy integer, not a bool), else InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {_short(value)}.")
    return int(value)


class KVCache:
    """Keys and values of past tokens for each of ``num_layers`` layers.

    ``max_length``: allocate exactly this many positions at the first update (what ``generate`` does, since
    it knows the final length; a forward call that would go past it is refused); ``None`` grows by doubling.
    """

    def __init__(self, num_layers: int, max_length: int | None = None):
        self.num_layers = _count("KVCache(num_layers)", num_layers, low=1)
        self.max_length = None if max_length is None else _count("KVCache(max_length)", max_length, low=1)
        self._keys = [None] * num_layers  # each [B, KV, capacity, hd]
        self._values = [None] * num_layers
        self._lengths = [0] * num_layers

    @classmethod
    def from_legacy(cls, pairs, num_layers: int, xp, dtype) -> "KVCache":
        """transformers' legacy cache, one ``(keys, values)`` pair [B, KV, S, hd] per layer, as a KVCache on
        ``xp`` in ``dtype``; CacheError when it is not one pair per layer of alike 4-D arrays."""
        if len(pairs) != num_layers or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise CacheError(f"a legacy past_key_values must hold one (keys, values) pair per layer ({num_layers}), "
                             f"got {type(pairs).__name__} of {len(pairs)} {_short(pairs)}.")
        cache = cls(num_layers)
        first = None
        for layer, (keys, values) in enumerate(pairs):
            shapes = (tuple(getattr(keys, "shape", ())), tuple(getattr(values, "shape", ())))
            first = first or shapes[0]
            if len(shapes[0]) != 4 or shapes[0] != shapes[1] or shapes[0] != first:
                raise CacheError(f"legacy past_key_values layer {layer}: keys and values must both be [batch, "
                                 f"kv_heads, past, head_dim] and alike in every layer, got {shapes[0]} and "
                                 f"{shapes[1]}.")
            cache.update(to_device(keys, xp, dtype), to_device(values, xp, dtype), layer)
        return cache

    def get_seq_length(self, layer: int = 0) -> int:
        """How many positions are stored (transformers' name)."""
        return self._lengths[layer]

    def __len__(self) -> int:
        return self.num_layers

    def __getitem__(self, layer: int):
        """``(keys, values)`` of one layer, each [B, KV, S, hd] (views of the buffers)."""
        length = self._lengths[layer]
        if self._keys[layer] is None:
            raise IndexError(f"layer {layer} of the cache holds nothing yet")
        return self._keys[layer][:, :, :length, :], self._values[layer][:, :, :length, :]

    def to_legacy(self):
        """``((keys, values), ...)`` per layer: the tuple form older transformers code uses."""
        return tuple(self[layer] for layer in range(self.num_layers) if self._keys[layer] is not None)

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on (the buffers stay); a negative ``length`` forgets that many
        of the last positions (transformers' ``crop(-n)``). Speculative decoding rolls rejected draft tokens
        back with it."""
        self._lengths = [max(0, n + length) if length < 0 else min(n, length) for n in self._lengths]

    def reorder(self, beam_idx) -> None:
        """Row ``i`` of every layer becomes old row ``beam_idx[i]`` (beam search follows its running beams;
        transformers' ``reorder_cache``). beam_idx: [B] integers (host or device)."""
        for layer, keys in enumerate(self._keys):
            if keys is not None:
                xp = array_namespace(keys)
                index = to_device(np.asarray(to_numpy(beam_idx), dtype=np.int64), xp)
                self._keys[layer] = xp.take(keys, index, axis=0)
                self._values[layer] = xp.take(self._values[layer], index, axis=0)

    def update(self, keys, values, layer: int):
        """Append this step's ``keys, values`` ([B, KV, T, hd]) to ``layer``; return all of them ([B, KV, S, hd])."""
        start = self._lengths[layer]
        end = start + keys.shape[2]
        buffer = self._keys[layer]
        if buffer is None or end > buffer.shape[2]:
            self._grow(layer, keys, end)
        self._keys[layer][:, :, start:end, :] = keys
        self._values[layer][:, :, start:end, :] = values
        self._lengths[layer] = end
        return self[layer]

    def _grow(self, layer: int, keys, needed: int) -> None:
        """Reallocate ``layer``'s buffers to hold at least ``needed`` positions, keeping what they hold."""
        xp = array_namespace(keys)
        old = self._keys[layer]
        if self.max_length is not None:  # a forward call checks that it fits (validation.arguments.check_cache)
            capacity = max(needed, self.max_length)
        else:
            capacity = max(needed, _MIN_CAPACITY, 0 if old is None else 2 * old.shape[2])
        batch, kv_heads, _, head_dim = keys.shape
        new_keys = xp.zeros((batch, kv_heads, capacity, head_dim), dtype=keys.dtype)
        new_values = xp.zeros((batch, kv_heads, capacity, head_dim), dtype=keys.dtype)
        if old is not None:
            length = self._lengths[layer]
            new_keys[:, :, :length, :] = old[:, :, :length, :]
            new_values[:, :, :length, :] = self._values[layer][:, :, :length, :]
        self._keys[layer], self._values[layer] = new_keys, new_values
