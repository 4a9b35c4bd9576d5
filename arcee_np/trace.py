"""The one hook point of the forward pass: every named intermediate goes through ``record``.

``with trace("layers.0.*") as t: model(ids)`` collects the matching intermediates into ``t``. With no
trace active, ``record`` returns its value untouched after one check, so tracing costs nothing when off.
The names, their shapes and their transformers counterparts are listed in docs/trace.md.

Options of a trace (all off by default):

* ``to_host=True``: store NumPy copies on the host (CuPy values are copied off the GPU as recorded);
* ``stop_after="layers.3.out"``: abort the forward right after the first name matching this glob is
  recorded; the ``with`` block ends quietly and ``t.stopped_at`` names where it stopped;
* ``stop_on_nonfinite=True``: check every named tensor (wanted or not) and raise NonFiniteError at the
  first that holds NaN or Inf. ``detect_nonfinite()`` is this alone, recording nothing.

Patterns are fnmatch globs (``*`` crosses dots: ``layers.*.out`` also matches ``layers.0.attn.out``),
compiled regular expressions (matched in full) or predicates ``name -> bool``. ``LAYER_LEVEL`` selects
one tensor a layer: ``trace(LAYER_LEVEL)``.

The backward (``arcee_np.training.loss_and_gradients``) records the gradient of the loss with respect to
each named intermediate under ``grad.`` + its name (``grad.layers.0.attn.q``), in backward order.
"""

from __future__ import annotations

import fnmatch
import re
from contextlib import contextmanager

import numpy as np

from .backend import to_numpy
from .blocks.namespace import array_namespace
from .errors import InputTypeError, NonFiniteError

_active: list["Trace"] = []

# The per-layer names in the order the forward records them (``layers.{i}.{stage}``).
LAYER_STAGES = ("input_norm", "attn.q", "attn.k", "attn.v", "attn.q_rope", "attn.k_rope", "attn.scores",
                "attn.probs", "attn.context", "attn.out", "attn_residual", "post_norm", "mlp.up", "mlp.act",
                "mlp.out", "out")
# Embedding, every decoder layer's output, the final norm and the logits: one tensor a layer.
LAYER_LEVEL = re.compile(r"embed|layers\.\d+\.out|final_norm|logits")
_LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")


GRAD_PREFIX = "grad."  # the gradient of the loss with respect to a named intermediate: "grad." + its name


def trace_names(num_layers: int, logits: bool = True, gradients: bool = False) -> list[str]:
    """Every name a forward of a ``num_layers``-layer model records, in recording order; with ``gradients``
    followed by the names the backward records (``grad.`` + a forward name, in backward order)."""
    names = ["embed"] + [f"layers.{i}.{stage}" for i in range(num_layers) for stage in LAYER_STAGES]
    names += ["final_norm"] + (["logits"] if logits else [])
    return names + ([GRAD_PREFIX + name for name in reversed(names)] if gradients else [])


def split_name(name: str) -> tuple[int | None, str]:
    """``"layers.3.attn.q"`` -> ``(3, "attn.q")``; a model-level name -> ``(None, name)``; a gradient name
    splits as the name it is the gradient of (``"grad.layers.3.attn.q"`` -> ``(3, "attn.q")``)."""
    match = _LAYER_NAME.fullmatch(name[len(GRAD_PREFIX):] if is_gradient(name) else name)
    return (int(match.group(1)), match.group(2)) if match else (None, name)


def is_gradient(name: str) -> bool:
    """Whether ``name`` is a gradient's name (``grad.`` + a forward name)."""
    return name.startswith(GRAD_PREFIX)


def name_order_key(name: str) -> tuple:
    """Sort key that puts names in recording order: the forward's names, names arcee_np does not record (by
    name), then the gradients in backward order (the reverse of the forward's)."""
    if is_gradient(name):
        forward = name_order_key(name[len(GRAD_PREFIX):])
        if forward[0] == 4:
            return (6, 0, 0, name)
        return (5, -forward[0], -forward[1], -forward[2], "")
    layer, stage = split_name(name)
    if layer is not None and stage in LAYER_STAGES:
        return (1, layer, LAYER_STAGES.index(stage), "")
    model_level = {"embed": (0, 0, 0, ""), "final_norm": (2, 0, 0, ""), "logits": (3, 0, 0, "")}
    return model_level.get(name, (4, 0, 0, name))


def pattern_list(patterns) -> list:
    """One pattern (a glob, a compiled regex, a predicate) or several, as a list; InputTypeError for others."""
    one = isinstance(patterns, (str, re.Pattern)) or callable(patterns)
    out = [patterns] if one else list(patterns) if isinstance(patterns, (list, tuple, set, frozenset)) else None
    if out is None or not all(isinstance(p, (str, re.Pattern)) or callable(p) for p in out):
        raise InputTypeError(f"trace patterns are globs (str), compiled regexes or predicates name -> bool, or a "
                             f"list of them; got {patterns!r}.")
    return out


def _matches(pattern, name: str) -> bool:
    if isinstance(pattern, str):
        return fnmatch.fnmatchcase(name, pattern)
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    return bool(pattern(name))


def _nonfinite_error(name, value, trace, previous) -> NonFiniteError:
    """The sentinel's error: where, how many NaN/Inf, the last finite tensor and the likely cause."""
    host = to_numpy(value)
    nans, infs = int(np.isnan(host).sum()), int(np.isinf(host).sum())
    message = f"{name} ({host.dtype}, shape {tuple(host.shape)}): {nans} NaN, {infs} Inf"
    if previous is not None:
        message += f"; the tensor before it, {previous[0]}, was finite with max |x| = {previous[1]:.3g}"
    hint = _nonfinite_hint(name, host.dtype, previous)
    return NonFiniteError("non-finite values in " + message + (f" -> {hint}" if hint else ""), name, value, trace,
                          previous)


def _nonfinite_hint(name, dtype, previous) -> str:
    """The likely cause of the first non-finite tensor, from its name, dtype and its predecessor's size."""
    stage = "" if is_gradient(name) else split_name(name)[1]
    largest = 65504.0 if "float16" in str(dtype) else None
    if stage == "mlp.act" and largest is not None:
        return ("relu(x)**2 overflows float16 (max 65504) once x > 255.9: run this model in float32, "
                "or scale the up_proj output down")
    if largest is not None and previous is not None and previous[1] > 0.5 * largest ** 0.5:
        return ("float16 overflow (max 65504): values this large overflow when squared or multiplied; "
                "compute this step in float32")
    if largest is not None:
        return "float16 overflow (max 65504): compute in float32 or check the weights' scale"
    return "check the inputs and weights of this step for NaN/Inf or overflow"


class StopForward(Exception):
    """Raised by ``record`` to abort the forward after a trace's ``stop_after`` name; its trace swallows it."""

    def __init__(self, trace):
        super().__init__(f"trace stopped after {trace.stopped_at}")
        self.trace = trace


class Trace(dict):
    """Recorded intermediates, name -> array, in the order the forward produced them.

    ``meta`` holds what produced them (config, inputs, dtype, device, versions) when a helper such as
    ``tracefile.trace_model`` or ``tracefile.load_trace`` fills it in; ``inputs`` the input arrays.
    """

    def __init__(self, patterns="*", *, to_host=False, stop_after=None, stop_on_nonfinite=False, meta=None,
                 inputs=None):
        super().__init__()
        self.patterns = pattern_list(patterns)
        self.to_host = to_host
        self.stop_after = stop_after
        self.stop_on_nonfinite = stop_on_nonfinite
        self.meta = dict(meta or {})
        self.inputs = dict(inputs or {})
        self.stopped_at = None
        self._last_finite = None  # (name, max |x|, dtype) for the sentinel's message

    def wants(self, name: str) -> bool:
        return any(_matches(p, name) for p in self.patterns)

    def see(self, name: str, value) -> None:
        """What ``record`` does for this trace: check, store if wanted, stop if asked."""
        if self.stop_on_nonfinite:
            self._check_finite(name, value)
        if self.wants(name):
            self[name] = to_numpy(value) if self.to_host else value
        if self.stop_after is not None and _matches(self.stop_after, name):
            self.stopped_at = name
            raise StopForward(self)

    def _check_finite(self, name, value) -> None:
        xp = array_namespace(value)
        if not bool(xp.all(xp.isfinite(value))):
            raise _nonfinite_error(name, value, self, self._last_finite)
        largest = float(xp.max(xp.abs(value))) if value.size else 0.0
        self._last_finite = (name, largest, value.dtype)


def record(name: str, value):
    """Hand ``value`` (an array) to every active trace that wants ``name``; return ``value``."""
    if _active:
        for t in _active:
            t.see(name, value)
    return value


def tracing() -> bool:
    """Whether a trace is active (its intermediates are being recorded or checked)."""
    return bool(_active)


def wanted(name: str) -> bool:
    """Whether an active trace records ``name`` (the forward then computes what only eager attention or an
    unchunked MLP shows)."""
    return any(t.wants(name) for t in _active)


def tap(prefix: str):
    """A ``tap(name, value)`` for the blocks that records ``f"{prefix}.{name}"``; None when nothing traces."""
    if not _active:
        return None
    return lambda name, value: record(f"{prefix}.{name}", value)


@contextmanager
def trace(patterns="*", *, to_host=False, stop_after=None, stop_on_nonfinite=False):
    """Record the intermediates whose names match ``patterns`` while the block runs (options: module docstring)."""
    t = Trace(patterns, to_host=to_host, stop_after=stop_after, stop_on_nonfinite=stop_on_nonfinite)
    _active.append(t)
    try:
        yield t
    except StopForward as stop:
        if stop.trace is not t:
            raise
    finally:
        del _active[next(i for i, active in enumerate(_active) if active is t)]  # by identity: a Trace is a dict


def detect_nonfinite():
    """``with detect_nonfinite(): model(ids)`` raises NonFiniteError at the first named tensor with NaN/Inf."""
    return trace((), stop_on_nonfinite=True)
