"""The one hook point of the forward pass: every named intermediate goes through ``record``.

``with trace("layers.0.*") as t: model(ids)`` collects the matching intermediates into ``t``. With no
trace active, ``record`` returns its value untouched after one check, so tracing costs nothing when off.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager

_active: list["Trace"] = []


class Trace(dict):
    """Recorded intermediates, name -> array, in the order the forward produced them."""

    def __init__(self, patterns):
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)

    def wants(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


def record(name: str, value):
    """Hand ``value`` (an array) to every active trace that wants ``name``; return ``value``."""
    if _active:
        for t in _active:
            if t.wants(name):
                t[name] = value
    return value


def tap(prefix: str):
    """A ``tap(name, value)`` for the blocks that records ``f"{prefix}.{name}"``; None when nothing traces."""
    if not _active:
        return None
    return lambda name, value: record(f"{prefix}.{name}", value)


@contextmanager
def trace(patterns="*"):
    """Record the intermediates whose names match ``patterns`` (fnmatch globs) while the block runs."""
    t = Trace(patterns)
    _active.append(t)
    try:
        yield t
    finally:
        _active.remove(t)
