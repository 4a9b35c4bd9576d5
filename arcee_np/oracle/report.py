"""Comparing two traces, name by name in recording order: a ``Report`` with a ``Row`` per tensor, the first
divergence and its diagnosis (``compare_traces``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..trace import Trace, is_gradient, name_order_key, split_name
from .arrays import Row, compare_arrays
from .diagnosis import explain
from .tolerances import Tolerance, gradient_tolerance_for, tolerance_for
from .tracefile import as_numpy


@dataclass
class Report:
    """The comparison of two traces: a Row per name in recording order, the first failing one and why."""

    rows: list[Row]
    tolerance: Tolerance
    first: Row | None = None
    gradient_tolerance: Tolerance | None = None
    explanation: str = ""
    reference: str = "reference"
    candidate: str = "candidate"
    notes: list[str] = field(default_factory=list)

    @property
    def compared(self) -> list[Row]:
        return [r for r in self.rows if r.status not in ("MISSING", "EXTRA")]

    @property
    def ok(self) -> bool:
        return self.first is None and bool(self.compared)

    def summary(self) -> str:
        """One line: the first divergence and its likely cause, or that everything agrees."""
        if self.first is not None:
            return self.explanation
        if not self.compared:
            return "nothing compared: the two traces share no tensor names (see docs/trace.md for the names)"
        worst = max(self.compared, key=lambda r: r.max_rel if math.isfinite(r.max_rel) else -1)
        gradients = any(is_gradient(r.name) for r in self.compared) and self.gradient_tolerance is not None
        tolerance = f"{self.tolerance}" + (f" (gradients {self.gradient_tolerance})" if gradients else "")
        return (f"all {len(self.compared)} compared tensors agree within tol {tolerance} "
                f"(largest relative error {worst.max_rel:.2g} at {worst.name})")

    def table(self, failures_only: bool = False) -> str:
        """A fixed-width table: name, shape, max abs, max rel, status; the first divergence is marked."""
        lines = [f"{'name':<28} {'shape':<20} {'max abs':>9} {'max rel':>9}  status"]
        for r in self.rows:
            if failures_only and not r.failed:
                continue
            shape = "x".join(map(str, r.shape if r.shape is not None else r.actual_shape or ()))
            mark = "  <-- first divergence" if r is self.first else ""
            numbers = (f"{r.max_abs:>9.2e} {r.max_rel:>9.2e}" if r.status in ("ok", "DIFF") else f"{'-':>9} {'-':>9}")
            lines.append(f"{r.name:<28} {shape:<20} {numbers}  {r.status}{mark}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-safe form (for CI artefacts)."""
        return {"ok": self.ok, "summary": self.summary(), "tolerance": [self.tolerance.atol, self.tolerance.rtol],
                "first": self.first.name if self.first else None,
                "rows": [{"name": r.name, "status": r.status, "shape": r.shape, "max_abs": _json_float(r.max_abs),
                          "max_rel": _json_float(r.max_rel)} for r in self.rows]}

    def __str__(self):
        return "\n".join([self.table(), *self.notes, self.summary()])


def _json_float(x: float):
    return x if math.isfinite(x) else str(x)


def _dtype_of(t) -> str | None:
    for value in t.values():
        dtype = str(as_numpy(value).dtype)
        if dtype.startswith("float"):
            return dtype
    return None


def reference_regime(reference, against: str | None = None) -> tuple[str | None, str | None]:
    """(dtype, against) that pick a reference's row of TOLERANCES: its recorded dtype (else its first float
    tensor's), and ``"transformers"`` for a plain transformers trace (not one with its float32 casts lifted)."""
    meta = getattr(reference, "meta", {}) or {}
    if against is None and meta.get("producer") == "transformers" and not meta.get("lifted"):
        against = "transformers"
    return meta.get("dtype") or _dtype_of(reference), against


def compare_traces(candidate, reference, tolerance=None, valid=None, names=None, against: str | None = None,
                   reference_label="reference", candidate_label="candidate") -> Report:
    """Compare ``candidate`` (the implementation under test) with ``reference`` (arcee_np or transformers).

    Both are ``{name: array}`` dicts (Traces, loaded trace files, a port's own dict; torch tensors are fine).
    tolerance: see tolerance_for (default: by the reference's dtype; ``against="transformers"`` picks the
    plain-float64 row; gradient names ``grad.*`` get the gradient rows, gradient_tolerance_for, unless a
    tolerance is given). valid: [B, T] bool rows to compare (default: the reference's attention_mask input,
    when it has one). names: only these names (default: all). Names in only one trace are listed, not failed.
    """
    dtype, against = reference_regime(reference, against)
    tol = tolerance_for(dtype, against, tolerance)
    grad_tol = tol if tolerance is not None else gradient_tolerance_for(dtype, against)
    if valid is None:
        mask = (getattr(reference, "inputs", None) or {}).get("attention_mask")
        valid = mask if mask is not None and as_numpy(mask).ndim == 2 else None
    all_names = sorted(set(reference) | set(candidate), key=name_order_key)
    if names is not None:
        wanted = Trace(names)
        all_names = [n for n in all_names if wanted.wants(n)]
    rows = []
    for name in all_names:
        if name not in candidate:
            rows.append(Row(name, "MISSING"))
        elif name not in reference:
            rows.append(Row(name, "EXTRA"))
        else:
            rows.append(compare_arrays(candidate[name], reference[name], grad_tol if is_gradient(name) else tol,
                                       name, valid))
    report = Report(rows, tol, gradient_tolerance=grad_tol, reference=reference_label, candidate=candidate_label)
    report.first = next((r for r in rows if r.failed), None)
    if report.first is not None:
        layers = [split_name(r.name)[0] for r in rows]
        num_layers = max((n for n in layers if n is not None), default=-1) + 1
        report.explanation = explain(report.first, {r.name: r for r in rows}, num_layers,
                                     grad_tol if is_gradient(report.first.name) else tol)
    missing = [r.name for r in rows if r.status == "MISSING"]
    if missing and report.compared:
        report.notes.append(f"{len(missing)} reference tensor(s) not in the candidate (not compared), e.g. "
                            f"{', '.join(missing[:3])}")
    return report
