"""Generation: transformers' logits processors and its greedy / sampling loop, over any step function.

The loop never sees a model class. It calls ``step(input_ids, attention_mask, position_ids, cache)``, which
returns the logits of the last position ``[B, V]`` (an array of any backend), and does what transformers'
``generate`` does (v5, ``num_beams=1``):

1. before the first step: the attention mask (given, or inferred from ``pad_token_id`` in the prompt when
   ``pad`` is not an eos id, else all ones) and the positions ``cumsum(mask) - 1`` (pads get 0);
2. each step: feed the tokens the cache has not seen (the whole prompt first, then one token), copy the
   logits to float32 and run the processors in transformers' order (below); greedy takes the argmax,
   sampling draws from ``softmax`` of the processed scores on the host with a seeded NumPy Generator;
3. rows that emitted an eos token get ``pad_token_id`` from then on; stop when every row has finished or
   the sequence reaches ``max_length``.

Processor order (transformers' ``_get_logits_processor`` for these knobs): repetition penalty,
min_new_tokens (eos set to -inf), then only when sampling: temperature, top-k, top-p. Each processor is a
plain function of xp arrays (``scores`` [B, V] float32) plus a transformers-named callable class
``(input_ids, scores) -> scores`` over it. The only values that leave the device are the chosen token ids
and, when sampling, the processed scores. docs/generation.md has the details.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from .blocks.namespace import array_namespace

from .backend import to_device, to_numpy
from .errors import InputError, NonFiniteError
from .validation.generation import check_beams, check_generation_config, check_knob, check_length
from .validation.values import require_int, require_real, require_token_ids

NEG_INF = -math.inf
DEFAULT_NEW_TOKENS = 20  # transformers' default max_length (20) counts new tokens when nothing sets a length


# ---------------------------------------------------------------------------------------------- processors
def token_presence(input_ids, vocab_size: int, ignore_before=None):
    """``present[b, v]``: does token ``v`` occur in row ``b`` of ``input_ids`` (from ``ignore_before[b]`` on)?

    input_ids: [B, S] integers; ignore_before: [B] integers or None (left-padding lengths: those positions
    are skipped). Returns [B, V] bool. Compares in chunks of positions so memory stays near B * V * 4096.
    """
    xp = array_namespace(input_ids)
    batch, length = input_ids.shape
    vocab = xp.arange(vocab_size, dtype=input_ids.dtype)  # [V]
    positions = xp.arange(length, dtype=xp.int64)  # [S]
    present = xp.zeros((batch, vocab_size), dtype=xp.bool)
    chunk = max(1, (1 << 24) // max(1, batch * vocab_size))
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        ids = input_ids[:, start:stop]  # [B, c]
        hits = ids[:, :, None] == vocab[None, None, :]  # [B, c, V]
        if ignore_before is not None:
            counted = positions[None, start:stop] >= ignore_before[:, None]  # [B, c]
            hits = hits & counted[:, :, None]
        present = present | xp.any(hits, axis=1)
    return present


def repetition_penalty(scores, input_ids, penalty: float, ignore_before=None):
    """Penalise every token already in the sequence, once however often it occurs (CTRL's penalty):
    ``s < 0 ? s * penalty : s / penalty``.

    scores: [B, V]; input_ids: [B, S] (prompt and generated tokens); ignore_before: [B] left-padding
    lengths (those positions are not counted, as transformers v5 does) or None. Returns [B, V].
    """
    xp = array_namespace(scores, input_ids)
    present = token_presence(input_ids, scores.shape[-1], ignore_before)
    penalised = xp.where(scores < 0, scores * penalty, scores / penalty)
    return xp.where(present, penalised, scores)


def suppress_tokens(scores, token_ids):
    """``scores[:, token_ids] = -inf`` (min_new_tokens uses it on the eos ids).

    scores: [B, V]; token_ids: a list of ints. Returns [B, V].
    """
    xp = array_namespace(scores)
    vocab = xp.arange(scores.shape[-1], dtype=xp.int64)  # [V]
    hit = xp.zeros(scores.shape[-1], dtype=xp.bool)
    for token in token_ids:
        hit = hit | (vocab == token)
    return xp.where(hit[None, :], xp.asarray(NEG_INF, dtype=scores.dtype), scores)


def apply_temperature(scores, temperature: float):
    """``scores / temperature``. scores: [B, V]. Returns [B, V]."""
    return scores / temperature


def top_k_filter(scores, top_k: int, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Keep the ``k = min(max(top_k, min_tokens_to_keep), V)`` largest scores of each row; the rest become
    ``filter_value``. Ties with the k-th largest value survive (the test is ``s < kth``).

    scores: [B, V]. Returns [B, V].
    """
    xp = array_namespace(scores)
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = xp.sort(scores, axis=-1, descending=True)[:, k - 1:k]  # [B, 1]
    return xp.where(scores < kth, xp.asarray(filter_value, dtype=scores.dtype), scores)


def top_p_filter(scores, top_p: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Nucleus filtering: sort each row ascending, ``cum = cumsum(softmax(sorted))``; drop the entries with
    ``cum <= 1 - top_p`` except the last ``min_tokens_to_keep`` (the most likely); dropped scores become
    ``filter_value``. Tied scores are ordered by vocabulary index, the lower index counting as more likely
    (so it is kept first, as argmax prefers it); transformers' torch.sort orders ties arbitrarily.

    scores: [B, V]. Returns [B, V].
    """
    xp = array_namespace(scores)
    order = xp.flip(xp.argsort(scores, axis=-1, descending=True, stable=True), axis=-1)  # [B, V] ascending
    ordered = xp.take_along_axis(scores, order, axis=-1)
    shifted = xp.exp(ordered - ordered[:, -1:])  # softmax; the last entry is the row's maximum
    cumulative = xp.cumulative_sum(shifted / xp.sum(shifted, axis=-1, keepdims=True), axis=-1)
    remove = cumulative <= (1 - top_p)  # [B, V] in sorted order
    keep_tail = xp.arange(scores.shape[-1]) >= scores.shape[-1] - min_tokens_to_keep  # [V]
    remove = remove & ~keep_tail[None, :]
    inverse = xp.argsort(order, axis=-1)  # [B, V]: where each vocabulary entry sits in the sorted row
    remove = xp.take_along_axis(remove, inverse, axis=-1)  # back to vocabulary order
    return xp.where(remove, xp.asarray(filter_value, dtype=scores.dtype), scores)


# ------------------------------------------------------------------ transformers-named processor objects
class LogitsProcessor:
    """A callable ``(input_ids [B, S], scores [B, V]) -> scores [B, V]``, as transformers' processors."""

    def __call__(self, input_ids, scores):  # pragma: no cover - interface
        raise NotImplementedError


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """transformers' RepetitionPenaltyLogitsProcessor; ``prompt_ignore_length``: an int (skip that many leading
    positions of every row) or per-row left-padding lengths [B]."""

    def __init__(self, penalty: float, prompt_ignore_length=None):
        self.penalty = require_real("repetition_penalty", penalty, InputError, low=0, low_open=True)
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids, scores):
        xp = array_namespace(scores)
        if array_namespace(input_ids) is not xp:
            input_ids = to_device(np.asarray(to_numpy(input_ids), dtype=np.int64), xp)
        ignore = self.prompt_ignore_length
        if isinstance(ignore, int):
            input_ids, ignore = input_ids[:, ignore:], None
        elif ignore is not None:
            ignore = to_device(np.asarray(to_numpy(ignore), dtype=np.int64), xp)
        return repetition_penalty(scores, input_ids, self.penalty, ignore)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """transformers' MinNewTokensLengthLogitsProcessor: eos ids get -inf until ``min_new_tokens`` tokens
    follow the ``prompt_length_to_skip`` prompt tokens."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id):
        self.prompt_length_to_skip = require_int("prompt_length_to_skip", prompt_length_to_skip, InputError, low=0)
        self.min_new_tokens = require_int("min_new_tokens", min_new_tokens, InputError, low=0)
        self.eos_token_id = require_token_ids("eos_token_id", eos_token_id, InputError)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
            return suppress_tokens(scores, self.eos_token_id)
        return scores


class TemperatureLogitsWarper(LogitsProcessor):
    """transformers' TemperatureLogitsWarper: ``scores / temperature``."""

    def __init__(self, temperature: float):
        self.temperature = require_real("temperature", temperature, InputError, low=0, low_open=True)

    def __call__(self, input_ids, scores):
        return apply_temperature(scores, self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    """transformers' TopKLogitsWarper."""

    def __init__(self, top_k: int, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.top_k = require_int("top_k (0 or None turns top-k off in generate)", top_k, InputError, low=1)
        self.min_tokens_to_keep = require_int("min_tokens_to_keep", min_tokens_to_keep, InputError, low=1)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        return top_k_filter(scores, self.top_k, self.min_tokens_to_keep, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """transformers' TopPLogitsWarper."""

    def __init__(self, top_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.top_p = require_real("top_p (1.0 = off)", top_p, InputError, low=0, high=1)
        self.min_tokens_to_keep = require_int("min_tokens_to_keep", min_tokens_to_keep, InputError, low=1)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        return top_p_filter(scores, self.top_p, self.min_tokens_to_keep, self.filter_value)


class LogitsProcessorList(list):
    """Processors applied in order: ``scores = p(input_ids, scores)`` for each."""

    def __call__(self, input_ids, scores):
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


# ---------------------------------------------------------------------------------------------- settings
@dataclass
class GenerationSettings:
    """Every knob of one ``generate`` call, resolved (call argument > generation_config.json > model config >
    transformers' default) and checked. ``max_length`` counts prompt and new tokens."""

    max_length: int
    prompt_length: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    seed: int | None = None


def _first(*values):
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def resolve_settings(prompt_length: int, vocab_size: int, max_position_embeddings: int | None,
                     generation_config: dict | None = None, model_tokens: dict | None = None, *,
                     max_new_tokens=None, max_length=None, min_new_tokens=None, do_sample=None, temperature=None,
                     top_k=None, top_p=None, repetition_penalty=None, eos_token_id=None, pad_token_id=None,
                     seed=None) -> GenerationSettings:
    """Settings for one call: each argument that is None falls back to ``generation_config`` (the checkpoint's
    generation_config.json as a dict), then (token ids only) ``model_tokens`` (the model config's
    eos/pad ids), then transformers' defaults. Lengths as transformers v5: ``max_new_tokens`` wins over
    ``max_length``; with neither, 20 new tokens (capped at ``max_position_embeddings``). A pad id that is
    None becomes the first eos id. Every value is checked here (arcee_np.validation.generation): InputError
    or InputTypeError for an argument, ConfigError for a generation config value; a sequence past
    ``max_position_embeddings`` is refused."""
    call = {name: check_knob(name, value) for name, value in dict(
        max_new_tokens=max_new_tokens, max_length=max_length, min_new_tokens=min_new_tokens, do_sample=do_sample,
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed).items()}
    gen = check_generation_config(generation_config or {}, "generation_config")
    check_beams(gen)
    tokens = dict(model_tokens or {})
    max_new = _first(call["max_new_tokens"], None if call["max_length"] is not None else gen.get("max_new_tokens"))
    longest = _first(call["max_length"], gen.get("max_length"))
    if max_new is not None:
        total, asked = prompt_length + max_new, f"max_new_tokens={max_new}"
    elif longest is not None:
        total, asked = longest, f"max_length={longest}"
    else:
        total, asked = prompt_length + DEFAULT_NEW_TOKENS, f"the default of {DEFAULT_NEW_TOKENS} new tokens"
        if max_position_embeddings is not None:
            total = min(total, max_position_embeddings)
    check_length(prompt_length, total, max_position_embeddings, asked)
    eos = _first(call["eos_token_id"], gen.get("eos_token_id"), tokens.get("eos_token_id"))
    pad = _first(call["pad_token_id"], gen.get("pad_token_id"), tokens.get("pad_token_id"))
    settings = GenerationSettings(
        max_length=total, prompt_length=prompt_length,
        min_new_tokens=_first(call["min_new_tokens"], gen.get("min_new_tokens"), 0),
        do_sample=_first(call["do_sample"], gen.get("do_sample"), False),
        temperature=_first(call["temperature"], gen.get("temperature"), 1.0),
        top_k=_first(call["top_k"], gen.get("top_k"), 50),
        top_p=_first(call["top_p"], gen.get("top_p"), 1.0),
        repetition_penalty=_first(call["repetition_penalty"], gen.get("repetition_penalty"), 1.0),
        eos_token_id=require_token_ids("eos_token_id", eos, InputError, vocab_size),
        pad_token_id=None if pad is None else require_token_ids("pad_token_id", pad, InputError, vocab_size)[0],
        seed=call["seed"],
    )
    if settings.pad_token_id is None and settings.eos_token_id:
        settings.pad_token_id = settings.eos_token_id[0]
    return settings


def build_processors(settings: GenerationSettings, padding_lengths=None) -> LogitsProcessorList:
    """The processors transformers' generate would run for these settings, in its order.

    padding_lengths: [B] left-padding lengths (the repetition penalty skips those positions) or None.
    """
    s = settings
    processors = LogitsProcessorList()
    if s.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty, padding_lengths))
    if s.min_new_tokens > 0 and s.eos_token_id:
        processors.append(MinNewTokensLengthLogitsProcessor(s.prompt_length, s.min_new_tokens, s.eos_token_id))
    if s.do_sample:
        if s.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(s.temperature))
        if s.top_k:
            processors.append(TopKLogitsWarper(s.top_k))
        if s.top_p < 1.0:
            processors.append(TopPLogitsWarper(s.top_p))
    return processors


# ---------------------------------------------------------------------------------------------- the loop
def sample_from_scores(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from ``softmax(scores)`` on the host (float64), by inverting the cumulative sum.

    Entries at -inf have probability 0 and are never drawn. scores: [B, V]. Returns [B] int64. Scores with no
    distribution (NaN, +inf, or all -inf in a row) raise NonFiniteError, as torch.multinomial refuses them.
    """
    x = scores.astype(np.float64)
    with np.errstate(invalid="ignore"):
        probs = np.exp(x - x.max(axis=-1, keepdims=True))  # [B, V]
    cdf = np.cumsum(probs, axis=-1)
    if not (np.isfinite(cdf[:, -1]).all() and (cdf[:, -1] > 0).all()):
        raise NonFiniteError("the sampling scores hold NaN or +Inf (or a row of -Inf) after the logits processors: "
                             "a temperature or repetition_penalty so small that scores overflow float32? Use "
                             "values nearer 1, or do_sample=False.", "scores")
    u = rng.random(scores.shape[0])[:, None] * cdf[:, -1:]  # [B, 1] in [0, total)
    return np.minimum((cdf <= u).sum(axis=-1), scores.shape[-1] - 1).astype(np.int64)


def initial_mask(input_ids: np.ndarray, attention_mask, settings: GenerationSettings):
    """The prompt's attention mask as transformers' generate makes it: the given one, else inferred from the
    pad id when the prompt holds it and it is not an eos id, else all ones. input_ids: [B, T]. Returns
    [B, T] int64 (a given mask is checked by generate: the prompt's shape, 0 and 1)."""
    if attention_mask is not None:
        return np.asarray(to_numpy(attention_mask)).astype(np.int64)
    pad = settings.pad_token_id
    if pad is not None and (input_ids == pad).any() and pad not in settings.eos_token_id:
        return (input_ids != pad).astype(np.int64)
    return np.ones(input_ids.shape, dtype=np.int64)


def generate_tokens(step, input_ids, settings: GenerationSettings, attention_mask=None, cache=None,
                    streamer=None) -> np.ndarray:
    """Run the loop of transformers' greedy / sampling ``generate`` and return prompt + new tokens [B, T + n].

    step: ``(input_ids [B, t], attention_mask [B, S] or None, position_ids [B, t] or None, cache) -> logits
    [B, V]`` of the last position (any backend); it must append to ``cache``. With ``cache=None`` every step
    feeds the whole sequence. input_ids: [B, T] integers (left padding for batches). streamer: an object with
    ``put(token_ids)`` (the prompt [B, T] first, then each step's [B] tokens) and ``end()``. The loop trusts
    its arguments: ``ArceeForCausalLM.generate`` checks them (arcee_np.validation.generation).
    """
    ids = np.asarray(to_numpy(input_ids)).astype(np.int64)
    mask = initial_mask(ids, attention_mask, settings)
    positions = np.where(mask == 0, 0, np.cumsum(mask, axis=-1) - 1)  # [B, T]; pads at 0 (transformers v5)
    if ids.shape[0] > 1 and not mask[:, -1].all():
        warnings.warn("right padding detected in a batched prompt: the rows whose last token is padding continue "
                      "from a pad. Pad on the left for generation (tokenizer(..., padding_side='left')).", stacklevel=3)
    if mask.all():
        mask, padding_lengths = None, None  # transformers drops an all-ones mask
    else:
        padding_lengths = np.argmax(mask != 0, axis=-1)  # [B] leading pads, skipped by the repetition penalty
    processors = build_processors(settings, padding_lengths)
    rng = np.random.default_rng(settings.seed)
    unfinished = np.ones(ids.shape[0], dtype=bool)
    eos = np.asarray(settings.eos_token_id, dtype=np.int64)
    if streamer is not None:
        streamer.put(ids.copy())
    while True:
        fresh = ids.shape[1] - (cache.get_seq_length() if cache is not None else 0)  # tokens the cache lacks
        logits = step(ids[:, -fresh:], mask, None if mask is None else positions[:, -fresh:], cache)
        xp = array_namespace(logits)
        scores = xp.astype(logits, xp.float32, copy=True)  # [B, V]
        if processors:
            scores = processors(to_device(ids, xp), scores)
        if settings.do_sample:
            tokens = sample_from_scores(np.asarray(to_numpy(scores)), rng)
        else:
            tokens = np.asarray(to_numpy(xp.argmax(scores, axis=-1))).astype(np.int64)
        if eos.size:
            tokens = np.where(unfinished, tokens, settings.pad_token_id)
        ids = np.concatenate([ids, tokens[:, None]], axis=1)
        positions = np.concatenate([positions, positions[:, -1:] + 1], axis=1)
        if mask is not None:
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=mask.dtype)], axis=1)
        if streamer is not None:
            streamer.put(tokens.copy())
        if eos.size:
            unfinished &= ~np.isin(tokens, eos)
        if not unfinished.any() or ids.shape[1] >= settings.max_length:
            break
    if streamer is not None:
        streamer.end()
    return ids
