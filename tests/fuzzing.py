"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py): generated bad values and the one property they check.

The property: a bad input is either handled correctly (each test says what correct is) or refused with one of
arcee_np's own errors whose message names the thing (a field, an argument, a file). The number of examples
comes from the hypothesis profile (tests/conftest.py: ARCEE_NP_FUZZ_PROFILE=ci runs many more).
"""

from __future__ import annotations

import math

from hypothesis import settings, strategies as st

from arcee_np import ArceeError

# Scalars of every JSON kind, with the edges that break naive checks: NaN, +-Inf, huge and negative integers,
# bools (which Python counts as ints), numeric strings, empty strings.
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 3), st.integers(-2 ** 70, 2 ** 70), st.sampled_from([2 ** 31, 2 ** 63, -2 ** 63, 10 ** 9]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1.0, -0.0, 1e-300, 1e300]),
    st.sampled_from(["", "12", "1.5", "nan", "yes", "false", "relu2", "yarn", "default", "F32"]),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=8)


def scaled(examples: int) -> int:
    """``examples`` in the plain profile (25 examples a test), proportionally more in the ci profile."""
    return max(1, examples * settings().max_examples // 25)


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_refused(err: BaseException, *names: str) -> None:
    """``err`` is one of arcee_np's errors and its message names at least one of ``names``."""
    assert isinstance(err, ArceeError), f"{type(err).__name__} is not an arcee_np error: {err}"
    message = str(err)
    assert any(name in message for name in names), f"the message names none of {names}: {message}"
