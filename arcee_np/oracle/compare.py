"""Comparing traces: per named tensor the max absolute and relative error, the first tensor past the
tolerance, and a one-line guess at the cause derived from which tensor diverged first and how its inputs
compared. This module is the public face of the comparison; each part lives in its own module:

* ``tolerances``: ``Tolerance``, ``TOLERANCES`` (the one table every comparison uses), ``tolerance_for``;
* ``arrays``: ``compare_arrays``, one tensor against its reference, as a ``Row``;
* ``diagnosis``: ``explain``, the likely cause of a first divergence, from the table of stages;
* ``report``: ``compare_traces``, two ``{name: array}`` traces, as a ``Report``;
* ``transformers_hooks``: ``transformers_trace`` records the same names from a live transformers model with
  forward hooks; ``compare_with_transformers`` runs both; ``load_transformers_model``.
"""

from __future__ import annotations

from .arrays import Row, compare_arrays
from .diagnosis import _GRAD_STAGES as _GRAD_STAGES, _STAGES as _STAGES, explain  # the tables, for tests
from .report import Report, compare_traces, reference_regime
from .tolerances import TOLERANCES, Tolerance, gradient_tolerance_for, tolerance_for
from .transformers_hooks import compare_with_transformers, load_transformers_model, transformers_trace

__all__ = ["TOLERANCES", "Report", "Row", "Tolerance", "compare_arrays", "compare_traces", "compare_with_transformers",
           "explain", "gradient_tolerance_for", "load_transformers_model", "reference_regime", "tolerance_for",
           "transformers_trace"]
