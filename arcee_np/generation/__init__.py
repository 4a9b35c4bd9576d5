"""Generation: transformers' logits processors, warpers and stopping criteria, and its decoding loops
(greedy / sampling, beam search, assisted decoding) over any step function.

The loops never see a model class: they call ``step(input_ids, attention_mask, position_ids, cache)``,
which returns the logits of the last position ``[B, V]``; ``ArceeForCausalLM.generate`` builds the steps and
checks every argument once. Modules:

* ``processors`` / ``warpers``: each processor and warper as a plain function of xp arrays (``scores`` [B, V]);
* ``classes``: transformers-named callables ``(input_ids, scores) -> scores`` over them;
* ``chain``: ``build_processors(settings)``, the list transformers' generate builds, in its order;
* ``settings``: ``resolve_settings`` (call argument > generation_config > default) into ``GenerationSettings``;
* ``stopping``: stop strings and max_time;
* ``loop`` (greedy / sampling), ``beam`` (beam search), ``assisted`` (speculative and prompt-lookup decoding);
* ``outputs``: what ``return_dict_in_generate=True`` returns.

docs/generation.md documents every knob.
"""

from .assisted import (DraftModelCandidates, PromptLookupCandidates, assisted_decode, candidate_generator,
                       speculative_sampling)
from .beam import beam_search, expand_beams
from .chain import build_processors
from .classes import (EpsilonLogitsWarper, EtaLogitsWarper, ExponentialDecayLengthPenalty,
                      ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor, InfNanRemoveLogitsProcessor,
                      LogitNormalization, LogitsProcessor, LogitsProcessorList, MinLengthLogitsProcessor,
                      MinNewTokensLengthLogitsProcessor, MinPLogitsWarper, NoBadWordsLogitsProcessor,
                      NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor, SequenceBiasLogitsProcessor,
                      SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor, TemperatureLogitsWarper,
                      TopHLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper)
from .loop import decode, generate_tokens, initial_mask, sample_from_scores
from .outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from .processors import (banned_ngram_tokens, exponential_decay_length_penalty, force_tokens, no_repeat_ngram,
                         remove_invalid_values, renormalize, repetition_penalty, sequence_bias, sequence_bias_of,
                         suppress_tokens, token_presence)
from .run import run_generation
from .settings import DEFAULT_NEW_TOKENS, GenerationSettings, resolve_settings
from .stopping import MaxTimeCriteria, StoppingCriteriaList, StopStringCriteria, build_stopping
from .warpers import (NEG_INF, apply_temperature, entropy, epsilon_filter, eta_filter, log_softmax, min_p_filter,
                      softmax, top_h_filter, top_k_filter, top_p_filter, typical_filter)

__all__ = [
    "DEFAULT_NEW_TOKENS", "NEG_INF", "DraftModelCandidates", "EpsilonLogitsWarper", "EtaLogitsWarper",
    "ExponentialDecayLengthPenalty", "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor",
    "GenerateBeamDecoderOnlyOutput", "GenerateDecoderOnlyOutput", "GenerationSettings", "InfNanRemoveLogitsProcessor",
    "LogitNormalization", "LogitsProcessor", "LogitsProcessorList", "MaxTimeCriteria", "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor", "MinPLogitsWarper", "NoBadWordsLogitsProcessor",
    "NoRepeatNGramLogitsProcessor", "PromptLookupCandidates", "RepetitionPenaltyLogitsProcessor",
    "SequenceBiasLogitsProcessor", "StopStringCriteria", "StoppingCriteriaList",
    "SuppressTokensAtBeginLogitsProcessor", "SuppressTokensLogitsProcessor", "TemperatureLogitsWarper",
    "TopHLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TypicalLogitsWarper", "apply_temperature",
    "assisted_decode", "banned_ngram_tokens", "beam_search", "build_processors", "build_stopping",
    "candidate_generator", "decode", "entropy", "expand_beams", "epsilon_filter", "eta_filter",
    "exponential_decay_length_penalty", "force_tokens", "generate_tokens", "initial_mask", "log_softmax",
    "min_p_filter", "no_repeat_ngram", "remove_invalid_values", "renormalize", "repetition_penalty",
    "resolve_settings", "run_generation", "sample_from_scores", "sequence_bias", "sequence_bias_of", "softmax",
    "speculative_sampling", "suppress_tokens", "token_presence", "top_h_filter", "top_k_filter", "top_p_filter",
    "typical_filter",
]
