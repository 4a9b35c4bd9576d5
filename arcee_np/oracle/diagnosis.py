"""The diagnosis of a first divergence: which step computes each named tensor (and its gradient), from
which inputs, and the likely culprit when it diverges while its inputs agree (``explain``)."""

from __future__ import annotations

from ..trace import GRAD_PREFIX, is_gradient, name_order_key, split_name, trace_names
from .arrays import Row
from .tolerances import Tolerance


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
