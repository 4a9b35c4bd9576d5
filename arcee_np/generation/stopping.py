"""Stopping criteria beyond eos and the length limit: ``stop_strings`` (matched as transformers'
StopStringCriteria matches them) and ``max_time``.

A stop string matches when the text of the row's last tokens contains it with its end inside the last token
(an earlier occurrence does not stop generation again); the text of each token is what the tokenizer
decodes it to (bytes for byte-level tokenizers, so a stop string may end in the middle of a UTF-8 sequence
as in transformers), and at most ``len(longest stop string)`` trailing tokens are looked at.
"""

from __future__ import annotations

import time

import numpy as np


class StopStringCriteria:
    """``criteria(input_ids [B, S]) -> [B] bool``: which rows end with one of ``stop_strings``.

    token_texts: the text (str) or bytes of every token id, as ``ArceeTokenizer.token_texts()`` returns
    them; with bytes, the stop strings are matched as UTF-8 bytes.
    """

    def __init__(self, token_texts, stop_strings):
        self.token_texts = list(token_texts)
        as_bytes = any(isinstance(t, bytes) for t in self.token_texts)
        self.stop_strings = [s.encode("utf-8") if as_bytes else s for s in stop_strings]
        self.lookback = max(len(s) for s in self.stop_strings)
        self.empty = b"" if as_bytes else ""

    def ends_with_stop_string(self, row) -> bool:
        """Does the text of ``row`` (token ids) hold a stop string whose end lies in its last token?"""
        texts = [self.token_texts[t] if t < len(self.token_texts) else self.empty for t in row[-self.lookback:]]
        text = self.empty.join(texts)
        last_start = len(text) - len(texts[-1])
        for stop in self.stop_strings:
            # occurrences ending after last_start: search the tail long enough to hold one
            tail_start = max(0, last_start + 1 - len(stop))
            at = text.find(stop, tail_start)
            if at >= 0 and at + len(stop) > last_start:
                return True
        return False

    def __call__(self, input_ids) -> np.ndarray:
        ids = np.asarray(input_ids)
        return np.array([self.ends_with_stop_string(row.tolist()) for row in ids], dtype=bool)


class MaxTimeCriteria:
    """``criteria(input_ids [B, S]) -> [B] bool``: all True once ``max_time`` seconds have passed since
    ``initial_timestamp`` (the start of generate)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids) -> np.ndarray:
        return np.full(np.asarray(input_ids).shape[0], time.time() - self.initial_timestamp > self.max_time)


class StoppingCriteriaList(list):
    """Criteria or-ed together: ``[B] bool``."""

    def __call__(self, input_ids) -> np.ndarray:
        done = np.zeros(np.asarray(input_ids).shape[0], dtype=bool)
        for criteria in self:
            done |= criteria(input_ids)
        return done


def build_stopping(settings, token_texts=None) -> StoppingCriteriaList:
    """The criteria of ``settings`` (stop_strings needs ``token_texts``; generate refuses stop_strings without a
    tokenizer); eos and max_length are handled by the loops themselves."""
    criteria = StoppingCriteriaList()
    if settings.max_time is not None:
        criteria.append(MaxTimeCriteria(settings.max_time))
    if settings.stop_strings:
        criteria.append(StopStringCriteria(token_texts, settings.stop_strings))
    return criteria
