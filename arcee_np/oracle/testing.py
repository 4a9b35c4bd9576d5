"""Helpers for other projects' tests: arcee_np as the numerical oracle.

* ``assert_close(actual, expected, name=..., dtype=...)``: one tensor against arcee_np's, with the
  tolerance table ``arcee_np.oracle.tolerances.TOLERANCES`` (chosen by dtype unless given).
* ``assert_trace_matches(their_trace, model, input_ids)``: a ``{name: array}`` dict recorded by your
  implementation (names of docs/trace.md) against arcee_np run on the same inputs; on failure the
  assertion message is the full divergence report, ending with the first divergence and its likely cause.

Arrays may be NumPy, CuPy, array_api_strict or torch tensors. See docs/debugging.md for worked examples.
"""

from __future__ import annotations

from .arrays import compare_arrays
from .report import Report, compare_traces
from .tolerances import tolerance_for
from ..trace import Trace
from .tracefile import as_numpy, trace_model

__all__ = ["assert_close", "assert_trace_matches", "reference_trace"]


def assert_close(actual, expected, name: str = "tensor", dtype=None, tolerance=None, valid=None) -> None:
    """Fail unless ``|actual - expected| <= atol + rtol * |expected|`` everywhere (NaN matches NaN).

    dtype: picks the row of TOLERANCES ("float32", "float64", "float64_plain", "float16", ...; default: the
    dtype of ``expected``); tolerance: a key of TOLERANCES, a Tolerance or ``(atol, rtol)``, overriding dtype.
    valid: optional [B, T] bool of the query rows to compare (padding rows are implementation-defined).
    """
    tol = tolerance_for(dtype if dtype is not None else as_numpy(expected).dtype, tolerance=tolerance)
    row = compare_arrays(actual, expected, tol, name, valid)
    if row.failed:
        where = []
        if row.heads is not None and row.num_heads:
            where.append(f"heads {row.heads} of {row.num_heads}")
        if row.positions:
            where.append(f"positions {row.positions[:8]}")
        raise AssertionError(f"{name}: {row.describe()} exceeds tol {tol}"
                             + (f" (diverging {', '.join(where)})" if where else ""))


def reference_trace(model, input_ids=None, patterns="*", **inputs) -> Trace:
    """arcee_np's trace of ``model`` on these inputs (a host copy of every matching named tensor)."""
    return trace_model(model, input_ids, patterns, **inputs)


def assert_trace_matches(their_trace: dict, model, input_ids=None, *, tolerance=None, attention_mask=None,
                         position_ids=None, inputs_embeds=None, labels=None) -> Report:
    """Fail with the divergence report unless every tensor of ``their_trace`` matches arcee_np's.

    their_trace: ``{name: array}`` with names of docs/trace.md (any subset; shapes as listed there; gradients
    as ``grad.`` + a name, which needs ``labels``: the causal-LM loss's [B, T], -100 ignored); model: the
    arcee_np model holding the same weights; the inputs as for the model call. Names arcee_np does not record
    are reported and fail (a misspelt name would otherwise be silently skipped). Returns the Report when
    everything agrees.
    """
    reference = reference_trace(model, input_ids, list(their_trace), attention_mask=attention_mask,
                                position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels)
    unknown = sorted(set(their_trace) - set(reference))
    if unknown:
        raise AssertionError(f"arcee_np records no tensor named {unknown[:5]}; the names are listed in docs/trace.md.")
    report = compare_traces(their_trace, reference, tolerance, reference_label="arcee_np",
                            candidate_label="your implementation")
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report
