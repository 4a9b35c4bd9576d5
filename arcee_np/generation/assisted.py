"""Assisted (speculative) decoding as transformers' ``_assisted_decoding`` (v5), batch size 1.

Each round a candidate generator proposes ``k`` tokens after the sequence: a smaller draft model decoding
``num_assistant_tokens`` tokens with its own KV cache (``DraftModelCandidates``), or a copy of what followed
the last occurrence of the sequence's final n-gram (``PromptLookupCandidates``). The target model scores
the sequence plus all ``k`` candidates in one forward pass (``k + 1`` positions of logits, each processed
as its own step), then

* greedy (or prompt lookup when sampling): the candidates are kept up to the first one that differs from
  the target's own choice, plus the target's choice after them: the output is the target's greedy
  output token for token;
* sampling with a draft model (speculative sampling, Leviathan et al. 2023, algorithm 1): candidate ``i``
  is kept while ``u_i <= p_i / q_i`` (p the target's, q the draft's probability of it); at the first
  rejection the next token is drawn from ``max(p - q, 0)`` normalised, else from the target's
  distribution after the last candidate: the tokens are distributed as the target's own samples.

Tokens past an eos or the length limit are dropped; the target's KV cache is cropped back to the accepted
tokens (``cache.crop(-rejected)``). With ``num_assistant_tokens_schedule`` "heuristic" the draft length
grows by 2 after a round that accepted every candidate and shrinks by 1 (to at least 1) otherwise.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_numpy
from ..blocks.namespace import array_namespace
from .chain import build_processors
from .classes import LogitsProcessorList, MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor
from .loop import extend, fresh_inputs, prepare_prompt, sample_from_scores
from .outputs import GenerateDecoderOnlyOutput
from .settings import GenerationSettings


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """softmax over the last axis in float32 (as torch's softmax of the float32 scores)."""
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _processed(processors, ids: np.ndarray, scores):
    """``processors(ids, scores)`` with ``ids`` moved to the scores' backend (when there are processors)."""
    return processors(to_device(ids, array_namespace(scores)), scores) if processors else scores


class DraftModelCandidates:
    """Candidates from a draft model: ``step`` (the draft's step function) decodes up to
    ``num_assistant_tokens`` tokens greedily or by sampling with the target's processors (min_length left
    out), stopping early at eos or when the draft's probability of its own token falls below
    ``assistant_confidence_threshold``. ``cache``: the draft's KVCache, kept across rounds and cropped."""

    def __init__(self, step, cache, settings: GenerationSettings, processors: LogitsProcessorList, rng):
        self.step, self.cache, self.settings, self.rng = step, cache, settings, rng
        self.num_assistant_tokens = settings.num_assistant_tokens
        self.processors = LogitsProcessorList(p for p in processors if not isinstance(p, MinLengthLogitsProcessor))

    def get_candidates(self, ids: np.ndarray, mask, positions):
        """``(candidate ids [1, S + k], draft scores [1, k, V] float32 host, or None when k = 0)``."""
        s = self.settings
        max_new = min(int(self.num_assistant_tokens), s.max_length - ids.shape[1] - 1)
        if max_new <= 0:
            return ids, None
        min_new = max(min(max_new, s.min_length - ids.shape[1]), 0)
        processors = self.processors
        if min_new > 0 and not any(isinstance(p, MinNewTokensLengthLogitsProcessor) for p in processors):
            processors = LogitsProcessorList([*processors, MinNewTokensLengthLogitsProcessor(
                ids.shape[1], min_new, s.eos_token_id)])
        if self.cache is not None:
            self.cache.crop(min(self.cache.get_seq_length(), ids.shape[1] - 2))
        scores_seen = []
        for _ in range(max_new):
            logits = self.step(*fresh_inputs(ids, mask, positions, self.cache), self.cache)
            xp = array_namespace(logits)
            scores = np.asarray(to_numpy(_processed(processors, ids, xp.astype(logits, xp.float32, copy=True))))
            token = sample_from_scores(scores, self.rng) if s.do_sample else np.argmax(scores, axis=-1)
            ids, mask, positions = extend(ids, mask, positions, token.reshape(1, 1).astype(np.int64))
            scores_seen.append(scores)
            confidence = _probabilities(scores)[0, token[0]]
            if token[0] in s.eos_token_id or 0 < s.assistant_confidence_threshold and \
                    confidence < s.assistant_confidence_threshold:
                break
        return ids, np.stack(scores_seen, axis=1)

    def update(self, num_matches: int, candidate_length: int) -> None:
        """The heuristic schedules: +2 tokens after a round that accepted every candidate, else -1 (>= 1)."""
        if self.settings.num_assistant_tokens_schedule in ("heuristic", "heuristic_transient"):
            self.num_assistant_tokens = self.num_assistant_tokens + 2 if num_matches == candidate_length else \
                max(1, self.num_assistant_tokens - 1)


class PromptLookupCandidates:
    """Candidates copied from the sequence itself (prompt lookup decoding): for n from
    ``max_matching_ngram_size`` down to 1, the first earlier occurrence (left to right) of the last n tokens
    whose continuation is not empty gives up to ``prompt_lookup_num_tokens`` candidates; they are cut before
    a token the processors forbid (scored -inf on dummy logits of ones) and before the first eos."""

    def __init__(self, settings: GenerationSettings, processors: LogitsProcessorList, vocab_size: int):
        self.settings, self.processors, self.vocab_size = settings, processors, vocab_size

    def _allowed(self, ids: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """The leading candidates the processors do not forbid."""
        ones = np.ones((1, self.vocab_size), dtype=np.float32)
        for index, token in enumerate(chosen):
            sequence = np.concatenate([ids, chosen[None, :index]], axis=1)
            value = np.asarray(to_numpy(_processed(self.processors, sequence, ones.copy())))[0, token]
            if value == -np.inf or value == np.finfo(np.float32).min:
                return chosen[:index]
        return chosen

    def get_candidates(self, ids: np.ndarray, mask, positions):
        """``(candidate ids [1, S + k], None)``."""
        s, length = self.settings, ids.shape[1]
        if s.max_length == length + 1:
            return ids, None
        row = ids[0]
        for n in range(min(s.max_matching_ngram_size, length - 1), 0, -1):
            windows = np.lib.stride_tricks.sliding_window_view(row, n)
            for start in np.nonzero((windows == row[-n:]).all(axis=1))[0]:
                begin, end = start + n, min(start + n + s.prompt_lookup_num_tokens, length, s.max_length)
                if begin >= end:
                    continue
                chosen = self._allowed(ids, row[begin:end]) if self.processors else row[begin:end]
                if chosen.size == 0:
                    continue
                eos_at = np.nonzero(np.isin(chosen, s.eos_token_id))[0]
                chosen = chosen[:eos_at[0]] if eos_at.size else chosen
                if chosen.size == 0:
                    return ids, None
                return np.concatenate([ids, chosen[None, :]], axis=1), None
        return ids, None

    def update(self, num_matches: int, candidate_length: int) -> None:
        """Prompt lookup keeps its settings."""


def speculative_sampling(candidates: np.ndarray, draft_scores: np.ndarray, target_scores: np.ndarray, rng):
    """Leviathan et al.'s algorithm 1 as transformers' ``_speculative_sampling``: candidates [k] (the draft's
    tokens), draft_scores [k, V], target_scores [k + 1, V] (processed). Returns ``(tokens [n + 1], n)``: the
    ``n`` accepted candidates and one token drawn from ``max(p - q, 0)`` (or from p after k acceptances)."""
    k = candidates.shape[0]
    q, p = _probabilities(draft_scores), _probabilities(target_scores)
    ratio = p[np.arange(k), candidates] / q[np.arange(k), candidates]
    accepted = rng.random(k).astype(np.float32) <= ratio
    n = int((np.cumsum(~accepted) < 1).sum())  # accepted before the first rejection
    residual = np.maximum(p[n] - q[n], 0) if n < k else p[n]
    with np.errstate(divide="ignore"):
        last = sample_from_scores(np.log(residual / residual.sum())[None, :], rng)
    return np.concatenate([candidates[:n], last]), n


def assisted_decode(step, input_ids, settings: GenerationSettings, candidates, attention_mask=None, cache=None,
                    streamer=None, stopping=None, rng=None) -> GenerateDecoderOnlyOutput:
    """Assisted decoding (see the module docstring); returns GenerateDecoderOnlyOutput with ``sequences``
    [1, T + n], ``num_accepted_tokens`` (draft tokens kept, over all rounds) and, when settings ask, the
    target's processed ``scores`` and raw ``logits`` per new token.

    step: the target's ``(input_ids [1, t], attention_mask, position_ids, cache, keep) -> logits [1, keep, V]``
    of the last ``keep`` positions. candidates: a DraftModelCandidates or PromptLookupCandidates (built by
    ``candidate_generator``). rng: the NumPy Generator the candidates share (sampling)."""
    s = settings
    ids, mask, positions, padding_lengths = prepare_prompt(input_ids, attention_mask, s)
    processors = build_processors(s, padding_lengths)
    rng = rng if rng is not None else np.random.default_rng(s.seed)
    scores_seen, logits_seen = [], []
    accepted_total = 0
    if streamer is not None:
        streamer.put(ids.copy())
    while True:
        length = ids.shape[1]
        candidate_ids, draft_scores = candidates.get_candidates(ids, mask, positions)
        k = candidate_ids.shape[1] - length
        cand_ids, cand_mask, cand_positions = extend(ids, mask, positions, candidate_ids[:, length:])
        logits = step(*fresh_inputs(cand_ids, cand_mask, cand_positions, cache), cache, keep=k + 1)
        xp = array_namespace(logits)
        raw = xp.astype(logits, xp.float32, copy=True)  # [1, k + 1, V]
        target = np.stack([np.asarray(to_numpy(_processed(processors, candidate_ids[:, :length + i], raw[:, i, :])))
                           for i in range(k + 1)], axis=1)  # [1, k + 1, V]
        if s.do_sample and draft_scores is not None:
            valid, _ = speculative_sampling(candidate_ids[0, length:], draft_scores[0], target[0], rng)
        else:
            chosen = sample_from_scores(target[0], rng) if s.do_sample else np.argmax(target[0], axis=-1)
            matches = int((np.cumsum(candidate_ids[0, length:] != chosen[:k]) < 1).sum())
            valid = chosen[:matches + 1]
        valid = valid[:s.max_length - length]
        eos_at = np.nonzero(np.isin(valid, s.eos_token_id))[0]
        valid = valid[:eos_at[0] + 1] if eos_at.size else valid
        n_matches = valid.shape[0] - 1
        accepted_total += n_matches
        ids, mask, positions = extend(ids, mask, positions, valid[None, :].astype(np.int64))
        if streamer is not None:
            streamer.put(valid.copy())
        if cache is not None:
            cache.crop(-(k - n_matches))
        candidates.update(n_matches, k)
        if s.output_scores:
            scores_seen.extend(target[:, i, :] for i in range(n_matches + 1))
        if s.output_logits:
            logits_seen.extend(np.asarray(to_numpy(logits[:, i, :])) for i in range(n_matches + 1))
        done = ids.shape[1] >= s.max_length or bool(np.isin(ids[0, -1], s.eos_token_id))
        if done or (stopping and stopping(ids).all()):
            break
    if streamer is not None:
        streamer.end()
    return GenerateDecoderOnlyOutput(ids, tuple(scores_seen) if s.output_scores else None,
                                     tuple(logits_seen) if s.output_logits else None, accepted_total, cache)


def candidate_generator(settings: GenerationSettings, vocab_size: int, draft_step=None, draft_cache=None,
                        rng=None):
    """The candidate generator of ``settings``: prompt lookup when ``prompt_lookup_num_tokens`` is set, else
    the draft model of ``draft_step`` (with its ``draft_cache``)."""
    processors = build_processors(settings)
    if settings.prompt_lookup_num_tokens is not None:
        return PromptLookupCandidates(settings, processors, vocab_size)
    return DraftModelCandidates(draft_step, draft_cache, settings, processors, rng)
