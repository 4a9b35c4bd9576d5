"""Error attribution by activation patching: which part of a candidate causes the error that reaches the logits.

The candidate (another dtype or widening policy, a GGUF file, a user's params, a buggy forward) runs on the
same inputs as the reference. At each site, in forward order (``embed``; per layer ``attn.out``,
``attn_residual``, ``mlp.out``, ``out``; ``final_norm``; ``logits``), the candidate runs again with the
reference's value put in place of its own (``arcee_np.intervene``); the share of the final error that
disappears is the site's share::

    share(site) = 1 - |logits_patched - logits_ref| / |logits_cand - logits_ref|     (RMS over every logit)

and likewise for the KL divergence of the next-token distributions (``KL(p_ref || p_cand)``, mean over
positions). A bug in one block leaves every site before it at 0 and its own output at 100%; the sites after it
carry the error and remove it too when patched. The **cause** is the earliest site whose patch removes at least
``threshold`` (99%) of the error; within its block the patch is repeated at each named tensor (q, k, v, after
RoPE, the scores, ...) to name the step. When sites before the cause already remove more than ``1 - threshold``
of the error, no single place explains it (quantization, a lower dtype: error comes in everywhere); the report
then gives each layer's increment of the share.

A candidate is an arcee_np model, optionally with ``edits`` (interventions that are part of it: a planted bug),
or any function ``candidate(input_ids, replacements) -> logits`` where ``replacements`` is ``{name: array}`` of
values to use in place of its own at those names (how a port becomes patchable). A port that only gives a trace
file gets ``unpatchable_report``: the first divergence and the growth of the error per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, InputTypeError
from ..intervene import intervene
from ..trace import split_name, trace
from .tracefile import as_numpy

THRESHOLD = 0.99
# The named steps inside each coarse site's block, in forward order; "+" joins names patched together.
_ATTENTION_STEPS = ("input_norm", "attn.q", "attn.k", "attn.v", "attn.q_rope", "attn.k_rope",
                    "attn.q_rope+attn.k_rope", "attn.scores", "attn.probs", "attn.context", "attn.out")
_MLP_STEPS = ("post_norm", "mlp.up", "mlp.act", "mlp.out")
# What computes each named tensor from the one before it: the suspect when its patch is the first that works.
STEP_SUSPECTS = {
    "embed": "the embedding (embed_tokens weights, the token ids)",
    "input_norm": "the input RMSNorm (its weight, eps, the float32 upcast)",
    "attn.q": "q_proj (its weight or bias, the split into heads)",
    "attn.k": "k_proj (its weight or bias, the split into heads)",
    "attn.v": "v_proj (its weight or bias, the split into heads)",
    "attn.q_rope": "RoPE of q (layout, theta, scaling, positions)",
    "attn.k_rope": "RoPE of k (layout, theta, scaling, positions)",
    "attn.q_rope+attn.k_rope": "RoPE (rotate-half vs interleaved layout, theta, scaling, positions)",
    "attn.scores": "q k^T * scaling (the GQA head mapping n // n_rep, the scale hd**-0.5)",
    "attn.probs": "the mask and the softmax",
    "attn.context": "probs @ v (the GQA mapping of v, the merge of the heads)",
    "attn.out": "o_proj (its weight or bias)",
    "attn_residual": "the residual connection around attention (h + attn.out)",
    "out": "the residual connection around the MLP (attn_residual + mlp.out)",
    "post_norm": "the post-attention RMSNorm (its weight, eps, the float32 upcast)",
    "mlp.up": "up_proj (its weight or bias)",
    "mlp.act": "the activation (relu2 for AFM)",
    "mlp.out": "down_proj (its weight or bias)",
    "final_norm": "the final RMSNorm (its weight, eps)",
    "logits": "the LM head (lm_head weight, tied embeddings)",
}


@dataclass
class Site:
    """One patch: the names patched together, the final error and KL left, and the shares they remove."""

    name: str
    error: float
    kl: float
    share: float
    kl_share: float

    @property
    def names(self) -> list[str]:
        """The trace names patched: ``layers.2.attn.q_rope+attn.k_rope`` is q and k after RoPE."""
        first, *rest = self.name.split("+")
        layer = split_name(first)[0]
        return [first] + [("" if layer is None else f"layers.{layer}.") + stage for stage in rest]


@dataclass
class Attribution:
    """The result of ``attribute``: the coarse sites, the cause, the steps inside its block."""

    sites: list
    error: float
    kl: float
    threshold: float = THRESHOLD
    cause: Site | None = None
    steps: list = field(default_factory=list)
    step_cause: Site | None = None
    reference: str = "reference"
    candidate: str = "candidate"

    @property
    def single_cause(self) -> bool:
        """Whether one place explains the error: every site before the cause removes at most ``1 - threshold``
        of it. (A layer's output as the cause is then its residual connections; error that comes in
        everywhere reaches a layer's output with earlier sites sharing it.)"""
        return self.cause is not None and self._largest_before(self.cause) <= 1 - self.threshold

    @property
    def downstream(self) -> list[str]:
        """The sites after the cause that also remove the error when patched (they carry it)."""
        if self.cause is None:
            return []
        after = self.sites[self.sites.index(self.cause) + 1:]
        return [s.name for s in after if s.share >= self.threshold]

    def layer_increments(self) -> list[tuple[str, float]]:
        """Along the residual stream (``embed``, each ``layers.N.out``, ``final_norm``, ``logits``), the share each
        removes beyond the one before: how much error comes in at each layer (and in the final norm, the head)."""
        outputs = [s for s in self.sites if s.name in ("embed", "final_norm", "logits") or
                   split_name(s.name)[1] == "out"]
        shares = [0.0] + [s.share for s in outputs]
        return [(s.name, shares[i + 1] - shares[i]) for i, s in enumerate(outputs)]

    def summary(self) -> str:
        """One line: the cause and its step, or where the error comes in when no block alone explains it."""
        if self.error == 0:
            return f"no error to attribute: the candidate's logits equal the {self.reference}'s"
        head = f"final logit error {self.error:.3g} (RMS), KL {self.kl:.3g}: "
        if self.single_cause:
            text = (f"cause: {self.cause.name} (patching it removes {self.cause.share:.1%} of the error; every "
                    f"earlier site at most {self._largest_before(self.cause):.1%})")
            if self.step_cause is not None and self.step_cause.name != self.cause.name:
                text += f"; inside it, {self.step_cause.name} is the first tensor whose patch removes it"
            stage = split_name((self.step_cause or self.cause).name)[1]
            text += f" -> {STEP_SUSPECTS.get(stage, stage)}"
            if self.downstream:
                text += (f". {len(self.downstream)} later site(s) also remove it when patched (they carry it "
                         f"downstream), e.g. {', '.join(self.downstream[:2])}")
            return head + text
        layers = sorted(self.layer_increments(), key=lambda item: -item[1])[:3]
        blocks = sorted((s for s in self.sites if split_name(s.name)[1] in ("attn.out", "mlp.out")),
                        key=lambda s: -s.share)[:3]
        return (head + "no single block explains it: the error comes in at several sites. Largest increments "
                "along the residual stream: " + ", ".join(f"{name} +{share:.0%}" for name, share in layers)
                + "; largest blocks: " + ", ".join(f"{s.name} {s.share:.0%}" for s in blocks))

    def _largest_before(self, site: Site) -> float:
        return max((s.share for s in self.sites[:self.sites.index(site)]), default=0.0)

    def table(self) -> str:
        """Fixed-width: site, share of the logit error removed, of the KL removed, the error left."""
        lines = [f"{'site':<40} {'error removed':>13} {'KL removed':>11} {'error left':>11}"]
        for s in self.sites + [s for s in self.steps if s not in self.sites]:
            mark = "  <-- cause" if self.single_cause and (s is self.cause or s is self.step_cause) else ""
            lines.append(f"{s.name:<40} {s.share:>13.1%} {s.kl_share:>11.1%} {s.error:>11.3g}{mark}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-safe: the sites (name, share of the final error its patch removes, of the KL), the cause (None
        when no single place explains the error), the increments along the residual stream."""
        def row(s):
            return {"name": s.name, "share": _finite(s.share), "kl_share": _finite(s.kl_share),
                    "error": _finite(s.error), "kl": _finite(s.kl)}
        return {"error": _finite(self.error), "kl": _finite(self.kl), "threshold": self.threshold,
                "cause": self.cause.name if self.single_cause else None, "single_cause": self.single_cause,
                "earliest_full_site": self.cause.name if self.cause else None,
                "increments": [{"name": name, "share": _finite(value)} for name, value in self.layer_increments()],
                "step_cause": self.step_cause.name if self.step_cause else None, "downstream": self.downstream,
                "summary": self.summary(), "sites": [row(s) for s in self.sites], "steps": [row(s) for s in self.steps]}

    def __str__(self):
        return self.table() + "\n" + self.summary()


def _finite(x: float):
    return x if math.isfinite(x) else str(x)


def coarse_sites(num_layers: int) -> list[str]:
    """The sites of the first pass, in forward order."""
    return (["embed"] + [f"layers.{i}.{s}" for i in range(num_layers)
                         for s in ("attn.out", "attn_residual", "mlp.out", "out")]
            + ["final_norm", "logits"])


def block_steps(site: str) -> list[str]:
    """The named tensors inside the block whose output is ``site``, in forward order (``+``: patched together)."""
    layer, stage = split_name(site)
    steps = {"attn.out": _ATTENTION_STEPS, "mlp.out": _MLP_STEPS}.get(stage)
    if layer is None or steps is None:
        return [site]
    return [f"layers.{layer}.{s}" for s in steps]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _error_and_kl(logits, reference, ref_log_probs) -> tuple[float, float]:
    """RMS of the logit difference, and the mean over positions of KL(p_ref || p_cand), in float64."""
    logits = np.asarray(as_numpy(logits), dtype=np.float64)
    error = float(np.sqrt(np.mean((logits - reference) ** 2)))
    kl = float(np.mean(np.sum(np.exp(ref_log_probs) * (ref_log_probs - _log_softmax(logits)), axis=-1)))
    return error, max(kl, 0.0)


class _Runner:
    """Runs the candidate with some of the reference's values patched in; measures what is left."""

    def __init__(self, candidate, edits, input_ids, attention_mask, reference_values, reference_logits):
        self.candidate, self.edits, self.ids, self.mask = candidate, edits, input_ids, attention_mask
        self.values = reference_values
        self.reference = reference_logits
        self.ref_log_probs = _log_softmax(reference_logits)
        self.error, self.kl = _error_and_kl(self._logits({}), reference_logits, self.ref_log_probs)

    def _logits(self, replacements: dict):
        if not hasattr(self.candidate, "config"):  # a patchable port: candidate(input_ids, replacements)
            return self.candidate(self.ids, replacements)
        with intervene(self.edits or {}), intervene(replacements):
            return self.candidate(self.ids, attention_mask=self.mask).logits

    def site(self, name: str) -> Site:
        names = Site(name, 0, 0, 0, 0).names
        error, kl = _error_and_kl(self._logits({n: self.values[n] for n in names}), self.reference,
                                  self.ref_log_probs)
        share = 1 - error / self.error if self.error > 0 else 0.0
        kl_share = 1 - kl / self.kl if self.kl > 0 else 0.0
        return Site(name, error, kl, share, kl_share)


def attribute(candidate, reference, input_ids, *, attention_mask=None, edits=None, threshold: float = THRESHOLD,
              refine: bool = True, reference_label: str = "reference", candidate_label: str = "candidate"):
    """Attribute the candidate's final error to its sites (module docstring).

    candidate: an arcee_np causal LM (with ``edits``: interventions that belong to it, e.g. a planted bug), or a
    patchable port ``candidate(input_ids, replacements) -> logits [B, T, V]``; reference: an arcee_np causal LM
    on the same config shape; input_ids: [B, T]; attention_mask: [B, T] or None; threshold: the share a patch
    must remove to be the cause; refine: repeat the patch at each named tensor of the cause's block.
    Returns an Attribution.
    """
    if not hasattr(reference, "config") or not hasattr(reference, "lm_head_weight"):
        raise InputTypeError(f"attribute: the reference must be an arcee_np causal LM (ArceeForCausalLM), got "
                             f"{type(reference).__name__}.")
    if not (hasattr(candidate, "config") or callable(candidate)):
        raise InputTypeError(f"attribute: the candidate must be an arcee_np model or a function (input_ids, "
                             f"replacements) -> logits, got {type(candidate).__name__}.")
    if not 0 < threshold <= 1:
        raise InputError(f"attribute: threshold must be in (0, 1], got {threshold!r}.")
    config = reference.config
    if hasattr(candidate, "config") and candidate.config.num_hidden_layers != config.num_hidden_layers:
        raise InputError(f"attribute: the candidate has {candidate.config.num_hidden_layers} layers, the reference "
                         f"{config.num_hidden_layers}; patching needs the same architecture.")
    input_ids = np.asarray(as_numpy(input_ids))
    with trace("*", to_host=True) as recorded:
        reference_logits = reference(input_ids, attention_mask=attention_mask).logits
    runner = _Runner(candidate, edits, input_ids, attention_mask, dict(recorded),
                     np.asarray(as_numpy(reference_logits), dtype=np.float64))
    result = Attribution([], runner.error, runner.kl, threshold, reference=reference_label, candidate=candidate_label)
    if runner.error == 0:
        return result
    result.sites = [runner.site(name) for name in coarse_sites(config.num_hidden_layers)]
    result.cause = next((s for s in result.sites if s.share >= threshold), None)
    if refine and result.single_cause:
        steps = block_steps(result.cause.name)
        result.steps = [result.cause if name == result.cause.name else runner.site(name) for name in steps]
        result.step_cause = next((s for s in result.steps if s.share >= threshold), result.cause)
    return result


def unpatchable_report(compare_report) -> str:
    """What can be said from a port's trace alone (a compare.Report): the first divergence, the growth of the
    error per layer, and how to make the port patchable so that ``attribute`` can name the cause."""
    rows = {r.name: r for r in compare_report.rows}
    growth = [(name, rows[name].max_rel) for name in rows if name == "embed" or split_name(name)[1] == "out"
              if rows[name].status in ("ok", "DIFF")]
    lines = [compare_report.summary(), "relative error per layer (max |error| / max |reference|):"]
    lines += [f"  {name:<20} {value:.3g}" for name, value in growth]
    lines.append("to attribute the error to a block, make the port patchable: let its forward take "
                 "replacements {trace name: array} to use in place of its own values at those names (at least "
                 + ", ".join(coarse_sites(1)[:4]).replace("layers.0", "layers.N") + "), and call "
                 "arcee_np.oracle.attribution.attribute(port, reference_model, input_ids) with "
                 "port(input_ids, replacements) -> logits.")
    return "\n".join(lines)
