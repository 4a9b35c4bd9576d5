"""The settings of one ``generate`` call: every key of transformers' GenerationConfig that arcee_np implements,
resolved (call argument > ``model.generation_config`` > the model config's token ids > transformers' default)
and checked before the first step. The other keys are refused by name or accepted as metadata
(arcee_np.validation.generation: KNOBS, REFUSED, NO_EFFECT; docs/generation.md lists them)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import InputError
from ..validation.generation import KNOBS, NO_EFFECT, REFUSED, check_generation_config, check_knob, check_length, \
    check_refused
from ..validation.values import require_token_ids

DEFAULT_NEW_TOKENS = 20  # transformers' default max_length (20) counts new tokens when nothing sets a length


@dataclass
class GenerationSettings:
    """Every knob of one ``generate`` call, resolved and checked; ``max_length`` counts prompt and new tokens.
    Defaults are transformers' (GenerationConfig._get_default_generation_params)."""

    max_length: int
    prompt_length: int
    min_new_tokens: int = 0
    min_length: int = 0
    max_time: float | None = None
    stop_strings: list[str] | None = None
    do_sample: bool = False
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    use_cache: bool = True
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    top_h: float | None = None
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list | None = None
    sequence_bias: dict | None = None
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: list[int] | None = None
    exponential_decay_length_penalty: tuple | None = None
    remove_invalid_values: bool = False
    renormalize_logits: bool = False
    output_scores: bool = False
    output_logits: bool = False
    return_dict_in_generate: bool = False
    num_assistant_tokens: int = 20
    num_assistant_tokens_schedule: str = "constant"
    assistant_confidence_threshold: float = 0.4
    prompt_lookup_num_tokens: int | None = None
    max_matching_ngram_size: int = 2
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    seed: int | None = None


_SETTING_NAMES = {f.name for f in fields(GenerationSettings)} - {"prompt_length"}


def check_call_knobs(knobs: dict) -> dict:
    """generate's keyword arguments: each a knob (checked, InputError / InputTypeError), a REFUSED key (checked by
    ``check_refused`` later) or a NO_EFFECT key; anything else is refused as transformers refuses an unused
    argument. Returns the knobs that are set (None dropped)."""
    unknown = [name for name in knobs if name not in KNOBS and name not in REFUSED and name not in NO_EFFECT]
    if unknown:
        raise InputError(f"generate got unknown arguments {unknown}; the settings it takes are the keys of "
                         f"transformers' GenerationConfig (docs/generation.md lists them). Check the spelling.")
    return {name: check_knob(name, value) if name in KNOBS else value for name, value in knobs.items()
            if value is not None}


def _first(*values):
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def resolve_settings(prompt_length: int, vocab_size: int, max_position_embeddings: int | None,
                     generation_config: dict | None = None, model_tokens: dict | None = None,
                     **knobs) -> GenerationSettings:
    """Settings for one call: each knob (a keyword argument: a key of transformers' GenerationConfig, or
    ``seed``) that is None falls back to ``generation_config`` (the checkpoint's generation_config.json as a
    dict), then (token ids only) ``model_tokens`` (the model config's eos/pad ids), then transformers'
    defaults. Lengths as transformers v5: ``max_new_tokens`` wins over ``max_length``; with neither, 20 new
    tokens (capped at ``max_position_embeddings``). A pad id that is None becomes the first eos id. Every value
    is checked here: InputError or InputTypeError for an argument, ConfigError for a generation config value;
    a sequence past ``max_position_embeddings`` is refused; a REFUSED key that is on is refused by name."""
    call = check_call_knobs(knobs)
    gen = {k: v for k, v in check_generation_config(generation_config or {}, "generation_config").items()
           if v is not None}
    check_refused(call, "generate")
    check_refused(gen, "model.generation_config (generation_config.json)")
    merged = {**{k: KNOBS[k][1](f"generation_config: {k}", v, InputError) for k, v in gen.items()
                 if k in KNOBS and k != "seed"}, **call}
    if "max_length" in call and "max_new_tokens" not in call:
        merged.pop("max_new_tokens", None)  # a max_length argument wins over the config's max_new_tokens
    tokens = dict(model_tokens or {})
    max_new, longest = merged.get("max_new_tokens"), merged.get("max_length")
    if max_new is not None:
        total, asked = prompt_length + max_new, f"max_new_tokens={max_new}"
    elif longest is not None:
        total, asked = longest, f"max_length={longest}"
    else:
        total, asked = prompt_length + DEFAULT_NEW_TOKENS, f"the default of {DEFAULT_NEW_TOKENS} new tokens"
        if max_position_embeddings is not None:
            total = min(total, max_position_embeddings)
    check_length(prompt_length, total, max_position_embeddings, asked)
    eos = _first(merged.get("eos_token_id"), tokens.get("eos_token_id"))
    pad = _first(merged.get("pad_token_id"), tokens.get("pad_token_id"))
    values = {k: v for k, v in merged.items() if k in _SETTING_NAMES}
    if merged.get("min_new_tokens") is not None:  # transformers: min_new_tokens wins, as prompt + min_new_tokens
        values["min_length"] = prompt_length + merged["min_new_tokens"]
    values.update(max_length=total, prompt_length=prompt_length,
                  eos_token_id=require_token_ids("eos_token_id", eos, InputError, vocab_size),
                  pad_token_id=None if pad is None else require_token_ids("pad_token_id", pad, InputError,
                                                                         vocab_size)[0])
    if values.get("top_k") == 0:
        values["top_k"] = None
    settings = GenerationSettings(**values)
    if settings.pad_token_id is None and settings.eos_token_id:
        settings.pad_token_id = settings.eos_token_id[0]
    _check_combination(settings, vocab_size)
    return settings


def _check_combination(s: GenerationSettings, vocab_size: int) -> None:
    """What transformers' GenerationConfig.validate and generate refuse for a combination of knobs, and token
    ids of the list-valued knobs outside the vocabulary."""
    for name in ("bad_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                 "forced_eos_token_id"):
        value = getattr(s, name)
        ids = [] if value is None else [value] if isinstance(value, int) else \
            [t for group in value for t in (group if isinstance(group, (list, tuple)) else [group])]
        require_token_ids(name, ids, InputError, vocab_size)
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        forced = getattr(s, name)
        forced = {forced} if isinstance(forced, int) else set(forced or ())
        if forced and s.suppress_tokens is not None and forced <= set(s.suppress_tokens):
            raise InputError(f"every token of {name} ({sorted(forced)}) is also in suppress_tokens: forcing a token "
                             f"while suppressing it leaves every score -inf. Remove it from one of the two (to "
                             f"prevent an early eos, use min_new_tokens).")
    if s.num_return_sequences > 1 and s.num_beams == 1 and not s.do_sample:
        raise InputError(f"num_return_sequences={s.num_return_sequences} needs sampling (do_sample=True) or beam "
                         f"search (num_beams > 1): greedy decoding returns one sequence per prompt.")
    if s.num_beams > 1 and s.num_return_sequences > s.num_beams:
        raise InputError(f"num_return_sequences ({s.num_return_sequences}) has to be at most num_beams "
                         f"({s.num_beams}).")
    if s.num_beams > 1 and s.prompt_lookup_num_tokens is not None:
        raise InputError("prompt_lookup_num_tokens (assisted decoding) works with num_beams=1 only.")
