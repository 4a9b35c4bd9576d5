"""The machinery behind the exercise checks: verdicts, calling your code safely, comparing with arcee_np.

A check runs your function on real inputs, compares what it returns with arcee_np's reference through
``arcee_np.oracle`` (the trace comparison, the tolerance table) and returns a ``Verdict``. It never raises:
an exception in your code, a wrong shape or a wrong number all become lines of the verdict, so a notebook
full of unsolved exercises still runs from top to bottom.
"""

from __future__ import annotations

import functools
import json
import linecache
import math
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arcee_np.oracle.compare import Tolerance, compare_arrays, compare_traces

HERE = Path(__file__).resolve().parent
WIDTH = 108  # characters a verdict line wraps at: readable at notebook width


@dataclass
class Verdict:
    """The result of a check: passed or not, and the lines that say what was checked and what went wrong."""

    exercise: str
    passed: bool
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        mark = "✓" if self.passed else "✗"
        head = f"{mark} {self.exercise}: " + ("matches arcee_np" if self.passed else "not right yet")
        body = [textwrap.fill(line, WIDTH, initial_indent="  ", subsequent_indent="      ",
                              break_long_words=False, break_on_hyphens=False) for line in self.lines]
        return "\n".join([head, *body])

    __repr__ = __str__


class Failure(Exception):
    """Raised inside a check to stop it with a verdict: what was checked, where it went wrong, and why."""

    def __init__(self, checked: str, where: str, looks_like: str | None = None, hint: str | None = None):
        super().__init__(where)
        self.lines = [f"checked: {checked}", f"where: {where}"]
        if looks_like:
            self.lines.append(f"looks like: {looks_like}")
        if hint:
            self.lines.append(f"hint: {hint}")


@dataclass(frozen=True)
class Exercise:
    """One exercise: the notebook whose cells define it, the names it asks for, and its check."""

    notebook: str
    names: tuple
    check: object


def check(exercise: str):
    """Turn a check body into a check: the body returns its success lines or raises Failure."""
    def decorate(body):
        @functools.wraps(body)
        def run(*yours) -> Verdict:
            try:
                return Verdict(exercise, True, list(body(*yours)))
            except Failure as failure:
                return Verdict(exercise, False, failure.lines)
        return run
    return decorate


# ---------------------------------------------------------------------------------------------- your code
def call(function, name: str, checked: str, *args, **kwargs):
    """Call your ``function``; an exception becomes a Failure that says where in your code it happened."""
    if not callable(function):
        raise Failure(checked, f"`{name}` is {type(function).__name__}, not a function: define it with def {name}(...)")
    try:
        return function(*args, **kwargs)
    except Failure:
        raise
    except NotImplementedError:
        raise Failure(checked, f"`{name}` is not written yet: it still raises NotImplementedError.",
                      hint="replace the `raise NotImplementedError` line with your code, run the cell, then run "
                           "the check again.") from None
    except Exception as err:  # noqa: BLE001 - your code may raise anything; the verdict reports it
        raise Failure(checked, f"`{name}` raised {type(err).__name__}: {err}{_where_in_your_code(err)}",
                      hint=_hint_for_exception(err)) from None


def _where_in_your_code(err: BaseException) -> str:
    """`` (line 7 of your cell: y = x @ w)`` for the deepest frame outside numpy and this folder's modules."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if not f.filename.startswith(str(HERE)) and "site-packages" not in f.filename
              and "/numpy/" not in f.filename and "/arcee_np/" not in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f" (line {frame.lineno} of your code, in {frame.name}: {code})" if code else f" (line {frame.lineno})"


def _hint_for_exception(err: BaseException) -> str | None:
    text = str(err)
    if "matmul" in text and "mismatch" in text:
        return ("weights are stored as transformers stores them, [out, in]: a linear layer is y = x @ W.T. "
                "Print the shapes of both operands.")
    if "could not be broadcast" in text:
        return ("two arrays do not line up: print their .shape; an axis of size 1 (x[:, None]) makes one "
                "broadcast over the other.")
    if "concatenation axis" in text:
        return ("np.concatenate joins along `axis` and needs every other axis equal: print both shapes. A KV cache "
                "joins the positions, axis 2 of [B, KV, T, hd]: np.concatenate([past, new], axis=2).")
    if isinstance(err, (IndexError, KeyError)):
        return "print the shapes (and the keys) of what you index."
    return None


def array(value, name: str, checked: str, shape: tuple | None = None, axes: str = "", hint: str | None = None,
          dtype=None) -> np.ndarray:
    """Your return value as a NumPy array, with a Failure if it is missing, not numeric or mis-shaped."""
    if value is None:
        raise Failure(checked, f"`{name}` returned None.", hint="add a `return` at the end of your function.")
    if isinstance(value, (tuple, dict)):
        raise Failure(checked, f"`{name}` returned a {type(value).__name__}; it should return one array"
                               + (f" of shape {axes}" if axes else "") + ".", hint=hint)
    try:
        out = np.asarray(value)
    except Exception as err:  # noqa: BLE001
        raise Failure(checked, f"`{name}` returned something that is not an array ({type(err).__name__}: "
                               f"{err}).") from None
    if not np.issubdtype(out.dtype, np.number) and out.dtype != np.bool_:
        raise Failure(checked, f"`{name}` returned an array of {out.dtype}, not numbers.")
    if shape is not None and out.shape != tuple(shape):
        words = f"{axes} = {tuple(shape)}" if axes else str(tuple(shape))
        raise Failure(checked, f"`{name}` returned shape {out.shape}; expected {words}.", hint=hint)
    if dtype is not None and out.dtype != np.dtype(dtype):
        raise Failure(checked, f"`{name}` returned {out.dtype}; expected {np.dtype(dtype)}.", hint=hint)
    return out


def pair(value, name: str, checked: str, what: str) -> tuple:
    """Your function's two results, e.g. ``(cos, sin)``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = type(value).__name__ + (f" of {len(value)}" if isinstance(value, (tuple, list)) else "")
        raise Failure(checked, f"`{name}` returned a {got}; it should return two arrays, {what}.",
                      hint=f"end with `return {what.strip('()')}`.")
    return tuple(value)


# ---------------------------------------------------------------------------------------------- comparing
FLOAT32 = Tolerance(1e-4, 1e-5, "float32")
RELATIVE = Tolerance(0.0, 1e-5, "relative, for values far below 1")
EXACT = Tolerance(0.0, 0.0, "exact")


def against_trace(candidate: dict, reference, checked: str, looks_like=None, hint=None, valid=None) -> float:
    """Compare your named tensors with arcee_np's trace; on a divergence, fail with the oracle's explanation.

    candidate: {trace name: array}; the names you did not compute come from the reference, so the report can
    say which input agreed. Returns the largest absolute error of your tensors.
    """
    reference_subset = {name: reference[name] for name in candidate}
    report = compare_traces(candidate, reference_subset, valid=valid)
    if not report.ok:
        looks = looks_like() if callable(looks_like) else looks_like
        raise Failure(checked, report.explanation + " (numbers: your value vs arcee_np's)", looks, hint)
    return max(r.max_abs for r in report.compared)


def against_array(actual, expected, name: str, checked: str, tolerance: Tolerance = FLOAT32, looks_like=None,
                  hint=None) -> float:
    """Compare one array with arcee_np's; on a difference, fail saying where and by how much."""
    row = compare_arrays(actual, expected, tolerance, name)
    if row.failed:
        looks = looks_like() if callable(looks_like) else looks_like
        raise Failure(checked, f"{name}: {row.describe()} (your value vs arcee_np's; tolerance {tolerance})",
                      looks, hint)
    return row.max_abs


def first_match(actual, variants: dict, expected=None, tolerance: Tolerance = FLOAT32) -> str | None:
    """The message of the first classic mistake whose result ``actual`` equals (within ``tolerance``).

    variants: {message: the array that mistake gives}. Mistakes that give the right answer here are skipped.
    """
    for message, wrong in variants.items():
        try:
            wrong = np.asarray(wrong)
            if wrong.shape != np.shape(actual):
                continue
            if expected is not None and not compare_arrays(wrong, expected, tolerance).failed:
                continue
            with np.errstate(all="ignore"):
                if not compare_arrays(actual, wrong, tolerance).failed:
                    return message
        except Exception:  # noqa: BLE001 - a variant that cannot be formed here simply does not match
            continue
    return None


def fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


# ---------------------------------------------------------------------------------------------- loading cells
def exercise_cells(notebook: str) -> list[tuple[int, str]]:
    """``(cell index, source)`` of the cells tagged ``exercise`` in ``notebook`` (a name in this folder)."""
    path = HERE / f"{notebook}.ipynb"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells)
            if c["cell_type"] == "code" and "exercise" in c.get("metadata", {}).get("tags", [])]


def run_cells(notebook: str, namespace: dict) -> dict:
    """Run the exercise cells of a saved notebook in ``namespace`` (your code as the file holds it now).

    A cell that fails to run leaves what it defined undefined; the check then says the function is missing.
    """
    for index, source in exercise_cells(notebook):
        filename = f"<{notebook}.ipynb, cell {index}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        try:
            exec(compile(source, filename, "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - reported when the function is looked up
            namespace.setdefault("__cell_errors__", []).append(f"{filename}: {type(err).__name__}: {err}")
    return namespace


def missing(name: str, notebook: str, namespace: dict):
    """A stand-in for a function your notebook does not define: calling it fails with why."""
    errors = namespace.get("__cell_errors__", [])

    def absent(*args, **kwargs):
        why = f"; running its cells gave {errors[0]}" if errors else ""
        raise Failure(f"your code in {notebook}.ipynb", f"{notebook}.ipynb defines no `{name}`{why}.",
                      hint="save the notebook (the check reads the saved file) and keep the function's name.")
    absent.__name__ = name
    return absent
