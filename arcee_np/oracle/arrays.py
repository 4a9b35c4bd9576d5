"""Comparing one tensor with its reference: the largest absolute and relative error, where it is, and
which heads and query positions diverge (``compare_arrays`` -> a ``Row``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..trace import split_name
from .tolerances import Tolerance
from .tracefile import as_numpy

_HEAD_STAGES = ("attn.q", "attn.k", "attn.v", "attn.q_rope", "attn.k_rope", "attn.scores", "attn.probs")


def _query_axis(name: str, ndim: int) -> int | None:
    """The sequence (query) axis of a named tensor: 2 for [B, heads, T, ...] attention tensors, else 1."""
    if ndim < 2:
        return None
    return 2 if split_name(name)[1] in _HEAD_STAGES and ndim == 4 else 1


@dataclass
class Row:
    """How one named tensor compares. status: ok, DIFF (past the tolerance), SHAPE (shapes differ),
    MISSING (only in the reference), EXTRA (only in the candidate). ``max_rel`` is max abs error over
    max |reference|. ``heads`` / ``positions``: the heads and query positions that diverge, where known."""

    name: str
    status: str
    shape: tuple | None = None
    actual_shape: tuple | None = None
    dtype: str = ""
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    max_ref: float = float("nan")
    worst: tuple | None = None
    actual_value: float | None = None
    expected_value: float | None = None
    nonfinite: int = 0
    heads: list[int] | None = None
    num_heads: int | None = None
    positions: list[int] | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("DIFF", "SHAPE")

    def describe(self) -> str:
        """``max abs 1.3e+00 at (0, 1, 2, 3): 0.5 vs 1.8`` (or why there is no number)."""
        if self.status == "SHAPE":
            return f"shape {self.actual_shape} vs reference {self.shape}"
        if self.status in ("MISSING", "EXTRA"):
            return "only in the " + ("reference" if self.status == "MISSING" else "candidate")
        text = f"max abs {self.max_abs:.2g}"
        if self.worst is not None and self.max_abs > 0:
            text += f" at {self.worst}: {self.actual_value:.6g} vs {self.expected_value:.6g}"
        if self.nonfinite:
            text += f"; {self.nonfinite} NaN/Inf where the reference is finite"
        return text


def compare_arrays(actual, expected, tolerance: Tolerance, name: str = "tensor", valid=None) -> Row:
    """Compare one tensor. valid: optional [B, T] bool; query rows where it is False are not compared
    (padding rows are implementation-defined)."""
    a, b = as_numpy(actual), as_numpy(expected)
    dtype = str(b.dtype)
    if a.shape != b.shape:
        return Row(name, "SHAPE", tuple(b.shape), tuple(a.shape), dtype)
    a, b = a.astype(np.float64), b.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    nonfinite = int(np.sum(~np.isfinite(a) & np.isfinite(b)))
    diff = np.where(np.isnan(diff), np.inf, diff)
    finite_ref = np.where(np.isfinite(b), np.abs(b), 0.0)
    keep = _valid_mask(name, b.shape, valid)
    if keep is not None:
        diff, finite_ref = np.where(keep, diff, 0.0), np.where(keep, finite_ref, 0.0)
    bad = diff > tolerance.atol + tolerance.rtol * finite_ref
    max_abs = float(diff.max()) if diff.size else 0.0
    max_ref = float(finite_ref.max()) if diff.size else 0.0
    row = Row(name, "DIFF" if bad.any() else "ok", tuple(b.shape), tuple(a.shape), dtype, max_abs,
              max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else math.inf), max_ref,
              nonfinite=nonfinite)
    if diff.size and max_abs > 0:
        index = np.unravel_index(int(np.argmax(diff)), diff.shape)
        row.worst = tuple(int(i) for i in index)
        row.actual_value, row.expected_value = float(a[index]), float(b[index])
    if bad.any():
        _localize(row, bad)
    return row


def _valid_mask(name, shape, valid):
    """A mask broadcastable to ``shape`` keeping the valid query rows, or None."""
    if valid is None:
        return None
    valid = np.asarray(as_numpy(valid)).astype(bool)
    axis = _query_axis(name, len(shape))
    if axis is None or valid.ndim != 2 or shape[0] != valid.shape[0] or shape[axis] != valid.shape[1]:
        return None
    view = [1] * len(shape)
    view[0], view[axis] = valid.shape
    return valid.reshape(view)


def _localize(row: Row, bad) -> None:
    """Fill ``row.heads`` and ``row.positions`` from the boolean map of failing entries."""
    axis = _query_axis(row.name, bad.ndim)
    if axis is not None:
        others = tuple(i for i in range(bad.ndim) if i != axis)
        row.positions = [int(i) for i in np.flatnonzero(bad.any(axis=others))]
    if split_name(row.name)[1] in _HEAD_STAGES and bad.ndim == 4:
        row.num_heads = bad.shape[1]
        row.heads = [int(i) for i in np.flatnonzero(bad.any(axis=(0, 2, 3)))]
