"""The knobs of ``generate``: call arguments, ``model.generation_config`` and generation_config.json.

One table (``KNOBS``) says what each knob takes; ``check_knob`` applies it to a call argument (InputError /
InputTypeError), ``check_generation_config`` to a generation config (ConfigError naming its file) when it
is read or set, ``check_prompt`` checks the prompt and its mask, ``check_length`` the final length.
"""

from __future__ import annotations

import math
import warnings

from ..errors import ConfigError, InputError, InputTypeError
from .arguments import check_key_mask, check_token_ids
from .memory import check_allocation
from .values import (is_flag, is_integer, is_real, require_choice, require_flag, require_int, require_real,
                     require_token_ids, shown)

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


def _real(low=None, high=None, low_open=False, high_open=False):
    return lambda n, v, e: require_real(n, v, e, low=low, high=high, low_open=low_open, high_open=high_open)


def _int(low):
    return lambda n, v, e: require_int(n, v, e, low=low)


def _id_lists(name: str, value, error) -> list[list[int]]:
    """A non-empty list of non-empty lists of token ids (bad_words_ids)."""
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(w, (list, tuple)) and w for w in value)):
        raise error(f"{name} must be a non-empty list of non-empty lists of token ids (e.g. [[5], [7, 8]]), got "
                    f"{shown(value)}.")
    return [require_token_ids(name, list(w), error) for w in value]


def _sequence_bias(name: str, value, error) -> dict:
    """``[[ids, bias], ...]`` (the JSON form) or ``{(ids...): bias}`` -> ``{tuple: float}``."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not (isinstance(pairs, (list, tuple)) and pairs and all(isinstance(p, (list, tuple)) and len(p) == 2
                                                                and isinstance(p[0], (list, tuple)) and p[0]
                                                                for p in pairs)):
        raise error(f"{name} must be a non-empty list of [token ids, bias] pairs (e.g. [[[5], -2.0], [[7, 8], 1.5]]) "
                    f"or a dict {{(ids...): bias}}, got {shown(value)}.")
    return {tuple(require_token_ids(name, list(ids), error)): require_real(name, bias, error) if bias != -math.inf
            else bias for ids, bias in pairs}


def _stop_strings(name: str, value, error) -> list[str]:
    """A non-empty string or a list of them."""
    strings = [value] if isinstance(value, str) else value
    if not (isinstance(strings, (list, tuple)) and strings and all(isinstance(s, str) and s for s in strings)):
        raise error(f"{name} must be a non-empty string or a list of them (e.g. ['\\n\\n', 'END']), got "
                    f"{shown(value)}.")
    return list(strings)


def _decay(name: str, value, error) -> tuple[int, float]:
    """``(start, factor)``: an int >= 0 and a factor > 0 (exponential_decay_length_penalty)."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise error(f"{name} must be a pair (start, decay_factor), e.g. [5, 1.5], got {shown(value)}.")
    return (require_int(f"{name}[0] (start)", value[0], error, low=0),
            require_real(f"{name}[1] (decay_factor)", value[1], error, low=0, low_open=True))


def _early_stopping(name: str, value, error):
    if value == "never":
        return value
    if not is_flag(value):
        raise error(f"{name} must be True, False or 'never', got {shown(value)}.")
    return bool(value)


def _choice(*choices):
    return lambda n, v, e: require_choice(n, v, choices, e)


# knob -> (the type it takes, its check(name, value, error) -> value): the keys of transformers' GenerationConfig
# that arcee_np implements (and ``seed``, its own)
KNOBS = {
    "max_new_tokens": ("int", _int(1)),
    "max_length": ("int", _int(1)),
    "min_new_tokens": ("int", _int(0)),
    "min_length": ("int", _int(0)),
    "max_time": ("real", _real(0, low_open=True)),
    "stop_strings": ("any", _stop_strings),
    "early_stopping": ("any", _early_stopping),
    "do_sample": ("flag", require_flag),
    "num_beams": ("int", _int(1)),
    "num_return_sequences": ("int", _int(1)),
    "length_penalty": ("real", _real()),
    "use_cache": ("flag", require_flag),
    "temperature": ("real", require_divisor),
    "top_k": ("int", _int(0)),
    "top_p": ("real", _real(0, 1)),
    "min_p": ("real", _real(0, 1)),
    "top_h": ("real", _real(0, 1, low_open=True)),
    "typical_p": ("real", _real(0, 1, low_open=True)),
    "epsilon_cutoff": ("real", _real(0, 1, high_open=True)),
    "eta_cutoff": ("real", _real(0, 1, high_open=True)),
    "repetition_penalty": ("real", require_divisor),
    "no_repeat_ngram_size": ("int", _int(0)),
    "bad_words_ids": ("any", _id_lists),
    "sequence_bias": ("any", _sequence_bias),
    "suppress_tokens": ("ids", require_token_ids),
    "begin_suppress_tokens": ("ids", require_token_ids),
    "forced_bos_token_id": ("int", lambda n, v, e: require_token_ids(n, v, e, allow_list=False)[0]),
    "forced_eos_token_id": ("ids", require_token_ids),
    "exponential_decay_length_penalty": ("any", _decay),
    "remove_invalid_values": ("flag", require_flag),
    "renormalize_logits": ("flag", require_flag),
    "output_scores": ("flag", require_flag),
    "output_logits": ("flag", require_flag),
    "return_dict_in_generate": ("flag", require_flag),
    "eos_token_id": ("ids", require_token_ids),
    "pad_token_id": ("int", lambda n, v, e: require_token_ids(n, v, e, allow_list=False)[0]),
    "bos_token_id": ("int", lambda n, v, e: require_token_ids(n, v, e, allow_list=False)[0]),
    "num_assistant_tokens": ("int", _int(1)),
    "num_assistant_tokens_schedule": ("any", _choice("constant", "heuristic", "heuristic_transient")),
    "assistant_confidence_threshold": ("real", _real(0, 1)),
    "prompt_lookup_num_tokens": ("int", _int(1)),
    "max_matching_ngram_size": ("int", _int(1)),
    "cache_implementation": ("any", _choice("dynamic", "static", "offloaded", "offloaded_static", "sliding_window",
                                            "hybrid")),
    "seed": ("int", _int(0)),
}
# the knobs that hold token ids (checked against the vocabulary)
TOKEN_ID_KNOBS = ("eos_token_id", "pad_token_id", "bos_token_id", "forced_bos_token_id", "forced_eos_token_id",
                  "suppress_tokens", "begin_suppress_tokens")
_OF_TYPE = {"int": is_integer, "real": is_real, "flag": is_flag, "any": lambda v: True,
            "ids": lambda v: is_integer(v) or isinstance(v, (list, tuple))}
_HINTS = {"temperature": " For greedy decoding use do_sample=False.", "repetition_penalty": " 1.0 is off.",
          "top_p": " 1.0 is off."}

# keys of transformers' GenerationConfig that arcee_np does not implement -> (the values that mean "off", which
# are accepted; what to do). Any other value is refused by name before generation starts.
_NOT_IMPLEMENTED = "is not implemented in arcee_np"
REFUSED = {
    "penalty_alpha": ((None, 0, 0.0), f"contrastive search {_NOT_IMPLEMENTED} (transformers v5 moved it to the "
                                      "Hub); use sampling or beam search"),
    "dola_layers": ((None,), f"DoLa decoding {_NOT_IMPLEMENTED} (transformers v5 moved it to the Hub)"),
    "num_beam_groups": ((None, 1), f"group (diverse) beam search {_NOT_IMPLEMENTED} (transformers v5 moved it to "
                                   "the Hub); use num_beams alone"),
    "diversity_penalty": ((None, 0, 0.0), f"group (diverse) beam search {_NOT_IMPLEMENTED}"),
    "constraints": ((None,), f"constrained beam search {_NOT_IMPLEMENTED} (transformers v5 moved it to the Hub)"),
    "force_words_ids": ((None,), f"constrained beam search {_NOT_IMPLEMENTED} (transformers v5 moved it to the "
                                 "Hub)"),
    "guidance_scale": ((None, 1, 1.0), f"classifier-free guidance {_NOT_IMPLEMENTED}"),
    "watermarking_config": ((None,), f"watermarking {_NOT_IMPLEMENTED}"),
    "token_healing": ((None, False), f"token healing {_NOT_IMPLEMENTED}"),
    "low_memory": ((None, False), "low_memory beam search is refused by transformers v5 too"),
    "output_attentions": ((None, False), "generate does not return attentions; run the model on the returned "
                                         "sequences with output_attentions=True"),
    "output_hidden_states": ((None, False), "generate does not return hidden states; run the model on the "
                                            "returned sequences with output_hidden_states=True"),
    "encoder_repetition_penalty": ((None, 1, 1.0), "it needs an encoder-decoder model; Arcee is decoder-only (use "
                                                   "repetition_penalty)"),
    "encoder_no_repeat_ngram_size": ((None, 0), "it needs an encoder-decoder model; Arcee is decoder-only (use "
                                                "no_repeat_ngram_size)"),
    "use_mtp": ((None, False), f"multi-token prediction {_NOT_IMPLEMENTED} (Arcee has no MTP heads)"),
    "assistant_early_exit": ((None,), f"early-exit self-speculation {_NOT_IMPLEMENTED}; pass assistant_model"),
    "assistant_ensemble_weight": ((None,), f"ensemble verification {_NOT_IMPLEMENTED}; speculative decoding "
                                           "stays lossless"),
    "speculation_type": ((None,), f"DFlash speculation {_NOT_IMPLEMENTED}; pass assistant_model or "
                                  "prompt_lookup_num_tokens"),
    "continuous_batching_config": ((None,), f"continuous batching {_NOT_IMPLEMENTED}"),
}

# keys accepted quietly: metadata, or settings that change how transformers runs, never what it returns (or that
# only an encoder-decoder model or a different-tokenizer assistant reads)
NO_EFFECT = {
    "transformers_version": "metadata", "_from_model_config": "metadata", "is_assistant": "internal to transformers",
    "decoder_start_token_id": "encoder-decoder models only", "compile_config": "torch.compile settings",
    "disable_compile": "torch.compile settings", "cache_config": "cache layout", "max_cache_len": "cache layout",
    "prefill_chunk_size": "prefill in chunks: the same logits", "assistant_lookbehind": "assistants with another "
    "tokenizer only", "target_lookbehind": "assistants with another tokenizer only",
}


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
    [0, vocab_size) when that is given. A key arcee_np does not know (neither a knob, nor REFUSED, nor
    NO_EFFECT) gives a UserWarning naming it; REFUSED keys are refused by ``check_refused`` when generate
    runs. Returns a copy."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a JSON object of generation settings, got {type(data).__name__} "
                          f"{shown(data)}; fix or delete it.")
    for name, value in data.items():
        if name in KNOBS and name != "seed" and value is not None:
            KNOBS[name][1](f"{source}: {name}", value, ConfigError)
            if name in TOKEN_ID_KNOBS and vocab_size is not None:
                require_token_ids(f"{source}: {name}", value, ConfigError, vocab_size)
        elif name not in KNOBS and name not in REFUSED and name not in NO_EFFECT:
            warnings.warn(f"{source}: unknown generation setting {name!r} = {shown(value)}; arcee_np (like "
                          f"transformers' GenerationConfig) does not use it. Check its spelling, or remove it.",
                          UserWarning, stacklevel=3)
    return dict(data)


def check_refused(settings: dict, source: str) -> None:
    """A setting transformers' GenerationConfig defines but arcee_np does not implement, set to anything but
    its "off" value, is refused by name (InputError) with what to do instead."""
    for name, (off, why) in REFUSED.items():
        value = settings.get(name)
        if not any(value is o or (value == o and type(value) is type(o)) for o in off):
            raise InputError(f"{source} sets {name}={shown(value)}: {why}. Remove it (or set it to "
                             f"{shown(off[-1])}).")


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


# the knobs transformers reads from the draft model's generation config in assisted decoding
ASSISTANT_KNOBS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def check_assistant(model, vocab_size: int):
    """generate's ``assistant_model``: None, or a model with ``_generation_step`` and ``generation_config`` (an
    ArceeForCausalLM) whose vocabulary has ``vocab_size`` entries (draft and target share token ids)."""
    if model is None:
        return None
    if not (callable(getattr(model, "_generation_step", None)) and hasattr(model, "generation_config")):
        raise InputTypeError(f"assistant_model must be an arcee_np ArceeForCausalLM (the draft model), got "
                             f"{type(model).__name__}.")
    if model.config.vocab_size != vocab_size:
        raise InputError(f"assistant_model has a vocabulary of {model.config.vocab_size} tokens but the model has "
                         f"{vocab_size}: draft and target must share the tokenizer.")
    return model


def check_tokenizer(tokenizer):
    """generate's ``tokenizer`` (for stop_strings): an object with ``token_texts()`` (ArceeTokenizer)."""
    if not callable(getattr(tokenizer, "token_texts", None)):
        raise InputTypeError(f"tokenizer must be an arcee_np ArceeTokenizer (it needs token_texts()), got "
                             f"{type(tokenizer).__name__}.")
    return tokenizer
