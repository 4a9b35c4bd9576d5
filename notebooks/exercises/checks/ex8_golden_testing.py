"""The checks of exercises 16-17: the oracle's closeness rule, and the first diverging tensor of a trace."""

from __future__ import annotations

import numpy as np
from arcee_np.oracle.compare import Tolerance, compare_arrays, compare_traces

from checking import Exercise, Failure, array, call, check

from .shipped import reference

# actual, expected: pairs where each term of the rule decides (atol 1e-3, rtol 1e-2 below)
CLOSE_CASES = np.array([
    (1.0, 1.0), (1.0011, 1.0), (1.011, 1.0), (1.0109, 1.0),         # inside / outside atol + rtol * |expected|
    (0.0, 0.001), (0.001, 0.0), (0.0011, 0.0),                      # atol alone (expected 0): at the threshold
    (100.9, 100.0), (101.002, 100.0), (100.0, 101.2),               # rtol * |expected|, not |actual|
    (-101.0, -100.0), (-100.0, -98.9),                              # negative values: the absolute value
    (np.inf, np.inf), (-np.inf, -np.inf), (np.inf, -np.inf), (1e300, np.inf), (np.inf, 1.0),
    (np.nan, np.nan), (np.nan, 1.0), (1.0, np.nan),                 # NaN: close only to NaN
    (0.5 + 1e-3 + 5e-3, 0.5), (0.5 - 1e-3 - 5e-3, 0.5),            # exactly at the threshold (<=)
])
ATOL, RTOL = 1e-3, 1e-2


def _oracle_close(actual, expected, atol, rtol):
    """The oracle's verdict, element by element: compare_arrays on each pair."""
    tolerance = Tolerance(atol, rtol)
    return np.array([not compare_arrays(np.array(a), np.array(e), tolerance).failed
                     for a, e in zip(np.ravel(actual), np.ravel(expected), strict=True)]).reshape(np.shape(actual))


def _close_mistakes(actual, expected, atol, rtol):
    a, e = actual, expected
    with np.errstate(all="ignore"):
        d = np.abs(a - e)
        return {
            "you compare with <: an element exactly at atol + rtol * |expected| is close (<=)":
                d < atol + rtol * np.abs(e),
            "you scale rtol by |actual|; the oracle scales it by |expected| (the reference)":
                d <= atol + rtol * np.abs(a),
            "you scale rtol by max(|actual|, |expected|) (math.isclose's rule); the oracle uses |expected|":
                d <= atol + rtol * np.maximum(np.abs(a), np.abs(e)),
            "you require both atol and rtol to hold; the rule adds them: |a - e| <= atol + rtol * |e|":
                (d <= atol) & (d <= rtol * np.abs(e)),
            "equal infinities give inf - inf = NaN: compare a == e first (equal values are close)":
                (d <= atol + rtol * np.abs(e)),
            "two NaNs are close (both sides failed the same way); a NaN against a number is not":
                np.where(np.isnan(a) & np.isnan(e), False, (a == e) | (d <= atol + rtol * np.where(
                    np.isfinite(e), np.abs(e), 0))),
            "you dropped the sign: |a| against |e|; compare the values themselves":
                np.abs(np.abs(a) - np.abs(e)) <= atol + rtol * np.abs(e),
        }


@check("close")
def check_close(close):
    a, e = CLOSE_CASES[:, 0], CLOSE_CASES[:, 1]
    hint = ("close = (a == e) | (both NaN) | (|a - e| <= atol + rtol * |e|), with |e| taken as 0 where e is not "
            "finite and a NaN difference never close")
    for atol, rtol, cases in ((ATOL, RTOL, slice(None)), (0.0, 0.0, slice(0, 3)), (1e-3, 0.0, slice(4, 7)),
                              (0.0, 1e-2, slice(7, 10))):
        checked = f"close(actual, expected, atol={atol:g}, rtol={rtol:g}) on {len(a[cases])} pairs"
        with np.errstate(all="ignore"):
            got = array(call(close, "close", checked, a[cases].copy(), e[cases].copy(), atol, rtol), "close",
                        checked, a[cases].shape, "[N] booleans")
        want = _oracle_close(a[cases], e[cases], atol, rtol)
        wrong = np.flatnonzero(got.astype(bool) != want)
        if wrong.size:
            i = int(wrong[0])
            mistakes = _close_mistakes(a[cases], e[cases], atol, rtol)
            looks = next((m for m, v in mistakes.items() if np.array_equal(np.asarray(v, bool), got.astype(bool))),
                         None)
            raise Failure(checked, f"pair {i}: actual {a[cases][i]!r}, expected {e[cases][i]!r}: you say "
                          f"{'close' if got[i] else 'not close'}, the oracle (compare_arrays) says "
                          f"{'close' if want[i] else 'not close'} ({wrong.size} of {want.size} pairs differ)",
                          looks, hint)
    return [f"checked: close on {len(a)} pairs (thresholds, infinities, NaN, negative values) with atol and rtol "
            f"alone and together, against compare_arrays"]


def _planted(name_changes: dict) -> dict:
    """The shipped model's trace with some tensors changed: {name: function of the array}."""
    ref = reference()
    return {name: (name_changes[name](np.array(value)) if name in name_changes else np.array(value))
            for name, value in ref.items()}


def _divergence_cases():
    def nudge(by):
        def change(x):
            x = x.copy()
            x.flat[x.size // 2] += by
            return x
        return change
    yield {}, "an unchanged trace"
    yield {"layers.1.out": nudge(1.0), "layers.2.mlp.act": nudge(1.0), "layers.3.out": nudge(5.0)}, \
        "layers.1.out, layers.2.mlp.act and layers.3.out changed"
    yield {"layers.1.attn.probs": nudge(2e-5), "layers.1.post_norm": nudge(1.0)}, \
        "a change below the tolerance in layers.1.attn.probs, then a real one"
    yield {"layers.0.attn.context": lambda x: x[:, :-1]}, "layers.0.attn.context one token short (another shape)"
    yield {"layers.1.mlp.up": nudge(np.nan)}, "a NaN in layers.1.mlp.up"
    yield {"layers.0.attn.scores": nudge(1.0), "layers.0.attn.k": nudge(1.0)}, \
        "layers.0.attn.k and layers.0.attn.scores changed (k comes first)"
    yield {"layers.0.attn.q_rope": nudge(1.0), "layers.0.attn.v": nudge(1.0)}, \
        "layers.0.attn.v and layers.0.attn.q_rope changed (v comes first in the forward, not in the alphabet)"


@check("first_divergence")
def check_first_divergence(first_divergence):
    ref = reference()
    order = list(ref)
    tolerance = Tolerance(1e-4, 1e-5)
    hint = ("walk the names in the reference's order (the forward's), skip names yours lacks, and return the first "
            "whose shape differs or which has an element not close(yours, reference, atol, rtol)")
    for changes, what in _divergence_cases():
        yours = _planted(changes)
        scrambled = {name: yours[name] for name in sorted(yours, key=lambda n: n[::-1]) if name != "layers.3.mlp.up"}
        checked = f"first_divergence(yours, reference, 1e-4, 1e-5) on the shipped model's trace, {what}"
        with np.errstate(all="ignore"):
            got = call(first_divergence, "first_divergence", checked, scrambled, {n: np.array(ref[n]) for n in order},
                       tolerance.atol, tolerance.rtol)
        report = compare_traces(scrambled, ref, tolerance)
        want = None if report.first is None else report.first.name
        if got != want:
            changed = [n for n in order if n in changes]
            looks = None
            with np.errstate(all="ignore"):
                diverging = [n for n in changed if compare_arrays(yours[n], ref[n], tolerance).failed]
            answers = {  # what each slip returns here
                "you walked your dict's order; walk the reference's (the forward's): yours may list the names in any "
                "order": next((n for n in scrambled if n in diverging), None),
                "you sorted the names alphabetically; walk the reference's order (the forward's)":
                    next((n for n in sorted(order) if n in diverging), None),
                "you returned the last diverging name in the reference's order; return the first":
                    diverging[-1] if diverging else None,
            }
            slips = [m for m, answer in answers.items() if answer is not None and answer == got != want]
            if slips:
                looks = "; or ".join(slips)
            elif want is not None and got is None and what.startswith("layers.0.attn.context"):
                looks = "a tensor of another shape diverges too (compare the shapes first)"
            elif got is None and "NaN" in what:
                looks = "a NaN is never close to a number: |NaN - x| <= tol is False, so test for it"
            elif got == "layers.1.attn.probs":
                looks = "you flagged a difference inside the tolerance: use atol + rtol * |reference|"
            raise Failure(checked, f"returned {got!r}; the oracle (compare_traces) says {want!r}", looks, hint)
    return [f"checked: first_divergence on the shipped model's trace ({len(order)} tensors) with planted changes: "
            f"names out of order, a missing name, a change below the tolerance, another shape, a NaN"]


def _reference_first_divergence(yours, reference, atol, rtol):
    report = compare_traces(yours, reference, Tolerance(atol, rtol))
    return None if report.first is None else report.first.name


EXERCISES = {
    "close": Exercise("ex8_golden_testing", ("close",), check_close),
    "first_divergence": Exercise("ex8_golden_testing", ("first_divergence",), check_first_divergence),
}
REFERENCE = {
    "close": _oracle_close,
    "first_divergence": _reference_first_divergence,
}

