"""The list of logits processors transformers' ``generate`` builds for a set of settings, in its order
(``_get_logits_processor``)."""

from __future__ import annotations

from .classes import (EpsilonLogitsWarper, EtaLogitsWarper, ExponentialDecayLengthPenalty,
                      ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor, InfNanRemoveLogitsProcessor,
                      LogitNormalization, LogitsProcessorList, MinLengthLogitsProcessor,
                      MinNewTokensLengthLogitsProcessor, MinPLogitsWarper, NoBadWordsLogitsProcessor,
                      NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor, SequenceBiasLogitsProcessor,
                      SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor, TemperatureLogitsWarper,
                      TopHLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper)
from .settings import GenerationSettings


def build_processors(settings: GenerationSettings, padding_lengths=None) -> LogitsProcessorList:
    """The processors transformers' generate would run for these settings, in its order: sequence_bias,
    repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_length, min_new_tokens, forced_bos_token_id,
    forced_eos_token_id, remove_invalid_values, exponential_decay_length_penalty, suppress_tokens,
    begin_suppress_tokens; when sampling temperature, top_h, top_k, top_p, min_p, typical_p, epsilon_cutoff,
    eta_cutoff (each keeping at least ``len(eos) + 1`` tokens under beam search, else 1); renormalize_logits last.

    padding_lengths: [B] left-padding lengths (the repetition penalty skips those positions) or None.
    """
    s = settings
    eos = s.eos_token_id
    out = LogitsProcessorList()
    if s.sequence_bias is not None:
        out.append(SequenceBiasLogitsProcessor(s.sequence_bias))
    if s.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty, padding_lengths))
    if s.no_repeat_ngram_size > 0:
        out.append(NoRepeatNGramLogitsProcessor(s.no_repeat_ngram_size))
    if s.bad_words_ids is not None:
        out.append(NoBadWordsLogitsProcessor(s.bad_words_ids, eos))
    if s.min_length > 0 and eos:
        out.append(MinLengthLogitsProcessor(s.min_length, eos))
    if s.min_new_tokens > 0 and eos:
        out.append(MinNewTokensLengthLogitsProcessor(s.prompt_length, s.min_new_tokens, eos))
    if s.forced_bos_token_id is not None:
        out.append(ForcedBOSTokenLogitsProcessor(s.forced_bos_token_id))
    if s.forced_eos_token_id is not None:
        out.append(ForcedEOSTokenLogitsProcessor(s.max_length, s.forced_eos_token_id))
    if s.remove_invalid_values:
        out.append(InfNanRemoveLogitsProcessor())
    if s.exponential_decay_length_penalty is not None:
        out.append(ExponentialDecayLengthPenalty(s.exponential_decay_length_penalty, eos, s.prompt_length))
    if s.suppress_tokens is not None:
        out.append(SuppressTokensLogitsProcessor(s.suppress_tokens))
    if s.begin_suppress_tokens is not None:
        begin = s.prompt_length + (1 if s.prompt_length == 1 and s.forced_bos_token_id is not None else 0)
        out.append(SuppressTokensAtBeginLogitsProcessor(s.begin_suppress_tokens, begin))
    if s.do_sample:
        keep = max(len(eos), 1) + 1 if s.num_beams > 1 else 1
        if s.temperature != 1.0:
            out.append(TemperatureLogitsWarper(s.temperature))
        if s.top_h is not None:
            out.append(TopHLogitsWarper(s.top_h))
        if s.top_k:
            out.append(TopKLogitsWarper(s.top_k, min_tokens_to_keep=keep))
        if s.top_p < 1.0:
            out.append(TopPLogitsWarper(s.top_p, min_tokens_to_keep=keep))
        if s.min_p is not None:
            out.append(MinPLogitsWarper(s.min_p, min_tokens_to_keep=keep))
        if s.typical_p < 1.0:
            out.append(TypicalLogitsWarper(s.typical_p, min_tokens_to_keep=keep))
        if 0.0 < s.epsilon_cutoff < 1.0:
            out.append(EpsilonLogitsWarper(s.epsilon_cutoff, min_tokens_to_keep=keep))
        if 0.0 < s.eta_cutoff < 1.0:
            out.append(EtaLogitsWarper(s.eta_cutoff, min_tokens_to_keep=keep))
    if s.renormalize_logits:
        out.append(LogitNormalization())
    return out
