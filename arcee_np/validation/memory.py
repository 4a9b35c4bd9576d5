"""Allocations that cannot fit are refused before they are tried (a random model of a config that asks for
terabytes, a KV cache for a length no machine holds), rather than ending in a MemoryError or the OOM killer.

The limit is what the machine can give this process now: MemAvailable of /proc/meminfo, lowered to the
address-space limit (``ulimit -v``) when one is set. Where neither can be read nothing is refused here.
"""

from __future__ import annotations

import resource

from ..blocks.tiled_attention import SCORE_TILE_ELEMENTS
from ..errors import InputError
from ..model import MLP_CHUNK_ELEMENTS


def available_bytes() -> int | None:
    """Bytes this process could still allocate, as far as the system says; None when it cannot tell."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            limits += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    return min(limits) if limits else None


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:,.1f} GiB"


_SMALL = 2 ** 28  # allocations below 256 MiB are not worth reading /proc/meminfo for


def check_allocation(nbytes: int, what: str, fix: str) -> None:
    """InputError when ``nbytes`` (for ``what``) exceed what this process can allocate; ``fix`` says what to do."""
    if nbytes < _SMALL:
        return
    limit = available_bytes()
    if limit is not None and nbytes > limit:
        raise InputError(f"{what} needs {_gib(nbytes)} but this machine has {_gib(limit)} available: {fix}.")


def working_bytes(config, batch: int, tokens: int, itemsize: int, past: int = 0, all_logits: bool = False) -> int:
    """About how much memory one forward of ``batch`` x ``tokens`` needs besides the weights (tiled attention,
    the MLP in chunks of model.MLP_CHUNK_ELEMENTS): the activations alive at once, one tile of attention
    scores, the KV cache of ``past + tokens`` positions, and the logits (of the last position, or of all with
    ``all_logits``). itemsize: bytes per number of the activation dtype (4 for float32)."""
    hd, heads, kv_heads = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    rows = batch * tokens
    chunk = min(rows, max(batch, MLP_CHUNK_ELEMENTS // config.intermediate_size))
    activations = rows * (4 * config.hidden_size + 4 * heads * hd + 4 * kv_heads * hd) + 2 * chunk * \
        config.intermediate_size
    scores = 3 * min(SCORE_TILE_ELEMENTS, batch * heads * tokens * (past + tokens))
    cache = 2 * config.num_hidden_layers * batch * (past + tokens) * kv_heads * hd
    logits = batch * (tokens if all_logits else 1) * config.vocab_size
    return itemsize * (activations + cache + logits) + 4 * scores
