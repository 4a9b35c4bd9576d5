"""What ``generate(..., return_dict_in_generate=True)`` returns, with transformers' field names."""

from __future__ import annotations

from dataclasses import dataclass

from ..outputs import ModelOutput


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """Greedy, sampling and assisted decoding: ``sequences`` [B * num_return_sequences, T + n] int64;
    ``scores`` (output_scores) one [B', V] float32 array per step, the processed scores the token was chosen
    from; ``logits`` (output_logits) one [B', V] array per step, the raw logits; ``num_accepted_tokens``
    (assisted decoding only) how many draft tokens the target accepted, in total; ``cache`` the KVCache."""

    sequences: object = None
    scores: tuple | None = None
    logits: tuple | None = None
    num_accepted_tokens: int | None = None
    cache: object = None


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """Beam search: ``sequences`` [B * num_return_sequences, T + n]; ``sequences_scores`` (output_scores)
    [B * num_return_sequences] the length-penalised sum of log-probabilities; ``scores`` (output_scores) one
    [B * num_beams, V] array per step, the processed log-probabilities of every running beam; ``logits``
    (output_logits) the raw logits per step; ``beam_indices`` [B * num_return_sequences, n] int64: at each
    step, the row (batch * num_beams + beam) of ``scores`` the token was chosen from, -1 past the end;
    ``cache`` the KVCache."""

    sequences: object = None
    sequences_scores: object = None
    scores: tuple | None = None
    logits: tuple | None = None
    beam_indices: object = None
    cache: object = None
