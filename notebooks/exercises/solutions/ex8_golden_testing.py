"""Solutions: the oracle's closeness rule, and the first diverging tensor of a trace."""

import numpy as np


def close(actual, expected, atol, rtol):
    """Elementwise |actual - expected| <= atol + rtol * |expected| (|expected| only where it is finite);
    equal values (infinities of one sign included) and two NaNs are close, a NaN against a number is not."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same, 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), np.inf, diff)                 # a NaN against a number: infinitely far
    scale = np.where(np.isfinite(e), np.abs(e), 0.0)
    return diff <= atol + rtol * scale


def first_divergence(yours, reference, atol, rtol):
    """The first name, in the reference's (forward) order, whose tensor differs: another shape, or an element
    not close; names missing from yours are skipped. None when everything agrees."""
    for name, expected in reference.items():
        if name not in yours:
            continue
        actual = np.asarray(yours[name])
        if actual.shape != np.shape(expected) or not close(actual, expected, atol, rtol).all():
            return name
    return None
