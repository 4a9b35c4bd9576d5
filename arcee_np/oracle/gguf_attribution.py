"""The attribution section of ``gguf-check``: which layers of a GGUF conversion cause the error of its logits,
set beside each layer's own weight error.

``attribute_gguf(path, reference, input_ids)`` runs the file's weights with the reference checkpoint's config
(the settings are ``gguf-check``'s section (a); here only the weights differ) and attributes the error of the
logits to its sites (oracle/attribution.py). ``layer_lines(attribution, tensors)`` sets each layer's share
beside the SNR of its attention and MLP weights (``gguf-check``'s TensorCheck rows); ``gguf_page`` is the HTML
report with the check's own tables added.
"""

from __future__ import annotations

import html
import math
import os
import re

import numpy as np

from ..config import ArceeConfig
from .attribution import attribute

_LAYER_WEIGHT = re.compile(r"model\.layers\.(\d+)\.(self_attn|mlp)\.")


def attribute_gguf(path, reference, input_ids, dtype: str = "float32"):
    """Attribution of a GGUF file's logit error against the transformers checkpoint folder ``reference``.
    input_ids: [1, T]; dtype: "float32" or "float64". Returns (Attribution, reference model, GGUF model)."""
    from ..models import ArceeForCausalLM

    config = ArceeConfig.from_pretrained(os.fspath(reference))
    reference_model = ArceeForCausalLM.from_pretrained(os.fspath(reference), dtype=dtype)
    candidate = ArceeForCausalLM.from_gguf(os.fspath(path), dtype=dtype, config=config)
    result = attribute(candidate, reference_model, np.asarray(input_ids), reference_label="transformers checkpoint",
                       candidate_label=os.path.basename(os.fspath(path)))
    return result, reference_model, candidate


def weight_snr_by_layer(tensors) -> dict:
    """``{layer: {"attention": dB, "mlp": dB}}``: the lowest SNR among each layer's attention and MLP weights
    (TensorCheck rows of gguf_check; tensors it could not compare are left out)."""
    out: dict = {}
    for check in tensors:
        match = _LAYER_WEIGHT.match(check.name)
        if match and not check.problem:
            group = "attention" if match.group(2) == "self_attn" else "mlp"
            layer = out.setdefault(int(match.group(1)), {})
            layer[group] = min(layer.get(group, math.inf), check.snr_db)
    return out


def layer_lines(attribution, tensors) -> list[str]:
    """The section's table: per layer the share of the logit error its attention and MLP outputs remove when
    patched, the layer's increment along the residual stream, and its weights' lowest SNR."""
    if attribution.error == 0:
        return ["  the GGUF weights give the reference's logits exactly: nothing to attribute"]
    shares = {s.name: s.share for s in attribution.sites}
    increments = dict(attribution.layer_increments())
    snr = weight_snr_by_layer(tensors)
    lines = [f"  {'layer':<7} {'attn.out':>9} {'mlp.out':>9} {'increment':>10} {'attn SNR dB':>12} {'MLP SNR dB':>11}"]
    for layer in sorted({int(n.split('.')[1]) for n in shares if n.startswith("layers.")}):
        weights, prefix = snr.get(layer, {}), f"layers.{layer}."
        lines.append(f"  {layer:<7} {shares[prefix + 'attn.out']:>9.1%} {shares[prefix + 'mlp.out']:>9.1%} "
                     f"{increments[prefix + 'out']:>10.1%} {weights.get('attention', math.nan):>12.1f} "
                     f"{weights.get('mlp', math.nan):>11.1f}")
    lines.append(f"  embedding {increments['embed']:.1%}, final norm {increments['final_norm']:.1%}, LM head "
                 f"{increments['logits']:.1%} of the error; " + attribution.summary())
    return lines


def gguf_page(report, attribution, reference_model, candidate, input_ids, tokens=None):
    """The HTML report of a gguf-check: the comparison of the two models (html_report.models_report) with the
    check's summary, its table of types and the per-layer attribution beside the weights' SNR."""
    from .html_report import models_report

    types = "".join(f"<tr><td>{html.escape(kind)}</td><td>{row['tensors']}</td><td>{row['min_snr_db']:.1f}</td>"
                    f"<td>{row['median_snr_db']:.1f}</td><td>{row['worst_row_snr_db']:.1f}</td></tr>"
                    for kind, row in report.by_type().items())
    summary = (f"<p>{html.escape(report.summary())}</p><table><tr><th>type</th><th>tensors</th><th>lowest SNR dB"
               f"</th><th>median SNR dB</th><th>worst row SNR dB</th></tr>{types}</table>")
    layers = f"<pre>{html.escape(chr(10).join(layer_lines(attribution, report.tensors)))}</pre>"
    return models_report(candidate, reference_model, input_ids, tokens=tokens, attribution=attribution,
                         title=f"gguf-check: {os.path.basename(report.path)}",
                         extra_sections=[("gguf-check", "gguf-check: the file's settings and weights", summary),
                                         ("gguf-layers", "Per layer: the error caused and the weights' own error",
                                          layers)])
