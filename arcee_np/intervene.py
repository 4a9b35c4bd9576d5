"""Interventions: change any named tensor of the forward pass and let the forward go on from the new value.

``with intervene({"layers.1.mlp.out": 0.0 * ..., "layers.*.attn.probs": fn}): model(ids)`` runs the model with
those tensors changed. Each key is a pattern as for ``trace`` (a fnmatch glob, a compiled regex or a predicate
``name -> bool``); each value is

* a function ``fn(value, name) -> array``: it gets the forward's tensor and returns the one to go on with (the
  same shape; cast back to the tensor's dtype and array library), to replace, scale, ablate or patch it;
* an array (or a number): the tensor is replaced by it, broadcast to the tensor's shape and cast to its dtype.

Every name of docs/trace.md can be changed, ``attn.scores`` and ``attn.probs`` included: an intervention on
them (or on ``mlp.up`` / ``mlp.act``) makes the forward take eager attention (or the unchunked MLP), the paths
that compute them, as a trace of them does. Interventions hook into ``trace.record``, the forward's one hook
point; they belong to the context (thread, asyncio task) that opened them and never reach another thread's
forward. With several active, each changes the value the previous one returned, in the order they were opened;
a trace active at the same time records the changed value. The backward's gradient names (``grad.*``) can be
changed too: it goes on with the changed gradient.

Helpers for the common cases: ``patch_from(other_trace)`` (activation patching: the values of another run),
``ablate_heads(layer, heads, mode)`` (zero or mean-ablate attention heads). The logit lens is
``arcee_np.oracle.lens.logit_lens``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .backend import to_numpy
from .blocks.namespace import array_namespace
from .errors import InputError, InputTypeError
from .trace import _matches, activated, pattern_list

ABLATION_MODES = ("zero", "mean")


class Intervention:
    """The edits of one ``intervene`` block: ``(pattern, edit)`` pairs, tried in order on every recorded name.

    ``applied`` lists the names changed so far, in the order the forward reached them (again for each forward
    call made inside the block).
    """

    changes_values = True

    def __init__(self, edits):
        if not isinstance(edits, dict):
            raise InputTypeError(f"intervene takes a dict {{name or pattern: function or array}}, got "
                                 f"{type(edits).__name__}.")
        self.edits = []
        for pattern, edit in edits.items():
            pattern_list(pattern)  # raises InputTypeError for what is not a pattern
            if not (callable(edit) or _is_array_like(edit)):
                raise InputTypeError(f"intervene[{pattern!r}]: expected a function fn(value, name) -> array, an "
                                     f"array or a number; got {type(edit).__name__}.")
            self.edits.append((pattern, edit))
        self.applied: list[str] = []

    def wants(self, name: str) -> bool:
        return any(_matches(pattern, name) for pattern, _ in self.edits)

    def see(self, name: str, value):
        """The value the forward goes on with: ``value`` after every edit whose pattern matches ``name``."""
        for pattern, edit in self.edits:
            if _matches(pattern, name):
                new = _apply(edit, name, value)
                if new is not value and name not in self.applied[-1:]:
                    self.applied.append(name)
                value = new
        return value


def _is_array_like(x) -> bool:
    return isinstance(x, (int, float, np.generic)) and not isinstance(x, bool) or hasattr(x, "shape")


def _apply(edit, name: str, value):
    """One edit of one tensor: the function's result or the given array, as ``value``'s shape, dtype and
    array library."""
    new = edit(value, name) if callable(edit) else edit
    if not _is_array_like(new):
        raise InputTypeError(f"the intervention on {name} returned {type(new).__name__}; it must return an array "
                             f"of shape {tuple(value.shape)}.")
    xp = array_namespace(value)
    if not isinstance(new, type(value)):
        new = xp.asarray(to_numpy(new) if hasattr(new, "shape") else new)
    if tuple(new.shape) != tuple(value.shape):
        try:
            new = xp.broadcast_to(new, value.shape)
        except (ValueError, TypeError, RuntimeError):
            raise InputError(f"the intervention on {name} gives shape {tuple(new.shape)} where the forward has "
                             f"{tuple(value.shape)} (docs/trace.md lists each name's shape; with a KV cache a "
                             f"step's q/k/v hold only that call's positions).") from None
    return new if new.dtype == value.dtype else xp.astype(new, value.dtype)


@contextmanager
def intervene(edits):
    """Run the block with the named tensors changed (the module docstring says how); yields the Intervention,
    whose ``applied`` lists the names it changed."""
    with activated(Intervention(edits)) as active:
        yield active


def patch_from(other, patterns="*") -> dict:
    """Activation patching: ``{name: array}`` edits that put the values of another run in place of this run's,
    for the names of ``other`` (a Trace or ``{name: array}`` dict of a run on inputs of the same shape) that
    match ``patterns``. ``with intervene(patch_from(trace_b, "layers.2.*")): model(ids_a)``."""
    chosen = pattern_list(patterns)
    edits = {name: value for name, value in other.items() if any(_matches(p, name) for p in chosen)}
    if not edits:
        raise InputError(f"patch_from: no name of the given trace matches {patterns!r} (it holds "
                         f"{', '.join(list(other)[:4]) or 'nothing'}...); record those names with trace(...).")
    return edits


def ablate_heads(layer: int, heads, mode: str = "zero") -> dict:
    """Edits that remove attention heads' contributions in layer ``layer``: their slices of
    ``layers.{layer}.attn.context`` ([B, T, H*hd], head ``n`` at channels ``n*hd .. (n+1)*hd``; the input of
    o_proj) are set to zero (``mode="zero"``) or to their mean over the batch and positions (``"mean"``).
    The head count H is read from the same call's ``layers.{layer}.attn.q`` ([B, H, T, hd]), left unchanged.

    heads: a head index or a list of them. Returns ``{name: fn}`` for ``intervene``.
    """
    if mode not in ABLATION_MODES:
        raise InputError(f"ablate_heads: mode must be one of {ABLATION_MODES}, got {mode!r}.")
    chosen = [heads] if isinstance(heads, (int, np.integer)) else list(heads)
    if not chosen or not all(isinstance(h, (int, np.integer)) and h >= 0 for h in chosen):
        raise InputError(f"ablate_heads: heads must be non-negative head indices, got {heads!r}.")
    prefix = f"layers.{layer}.attn."
    layout = {}

    def see_heads(q, _name):  # [B, H, T, hd]: only looks
        layout["heads"] = q.shape[1]
        return q

    def ablate(value, name):
        xp = array_namespace(value)
        count = layout["heads"]
        if max(chosen) >= count:
            raise InputError(f"ablate_heads: {name} has {count} heads (0 .. {count - 1}); got heads {chosen}.")
        width = value.shape[-1] // count
        keep = np.ones(value.shape[-1], dtype=bool)
        for head in chosen:
            keep[head * width:(head + 1) * width] = False
        keep = xp.asarray(keep)
        if mode == "zero":
            return xp.where(keep, value, xp.zeros_like(value))
        work = xp.float64 if value.dtype == xp.float64 else xp.float32
        mean = xp.mean(xp.astype(value, work), axis=(0, 1))  # [H*hd]
        return xp.where(keep, value, xp.astype(mean, value.dtype))

    return {prefix + "q": see_heads, prefix + "context": ablate}
