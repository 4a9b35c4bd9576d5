"""The greedy / sampling loop of transformers' ``generate`` over any step function.

The loop never sees a model class. It calls ``step(input_ids, attention_mask, position_ids, cache)``, which
returns the logits of the last position ``[B, V]`` (an array of any backend), and does what transformers'
``generate`` does (v5, ``num_beams=1``):

1. before the first step (``prepare_prompt``): the attention mask (given, or inferred from ``pad_token_id``
   in the prompt when ``pad`` is not an eos id, else all ones) and the positions ``cumsum(mask) - 1`` (pads
   get 0); with ``num_return_sequences > 1`` every prompt row is repeated that many times;
2. each step: feed the tokens the cache has not seen (the whole prompt first, then one token), copy the
   logits to float32 and run the processors (chain.py, transformers' order); greedy takes the argmax,
   sampling draws from ``softmax`` of the processed scores on the host with a seeded NumPy Generator;
3. rows that emitted an eos token get ``pad_token_id`` from then on (when an eos id is set); a row also stops
   on a stop string or max_time (stopping.py); stop when every row has finished or the sequence reaches
   ``max_length``.

The only values that leave the device are the chosen token ids and, when sampling, the processed scores.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..backend import to_device, to_numpy
from ..blocks.namespace import array_namespace
from ..errors import NonFiniteError
from .chain import build_processors
from .outputs import GenerateDecoderOnlyOutput
from .settings import GenerationSettings
from .stopping import StoppingCriteriaList

PAD_IS_EOS_WARNING = ("The attention mask is not set with a batched input, and cannot be inferred from input because "
                      "pad token is same as eos token. As a consequence, you may observe unexpected behavior. Please "
                      "pass your input's `attention_mask` to obtain reliable results.")


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
    pad id when the prompt holds it and it is not an eos id, else all ones (with transformers' warning when
    a batch has no mask and its pad id is an eos id: the pads are attended). input_ids: [B, T]. Returns
    [B, T] int64 (a given mask is checked by generate: the prompt's shape, 0 and 1)."""
    if attention_mask is not None:
        return np.asarray(to_numpy(attention_mask)).astype(np.int64)
    pad = settings.pad_token_id
    if pad is not None and pad in settings.eos_token_id and input_ids.shape[0] > 1:
        warnings.warn(PAD_IS_EOS_WARNING, UserWarning, stacklevel=5)
    if pad is not None and (input_ids == pad).any() and pad not in settings.eos_token_id:
        return (input_ids != pad).astype(np.int64)
    return np.ones(input_ids.shape, dtype=np.int64)


def prepare_prompt(input_ids, attention_mask, settings: GenerationSettings, repeat: int = 1):
    """The prompt as the loops use it: ``(ids [B * repeat, T] int64, mask [B * repeat, T] or None when all
    ones, positions [B * repeat, T], padding_lengths [B * repeat] or None)``, each row repeated ``repeat``
    times in place (row b becomes rows b * repeat ... b * repeat + repeat - 1, as torch's repeat_interleave)."""
    ids = np.asarray(to_numpy(input_ids)).astype(np.int64)
    mask = initial_mask(ids, attention_mask, settings)
    if ids.shape[0] > 1 and not mask[:, -1].all():
        warnings.warn("right padding detected in a batched prompt: the rows whose last token is padding continue "
                      "from a pad. Pad on the left for generation (tokenizer(..., padding_side='left')).", stacklevel=4)
    ids, mask = np.repeat(ids, repeat, axis=0), np.repeat(mask, repeat, axis=0)
    positions = np.where(mask == 0, 0, np.cumsum(mask, axis=-1) - 1)  # [B, T]; pads at 0 (transformers v5)
    if mask.all():
        return ids, None, positions, None  # transformers drops an all-ones mask
    return ids, mask, positions, np.argmax(mask != 0, axis=-1)


def extend(ids, mask, positions, tokens):
    """Append ``tokens`` [B, k] to the sequence, its mask (ones) and positions (counting on)."""
    k = tokens.shape[1]
    ids = np.concatenate([ids, tokens], axis=1)
    positions = np.concatenate([positions, positions[:, -1:] + np.arange(1, k + 1)], axis=1)
    if mask is not None:
        mask = np.concatenate([mask, np.ones((mask.shape[0], k), dtype=mask.dtype)], axis=1)
    return ids, mask, positions


def fresh_inputs(ids, mask, positions, cache):
    """The step's inputs: the tokens ``cache`` has not seen (all of them when there is no cache)."""
    fresh = ids.shape[1] - (cache.get_seq_length() if cache is not None else 0)
    return ids[:, -fresh:], mask, None if mask is None else positions[:, -fresh:]


def decode(step, input_ids, settings: GenerationSettings, attention_mask=None, cache=None, streamer=None,
           stopping: StoppingCriteriaList | None = None) -> GenerateDecoderOnlyOutput:
    """Run the loop of transformers' greedy / sampling ``generate``; returns GenerateDecoderOnlyOutput with
    ``sequences`` [B * num_return_sequences, T + n] and, when settings ask, the processed ``scores`` and raw
    ``logits`` of every step.

    step: ``(input_ids [B, t], attention_mask [B, S] or None, position_ids [B, t] or None, cache) -> logits
    [B, V]`` of the last position (any backend); it must append to ``cache``. With ``cache=None`` every step
    feeds the whole sequence. input_ids: [B, T] integers (left padding for batches). streamer: an object with
    ``put(token_ids)`` (the prompt [B, T] first, then each step's [B] tokens) and ``end()``. stopping: extra
    criteria (stop strings, max_time). The loop trusts its arguments: ``ArceeForCausalLM.generate`` checks them
    (arcee_np.validation.generation).
    """
    repeat = settings.num_return_sequences if settings.do_sample else 1
    ids, mask, positions, padding_lengths = prepare_prompt(input_ids, attention_mask, settings, repeat)
    processors = build_processors(settings, padding_lengths)
    rng = np.random.default_rng(settings.seed)
    unfinished = np.ones(ids.shape[0], dtype=bool)
    eos = np.asarray(settings.eos_token_id, dtype=np.int64)
    scores_seen = [] if settings.output_scores else None
    logits_seen = [] if settings.output_logits else None
    if streamer is not None:
        streamer.put(ids.copy())
    while True:
        logits = step(*fresh_inputs(ids, mask, positions, cache), cache)
        xp = array_namespace(logits)
        scores = xp.astype(logits, xp.float32, copy=True)  # [B, V]
        if processors:
            scores = processors(to_device(ids, xp), scores)
        if logits_seen is not None:
            logits_seen.append(np.asarray(to_numpy(logits)))
        if scores_seen is not None:
            scores_seen.append(np.asarray(to_numpy(scores)))
        if settings.do_sample:
            tokens = sample_from_scores(np.asarray(to_numpy(scores)), rng)
        else:
            tokens = np.asarray(to_numpy(xp.argmax(scores, axis=-1))).astype(np.int64)
        if eos.size:
            tokens = np.where(unfinished, tokens, settings.pad_token_id)
        ids, mask, positions = extend(ids, mask, positions, tokens[:, None])
        if streamer is not None:
            streamer.put(tokens.copy())
        if eos.size:
            unfinished &= ~np.isin(tokens, eos)
        if stopping:
            unfinished &= ~stopping(ids)
        if not unfinished.any() or ids.shape[1] >= settings.max_length:
            break
    if streamer is not None:
        streamer.end()
    return GenerateDecoderOnlyOutput(ids, None if scores_seen is None else tuple(scores_seen),
                                     None if logits_seen is None else tuple(logits_seen), cache=cache)


def generate_tokens(step, input_ids, settings: GenerationSettings, attention_mask=None, cache=None,
                    streamer=None) -> np.ndarray:
    """``decode(...).sequences``: prompt + new tokens [B, T + n] (see ``decode``)."""
    return decode(step, input_ids, settings, attention_mask, cache, streamer).sequences
