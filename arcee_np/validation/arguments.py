"""The arguments of a forward call, checked and moved to the model's backend before any work.

``check_forward_inputs`` takes what every model class's ``__call__`` takes (ids or embeddings, masks,
positions, a KV cache, the output flags) and returns ``ForwardInputs``: arrays of the model's namespace,
the cache to use (a legacy tuple is converted), and the call's sizes; the forward behind it trusts them.
The heads' own arguments (labels, positions, ``logits_to_keep``) have their checks here too. Errors are
InputError (a value or shape), InputTypeError (a type) and CacheError (a cache that does not fit).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..backend import device_of, to_device, to_numpy
from ..blocks.losses import IGNORE_INDEX
from ..cache import KVCache
from ..blocks.namespace import array_namespace
from ..errors import CacheError, InputError, InputTypeError
from .memory import check_allocation
from .values import is_flag, is_integer, shown


@dataclass
class ForwardInputs:
    """A checked forward call: ``xp`` arrays (None where not given), the cache and the call's sizes."""

    input_ids: object
    inputs_embeds: object
    attention_mask: object
    position_ids: object
    cache: object  # a KVCache or None
    past_length: int
    batch: int
    length: int
    return_cache: bool  # whether the output carries the cache
    output_attentions: bool = False
    output_hidden_states: bool = False


# ---------------------------------------------------------------------------------------------- host copies
def host_array(x, name: str) -> np.ndarray:
    """``x`` (a NumPy/CuPy/array-API array, or nested lists) as a NumPy array, for checking."""
    if isinstance(x, (str, bytes, dict, set)) or x is None or np.isscalar(x):
        raise InputTypeError(f"{name} must be an array (NumPy, the model's backend, or nested lists), got "
                             f"{type(x).__name__} {shown(x)}.")
    try:
        return np.asarray(x) if isinstance(x, (list, tuple)) else np.asarray(to_numpy(x))
    except (ValueError, TypeError, OverflowError) as err:
        raise InputTypeError(f"{name} must be a rectangular array of numbers, got {type(x).__name__} that NumPy "
                             f"cannot read as one ({err}).") from None


def integer_matrix(x, name: str) -> np.ndarray:
    """A 2-D integer array [batch, seq] (bools and floats refused), on the host."""
    host = host_array(x, name)
    if host.dtype.kind not in "iu":
        raise InputTypeError(f"{name} must hold integers, got dtype {host.dtype}; convert with .astype('int64').")
    if host.ndim != 2:
        hint = f" Add the batch axis: {name}[None, :]." if host.ndim == 1 else ""
        raise InputError(f"{name} must be 2-D [batch, seq], got shape {tuple(host.shape)}.{hint}")
    return host


def check_token_ids(x, name: str, vocab_size: int) -> np.ndarray:
    """Token ids [batch, seq] (at least one), each in [0, vocab_size); int64 on the host."""
    ids = integer_matrix(x, name)
    if ids.shape[1] == 0 or ids.shape[0] == 0:
        raise InputError(f"{name} is empty (shape {tuple(ids.shape)}): give at least one row of at least one token.")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        raise InputError(f"{name} must lie in [0, vocab_size={vocab_size}); found {bad[:5].tolist()}. "
                         f"Check the tokenizer matches the model.")
    return ids.astype(np.int64, copy=False)


def check_key_mask(mask, name: str, shape: tuple) -> np.ndarray:
    """A 2-D mask of 1 (token) and 0 (padding) of ``shape``; int64 on the host."""
    host = host_array(mask, name)
    if host.ndim != 2 or host.shape != shape:
        raise InputError(f"{name} must be [batch, past + seq] = {list(shape)} (it covers the cached tokens too), "
                         f"got {tuple(host.shape)}.")
    if host.dtype.kind not in "biuf" or not np.isin(host, (0, 1)).all():
        raise InputError(f"a 2-D {name} holds 1 for tokens and 0 for padding; found other values "
                         f"({np.unique(host)[:5].tolist() if host.dtype.kind in 'biuf' else host.dtype}).")
    return host.astype(np.int64)


def check_dtype(dtype) -> str:
    """A model dtype name, one of backend.DTYPES."""
    from ..backend import DTYPES

    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InputError(f"unknown dtype {shown(dtype)}; choose one of {', '.join(DTYPES)}.")
    return dtype


def check_flag(name: str, value) -> bool:
    if not is_flag(value):
        raise InputTypeError(f"{name} must be True or False, got {shown(value)}.")
    return bool(value)


# ---------------------------------------------------------------------------------------------- the forward call
def check_forward_inputs(config, xp, dtype, input_ids=None, inputs_embeds=None, attention_mask=None,
                         position_ids=None, past_key_values=None, use_cache=None, output_attentions=False,
                         output_hidden_states=False) -> ForwardInputs:
    """Validate a forward call and move its arrays to ``xp`` (``dtype``: the model's float dtype)."""
    output_attentions = check_flag("output_attentions", output_attentions)
    output_hidden_states = check_flag("output_hidden_states", output_hidden_states)
    use_cache = config.use_cache if use_cache is None else check_flag("use_cache", use_cache)
    if (input_ids is None) == (inputs_embeds is None):
        raise InputError("pass exactly one of input_ids ([batch, seq] token ids) or inputs_embeds "
                         "([batch, seq, hidden_size]); got " + ("both." if input_ids is not None else "neither."))
    if input_ids is not None:
        ids = check_token_ids(input_ids, "input_ids", config.vocab_size)
        batch, length = ids.shape
        input_ids = to_device(ids, xp)
    else:
        inputs_embeds = _check_embeddings(inputs_embeds, config, xp, dtype)
        batch, length = inputs_embeds.shape[:2]
    cache = check_cache(past_key_values, config, xp, dtype, batch, length)
    past = cache.get_seq_length() if cache is not None else 0
    total = past + length
    if attention_mask is not None:
        attention_mask = _check_attention_mask(attention_mask, xp, dtype, batch, length, total)
    top = total
    if position_ids is not None:
        pos = integer_matrix(position_ids, "position_ids")
        if pos.shape not in ((batch, length), (1, length)):
            raise InputError(f"position_ids must be [batch, seq] = [{batch}, {length}] or [1, {length}], "
                             f"got {tuple(pos.shape)}.")
        if pos.min() < 0:
            raise InputError(f"position_ids must be non-negative, found {int(pos.min())}.")
        top = int(pos.max()) + 1
        position_ids = to_device(pos.astype(np.int64, copy=False), xp)
    if top > config.max_position_embeddings:
        warnings.warn(f"positions reach {top}, past max_position_embeddings={config.max_position_embeddings}: "
                      f"the model was not trained that far and its output may degrade.", stacklevel=4)
    if cache is None and use_cache:
        cache = KVCache(config.num_hidden_layers)
    return ForwardInputs(input_ids, inputs_embeds, attention_mask, position_ids, cache, past, batch, length,
                         use_cache or past_key_values is not None, output_attentions, output_hidden_states)


def _check_embeddings(embeds, config, xp, dtype):
    """inputs_embeds [batch, seq, hidden_size], floating point, finite; as an ``xp`` array of ``dtype``."""
    if not hasattr(embeds, "shape") or not hasattr(embeds, "dtype"):
        embeds = host_array(embeds, "inputs_embeds")
    shape = tuple(embeds.shape)
    if len(shape) != 3 or shape[2] != config.hidden_size:
        raise InputError(f"inputs_embeds must be [batch, seq, hidden_size={config.hidden_size}], got {shape}.")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"inputs_embeds is empty (shape {shape}): give at least one row of at least one position.")
    if "float" not in str(embeds.dtype):
        raise InputTypeError(f"inputs_embeds must hold floating-point vectors, got dtype {embeds.dtype}.")
    embeds = to_device(embeds, xp, dtype)
    if not bool(xp.all(xp.isfinite(embeds))):
        raise InputError("inputs_embeds holds NaN or Inf (or values that overflow the model's dtype); every "
                         "embedding must be finite.")
    return embeds


def _check_attention_mask(mask, xp, dtype, batch, length, total):
    """A 2-D key mask [B, past + T] of 0/1, or a 4-D additive float mask [B or 1, 1, T, past + T]."""
    if len(getattr(mask, "shape", ())) != 4:  # a 4-D additive mask stays on its device: only its shape is read
        return to_device(check_key_mask(mask, "attention_mask", (batch, total)), xp)
    if tuple(mask.shape) not in ((batch, 1, length, total), (1, 1, length, total)):
        raise InputError(f"a 4-D attention_mask must be additive [batch, 1, seq, past + seq] = "
                         f"[{batch}, 1, {length}, {total}], got {tuple(mask.shape)}.")
    if "float" not in str(mask.dtype):
        raise InputTypeError(f"a 4-D attention_mask is additive: floats (0 to attend, a large negative number to "
                             f"mask), got dtype {mask.dtype}. For a 0/1 mask pass it 2-D [batch, past + seq].")
    mask = to_device(mask, xp, dtype)
    if bool(xp.any(xp.isnan(mask) | (mask == float("inf")))):
        raise InputError("a 4-D attention_mask holds NaN or +Inf; an additive mask is 0 (attend) or negative "
                         "(mask).")
    return mask


# ---------------------------------------------------------------------------------------------- the KV cache
def check_cache(cache, config, xp, dtype, batch: int, length: int):
    """``past_key_values`` as a KVCache that fits this call (a legacy ``((k, v), ...)`` tuple is converted)."""
    if cache is None:
        return None
    if isinstance(cache, (tuple, list)):
        cache = KVCache.from_legacy(cache, config.num_hidden_layers, xp, dtype)
    if not isinstance(cache, KVCache):
        raise InputTypeError(f"past_key_values must be an arcee_np KVCache (or the legacy tuple of (keys, values) per "
                             f"layer), got {type(cache).__name__} {shown(cache)}.")
    if cache.num_layers != config.num_hidden_layers:
        raise CacheError(f"past_key_values has {cache.num_layers} layers but the model has "
                         f"{config.num_hidden_layers}: make it with KVCache(model.config.num_hidden_layers).")
    lengths = {cache.get_seq_length(layer) for layer in range(cache.num_layers)}
    if len(lengths) > 1:
        raise CacheError(f"past_key_values holds {sorted(lengths)} positions in different layers (an interrupted "
                         f"call?); crop it to a common length with cache.crop(n) or start a new one.")
    past = lengths.pop()
    if cache.max_length is not None and past + length > cache.max_length:
        raise CacheError(f"past_key_values was made with max_length={cache.max_length} and this call needs "
                         f"{past + length} positions; make it with a larger max_length (or max_length=None to grow "
                         f"as needed).")
    if past:
        keys = cache[0][0]
        want = (batch, config.num_key_value_heads, past, config.head_dim)
        if tuple(keys.shape) != want:
            raise CacheError(f"past_key_values holds keys of shape {tuple(keys.shape)} [batch, kv_heads, past, "
                             f"head_dim] but this call needs {want}: it was filled by another model or another "
                             f"batch size. Use one cache per model and batch.")
        if device_of(array_namespace(keys)) != device_of(xp):
            raise CacheError(f"past_key_values lives on {device_of(array_namespace(keys))} but the model on "
                             f"{device_of(xp)}; use one cache per model.")
        if keys.dtype != dtype:
            raise CacheError(f"past_key_values holds {keys.dtype} keys but the model computes in {dtype}: it was "
                             f"filled by a model of another dtype. Use one cache per model.")
    return cache


# ---------------------------------------------------------------------------------------------- the heads' arguments
def check_token_labels(labels, inputs: ForwardInputs, classes: int, bound: str, xp):
    """Per-token labels [batch, seq]: class ids in [0, classes) or -100 (not scored); int64 on ``xp``.
    ``bound`` names ``classes`` in the message ("vocab_size", "num_labels")."""
    lab = integer_matrix(labels, "labels")
    if lab.shape != (inputs.batch, inputs.length):
        raise InputError(f"labels must be [batch, seq] = [{inputs.batch}, {inputs.length}], got {tuple(lab.shape)}.")
    _check_class_ids(lab, "labels", classes, bound)
    return to_device(lab.astype(np.int64, copy=False), xp)


def check_class_labels(labels, batch: int, classes: int, xp):
    """One class id per row [batch], each in [0, classes) or -100; int64 on ``xp``."""
    host = host_array(labels, "labels")
    if host.dtype.kind not in "iu":
        raise InputTypeError(f"labels must hold integer class ids, got dtype {host.dtype}; convert with "
                             f".astype('int64').")
    if host.size != batch:
        raise InputError(f"labels must hold {batch} class ids (one per row), got shape {tuple(host.shape)}.")
    flat = host.reshape(-1).astype(np.int64)
    _check_class_ids(flat, "labels", classes, "num_labels")
    return to_device(flat, xp)


def check_float_labels(labels, shape: tuple, what: str, xp, dtype):
    """Regression targets or multi-label 0/1 targets of ``shape``, finite; on ``xp`` in ``dtype``."""
    host = host_array(labels, "labels")
    if host.dtype.kind not in "biuf":
        raise InputTypeError(f"labels for {what} must be numbers, got dtype {host.dtype}.")
    if host.size != int(np.prod(shape)) or (len(shape) == 2 and host.shape != shape):
        raise InputError(f"labels for {what} must be {list(shape)} numbers, got shape {tuple(host.shape)}.")
    if not np.isfinite(host.astype(np.float64)).all():
        raise InputError(f"labels for {what} hold NaN or Inf.")
    return to_device(host.reshape(shape).astype(dtype), xp)


def _check_class_ids(ids: np.ndarray, name: str, classes: int, bound: str) -> None:
    bad = ids[((ids < 0) | (ids >= classes)) & (ids != IGNORE_INDEX)]
    if bad.size:
        raise InputError(f"{name} must lie in [0, {bound}={classes}) or be {IGNORE_INDEX} (ignored); found "
                         f"{np.unique(bad)[:5].tolist()}.")


def check_span_positions(name: str, value, batch: int, xp):
    """Answer-span positions [batch] (integers; transformers clamps them to [0, seq]); int64 on ``xp``."""
    host = host_array(value, name)
    if host.dtype.kind not in "iu" or host.size != batch:
        raise InputError(f"{name} must be {batch} integer token positions (one per row), got dtype {host.dtype} "
                         f"and shape {tuple(host.shape)}.")
    return to_device(host.reshape(-1).astype(np.int64), xp)


def check_logits_to_keep(value, inputs: ForwardInputs, vocab_size: int, with_labels: bool, xp):
    """``logits_to_keep``: an int >= 0 (keep the last that many positions; 0 keeps all) or a 1-D array of
    positions in [-seq, seq); the logits it keeps must fit in memory. Returns an int or an int64 ``xp`` array."""
    length = inputs.length
    if is_integer(value):
        if value < 0:
            raise InputError(f"logits_to_keep must be >= 0 (the number of last positions to keep; 0 keeps all), "
                             f"got {int(value)}.")
        keep = int(value)
    elif isinstance(value, (bool, float, str, bytes, np.bool_, np.floating)) or value is None:
        raise InputTypeError(f"logits_to_keep must be an integer or a 1-D array of positions, got {shown(value)}.")
    else:
        host = host_array(value, "logits_to_keep")
        if host.dtype.kind not in "iu" or host.ndim != 1:
            raise InputTypeError(f"logits_to_keep as an array must be 1-D integer positions, got dtype {host.dtype} "
                                 f"and shape {tuple(host.shape)}.")
        if host.size and (host.min() < -length or host.max() >= length):
            raise InputError(f"logits_to_keep positions must lie in [-{length}, {length}) for this {length}-token "
                             f"input, got {host.tolist()[:8]}.")
        keep = to_device(np.where(host < 0, host + length, host).astype(np.int64), xp)
    if with_labels and not (isinstance(keep, int) and keep == 0):
        raise InputError("labels need the logits of every position: leave logits_to_keep at 0.")
    kept = (min(keep, length) or length) if isinstance(keep, int) else int(keep.shape[0])
    check_allocation(4 * inputs.batch * kept * vocab_size, f"the logits of {inputs.batch} x {kept} positions",
                     "pass logits_to_keep=1 (the last position only) or a shorter input")
    return keep
