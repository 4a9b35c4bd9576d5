"""Beam search as transformers' ``_beam_search`` (v5) does it, over any step function.

Per prompt, ``K = num_beams`` running beams and the ``K`` best finished hypotheses are kept. Each step:

1. ``log_probs = processors(log_softmax(logits))`` for every running beam [B * K, V]; add each beam's
   running score (the sum of its chosen log-probabilities; beams 1..K-1 start at -1e9 so that the first step
   expands beam 0 only);
2. take the ``2K`` (``(1 + len(eos)) K`` with several eos ids) best continuations over all ``K * V`` of a
   prompt (sampling: draw them without replacement from ``softmax`` of those sums, then sort);
3. continuations that hit a stopping criterion (eos, the length limit, a stop string) among the first K
   become finished hypotheses with score ``sum / (generated length ** length_penalty)``, replacing worse
   ones; the K best of the others run on, and the KV cache is reordered to follow them
   (``cache.reorder(beam_idx)``);
4. stop when no running beam can beat the worst finished one (``early_stopping`` False: judged at the
   current length; "never": at max_length when length_penalty > 0), when every prompt has K finished
   hypotheses and ``early_stopping`` is True, or when every continuation hit a stopping criterion.

Arithmetic is float32 on the host, as transformers' (the -1e9 masks included); ties in top-k are broken by
the lower index (torch's topk order for ties is unspecified).
"""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_numpy
from ..blocks.namespace import array_namespace
from .chain import build_processors
from .loop import extend, fresh_inputs, prepare_prompt
from .outputs import GenerateBeamDecoderOnlyOutput
from .settings import GenerationSettings
from .warpers import log_softmax

MASKED = np.float32(-1.0e9)


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row of ``values`` [B, N], largest first, ties by lower index."""
    return np.argsort(-values, axis=-1, kind="stable")[:, :k]


def gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[b, index[b, j], ...]`` for [B, N, ...] values and [B, M] indices (transformers' _gather_beams)."""
    return values[np.arange(values.shape[0])[:, None], index]


def sample_without_replacement(log_probs: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct indices per row drawn from ``softmax(log_probs)`` [B, N] without replacement, by
    torch.multinomial's method (the ``count`` largest ``p / E`` with ``E ~ Exp(1)``: entries of probability 0
    come last, so a row with fewer possible entries than ``count`` still gives ``count``); sorted by
    ``log_probs``, largest first."""
    x = log_probs.astype(np.float64)
    probs = np.exp(x - x.max(axis=-1, keepdims=True))
    chosen = top_indices(probs / rng.exponential(size=probs.shape), count)
    order = np.argsort(-gather(log_probs, chosen), axis=-1, kind="stable")
    return gather(chosen, order)


def expand_beams(log_probs: np.ndarray, running_scores: np.ndarray, keep: int, rng=None):
    """One expansion of beam search: the ``keep`` best continuations of each prompt over all its beams.

    log_probs: [B, K, V] processed log-probabilities of each running beam's next token; running_scores:
    [B, K] the sums so far. The candidates are ``running_scores[b, k] + log_probs[b, k, v]``; the best
    ``keep`` are taken (with ``rng``: drawn without replacement from their softmax instead). Returns
    ``(scores [B, keep], beam [B, keep], token [B, keep])``, best first.
    """
    batch, beams, vocab = log_probs.shape
    totals = (log_probs + running_scores[:, :, None]).reshape(batch, beams * vocab)
    chosen = top_indices(totals, keep) if rng is None else sample_without_replacement(totals, keep, rng)
    return gather(totals, chosen), chosen // vocab, chosen % vocab


def beam_search(step, input_ids, settings: GenerationSettings, attention_mask=None, cache=None,
                stopping=None) -> GenerateBeamDecoderOnlyOutput:
    """Beam search (with ``settings.do_sample``: beam sampling) as transformers; returns
    GenerateBeamDecoderOnlyOutput with ``sequences`` [B * num_return_sequences, T + n] (finished rows padded
    with the pad id, or the first eos id when the pad id is 0 or unset, as transformers does),
    ``sequences_scores``, ``beam_indices`` and, when settings ask, per-step ``scores`` and ``logits``.

    step, attention_mask, cache, stopping: as ``loop.decode``; the cache must have ``reorder(beam_idx)``.
    """
    s = settings
    beams, eos = s.num_beams, np.asarray(s.eos_token_id, dtype=np.int64)
    ids, mask, positions, padding_lengths = prepare_prompt(input_ids, attention_mask, s, beams)
    batch, prompt_len, max_length = ids.shape[0] // beams, ids.shape[1], s.max_length
    processors = build_processors(s, padding_lengths)
    rng = np.random.default_rng(s.seed)
    keep = max(2, 1 + eos.size) * beams
    top_beam = np.arange(keep) < beams  # [2K]: only these may finish this step
    fill = (s.pad_token_id or int(eos[0])) if eos.size else -1  # transformers' `pad or eos[0] if eos else -1`
    running = np.full((batch, beams, max_length), fill, dtype=np.int64)
    running[:, :, :prompt_len] = ids.reshape(batch, beams, prompt_len)
    finished_seqs = running.copy()
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = MASKED
    finished_scores = np.full((batch, beams), MASKED, dtype=np.float32)
    is_finished = np.zeros((batch, beams), dtype=bool)
    can_improve = np.ones((batch, 1), dtype=bool)
    hits = np.zeros((batch, beams), dtype=bool)
    running_idx = np.full((batch, beams, max_length - prompt_len), -1, dtype=np.int64)
    finished_idx = running_idx.copy()
    scores_seen = [] if s.output_scores else None
    logits_seen = [] if s.output_logits else None
    cur_len = prompt_len
    while True:
        flat = running[:, :, :cur_len].reshape(batch * beams, cur_len)
        logits = step(*fresh_inputs(flat, mask, positions, cache), cache)
        xp = array_namespace(logits)
        log_probs = log_softmax(xp.astype(logits, xp.float32, copy=True))
        if processors:
            log_probs = processors(to_device(flat, xp), log_probs)
        log_probs = np.asarray(to_numpy(log_probs), dtype=np.float32)
        if logits_seen is not None:
            logits_seen.append(np.asarray(to_numpy(logits)))
        if scores_seen is not None:
            scores_seen.append(log_probs.copy())
        vocab = log_probs.shape[-1]
        top_scores, from_beam, tokens = expand_beams(log_probs.reshape(batch, beams, vocab), running_scores, keep,
                                                     rng if s.do_sample else None)
        top_seqs = gather(running, from_beam)  # [B, 2K, L]
        top_seqs[:, :, cur_len] = tokens
        top_idx = gather(running_idx, from_beam)
        top_idx[:, :, cur_len - prompt_len] = from_beam + np.arange(batch)[:, None] * beams
        # d. which continuations hit a stopping criterion
        hits = np.full((batch, keep), cur_len + 1 >= max_length)
        if eos.size:
            hits |= np.isin(tokens, eos)
        if stopping:
            hits |= stopping(top_seqs[:, :, :cur_len + 1].reshape(batch * keep, -1)).reshape(batch, keep)
        # e. the running beams of the next step: the best that did not stop
        alive = top_scores + hits.astype(np.float32) * MASKED
        best = top_indices(alive, beams)
        running, running_scores, running_idx = gather(top_seqs, best), gather(alive, best), gather(top_idx, best)
        # f. finished hypotheses: merge the ones that just finished, keep the best K
        just_finished = hits & top_beam[None, :]
        penalised = top_scores / np.float32((cur_len + 1 - prompt_len) ** s.length_penalty)
        full = is_finished.all(axis=-1, keepdims=True) & (s.early_stopping is True)
        penalised = penalised + full.astype(np.float32) * MASKED
        penalised = penalised + (~can_improve).astype(np.float32) * MASKED
        penalised = penalised + (~just_finished).astype(np.float32) * MASKED
        merged_scores = np.concatenate([finished_scores, penalised], axis=1)
        best = top_indices(merged_scores, beams)
        finished_seqs = gather(np.concatenate([finished_seqs, top_seqs], axis=1), best)
        finished_scores = gather(merged_scores, best)
        finished_idx = gather(np.concatenate([finished_idx, top_idx], axis=1), best)
        is_finished = gather(np.concatenate([is_finished, just_finished], axis=1), best)
        # g. follow the running beams in the cache; can any running beam still beat the worst finished one?
        if cache is not None:
            cache.reorder(running_idx[:, :, cur_len - prompt_len].reshape(-1))
        cur_len += 1
        _, mask, positions = extend(flat, mask, positions, np.zeros((batch * beams, 1), dtype=np.int64))
        length = max_length - prompt_len if s.early_stopping == "never" and s.length_penalty > 0.0 \
            else cur_len - prompt_len
        best_possible = running_scores[:, :1] / np.float32(length ** s.length_penalty)
        worst = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), MASKED)
        can_improve = can_improve & (best_possible > worst).any(axis=-1, keepdims=True)
        if not (can_improve.any() and not (is_finished.all() and s.early_stopping is True) and not hits.all()):
            break
    count = s.num_return_sequences
    sequences = finished_seqs[:, :count].reshape(batch * count, -1)
    beam_indices = finished_idx[:, :count].reshape(batch * count, -1)
    generated = int((beam_indices != -1).sum(axis=1).max())
    return GenerateBeamDecoderOnlyOutput(
        sequences[:, :prompt_len + generated], finished_scores[:, :count].reshape(-1) if s.output_scores else None,
        None if scores_seen is None else tuple(scores_seen), None if logits_seen is None else tuple(logits_seen),
        beam_indices[:, :generated], cache)
