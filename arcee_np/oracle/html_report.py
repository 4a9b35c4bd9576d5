"""A comparison you open: one self-contained HTML file (inline styles and PNG pictures, no script, no network).

``comparison_report(report, reference, candidate, ...)`` lays out, top to bottom: the verdict and the first
divergence (its explanation; |error| over positions x channels and heads x positions; the two values side by
side; the error's distribution), the error of every stage layer by layer (log scale), the attention maps of
both sides with token labels when recorded, the attribution (when computed), the logit lens of both (when
given), and the full table. ``models_report(candidate, reference, input_ids)`` runs two arcee_np models and
builds all of it; ``traces_report(report, reference, candidate, model)`` builds it from two traces (a port's, a
file's), with the logit lens when a model is given and, in place of the attribution, what a trace alone says.
An ``HtmlReport`` saves to a file and renders inline in a notebook (``_repr_html_``).
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass

import numpy as np

from ..errors import FileAccessError
from ..trace import split_name
from . import figures
from .tracefile import trace_model

_STYLE = """
.arcee-report{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d1d1f;max-width:1100px;margin:auto}
.arcee-report h1{font-size:1.5em;margin:.4em 0}.arcee-report h2{font-size:1.2em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.6em}.arcee-report .verdict{padding:.7em 1em;border-radius:6px;font-size:1.05em}
.arcee-report .ok{background:#e6f4ea;border:1px solid #34a853}.arcee-report .bad{background:#fdecea;
border:1px solid #d93025}.arcee-report img{max-width:100%;height:auto;display:block;margin:.5em 0}
.arcee-report pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:12px;line-height:1.35}
.arcee-report table{border-collapse:collapse;font-size:13px}.arcee-report td,.arcee-report th{border:1px solid
#ddd;padding:2px 8px;text-align:right}.arcee-report td:first-child,.arcee-report th:first-child{text-align:left}
.arcee-report .cause{background:#fff4ce;font-weight:600}.arcee-report .note{color:#555;font-size:.92em}
"""


@dataclass
class HtmlReport:
    """One self-contained HTML document; ``save(path)`` writes it, ``_repr_html_`` shows it in a notebook."""

    title: str
    body: str

    @property
    def html(self) -> str:
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title></head><body>{self._repr_html_()}</body></html>\n")

    def _repr_html_(self) -> str:
        return f"<style>{_STYLE}</style><div class=\"arcee-report\">{self.body}</div>"

    def save(self, path) -> int:
        """Write the document to ``path``; returns its size in bytes."""
        data = self.html.encode("utf-8")
        path = os.fspath(path)
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as err:
            raise FileAccessError(f"cannot write the HTML report {path!r}: {err.strerror or err}.") from None
        return len(data)


def picture(fig, alt: str) -> str:
    """A matplotlib figure as an inline PNG ``<img>`` (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    figures.pyplot().close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{content}</section>'


def _attribution_table(attribution) -> str:
    rows = []
    for site in attribution.sites + [s for s in attribution.steps if s not in attribution.sites]:
        cause = site is attribution.cause or site is attribution.step_cause
        mark = ' class="cause"' if cause and attribution.single_cause else ""
        rows.append(f"<tr{mark}><td>{html.escape(site.name)}</td><td>{site.share:.1%}</td><td>{site.kl_share:.1%}"
                    f"</td><td>{site.error:.3g}</td></tr>")
    return ("<table><tr><th>site (patched with the reference's value)</th><th>logit error removed</th>"
            "<th>KL removed</th><th>error left (RMS)</th></tr>" + "".join(rows) + "</table>")


def comparison_report(report, reference, candidate, *, attribution=None, reference_lens=None, candidate_lens=None,
                      tokens=None, num_heads=None, title="arcee_np comparison", extra_sections=()) -> HtmlReport:
    """The page of one comparison. report: compare.Report of candidate against reference; reference,
    candidate: the two traces ({name: array}); attribution: an Attribution or None; *_lens: LogitLens of
    each side or None; tokens: the input's tokens as strings (labels) or None; num_heads: splits
    ``attn.context`` into heads; extra_sections: ``(anchor, title, html)`` added before the table."""
    ok = report.ok
    verdict = (f'<div class="verdict {"ok" if ok else "bad"}"><b>{"AGREE" if ok else "DIVERGE"}</b>: '
               f"{html.escape(report.summary())}</div>")
    parts = [f"<h1>{html.escape(title)}</h1>", verdict]
    if attribution is not None and attribution.error > 0:
        parts.append(f'<p class="note"><b>attribution</b>: {html.escape(attribution.summary())}</p>')
    first = report.first
    if first is not None and first.name in reference and first.name in candidate:
        pictures = "".join(picture(fig, f"{first.name}: {what}") for fig, what in zip(
            figures.divergence_figures(first.name, candidate[first.name], reference[first.name], tokens, num_heads),
            ("error heat maps", "values side by side", "error distribution"), strict=True))
        parts.append(_section("first-divergence", f"First divergence: {first.name}",
                              f"<p>{html.escape(first.describe())} (tolerance {report.tolerance})</p>{pictures}"))
    else:
        parts.append(_section("first-divergence", "First divergence",
                              "<p>none: every compared tensor agrees within the tolerance.</p>"))
    if any(split_name(r.name)[0] is not None for r in report.compared):
        parts.append(_section("per-layer", "Error per layer, every stage",
                              picture(figures.error_per_layer(report), "error per layer")))
    layer = split_name(first.name)[0] if first is not None and split_name(first.name)[0] is not None else 0
    probs = f"layers.{layer}.attn.probs"
    if probs in reference and probs in candidate:
        error = np.abs(np.asarray(candidate[probs], np.float64) - np.asarray(reference[probs], np.float64))
        heads = sorted(np.argsort(-error[0].reshape(error.shape[1], -1).max(axis=1), kind="stable")[:2].tolist())
        parts.append(_section("attention", f"Attention of layer {layer} (the two heads that differ most)", picture(
            figures.attention_maps(reference[probs], candidate[probs], tokens, layer, heads), "attention maps")))
    if attribution is not None and attribution.sites:
        parts.append(_section("attribution", "Attribution: which site's patch removes the error",
                              f"<p>{html.escape(attribution.summary())}</p>{_attribution_table(attribution)}"
                              + picture(figures.attribution_chart(attribution), "attribution chart")))
    if reference_lens is not None and candidate_lens is not None:
        parts.append(_section("logit-lens", "Logit lens: each layer read through the final norm and the LM head",
                              picture(figures.logit_lens_figure(reference_lens, candidate_lens, tokens),
                                      "logit lens")))
    parts += [_section(anchor, heading, content) for anchor, heading, content in extra_sections]
    parts.append(_section("table", "Every tensor", f"<pre>{html.escape(report.table())}</pre>"
                          + "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)))
    return HtmlReport(title, "\n".join(parts))


def models_report(candidate, reference, input_ids, *, edits=None, tokens=None, attribute=True,
                  title="arcee_np comparison", extra_sections=(), attribution=None) -> HtmlReport:
    """Run two arcee_np causal LMs (candidate with ``edits``, if any) on ``input_ids`` [B, T], compare their
    traces, attribute the error (unless ``attribute=False`` or an ``attribution`` is given) and read both logit
    lenses; returns the page (comparison_report)."""
    from ..intervene import intervene
    from .attribution import attribute as attribute_error
    from .compare import compare_traces
    from .lens import logit_lens

    input_ids = np.asarray(input_ids)
    ref_trace = trace_model(reference, input_ids)
    with intervene(edits or {}):
        cand_trace = trace_model(candidate, input_ids)
    report = compare_traces(cand_trace, ref_trace)
    if attribution is None and attribute:
        attribution = attribute_error(candidate, reference, input_ids, edits=edits)
    return comparison_report(report, ref_trace, cand_trace, attribution=attribution,
                             reference_lens=logit_lens(reference, ref_trace),
                             candidate_lens=logit_lens(candidate, cand_trace), tokens=tokens,
                             num_heads=reference.config.num_attention_heads, title=title,
                             extra_sections=extra_sections)


def traces_report(report, reference, candidate, model=None, tokens=None, title="arcee_np comparison") -> HtmlReport:
    """The page of a comparison of two traces (compare.Report of candidate against reference). model: an
    arcee_np causal LM with the traces' weights, whose final norm and LM head read both traces' residual streams
    (the logit lens), or None. A trace cannot be patched: the attribution section says what it can
    (attribution.unpatchable_report)."""
    from .attribution import unpatchable_report
    from .lens import logit_lens

    lenses = (None, None)
    stages = ["embed"] + [f"layers.{i}.out" for i in range(model.config.num_hidden_layers)] if model else []
    if model is not None and all(name in t for name in stages for t in (reference, candidate)):
        lenses = (logit_lens(model, reference), logit_lens(model, candidate))
    why = ("<p>Traces alone cannot be patched, so this page shows where the error starts and how it grows; "
           "<code>arcee-np attribute CANDIDATE --reference REF</code> names the block that causes it for anything "
           f"arcee_np can run.</p><pre>{html.escape(unpatchable_report(report))}</pre>") if not report.ok else ""
    num_heads = model.config.num_attention_heads if model is not None else None
    return comparison_report(report, reference, candidate, reference_lens=lenses[0], candidate_lens=lenses[1],
                             tokens=tokens, num_heads=num_heads, title=title,
                             extra_sections=[("attribution", "Attribution", why)] if why else ())
