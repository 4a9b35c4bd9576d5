"""transformers-named logits processors: callables ``(input_ids [B, S], scores [B, V]) -> scores [B, V]`` over
the plain functions of processors.py and warpers.py, with transformers' constructor arguments."""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_numpy
from ..blocks.namespace import array_namespace
from ..errors import InputError
from ..validation.values import require_int, require_real, require_token_ids
from . import processors as P
from . import warpers as W

NEG_INF = W.NEG_INF


class LogitsProcessor:
    """A callable ``(input_ids [B, S], scores [B, V]) -> scores [B, V]``, as transformers' processors."""

    def __call__(self, input_ids, scores):  # pragma: no cover - interface
        raise NotImplementedError


class LogitsProcessorList(list):
    """Processors applied in order: ``scores = p(input_ids, scores)`` for each."""

    def __call__(self, input_ids, scores):
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


def _keep(value) -> int:
    return require_int("min_tokens_to_keep", value, InputError, low=1)


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
        return P.repetition_penalty(scores, input_ids, self.penalty, ignore)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """transformers' NoRepeatNGramLogitsProcessor: no n-gram of ``ngram_size`` tokens occurs twice."""

    def __init__(self, ngram_size: int):
        self.ngram_size = require_int("no_repeat_ngram_size", ngram_size, InputError, low=1)

    def __call__(self, input_ids, scores):
        return P.no_repeat_ngram(scores, input_ids, self.ngram_size)


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """transformers' SequenceBiasLogitsProcessor: ``sequence_bias`` is ``{(ids...): bias}`` or
    ``[[[ids...], bias], ...]`` (the JSON form)."""

    def __init__(self, sequence_bias):
        items = sequence_bias.items() if isinstance(sequence_bias, dict) else sequence_bias
        self.sequence_bias = {tuple(int(t) for t in ids): float(bias) for ids, bias in items}

    def __call__(self, input_ids, scores):
        return P.sequence_bias(scores, input_ids, self.sequence_bias)


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """transformers' NoBadWordsLogitsProcessor: each id sequence of ``bad_words_ids`` gets -inf (a one-token
    sequence that is an eos id is dropped, as transformers does)."""

    def __init__(self, bad_words_ids, eos_token_id=None):
        eos = [] if eos_token_id is None else require_token_ids("eos_token_id", eos_token_id, InputError)
        kept = [list(words) for words in bad_words_ids if not (len(words) == 1 and words[0] in eos)]
        super().__init__({tuple(words): NEG_INF for words in kept})


class MinLengthLogitsProcessor(LogitsProcessor):
    """transformers' MinLengthLogitsProcessor: eos ids get -inf while the sequence (prompt included) is
    shorter than ``min_length``."""

    def __init__(self, min_length: int, eos_token_id):
        self.min_length = require_int("min_length", min_length, InputError, low=0)
        self.eos_token_id = require_token_ids("eos_token_id", eos_token_id, InputError)

    def __call__(self, input_ids, scores):
        return P.suppress_tokens(scores, self.eos_token_id) if input_ids.shape[-1] < self.min_length else scores


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """transformers' MinNewTokensLengthLogitsProcessor: eos ids get -inf until ``min_new_tokens`` tokens
    follow the ``prompt_length_to_skip`` prompt tokens."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id):
        self.prompt_length_to_skip = require_int("prompt_length_to_skip", prompt_length_to_skip, InputError, low=0)
        self.min_new_tokens = require_int("min_new_tokens", min_new_tokens, InputError, low=0)
        self.eos_token_id = require_token_ids("eos_token_id", eos_token_id, InputError)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
            return P.suppress_tokens(scores, self.eos_token_id)
        return scores


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """transformers' ForcedBOSTokenLogitsProcessor: when the sequence holds one token, only ``bos_token_id``."""

    def __init__(self, bos_token_id: int):
        self.bos_token_id = require_token_ids("forced_bos_token_id", bos_token_id, InputError, allow_list=False)

    def __call__(self, input_ids, scores):
        return P.force_tokens(scores, self.bos_token_id) if input_ids.shape[-1] == 1 else scores


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """transformers' ForcedEOSTokenLogitsProcessor: the last token (at length ``max_length - 1``) is an eos id."""

    def __init__(self, max_length: int, eos_token_id):
        self.max_length = require_int("max_length", max_length, InputError, low=1)
        self.eos_token_id = require_token_ids("forced_eos_token_id", eos_token_id, InputError)

    def __call__(self, input_ids, scores):
        return P.force_tokens(scores, self.eos_token_id) if input_ids.shape[-1] == self.max_length - 1 else scores


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """transformers' InfNanRemoveLogitsProcessor (remove_invalid_values)."""

    def __call__(self, input_ids, scores):
        return P.remove_invalid_values(scores)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """transformers' ExponentialDecayLengthPenalty: ``(start, factor)`` counted from the prompt's end."""

    def __init__(self, exponential_decay_length_penalty, eos_token_id, input_ids_seq_length: int):
        start, factor = exponential_decay_length_penalty
        self.regulation_start = int(start) + int(input_ids_seq_length)
        self.regulation_factor = float(factor)
        self.eos_token_id = require_token_ids("eos_token_id", eos_token_id, InputError)

    def __call__(self, input_ids, scores):
        return P.exponential_decay_length_penalty(scores, input_ids.shape[-1], self.regulation_start,
                                                  self.regulation_factor, self.eos_token_id)


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """transformers' SuppressTokensLogitsProcessor: ``suppress_tokens`` always get -inf."""

    def __init__(self, suppress_tokens):
        self.suppress_tokens = [int(t) for t in suppress_tokens]

    def __call__(self, input_ids, scores):
        return P.suppress_tokens(scores, self.suppress_tokens)


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """transformers' SuppressTokensAtBeginLogitsProcessor: -inf for ``begin_suppress_tokens`` when the
    sequence is ``begin_index`` long (the first generated token)."""

    def __init__(self, begin_suppress_tokens, begin_index: int):
        self.begin_suppress_tokens = [int(t) for t in begin_suppress_tokens]
        self.begin_index = int(begin_index)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] == self.begin_index:
            return P.suppress_tokens(scores, self.begin_suppress_tokens)
        return scores


class LogitNormalization(LogitsProcessor):
    """transformers' LogitNormalization (renormalize_logits): ``log_softmax(scores)``."""

    def __call__(self, input_ids, scores):
        return P.renormalize(scores)


class TemperatureLogitsWarper(LogitsProcessor):
    """transformers' TemperatureLogitsWarper: ``scores / temperature``."""

    def __init__(self, temperature: float):
        self.temperature = require_real("temperature", temperature, InputError, low=0, low_open=True)

    def __call__(self, input_ids, scores):
        return W.apply_temperature(scores, self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    """transformers' TopKLogitsWarper."""

    def __init__(self, top_k: int, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.top_k = require_int("top_k (0 or None turns top-k off in generate)", top_k, InputError, low=1)
        self.min_tokens_to_keep, self.filter_value = _keep(min_tokens_to_keep), filter_value

    def __call__(self, input_ids, scores):
        return W.top_k_filter(scores, self.top_k, self.min_tokens_to_keep, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """transformers' TopPLogitsWarper."""

    def __init__(self, top_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.top_p = require_real("top_p (1.0 = off)", top_p, InputError, low=0, high=1)
        self.min_tokens_to_keep, self.filter_value = _keep(min_tokens_to_keep), filter_value

    def __call__(self, input_ids, scores):
        return W.top_p_filter(scores, self.top_p, self.min_tokens_to_keep, self.filter_value)


class TopHLogitsWarper(LogitsProcessor):
    """transformers' TopHLogitsWarper (entropy-bounded top-n, n = 100)."""

    def __init__(self, top_h: float, filter_value: float = NEG_INF):
        self.top_h = require_real("top_h", top_h, InputError, low=0, high=1, low_open=True)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        return W.top_h_filter(scores, self.top_h, filter_value=self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """transformers' MinPLogitsWarper."""

    def __init__(self, min_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.min_p = require_real("min_p", min_p, InputError, low=0, high=1)
        self.min_tokens_to_keep, self.filter_value = _keep(min_tokens_to_keep), filter_value

    def __call__(self, input_ids, scores):
        return W.min_p_filter(scores, self.min_p, self.min_tokens_to_keep, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """transformers' TypicalLogitsWarper (``mass`` = typical_p)."""

    def __init__(self, mass: float = 0.9, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.mass = require_real("typical_p", mass, InputError, low=0, high=1, low_open=True, high_open=True)
        self.min_tokens_to_keep, self.filter_value = _keep(min_tokens_to_keep), filter_value

    def __call__(self, input_ids, scores):
        return W.typical_filter(scores, self.mass, self.min_tokens_to_keep, self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """transformers' EpsilonLogitsWarper (epsilon_cutoff)."""

    knob, cutoff = "epsilon_cutoff", staticmethod(W.epsilon_filter)

    def __init__(self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.epsilon = require_real(self.knob, epsilon, InputError, low=0, high=1, low_open=True, high_open=True)
        self.min_tokens_to_keep, self.filter_value = _keep(min_tokens_to_keep), filter_value

    def __call__(self, input_ids, scores):
        return self.cutoff(scores, self.epsilon, self.min_tokens_to_keep, self.filter_value)


class EtaLogitsWarper(EpsilonLogitsWarper):
    """transformers' EtaLogitsWarper (eta_cutoff): as EpsilonLogitsWarper with the entropy-scaled cutoff."""

    knob, cutoff = "eta_cutoff", staticmethod(W.eta_filter)
