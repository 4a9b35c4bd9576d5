"""Comparing traces: per named tensor the max absolute and relative error, the first tensor past the
tolerance, and a one-line guess at the cause derived from which tensor diverged first and how its inputs
compared.

``compare_traces(candidate, reference)`` compares two ``{name: array}`` traces (arcee_np's, a port's,
one read back by ``tracefile.load_trace``); ``transformers_trace`` records the same names from a live
transformers model with forward hooks, and ``compare_with_transformers`` runs both. Tolerances live in
``TOLERANCES``, the one table every comparison (and ``arcee_np.testing``) uses.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, InputTypeError
from ..trace import GRAD_PREFIX, Trace, is_gradient, name_order_key, split_name, trace_names
from ..validation.values import require_real
from .tracefile import as_numpy, describe_patterns, trace_model, versions


# ----------------------------------------------------------------------------------------------- tolerances
@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise (NumPy's allclose rule)."""

    atol: float
    rtol: float
    what: str = ""

    def __str__(self):
        return f"{self.atol:.0e}" if self.rtol == 0 else f"{self.atol:.0e} + {self.rtol:.0e}*|ref|"


# The numerics contract of design.md. atol is the contract's max abs error (for values of order 1); the
# rtol term lets large intermediates (ReLU² outputs, attention scores of big models) carry the error
# their size implies in that dtype.
TOLERANCES = {
    "float32": Tolerance(1e-4, 1e-5, "float32 vs transformers float32 eager (or another float32 port)"),
    "float64": Tolerance(1e-9, 1e-10, "float64 vs transformers float64 with its float32 casts lifted"),
    # Plain transformers float64 rounds through float32 in RMSNorm, the softmax and the RoPE tables; the RoPE
    # angle pos * inv_freq in float32 is off by about pos * 6e-8 rad, so the gap grows with position (shipped
    # model's logits: 1-2e-6 at 16 positions, 2-3e-6 at 64, 2-3.5e-5 at 512). Float32-accurate, no better.
    "float64_plain": Tolerance(1e-4, 1e-5, "float64 vs plain transformers float64 (float32-accurate at its casts)"),
    # 16-bit modes: both sides multiply in float32 and round once; where their BLAS sums the products in another
    # order a result can land one ulp (2**-8 relative in bfloat16, 2**-11 in float16) away, and such flips
    # propagate through the layers (docs/numerics.md has the measured figures).
    "float16": Tolerance(1e-2, 1e-2, "float16 vs transformers float16"),
    "bfloat16": Tolerance(2e-2, 2e-2, "bfloat16 vs transformers bfloat16"),
    "kv_cache": Tolerance(1e-5, 1e-6, "KV-cache decode vs the full forward"),
    "cupy": Tolerance(1e-4, 1e-5, "CuPy float32 vs NumPy float32"),
    # Gradients are smaller than activations (a loss's gradient is about 1/tokens per entry): a tighter atol,
    # with the rtol term carrying the float32 rounding that the large ones accumulate (measured: docs/numerics.md).
    "gradients_float32": Tolerance(1e-5, 1e-4, "gradients, float32 vs transformers float32 autograd"),
    "gradients_float64": Tolerance(1e-10, 1e-10, "gradients, float64 vs transformers float64 (casts lifted) autograd"),
}


def gradient_tolerance_for(dtype=None, against: str | None = None) -> Tolerance:
    """The TOLERANCES row for gradients in ``dtype``: float64 (lifted) or, for anything else and for plain
    transformers float64 (``against="transformers"``), the float32 row."""
    name = np.dtype(dtype).name if dtype is not None and not isinstance(dtype, str) else (dtype or "float32")
    lifted = name == "float64" and against != "transformers"
    return TOLERANCES["gradients_float64" if lifted else "gradients_float32"]


def tolerance_for(dtype=None, against: str | None = None, tolerance=None) -> Tolerance:
    """The Tolerance to use: ``tolerance`` itself (a Tolerance, a key of TOLERANCES, or ``(atol, rtol)``),
    else the row of TOLERANCES for ``dtype`` (a name or dtype object; float64 against plain ``"transformers"``
    uses ``float64_plain``)."""
    if isinstance(tolerance, Tolerance):
        return tolerance
    if isinstance(tolerance, str):
        if tolerance not in TOLERANCES:
            raise InputError(f"unknown tolerance {tolerance!r}; choose one of {', '.join(TOLERANCES)}.")
        return TOLERANCES[tolerance]
    if tolerance is not None:
        if not (isinstance(tolerance, (tuple, list)) and len(tolerance) == 2):
            raise InputTypeError(f"tolerance must be a Tolerance, a row of TOLERANCES or (atol, rtol), got "
                                 f"{tolerance!r}.")
        atol, rtol = (require_real(name, value, InputError, low=0) for name, value in zip(("atol", "rtol"), tolerance))
        return Tolerance(atol, rtol, "given")
    name = np.dtype(dtype).name if dtype is not None and not isinstance(dtype, str) else (dtype or "float32")
    if name == "float64" and against == "transformers":
        name = "float64_plain"
    if name not in TOLERANCES:
        raise InputError(f"no tolerance for dtype {name!r}; pass tolerance= (one of {', '.join(TOLERANCES)} "
                         f"or (atol, rtol)).")
    return TOLERANCES[name]


# ----------------------------------------------------------------------------------------------- one tensor
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


# ----------------------------------------------------------------------------------------------- whole traces
# stage -> (label, the stages it is computed from ("{prev}": the layer's input), the likely culprit)
_ROPE = "RoPE layout/frequencies (rotate-half vs interleaved? theta? YaRN? position_ids?)"
_RMSNORM = "RMSNorm (eps? normalise in float32 and cast back before the weight multiply; weight, not 1 + weight)"
_STAGES = {
    "embed": ("the embeddings", (), "the embedding lookup (embedding matrix, token ids, or inputs_embeds)"),
    "input_norm": ("the input RMSNorm output", ("{prev}",), _RMSNORM),
    "attn.q": ("q", ("input_norm",), "q_proj weight/bias or the head split ([B, T, H*hd] -> [B, T, H, hd] -> "
                                     "[B, H, T, hd])"),
    "attn.k": ("k", ("input_norm",), "k_proj weight/bias or the head split ([B, T, KV*hd] -> [B, KV, T, hd])"),
    "attn.v": ("v", ("input_norm",), "v_proj weight/bias or the head split ([B, T, KV*hd] -> [B, KV, T, hd])"),
    "attn.q_rope": ("q after RoPE", ("attn.q",), _ROPE),
    "attn.k_rope": ("k after RoPE", ("attn.k",), _ROPE),
    "attn.scores": ("the attention scores", ("attn.q_rope", "attn.k_rope"),
                    "q k^T * head_dim**-0.5 (scaling?) or the GQA head mapping (query head n reads KV head "
                    "n // n_rep)"),
    "attn.probs": ("the attention probabilities", ("attn.scores",),
                   "the mask (causal? padding? additive finfo.min) or the softmax (float32, max subtracted)"),
    "attn.context": ("the attention context", ("attn.probs", "attn.v"),
                     "probs @ v (GQA mapping for values: KV head n // n_rep) or the head merge "
                     "([B, H, T, hd] -> [B, T, H, hd] -> [B, T, H*hd])"),
    "attn.out": ("the attention output", ("attn.context",), "o_proj weight/bias"),
    "attn_residual": ("the attention residual", ("{prev}", "attn.out"),
                      "the residual add (h + attn_out, h the layer's un-normed input)"),
    "post_norm": ("the post-attention RMSNorm output", ("attn_residual",), _RMSNORM),
    "mlp.up": ("up_proj's output", ("post_norm",), "up_proj weight/bias (Arcee's MLP has no gate_proj)"),
    "mlp.act": ("the MLP activation", ("mlp.up",), "the activation (AFM: relu2 = relu(x)**2; check hidden_act)"),
    "mlp.out": ("the MLP output", ("mlp.act",), "down_proj weight/bias"),
    "out": ("the layer output", ("attn_residual", "mlp.out"), "the residual add (attn_residual + mlp_out)"),
    "final_norm": ("the final RMSNorm output", ("{last}",), _RMSNORM),
    "logits": ("the logits", ("final_norm",), "lm_head (its own weight or tied to embed_tokens? logits_to_keep?)"),
}


# The backward: stage -> (label, the gradients it is computed from, the likely culprit). "{next}" is the
# layer's output gradient, "{after}" the gradients that reach the layer's input from the next layer (or from
# the final norm after the last layer).
_GRAD_STAGES = {
    "logits": ("the logits' gradient", (), "the loss's gradient: (softmax - one-hot) / n on the counted rows "
               "(labels shifted by one? -100 ignored? the mean over counted tokens?)"),
    "final_norm": ("the final norm's gradient", ("logits",), "lm_head backward: dlogits @ W (tied to the embedding?)"),
    "out": ("the layer output's gradient", ("{after}",), "the next step's backward: its RMSNorm backward plus the "
            "residual's pass-through"),
    "mlp.out": ("the MLP output's gradient", ("out",), "the residual add (the MLP output's gradient is the layer "
                "output's)"),
    "mlp.act": ("the MLP activation's gradient", ("mlp.out",), "down_proj backward: dact = dout @ W_down"),
    "mlp.up": ("up_proj's output gradient", ("mlp.act",), "the activation's derivative (relu2: 2 relu(x))"),
    "post_norm": ("the post-attention norm output's gradient", ("mlp.up",), "up_proj backward: dup @ W_up"),
    "attn_residual": ("the attention residual's gradient", ("out", "post_norm"),
                      "RMSNorm backward (r * (g - n mean(g n)), g = grad * weight, in float32) plus the residual"),
    "attn.out": ("the attention output's gradient", ("attn_residual",), "the residual add"),
    "attn.context": ("the attention context's gradient", ("attn.out",), "o_proj backward: dout @ W_o"),
    "attn.probs": ("the attention probabilities' gradient", ("attn.context",),
                   "dP = dO V^T per head (query head n reads KV head n // n_rep; the head merge's inverse)"),
    "attn.scores": ("the attention scores' gradient", ("attn.probs",),
                    "the softmax backward P * (dP - sum P dP) in float32 (masked keys get none)"),
    "attn.q_rope": ("q's gradient after RoPE", ("attn.scores",), "dq = dS k * scaling"),
    "attn.k_rope": ("k's gradient after RoPE", ("attn.scores",),
                    "dk = dS^T q * scaling, summed over each KV head's query group"),
    "attn.v": ("v's gradient", ("attn.probs", "attn.context"), "dv = P^T dO, summed over each KV head's query group"),
    "attn.q": ("q's gradient", ("attn.q_rope",), "RoPE backward: rotate by the negative angle"),
    "attn.k": ("k's gradient", ("attn.k_rope",), "RoPE backward: rotate by the negative angle"),
    "input_norm": ("the input norm output's gradient", ("attn.q", "attn.k", "attn.v"),
                   "q/k/v_proj backward: the sum of the three dy @ W (head split undone)"),
    "embed": ("the embeddings' gradient", ("{after}",), "the first layer's input RMSNorm backward plus the residual"),
}


def _grad_inputs_of(name: str, num_layers: int) -> list[str]:
    """The gradients that ``name`` (a gradient) is computed from in the backward."""
    layer, stage = split_name(name)
    if stage not in _GRAD_STAGES:
        return []
    following = layer + 1 if layer is not None else 0  # the layer whose input this is (embed: layer 0)
    after = ([f"layers.{following}.attn_residual", f"layers.{following}.input_norm"] if following < num_layers
             else ["final_norm"])
    out = []
    for source in _GRAD_STAGES[stage][1]:
        if source == "{after}":
            out += after
        elif layer is not None:
            out.append(f"layers.{layer}.{source}")
        else:
            out.append(source)
    return [GRAD_PREFIX + n for n in out]


def _inputs_of(name: str, num_layers: int) -> list[str]:
    if is_gradient(name):
        return _grad_inputs_of(name, num_layers)
    layer, stage = split_name(name)
    if stage not in _STAGES:
        return []
    out = []
    for source in _STAGES[stage][1]:
        if source == "{prev}":
            out.append("embed" if layer == 0 else f"layers.{layer - 1}.out")
        elif source == "{last}":
            out.append(f"layers.{num_layers - 1}.out")
        else:
            out.append(f"layers.{layer}.{source}" if layer is not None else source)
    return out


def _stages(name: str) -> dict:
    return _GRAD_STAGES if is_gradient(name) else _STAGES


def _label(name: str) -> str:
    stage, stages = split_name(name)[1], _stages(name)
    return stages[stage][0] if stage in stages else name


def _plural(name: str) -> bool:
    return _label(name).endswith("s")


def _verb(name: str, verb: str) -> str:
    return verb if _plural(name) else verb + "s"


def _float16_overflow(row: Row, sources: list[Row]) -> str | None:
    """A float16 input big enough to overflow the squaring inside RMSNorm or ReLU²."""
    stage = split_name(row.name)[1]
    if "float16" not in row.dtype or is_gradient(row.name) or stage not in ("input_norm", "post_norm", "final_norm",
                                                                            "mlp.act"):
        return None
    big = [s for s in sources if s.max_ref > 255.9]
    if not big:
        return None
    s = big[0]
    if stage == "mlp.act":
        return (f"{s.name} reaches |x| = {s.max_ref:.3g} in float16, where relu(x)**2 overflows (> 65504): "
                f"compute the activation in float32 or scale the weights")
    return (f"{s.name} reaches |x| = {s.max_ref:.3g} in float16, where x**2 overflows (> 65504): RMSNorm must "
            f"square and average in float32 (missing upcast?)")


def _steps_between(last: str | None, first: str, num_layers: int) -> list[str]:
    """The names recorded after ``last`` (the last agreeing tensor; None: from the start) up to ``first``."""
    names = trace_names(num_layers)
    if first not in names:
        return [first]
    start = names.index(last) + 1 if last in names else 0
    return names[start:names.index(first) + 1]


def _gap_suspect(steps: list[str]) -> str:
    """Where to look when the tensors between the last agreement and the first divergence were not compared."""
    if len(steps) <= 3:
        return "; or ".join(f"{_label(n)}: {_STAGES[split_name(n)[1]][2]}" for n in steps
                            if split_name(n)[1] in _STAGES) or "the step that computes this tensor"
    layer = split_name(steps[-1])[0]
    hint = f' (for example trace("layers.{layer}.*"))' if layer is not None else ""
    return (f"any of the {len(steps)} steps from {steps[0]} to {steps[-1]}: record those names{hint} and compare "
            f"again to see which one differs first")


def explain(first: Row, rows: dict[str, Row], num_layers: int, tolerance: Tolerance) -> str:
    """The one-line diagnosis of the first divergence, from its own numbers and its inputs'."""
    head = f"first divergence at {first.name} ({first.describe()}"
    if first.status == "SHAPE":
        return head + f", tol {tolerance}) -> a layout difference: docs/trace.md gives the shape of every name"
    stage, stages = split_name(first.name)[1], _stages(first.name)
    suspect = stages[stage][2] if stage in stages else "the step that computes this tensor"
    inputs = _inputs_of(first.name, num_layers)
    sources = [rows[n] for n in inputs if n in rows and rows[n].status == "ok"]
    missing = [n for n in inputs if n not in rows or rows[n].status != "ok"]
    differ = f"{_label(first.name)} {_verb(first.name, 'differ')}"
    if first.nonfinite:
        why = f"{_label(first.name)} {_verb(first.name, 'hold')} NaN/Inf where the reference is finite"
    elif inputs and not missing:
        agree = " and ".join(f"{_label(s.name)} ({s.name}, max abs {s.max_abs:.1g})" for s in sources)
        why = f"{differ} while {agree} agree{'' if len(sources) > 1 or _plural(sources[0].name) else 's'}"
    elif inputs:
        before = name_order_key(first.name)
        last = max((r.name for r in rows.values() if r.status == "ok" and name_order_key(r.name) < before),
                   key=name_order_key, default=None)
        why = f"{differ}; its inputs ({', '.join(missing)}) were not compared"
        if last:
            why += f" and the last agreeing tensor is {last}, so the cause lies between the two"
        suspect = _gap_suspect(_steps_between(last, first.name, num_layers))
    else:
        why = differ
    details = []
    overflow = _float16_overflow(first, sources)
    if overflow:
        suspect = overflow
    if first.heads is not None and len(first.heads) < first.num_heads:
        agree_heads = [h for h in range(first.num_heads) if h not in first.heads]
        details.append(f"only heads {first.heads} of {first.num_heads} differ (heads {agree_heads} agree)")
        if stage in ("attn.scores", "attn.context", "attn.probs") and 0 in agree_heads:
            suspect = ("GQA head mapping: query head n must read KV head n // n_rep (n % num_kv_heads is the "
                       "classic slip)")
    if first.positions is not None and first.positions and first.positions[0] > 0:
        details.append(f"positions before {first.positions[0]} agree")
        if stage in ("attn.q_rope", "attn.k_rope") and first.positions[0] == 1 and not is_gradient(first.name):
            details[-1] += " (position 0 has angle 0: RoPE there is the identity, so the rotation itself differs)"
    detail = f"; {'; '.join(details)}" if details else ""
    return f"{head}, tol {tolerance}): {why}{detail} -> {suspect}"


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


def compare_traces(candidate, reference, tolerance=None, valid=None, names=None, against: str | None = None,
                   reference_label="reference", candidate_label="candidate") -> Report:
    """Compare ``candidate`` (the implementation under test) with ``reference`` (arcee_np or transformers).

    Both are ``{name: array}`` dicts (Traces, loaded trace files, a port's own dict; torch tensors are fine).
    tolerance: see tolerance_for (default: by the reference's dtype; ``against="transformers"`` picks the
    plain-float64 row; gradient names ``grad.*`` get the gradient rows, gradient_tolerance_for, unless a
    tolerance is given). valid: [B, T] bool rows to compare (default: the reference's attention_mask input,
    when it has one). names: only these names (default: all). Names in only one trace are listed, not failed.
    """
    ref_meta = getattr(reference, "meta", {}) or {}
    if against is None and ref_meta.get("producer") == "transformers" and not ref_meta.get("lifted"):
        against = "transformers"
    dtype = ref_meta.get("dtype") or _dtype_of(reference)
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


# ----------------------------------------------------------------------------------------------- transformers
def transformers_trace(torch_model, input_ids, attention_mask=None, position_ids=None, patterns="*",
                       labels=None) -> Trace:
    """Run a transformers Arcee (or Llama-like) model once and record arcee_np's names with forward hooks.

    With ``labels`` ([B, T], -100 ignored) the call also computes the causal-LM loss and runs
    ``loss.backward()``: tensor hooks on the same tensors record their gradients as ``grad.`` + the name
    (``grad.attn.scores`` excepted: eager attention never materialises the scores it differentiates). The
    weights' ``.grad`` are left as they were.

    The model must use eager attention (load with ``attn_implementation="eager"``): the attention
    probabilities come from it. Mapping (docs/trace.md): ``embed`` = embed_tokens output; per layer
    ``input_norm`` / ``post_norm`` = input_layernorm / post_attention_layernorm outputs; ``attn.q|k|v`` =
    q_proj/k_proj/v_proj outputs split into heads; ``attn.q_rope|k_rope`` = what the modeling file's
    apply_rotary_pos_emb returns (wrapped while the call runs); ``attn.scores`` = ``q_rope @ repeat_kv(k_rope)^T *
    scaling`` (eager computes it without exposing it); ``attn.probs`` = the attention weights; ``attn.context``
    = o_proj's input; ``attn.out`` = o_proj's output; ``attn_residual`` = post_attention_layernorm's input;
    ``mlp.up|act|out`` = up_proj / act_fn / down_proj outputs; ``out`` = the decoder layer's output;
    ``final_norm`` = norm's output; ``logits`` = lm_head's output. The call runs without a cache.
    """
    import torch

    backbone = torch_model.model if hasattr(torch_model, "model") else torch_model
    layers = backbone.layers
    implementation = getattr(torch_model.config, "_attn_implementation", "eager")
    if implementation != "eager":
        raise InputError(f"the transformers model uses {implementation!r} attention, which returns no attention "
                         f"weights: load it with attn_implementation='eager' (or call "
                         f"model.set_attn_implementation('eager')).")
    modeling = sys.modules[type(layers[0].self_attn).__module__]
    t = Trace(patterns)
    state = {"layer": None}
    handles = []
    gradients = labels is not None

    def put(name, value, layout=None):
        """Record ``value`` (a tensor of the graph) as ``name``, and its gradient as ``grad.`` + name; ``layout``
        rearranges both into arcee_np's shape."""
        if t.wants(name):
            t[name] = as_numpy(layout(value) if layout else value)
        if gradients and value.requires_grad and t.wants(GRAD_PREFIX + name):
            value.register_hook(lambda grad: t.__setitem__(GRAD_PREFIX + name,
                                                           as_numpy(layout(grad) if layout else grad)))

    def on_output(name, layout=None, select=None):
        def hook(module, args, out):
            put(name, select(out) if select else out, layout)
        return hook

    def on_input(name):
        def hook(module, args):
            put(name, args[0])
        return hook

    def first(out):
        return out[0] if isinstance(out, (tuple, list)) else out

    n_heads = torch_model.config.num_attention_heads
    n_kv = getattr(torch_model.config, "num_key_value_heads", None) or n_heads
    handles.append(backbone.embed_tokens.register_forward_hook(on_output("embed")))
    for i, layer in enumerate(layers):
        attn, p = layer.self_attn, f"layers.{i}."

        def enter(module, args, i=i):
            state["layer"], state["module"] = i, module

        handles += [
            layer.input_layernorm.register_forward_hook(on_output(p + "input_norm")),
            attn.register_forward_pre_hook(enter),
            attn.q_proj.register_forward_hook(on_output(p + "attn.q", _split(n_heads))),
            attn.k_proj.register_forward_hook(on_output(p + "attn.k", _split(n_kv))),
            attn.v_proj.register_forward_hook(on_output(p + "attn.v", _split(n_kv))),
            attn.o_proj.register_forward_pre_hook(on_input(p + "attn.context")),
            attn.register_forward_hook(on_output(p + "attn.probs", select=_attention_weights)),
            attn.o_proj.register_forward_hook(on_output(p + "attn.out")),
            layer.post_attention_layernorm.register_forward_pre_hook(on_input(p + "attn_residual")),
            layer.post_attention_layernorm.register_forward_hook(on_output(p + "post_norm")),
            layer.mlp.up_proj.register_forward_hook(on_output(p + "mlp.up")),
            layer.mlp.act_fn.register_forward_hook(on_output(p + "mlp.act")),
            layer.mlp.down_proj.register_forward_hook(on_output(p + "mlp.out")),
            layer.register_forward_hook(on_output(p + "out", select=first)),
        ]
    handles.append(backbone.norm.register_forward_hook(on_output("final_norm")))
    if getattr(torch_model, "lm_head", None) is not None:
        handles.append(torch_model.lm_head.register_forward_hook(on_output("logits")))

    original_rope = modeling.apply_rotary_pos_emb

    def recording_rope(q, k, cos, sin, *args, **kwargs):
        q_rope, k_rope = original_rope(q, k, cos, sin, *args, **kwargs)
        p, module = f"layers.{state['layer']}.attn.", state["module"]
        put(p + "q_rope", q_rope)
        put(p + "k_rope", k_rope)
        if t.wants(p + "scores"):
            keys = modeling.repeat_kv(k_rope, module.num_key_value_groups)
            with torch.no_grad():  # recomputed for the record, outside the graph (so it has no gradient)
                t[p + "scores"] = as_numpy(torch.matmul(q_rope, keys.transpose(2, 3)) * module.scaling)
        return q_rope, k_rope

    kwargs = {"input_ids": _torch_long(input_ids), "use_cache": False}  # eager returns the weights anyway
    if attention_mask is not None:
        kwargs["attention_mask"] = _torch_long(attention_mask)
    if position_ids is not None:
        kwargs["position_ids"] = _torch_long(position_ids)
    if gradients:
        kwargs["labels"] = _torch_long(labels)
        saved_grads = [(p, p.grad) for p in torch_model.parameters()]
    modeling.apply_rotary_pos_emb = recording_rope
    try:
        with torch.enable_grad() if gradients else torch.no_grad():
            out = torch_model(**kwargs)
            if gradients:
                for p in torch_model.parameters():
                    p.grad = None
                out.loss.backward()
    finally:
        modeling.apply_rotary_pos_emb = original_rope
        for handle in handles:
            handle.remove()
        if gradients:
            for p, grad in saved_grads:
                p.grad = grad
    given = (("input_ids", input_ids), ("attention_mask", attention_mask), ("position_ids", position_ids),
             ("labels", labels))
    t.inputs = {k: as_numpy(v) for k, v in given if v is not None}
    dtype = str(next(torch_model.parameters()).dtype).replace("torch.", "")
    t.meta = {"producer": "transformers", "model": type(torch_model).__name__, "dtype": dtype, "device": "cpu",
              "config": torch_model.config.to_dict(), "versions": versions(), "patterns": describe_patterns(patterns),
              "attn_implementation": "eager"}
    return t


def _split(count):
    def transform(out):  # [B, T, count*hd] -> [B, count, T, hd]
        return out.view(*out.shape[:-1], count, -1).transpose(1, 2)
    return transform


def _attention_weights(out):
    weights = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
    if weights is None:
        raise InputError("the attention module returned no weights: load the model with attn_implementation='eager'.")
    return weights


def _torch_long(x):
    import torch

    return torch.tensor(np.array(as_numpy(x), dtype=np.int64))


def compare_with_transformers(model, torch_model, input_ids, attention_mask=None, position_ids=None, patterns="*",
                              tolerance=None, lifted: bool = False, labels=None) -> Report:
    """Trace arcee_np ``model`` and transformers ``torch_model`` (same weights, eager) on the same inputs and
    compare them, transformers as the reference. ``lifted=True`` when the torch model runs with its float32
    casts lifted (tests/torch_reference.py), which selects the float64 row (1e-9) instead of float64_plain (1e-4).
    With ``labels`` both sides also run the backward of the causal-LM loss and the ``grad.*`` names are compared."""
    ours = trace_model(model, input_ids, patterns, attention_mask=attention_mask, position_ids=position_ids,
                       labels=labels)
    theirs = transformers_trace(torch_model, input_ids, attention_mask, position_ids, patterns, labels=labels)
    theirs.meta["lifted"] = lifted
    return compare_traces(ours, theirs, tolerance, reference_label="transformers", candidate_label="arcee_np")


def load_transformers_model(path, dtype: str = "float32"):
    """transformers' ArceeForCausalLM from a local checkpoint folder of safetensors weights, in ``dtype``, with
    eager attention. The folder is checked first (it exists, its weights are safetensors, never a pickle) and
    transformers is told to read only local safetensors files; its own errors become CheckpointErrors."""
    from ..errors import CheckpointError
    from ..io.checkpoint import checkpoint_files

    checkpoint_files(path)  # a missing folder or pickle-only weights are refused before transformers sees them
    import torch
    import transformers

    torch_dtype = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}[dtype]
    transformers.utils.logging.disable_progress_bar()
    options = dict(attn_implementation="eager", use_safetensors=True, local_files_only=True)
    try:
        try:
            return transformers.ArceeForCausalLM.from_pretrained(path, dtype=torch_dtype, **options)
        except TypeError:  # transformers 4.x names it torch_dtype
            return transformers.ArceeForCausalLM.from_pretrained(path, torch_dtype=torch_dtype, **options)
    except Exception as err:  # noqa: BLE001 - transformers' errors on a checkpoint it cannot load, named
        reason = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())[:500]
        raise CheckpointError(f"transformers could not load {path} ({type(err).__name__}: {reason}).") from None
