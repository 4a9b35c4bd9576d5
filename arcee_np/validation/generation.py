"""The knobs of ``generate``: call arguments, ``model.generation_config`` and generation_config.json.

One table (``KNOBS``) says what each knob takes; ``check_knob`` applies it to a call argument (InputError /
InputTypeError), ``check_generation_config`` to a generation config (ConfigError naming its file) when it
is read or set, ``check_prompt`` checks the prompt and its mask, ``check_length`` the final length.
"""

from __future__ import annotations

from ..errors import ConfigError, InputError, InputTypeError
from .arguments import check_key_mask, check_token_ids
from .memory import check_allocation
from .values import is_flag, is_integer, is_real, require_flag, require_int, require_real, require_token_ids, shown

# temperature and repetition_penalty divide float32 scores: below float32's smallest normal number a divisor
# is 0 or subnormal there, and the scores it divides become inf
SMALLEST_DIVISOR = 2.0**-126  # numpy.finfo(numpy.float32).tiny, 1.18e-38


def require_divisor(name: str, value, error) -> float:
    """A finite number > 0 that the float32 scores can be divided by: at least SMALLEST_DIVISOR."""
    divisor = require_real(name, value, error, low=0, low_open=True)
    if divisor < SMALLEST_DIVISOR:
        raise error(f"{name} must be at least {SMALLEST_DIVISOR:.3g} (float32's smallest normal number), got "
                    f"{shown(value)}: the float32 scores it divides would become inf.")
    return divisor


# knob -> (the type it takes, its check(name, value, error) -> value)
KNOBS = {
    "max_new_tokens": ("int", lambda n, v, e: require_int(n, v, e, low=1)),
    "max_length": ("int", lambda n, v, e: require_int(n, v, e, low=1)),
    "min_new_tokens": ("int", lambda n, v, e: require_int(n, v, e, low=0)),
    "do_sample": ("flag", require_flag),
    "temperature": ("real", require_divisor),
    "top_k": ("int", lambda n, v, e: require_int(n, v, e, low=0)),
    "top_p": ("real", lambda n, v, e: require_real(n, v, e, low=0, high=1)),
    "repetition_penalty": ("real", require_divisor),
    "eos_token_id": ("ids", require_token_ids),
    "pad_token_id": ("int", lambda n, v, e: require_token_ids(n, v, e, allow_list=False)[0]),
    "bos_token_id": ("int", lambda n, v, e: require_token_ids(n, v, e, allow_list=False)[0]),
    "num_beams": ("int", lambda n, v, e: require_int(n, v, e, low=1)),
    "seed": ("int", lambda n, v, e: require_int(n, v, e, low=0)),
}
_OF_TYPE = {"int": is_integer, "real": is_real, "flag": is_flag,
            "ids": lambda v: is_integer(v) or isinstance(v, (list, tuple))}
_HINTS = {"temperature": " For greedy decoding use do_sample=False.", "repetition_penalty": " 1.0 is off.",
          "top_p": " 1.0 is off."}


def check_knob(name: str, value):
    """A call argument of ``generate`` (None: unset); InputTypeError for a wrong type, InputError for a range."""
    if value is None:
        return None
    kind, check = KNOBS[name]
    if not _OF_TYPE[kind](value):
        check(f"generate: {name}", value, InputTypeError)
    hint = _HINTS.get(name, "")
    return check(f"generate: {name}", value, lambda message: InputError(message + hint))


def check_generation_config(data, source: str, vocab_size: int | None = None) -> dict:
    """A generation config (generation_config.json's dict, or what is assigned to ``model.generation_config``):
    an object whose knobs have the types and ranges of KNOBS (null = unset), its token ids in
    [0, vocab_size) when that is given. Returns a copy."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a JSON object of generation settings, got {type(data).__name__} "
                          f"{shown(data)}; fix or delete it.")
    for name, value in data.items():
        if name in KNOBS and name != "seed" and value is not None:
            KNOBS[name][1](f"{source}: {name}", value, ConfigError)
            if name.endswith("token_id") and vocab_size is not None:
                require_token_ids(f"{source}: {name}", value, ConfigError, vocab_size)
    return dict(data)


def check_prompt(input_ids, attention_mask, vocab_size: int, streamer):
    """generate's prompt [batch, seq] (token ids in the vocabulary), its 0/1 mask of the same shape and the
    streamer (``put`` and ``end``); returns the host arrays (mask None when not given)."""
    ids = check_token_ids(input_ids, "input_ids", vocab_size)
    mask = None if attention_mask is None else check_key_mask(attention_mask, "attention_mask", ids.shape)
    if streamer is not None and not (callable(getattr(streamer, "put", None)) and
                                     callable(getattr(streamer, "end", None))):
        raise InputTypeError(f"streamer must have put(token_ids) and end() methods (as TextStreamer does), got "
                             f"{type(streamer).__name__}.")
    return ids, mask


def check_length(prompt_length: int, total: int, max_position_embeddings: int | None, asked: str) -> None:
    """The sequence generate will produce (``total`` positions) leaves room and fits the model's positions;
    ``asked`` says which argument set the length (for the message)."""
    if prompt_length >= total:
        raise InputError(f"the prompt has {prompt_length} tokens but {asked} makes the sequence {total} long: nothing "
                         f"is left to generate. Set max_new_tokens (the number of tokens to add) instead.")
    if max_position_embeddings is not None and total > max_position_embeddings:
        room = max_position_embeddings - prompt_length
        fix = f"ask for at most {room} new tokens" if room > 0 else "shorten the prompt"
        raise InputError(f"{asked} makes the sequence {total} positions long, past the model's "
                         f"max_position_embeddings={max_position_embeddings} (the prompt has {prompt_length} tokens): "
                         f"{fix}.")


def check_cache_memory(config, batch: int, length: int, itemsize: int) -> None:
    """The KV cache generate preallocates (keys and values of every layer, ``batch`` x ``length`` positions)
    fits in memory."""
    check_allocation(2 * config.num_hidden_layers * batch * config.num_key_value_heads * config.head_dim * length *
                     itemsize, f"the KV cache of {batch} x {length} positions", "ask for fewer new tokens or a "
                     "smaller batch")


def check_beams(settings: dict) -> None:
    """arcee_np's generate is greedy or sampling: a generation config asking for beam search is refused."""
    beams = settings.get("num_beams")
    if beams not in (None, 1):
        raise InputError(f"the generation config sets num_beams={beams}; arcee_np generates greedily or by sampling "
                         f"(num_beams=1) only. Set model.generation_config['num_beams'] = 1.")
