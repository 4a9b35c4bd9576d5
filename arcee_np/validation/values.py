"""Checks of single values (integers, numbers, flags, token ids), shared by every surface.

Each ``require_*`` returns the value as a plain Python object or raises ``error`` with
``"{name} must be ..., got {value}"``; ``name`` carries the place (``"config.json: rms_norm_eps"``,
``"generate(top_k=...)"``). ``bool`` is never taken for a number, nor a float with a fraction for an integer.
"""

from __future__ import annotations

import math

import numpy as np


def shown(value) -> str:
    """``repr(value)``, shortened to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_integer(value) -> bool:
    """A Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A Python or NumPy integer or float (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_flag(value) -> bool:
    """True or False (Python or NumPy)."""
    return isinstance(value, (bool, np.bool_))


def require_int(name: str, value, error, low: int) -> int:
    """An integer >= ``low``."""
    if not is_integer(value) or value < low:
        raise error(f"{name} must be an integer >= {low}, got {shown(value)}.")
    return int(value)


def require_real(name: str, value, error, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in the interval given by ``low``/``high`` (open at a side when ``*_open``)."""
    ok = is_real(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bounds = f" {'>' if low_open else '>='} {low:g}"
        else:
            bounds = "" if high is None else f" {'<' if high_open else '<='} {high:g}"
        raise error(f"{name} must be a finite number{bounds}, got {shown(value)}.")
    return float(value)


def require_flag(name: str, value, error) -> bool:
    """True or False; 1/0, strings and None are refused (a string 'false' would read as true)."""
    if not is_flag(value):
        raise error(f"{name} must be True or False, got {shown(value)}.")
    return bool(value)


def require_choice(name: str, value, choices, error) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {shown(value)}.")
    return value


def require_token_ids(name: str, value, error, vocab_size: int | None = None, allow_list: bool = True) -> list[int]:
    """None, one token id or (``allow_list``) a list of them, as a list of ints; each in [0, vocab_size)
    when ``vocab_size`` is given. A string is not a list of ids."""
    if value is None:
        return []
    many = allow_list and isinstance(value, (list, tuple))
    ids = list(value) if many else [value]
    wanted = "a token id (an integer >= 0)" + (" or a list of them" if allow_list else "")
    if not all(is_integer(i) and i >= 0 for i in ids) or (not many and not is_integer(value)):
        raise error(f"{name} must be {wanted}, got {shown(value)}.")
    ids = [int(i) for i in ids]
    if vocab_size is not None:
        outside = [i for i in ids if i >= vocab_size]
        if outside:
            raise error(f"{name} {outside} lies outside the vocabulary [0, {vocab_size}); pass the id your "
                        f"tokenizer uses.")
    return ids
