"""Allocations that cannot fit are refused before they are tried (a random model of a config that asks for
terabytes, a KV cache for a length no machine holds), rather than ending in a MemoryError or the OOM killer.

The limit is what the machine can give this process now: MemAvailable of /proc/meminfo, lowered to the
address-space limit (``ulimit -v``) when one is set. Where neither can be read nothing is refused here.
"""

from __future__ import annotations

import resource

from ..errors import InputError


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

