"""Pick the decoding loop a set of settings asks for and run it: beam search (``num_beams > 1``), assisted
decoding (a draft model's step, or ``prompt_lookup_num_tokens``), else greedy / sampling."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .assisted import assisted_decode, candidate_generator
from .beam import beam_search
from .loop import decode
from .settings import GenerationSettings
from .stopping import build_stopping


def check_mode(settings: GenerationSettings, batch: int, streamer, token_texts, assisted: bool) -> None:
    """What the chosen loop cannot do, refused before any work (transformers refuses the same)."""
    if settings.stop_strings and token_texts is None:
        raise InputError("stop_strings needs the model's tokenizer to match them: pass tokenizer=... to generate "
                         "(e.g. ArceeTokenizer.from_pretrained(path)).")
    if settings.num_beams > 1 and streamer is not None:
        raise InputError("a streamer cannot be used with beam search (num_beams > 1): the best beam is only known "
                         "at the end. Drop the streamer or set num_beams=1.")
    if settings.num_beams > 1 and assisted:
        raise InputError("assisted decoding (assistant_model / prompt_lookup_num_tokens) works with num_beams=1 "
                         "only.")
    if assisted and batch != 1:
        raise InputError(f"assisted decoding (assistant_model / prompt_lookup_num_tokens) supports one prompt at a "
                         f"time, as transformers; got a batch of {batch}. Call generate once per prompt.")
    if assisted and settings.num_return_sequences != 1:
        raise InputError("assisted decoding returns one sequence: set num_return_sequences=1.")


def run_generation(settings: GenerationSettings, input_ids: np.ndarray, attention_mask, step, new_cache,
                   vocab_size: int, streamer=None, token_texts=None, draft_step=None, new_draft_cache=None,
                   draft_config=None):
    """Run the loop of ``settings`` and return its output (GenerateDecoderOnlyOutput or
    GenerateBeamDecoderOnlyOutput).

    step: the target's ``(ids, mask, positions, cache, keep=None)``: the logits [B, V] of the last position, or
    [B, keep, V] of the last ``keep`` (assisted decoding). new_cache(rows): a fresh cache for that many rows,
    or None (use_cache=False). vocab_size: the model's (prompt lookup scores dummy logits). token_texts: each
    token's text (stop strings). draft_step / new_draft_cache: the draft model's step and cache factory
    (assisted decoding); draft_config: the draft's generation config dict, where the "heuristic" schedule
    leaves its final num_assistant_tokens (as transformers does).
    """
    s = settings
    assisted = draft_step is not None or s.prompt_lookup_num_tokens is not None
    check_mode(s, input_ids.shape[0], streamer, token_texts, assisted)
    stopping = build_stopping(s, token_texts)
    if s.num_beams > 1:
        return beam_search(step, input_ids, s, attention_mask, new_cache(input_ids.shape[0] * s.num_beams), stopping)
    if not assisted:
        rows = input_ids.shape[0] * (s.num_return_sequences if s.do_sample else 1)
        return decode(step, input_ids, s, attention_mask, new_cache(rows), streamer, stopping)
    rng = np.random.default_rng(s.seed)
    draft_cache = None if draft_step is None else new_draft_cache(1)
    candidates = candidate_generator(s, vocab_size, draft_step, draft_cache, rng)
    out = assisted_decode(step, input_ids, s, candidates, attention_mask, new_cache(1), streamer, stopping, rng)
    if draft_config is not None and s.num_assistant_tokens_schedule == "heuristic":
        draft_config["num_assistant_tokens"] = candidates.num_assistant_tokens
    return out
