"""The pictures of a comparison, as matplotlib figures: the HTML report (html_report.py) and notebooks use them.

matplotlib is optional (``pip install 'arcee-np[report]'``); ``pyplot()`` says so when it is missing. Every
figure has labelled axes with units, colorbars and token labels where they apply, in the course style
(``STYLE``, the same settings as the notebooks' course.mplstyle).
"""

from __future__ import annotations

import functools

import numpy as np

from ..trace import LAYER_STAGES, split_name
from .tracefile import as_numpy

STYLE = {"figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (7, 3.8), "figure.constrained_layout.use": True,
         "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "legend.framealpha": 0.9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.6,
         "image.cmap": "viridis"}
_HEAD_AXIS_STAGES = ("attn.q", "attn.k", "attn.v", "attn.q_rope", "attn.k_rope", "attn.scores", "attn.probs")
MAX_TOKEN_LABELS = 32  # label every position up to this many; beyond it, every n-th


def pyplot():
    """matplotlib.pyplot with the non-interactive backend, or an ImportError naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the report's pictures need matplotlib: pip install 'arcee-np[report]' (or "
                          "pip install matplotlib)") from None
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styled(draw):
    """Run a figure function under the course style (STYLE): every artist it makes takes the settings."""
    @functools.wraps(draw)
    def run(*args, **kwargs):
        with pyplot().rc_context(STYLE):
            return draw(*args, **kwargs)
    return run


def _figure(rows=1, cols=1, size=(7, 3.8)):
    return pyplot().subplots(rows, cols, figsize=size, squeeze=False)


def _label_positions(axis, tokens, count, which="x"):
    """Token labels on an axis of ``count`` positions (every n-th beyond MAX_TOKEN_LABELS)."""
    if tokens is None:
        return
    step = max(1, -(-count // MAX_TOKEN_LABELS))
    ticks = list(range(0, count, step))
    labels = [repr(tokens[i])[1:-1] if i < len(tokens) else str(i) for i in ticks]
    if which == "x":
        axis.set_xticks(ticks, labels, rotation=90, fontsize=8)
    else:
        axis.set_yticks(ticks, labels, fontsize=8)


@styled
def error_per_layer(report):
    """Max relative error (max |candidate - reference| / max |reference|) of each stage, by layer, log scale."""
    fig, ax = _figure(size=(8.5, 4.2))
    ax = ax[0, 0]
    rows = {r.name: r for r in report.compared}
    layers = sorted({split_name(n)[0] for n in rows if split_name(n)[0] is not None})
    floor = 1e-17
    for stage in LAYER_STAGES:
        values = [rows[f"layers.{i}.{stage}"].max_rel if f"layers.{i}.{stage}" in rows else np.nan for i in layers]
        if not np.all(np.isnan(values)):
            style = "-" if stage in ("out", "attn.out", "mlp.out") else ":"
            ax.plot(layers, np.maximum(values, floor), style, marker=".", label=stage)
    tolerance = report.tolerance.atol
    ax.axhline(tolerance, color="red", linestyle="--", linewidth=1, label=f"tolerance (atol {tolerance:.0e})")
    ax.set_yscale("log")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("max relative error (max |Δ| / max |ref|)")
    ax.set_title("Error of each stage, layer by layer (zeros drawn at 1e-17)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _head_position_view(name, error, num_heads) -> np.ndarray | None:
    """[heads, positions] of max |error| (batch row 0), for tensors with a head axis or merged heads."""
    stage = split_name(name)[1]
    if error.ndim == 4 and stage in _HEAD_AXIS_STAGES:
        return error[0].max(axis=-1)
    if stage == "attn.context" and num_heads:
        return error[0].reshape(error.shape[1], num_heads, -1).max(axis=-1).T
    return None


@styled
def divergence_figures(name, candidate, reference, tokens=None, num_heads=None) -> list:
    """At one tensor: |error| over positions x channels and over heads x positions, the two values side by side,
    and the distribution of the error. candidate, reference: arrays of the tensor's shape (docs/trace.md)."""
    cand, ref = (np.asarray(as_numpy(x), dtype=np.float64) for x in (candidate, reference))
    error = np.abs(cand - ref)
    figures = []
    heads = _head_position_view(name, error, num_heads)
    fig, axes = _figure(1, 2 if heads is not None else 1, size=(9 if heads is not None else 7, 3.8))
    stage = split_name(name)[1]
    has_heads = error.ndim == 4 and stage in _HEAD_AXIS_STAGES
    across = "key position" if stage in ("attn.scores", "attn.probs") else "channel"
    view = error[0].max(axis=0) if has_heads else error[0].reshape(error.shape[1], -1)  # [T, channels]
    image = axes[0, 0].imshow(view, aspect="auto", interpolation="nearest", cmap="magma")
    axes[0, 0].set_xlabel(across + (" (max over heads)" if has_heads else ""))
    axes[0, 0].set_ylabel("position (token)")
    axes[0, 0].set_title(f"|error| of {name}: positions x {across}s")
    axes[0, 0].grid(False)
    _label_positions(axes[0, 0], tokens, view.shape[0], "y")
    fig.colorbar(image, ax=axes[0, 0], label="|candidate - reference|")
    if heads is not None:
        image = axes[0, 1].imshow(heads, aspect="auto", interpolation="nearest", cmap="magma")
        axes[0, 1].set_xlabel("position (token)")
        axes[0, 1].set_ylabel("head")
        axes[0, 1].set_yticks(range(heads.shape[0]))
        axes[0, 1].set_title(f"|error|: heads x positions (max over {across}s)")
        axes[0, 1].grid(False)
        _label_positions(axes[0, 1], tokens, heads.shape[1], "x")
        fig.colorbar(image, ax=axes[0, 1], label="max |error|")
    figures.append(fig)

    fig, axes = _figure(1, 2, size=(9, 3.6))
    worst = int(np.argmax(error[0].reshape(error.shape[1], -1).max(axis=1))) if has_heads else 0
    values = [x[0, worst] if has_heads else x[0].reshape(x.shape[1], -1) for x in (ref, cand)]  # [T, channels]
    low = min(float(np.nanmin(v)) for v in values)
    high = max(float(np.nanmax(v)) for v in values)
    for ax, value, side in zip(axes[0], values, ("reference", "candidate"), strict=True):
        image = ax.imshow(value, aspect="auto", interpolation="nearest", vmin=low, vmax=high, cmap="coolwarm")
        ax.set_title(f"{side}: {name}" + (f" (head {worst}, the worst)" if has_heads else ""))
        ax.set_xlabel(across)
        ax.set_ylabel("position (token)")
        ax.grid(False)
        _label_positions(ax, tokens, value.shape[0], "y")
    fig.colorbar(image, ax=axes[0, 1], label="value")
    figures.append(fig)

    fig, ax = _figure(size=(7, 3.2))
    ax = ax[0, 0]
    nonzero = error[np.isfinite(error) & (error > 0)]
    if nonzero.size:
        ax.hist(np.log10(nonzero), bins=60, color="C3")
    ax.set_xlabel("log10 |candidate - reference|")
    ax.set_ylabel("number of values")
    ax.set_title(f"Distribution of the error of {name} ({error.size - nonzero.size} of {error.size} exactly equal)")
    figures.append(fig)
    return figures


@styled
def attention_maps(reference_probs, candidate_probs, tokens=None, layer=0, heads=(0, 1)) -> object:
    """Attention probabilities [B, H, T, S] of reference (top) and candidate (bottom) for a few heads, batch
    row 0, queries down and keys across, with token labels."""
    ref, cand = (np.asarray(as_numpy(x), dtype=np.float64)[0] for x in (reference_probs, candidate_probs))
    heads = [h for h in heads if h < ref.shape[0]]
    fig, axes = _figure(2, len(heads), size=(3.6 * len(heads) + 1, 7))
    for col, head in enumerate(heads):
        for row, (probs, side) in enumerate(((ref, "reference"), (cand, "candidate"))):
            ax = axes[row, col]
            image = ax.imshow(probs[head], aspect="auto", interpolation="nearest", vmin=0, vmax=1)
            ax.set_title(f"{side}: layer {layer}, head {head}")
            ax.set_xlabel("key position")
            ax.set_ylabel("query position")
            ax.grid(False)
            _label_positions(ax, tokens, probs.shape[-1], "x")
            _label_positions(ax, tokens, probs.shape[-2], "y")
    fig.colorbar(image, ax=axes[:, -1].tolist(), label="attention probability")
    return fig


@styled
def attribution_chart(attribution) -> object:
    """The share of the final logit error (and of the KL) that each site's patch removes, in forward order."""
    sites = attribution.sites
    fig, ax = _figure(size=(7, 0.25 * len(sites) + 1.4))
    ax = ax[0, 0]
    y = np.arange(len(sites))
    ax.barh(y - 0.2, [100 * s.share for s in sites], height=0.4, label="logit error removed")
    ax.barh(y + 0.2, [100 * s.kl_share for s in sites], height=0.4, label="KL divergence removed")
    ax.set_yticks(y, [s.name for s in sites], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(100 * attribution.threshold, color="red", linestyle="--", linewidth=1,
               label=f"cause threshold ({attribution.threshold:.0%})")
    ax.set_xlabel("share of the final error removed by patching the site (%)")
    ax.set_title("Activation patching: the reference's value put into the candidate, site by site")
    fig.legend(fontsize=8, loc="outside lower center", ncol=3)
    return fig


@styled
def logit_lens_figure(reference_lens, candidate_lens=None, tokens=None) -> object:
    """Per stage (rows) and position (columns): the probability each lens gives to the token the reference
    model finally predicts there (batch row 0); one panel per lens (the candidate's is optional)."""
    final = reference_lens.top_tokens()[-1]  # [B, T]
    lenses = [(reference_lens, "reference")] + ([(candidate_lens, "candidate")] if candidate_lens is not None else [])
    fig, axes = _figure(1, len(lenses), size=(5 * len(lenses) + 1, 0.35 * len(reference_lens.names) + 2.4))
    for ax, (lens, side) in zip(axes[0], lenses, strict=True):
        probs = lens.probability_of(final)[:, 0, :]  # [stages, T]
        image = ax.imshow(probs, aspect="auto", interpolation="nearest", vmin=0, vmax=1)
        ax.set_yticks(range(len(lens.names)), lens.names, fontsize=8)
        ax.set_xlabel("position (token read)")
        ax.set_title(f"logit lens, {side}" if candidate_lens is not None else "logit lens")
        ax.grid(False)
        _label_positions(ax, tokens, probs.shape[1], "x")
    fig.colorbar(image, ax=axes[0, -1], label="p(the final layer's next token)")
    return fig
