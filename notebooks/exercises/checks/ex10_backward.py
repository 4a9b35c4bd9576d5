"""The checks of exercises 19-23: the backward of RMSNorm, of the ReLU² MLP and of attention (checked against
arcee_np's gradients, which equal transformers' loss.backward()), and one training step (clipping, AdamW)."""

from __future__ import annotations

from functools import lru_cache, partial

import arcee_np
import numpy as np
from arcee_np import ArceeForCausalLM
from arcee_np.blocks import rms_norm_backward as ref_rms_norm_backward
from arcee_np.oracle.compare import TOLERANCES
from arcee_np.oracle.testing import reference_trace
from arcee_np.training import AdamW, loss_and_gradients
from arcee_np.training import clip_grad_norm as ref_clip_grad_norm
from arcee_np.training.gradients import model_parameters
from arcee_np.training.optimizer import adamw_update as ref_adamw_update

from checking import Exercise, Failure, against_array, against_trace, array, call, check, first_match, fmt, pair

from .shipped import PADDED, TEXT, tokenizer

GRAD = TOLERANCES["gradients_float64"]


@lru_cache(maxsize=None)
def model64() -> ArceeForCausalLM:
    """The shipped model in float64, where arcee_np's gradients equal transformers' to about 1e-15."""
    return ArceeForCausalLM.from_pretrained(arcee_np.default_model_path(), dtype="float64")


@lru_cache(maxsize=None)
def gradient_trace(padded: bool = False):
    """Every named tensor of the forward and its gradient (``grad.`` + name) for the loss on TEXT (labels =
    input_ids, the first 4 labels -100), or on the two left-padded lines of PADDED."""
    if padded:
        batch = tokenizer()(PADDED, padding=True, padding_side="left", return_tensors="np")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = np.where(mask == 1, ids, -100)
        return reference_trace(model64(), ids, attention_mask=mask, labels=labels)
    ids = np.array([tokenizer().encode(TEXT)])
    labels = ids.copy()
    labels[:, :4] = -100
    return reference_trace(model64(), ids, labels=labels)


@lru_cache(maxsize=None)
def weight_gradients():
    """{state-dict name: gradient} of the same loss on TEXT (loss_and_gradients)."""
    ref = gradient_trace()
    ids = ref.inputs["input_ids"]
    labels = ids.copy()
    labels[:, :4] = -100
    _, grads = loss_and_gradients(model64(), ids, labels=labels)
    return {name: np.asarray(g) for name, g in grads.items()}


def w64(name):
    return np.asarray(model64().state_dict()[name])


# ---------------------------------------------------------------------------------------------- 19 RMSNorm
def _norm_probe_rows(D):
    """Rows where each term of the backward matters: rms far below sqrt(eps), a zero row, large values."""
    rng = np.random.default_rng(19)
    return np.stack([rng.standard_normal(D) * 1e-4, np.zeros(D), rng.standard_normal(D) * 300,
                     rng.standard_normal(D), np.full(D, 2.0)])[None]


@check("rms_norm_backward")
def check_rms_norm_backward(rms_norm_backward):
    ref, eps = gradient_trace(), model64().config.rms_norm_eps
    layer = 1
    x, grad_out = ref[f"layers.{layer}.attn_residual"], ref[f"grad.layers.{layer}.post_norm"]
    weight = w64(f"model.layers.{layer}.post_attention_layernorm.weight")
    checked = (f"rms_norm_backward(grad, x, weight, eps) as layer {layer}'s post-attention norm, in float64, "
               f"against arcee_np's gradients of the loss (equal to transformers' loss.backward())")
    hint = ("r = 1 / sqrt(mean(x**2, -1) + eps), n = x r, g = grad * weight: dx = r * (g - n * mean(g * n, -1)); "
            "dweight = sum of grad * n over every axis but the last")
    dx, dw = pair(call(rms_norm_backward, "rms_norm_backward", checked, grad_out, x, weight, eps),
                  "rms_norm_backward", checked, "(dx, dweight)")
    dx = array(dx, "rms_norm_backward(...)[0] (dx)", checked, x.shape, "[B, T, D]", hint)
    dw = array(dw, "rms_norm_backward(...)[1] (dweight)", checked, weight.shape, "[D]",
               "sum grad * n over the batch and the tokens: dweight has the weight's shape [D]")

    def mistakes(x=x, grad_out=grad_out, dx=dx):
        return first_match(dx, _norm_mistakes(grad_out, x, weight, eps), np.asarray(
            ref_rms_norm_backward(grad_out, x, weight, eps)[0]), GRAD)

    # through the trace: the residual stream's gradient is the norm's dx plus the residual path's
    residual = ref[f"grad.layers.{layer}.out"]
    err = against_trace({f"grad.layers.{layer}.out": residual, f"grad.layers.{layer}.post_norm": grad_out,
                         f"grad.layers.{layer}.attn_residual": dx + residual}, ref, checked + " (your dx plus the "
                        "residual path's gradient, grad.layers.1.out)", mistakes, hint)
    err = max(err, against_array(dw, weight_gradients()[f"model.layers.{layer}.post_attention_layernorm.weight"],
                                 "dweight", checked, GRAD, lambda: first_match(dw, {
                                     "your dweight sums grad * x; the weight multiplies the normalised n = x / rms":
                                         (grad_out * x).reshape(-1, x.shape[-1]).sum(0),
                                     "your dweight is the mean over the tokens; it is their sum":
                                         (grad_out * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)).reshape(
                                             -1, x.shape[-1]).mean(0)}), hint))
    probe = _norm_probe_rows(x.shape[-1])
    g = np.random.default_rng(1).standard_normal(probe.shape)
    checked_probe = ("rms_norm_backward on rows with rms 1e-4 (below sqrt(eps) = 3.2e-3, where eps matters), a zero "
                     "row, rms 300 and a constant row")
    got = pair(call(rms_norm_backward, "rms_norm_backward", checked_probe, g, probe, weight, eps),
               "rms_norm_backward", checked_probe, "(dx, dweight)")
    got_dx = array(got[0], "rms_norm_backward(...)[0] (dx)", checked_probe, probe.shape, "[B, T, D]", hint)
    want = np.asarray(ref_rms_norm_backward(g, probe, weight, eps)[0])
    err = max(err, against_array(got_dx, want, "dx", checked_probe, GRAD, lambda: first_match(
        got_dx, _norm_mistakes(g, probe, weight, eps), want, GRAD), hint))
    return [f"checked: dx and dweight of layer 1's post-attention norm against arcee_np's (float64) gradients, and "
            f"dx on rows where eps matters (max abs error {fmt(err)})"]


def _norm_mistakes(grad, x, weight, eps):
    with np.errstate(all="ignore"):
        r = 1 / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)
        n, g = x * r, grad * weight
        r0 = 1 / np.sqrt(np.mean(x * x, -1, keepdims=True))
        return {
            "your dx is r * g: the normalisation depends on x too, subtract the projection r * n * mean(g * n)": r * g,
            "your dx forgets the weight: g = grad * weight, not grad": r * (grad - n * np.mean(grad * n, -1,
                                                                                             keepdims=True)),
            "your dx leaves out eps: r = 1 / sqrt(mean(x**2) + eps) (it decides rows whose rms is below sqrt(eps))":
                r0 * (g - x * r0 * np.mean(g * x * r0, -1, keepdims=True)),
            "your projection uses the sum over the features, not the mean": r * (g - n * np.sum(g * n, -1,
                                                                                               keepdims=True)),
            "your projection uses x instead of the normalised n = x r": r * (g - x * np.mean(g * x, -1,
                                                                                            keepdims=True)),
        }


# ---------------------------------------------------------------------------------------------- 20 the MLP
@check("mlp_backward")
def check_mlp_backward(mlp_backward):
    layer = 1
    ref = gradient_trace()
    x, grad_out = ref[f"layers.{layer}.post_norm"], ref[f"grad.layers.{layer}.mlp.out"]
    up_w, down_w = w64(f"model.layers.{layer}.mlp.up_proj.weight"), w64(f"model.layers.{layer}.mlp.down_proj.weight")
    checked = (f"mlp_backward(grad, x, up_weight, down_weight) as layer {layer}'s MLP, in float64, against arcee_np's "
               f"gradients of the loss")
    hint = ("u = x @ U.T, a = relu(u)**2: d_down = grad^T a; d_a = grad @ D; d_u = d_a * 2 relu(u) (0 where u <= 0); "
            "d_up = d_u^T x; dx = d_u @ U, each summed over the batch and the tokens")
    got = call(mlp_backward, "mlp_backward", checked, grad_out, x, up_w, down_w)
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise Failure(checked, f"`mlp_backward` returned a {type(got).__name__}; return (dx, d_up_weight, "
                      f"d_down_weight)", hint=hint)
    dx = array(got[0], "mlp_backward(...)[0] (dx)", checked, x.shape, "[B, T, D]", hint)
    d_up = array(got[1], "mlp_backward(...)[1] (d_up_weight)", checked, up_w.shape, "[I, D]", hint)
    d_down = array(got[2], "mlp_backward(...)[2] (d_down_weight)", checked, down_w.shape, "[D, I]", hint)
    up = x @ up_w.T
    d_act = grad_out @ down_w
    relu = np.maximum(up, 0)
    mistakes = {
        "your relu² derivative is 2u for every u; it is 2 relu(u): 0 where u <= 0": (d_act * 2 * up) @ up_w,
        "your relu² derivative misses the 2: d/du relu(u)**2 = 2 relu(u)": (d_act * relu) @ up_w,
        "you used relu's derivative (a step); relu² has 2 relu(u)": (d_act * (up > 0)) @ up_w,
        "you differentiated at the activation a instead of at u: 2 relu(u), not 2 a": (d_act * 2 * relu ** 2) @ up_w,
    }
    err = against_trace({f"grad.layers.{layer}.mlp.out": grad_out, f"grad.layers.{layer}.post_norm": dx}, ref,
                        checked, lambda: first_match(dx, mistakes, ref[f"grad.layers.{layer}.post_norm"], GRAD), hint)
    grads = weight_gradients()
    act = relu ** 2
    err = max(err, against_array(d_down, grads[f"model.layers.{layer}.mlp.down_proj.weight"], "d_down_weight",
                                 checked, GRAD, lambda: first_match(d_down, {
                                     "d_down uses u instead of the activation relu(u)**2": np.einsum(
                                         "btd,bti->di", grad_out, up)}), hint))
    err = max(err, against_array(d_up, grads[f"model.layers.{layer}.mlp.up_proj.weight"], "d_up_weight", checked,
                                 GRAD, lambda: first_match(d_up, {
                                     "your d_up uses 2u for negative u too: the derivative is 2 relu(u)": np.einsum(
                                         "bti,btd->id", d_act * 2 * up, x)}), hint))
    _ = act
    # u exactly 0 and negative: relu's edge
    probe_x = np.stack([up_w[0] * 0, -up_w[1] / np.linalg.norm(up_w[1]) ** 2, up_w[2]])[None]
    g = np.ones((1, 3, x.shape[-1]))
    checked_probe = "mlp_backward at inputs whose up-projection is exactly 0 and negative (relu's edge)"
    got = call(mlp_backward, "mlp_backward", checked_probe, g, probe_x, up_w, down_w)
    got_dx = array(got[0] if isinstance(got, (tuple, list)) else got, "mlp_backward(...)[0] (dx)", checked_probe,
                   probe_x.shape, "[B, T, D]", hint)
    pu = probe_x @ up_w.T
    want = ((g @ down_w) * 2 * np.maximum(pu, 0)) @ up_w
    against_array(got_dx, want, "dx", checked_probe, GRAD, lambda: first_match(got_dx, {
        "your relu² derivative is 2u for every u; it is 2 relu(u): 0 where u <= 0": ((g @ down_w) * 2 * pu) @ up_w,
    }, want, GRAD), hint)
    return [f"checked: dx, d_up_weight and d_down_weight of layer 1's MLP against arcee_np's (float64) gradients "
            f"(max abs error {fmt(err)}), and at relu's edge"]


# ---------------------------------------------------------------------------------------------- 21 attention
@check("attention_backward")
def check_attention_backward(attention_backward):
    hint = ("per query head n (reading KV head n // (H / KV)): dV = P^T dO; dP = dO V^T; dS = P * (dP - sum_s(P * "
            "dP)); dq = dS k * scale; dk = dS^T q * scale; dk and dv summed over the H / KV query heads of each KV "
            "head; dO is grad_context [B, T, H*hd] back in [B, H, T, hd]")
    worst = 0.0
    for padded, what in ((False, "the shipped model, 8 query heads sharing 2 KV heads"),
                         (True, "a left-padded batch of 2 (masked keys get no gradient)")):
        ref = gradient_trace(padded)
        layer = 1
        name = f"layers.{layer}.attn"
        q, k, v, probs = ref[f"{name}.q_rope"], ref[f"{name}.k_rope"], ref[f"{name}.v"], ref[f"{name}.probs"]
        d_ctx = ref[f"grad.{name}.context"]
        scale = q.shape[-1] ** -0.5
        checked = f"attention_backward(grad_context, q, k, v, probs, scale) as layer {layer}'s attention on {what}"
        got = call(attention_backward, "attention_backward", checked, d_ctx, q, k, v, probs, scale)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise Failure(checked, f"`attention_backward` returned a {type(got).__name__}; return (dq, dk, dv)",
                          hint=hint)
        dq = array(got[0], "attention_backward(...)[0] (dq)", checked, q.shape, "[B, H, T, hd]", hint)
        dk = array(got[1], "attention_backward(...)[1] (dk)", checked, k.shape, "[B, KV, S, hd]",
                   "sum dk over the query heads that share each KV head: [B, H, S, hd] -> [B, KV, S, hd]")
        dv = array(got[2], "attention_backward(...)[2] (dv)", checked, v.shape, "[B, KV, S, hd]",
                   "sum dv over the query heads that share each KV head: [B, H, S, hd] -> [B, KV, S, hd]")
        worst = max(worst, against_trace(
            {f"grad.{name}.context": d_ctx, f"grad.{name}.v": dv, f"grad.{name}.k_rope": dk,
             f"grad.{name}.q_rope": dq}, ref, checked,
            partial(_attention_mistake, dq, dk, dv, d_ctx, q, k, v, probs, scale, ref, name), hint))
    return [f"checked: dq, dk and dv of layer 1's attention against arcee_np's (float64) gradients, with and without "
            f"padding (max abs error {fmt(worst)})"]


def _attention_mistake(dq, dk, dv, d_ctx, q, k, v, probs, scale, ref, name):
    B, H, T, hd = q.shape
    KV = k.shape[1]
    group = H // KV
    d_out = d_ctx.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
    index = np.arange(H) // group
    modulo = np.arange(H) % KV
    dp = d_out @ v[:, index].swapaxes(-1, -2)
    ds = probs * (dp - (probs * dp).sum(-1, keepdims=True))

    def fold(x, by):
        out = np.zeros((B, KV, *x.shape[2:]))
        for n in range(H):
            out[:, by[n]] += x[:, n]
        return out
    return (first_match(dv, {
        "you summed dv over query heads n % KV; a KV head serves the consecutive query heads n // (H / KV)":
            fold(probs.swapaxes(-1, -2) @ d_out, modulo),
        "you reshaped grad_context [B, T, H*hd] straight to [B, H, T, hd]; reshape to [B, T, H, hd] and transpose":
            fold(probs.swapaxes(-1, -2) @ d_ctx.reshape(B, H, T, hd), index),
    }, ref[f"grad.{name}.v"], GRAD) or first_match(dq, {
        "your softmax backward is P * dP: subtract each row's sum(P * dP) first, dS = P * (dP - sum(P dP))":
            (probs * dp) @ k[:, index] * scale,
        "your dq misses the scale: dq = dS k * scale": ds @ k[:, index],
        "your softmax backward sums over the queries (axis -2); the softmax runs over the keys (axis -1)":
            probs * (dp - (probs * dp).sum(-2, keepdims=True)) @ k[:, index] * scale,
    }, ref[f"grad.{name}.q_rope"], GRAD) or first_match(dk, {
        "your dk misses the scale: dk = dS^T q * scale": fold(ds.swapaxes(-1, -2) @ q, index),
    }, ref[f"grad.{name}.k_rope"], GRAD))


# ---------------------------------------------------------------------------------------------- 22 the training step
CLIP_CASES = ((1.0, "max_norm 1 (the gradients are clipped)"), (1e6, "max_norm 1e6 (nothing is clipped)"))
ADAM = dict(lr=2e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def _small_grads():
    rng = np.random.default_rng(22)
    return {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5) * 0.1, "c": np.array([[7.0]])}


@check("optimizer")
def check_optimizer(clip_grad_norm, adamw_update):
    hint_clip = ("total = sqrt(sum over every gradient of sum(g**2)) (one global norm); every gradient times min(1, "
                 "max_norm / (total + 1e-6)); return (clipped dict, total before clipping)")
    grads = weight_gradients()
    for max_norm, what in (*CLIP_CASES, (float(np.sqrt(sum(np.sum(g * g) for g in _small_grads().values())) - 1e-6),
                                         "max_norm exactly at the norm (minus torch's 1e-6): a factor of exactly 1")):
        cases = ((grads, "the shipped model's gradients (float64)"),) if max_norm != CLIP_CASES[1][0] or True else ()
        for g, whose in cases + ((_small_grads(), "3 small gradients"),):
            checked = f"clip_grad_norm(grads, {max_norm:g}) on {whose}, {what}"
            got = pair(call(clip_grad_norm, "clip_grad_norm", checked, dict(g), max_norm), "clip_grad_norm", checked,
                       "(clipped, total_norm)")
            clipped, total = got
            want, want_total = ref_clip_grad_norm(dict(g), max_norm)
            if not isinstance(clipped, dict) or set(clipped) != set(g):
                raise Failure(checked, "the clipped gradients must be a dict with the same names", hint=hint_clip)
            if not np.isclose(float(np.asarray(total)), float(want_total), rtol=1e-10, atol=0):
                norms = np.array([np.sqrt(np.sum(x * x)) for x in g.values()])
                looks = first_match(np.asarray(float(np.asarray(total))), {
                    "you summed the per-tensor norms; the global norm is sqrt of the sum of their squares":
                        norms.sum(),
                    "you returned the norm after clipping; return the norm before it (what training logs)":
                        min(float(want_total), max_norm),
                    "you returned the sum of squares; take its square root": np.sum(norms ** 2),
                    "you took the largest per-tensor norm; the norm is over all gradients together": norms.max(),
                }, tolerance=GRAD)
                raise Failure(checked, f"total_norm {float(np.asarray(total)):.10g}; expected {float(want_total):.10g}",
                              looks, hint_clip)
            for name in g:
                got_g = array(clipped[name], f"clipped[{name!r}]", checked, g[name].shape)
                mistakes = _clip_mistakes(g, name, max_norm, float(want_total))
                against_array(got_g, want[name], f"clipped[{name!r}]", checked, GRAD,
                              partial(first_match, got_g, mistakes, want[name], GRAD), hint_clip)
    hint_adam = ("p = p * (1 - lr * weight_decay) (decoupled: the weight, not the gradient); m = b1 m + (1 - b1) g; "
                 "v = b2 v + (1 - b2) g**2; p = p - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps), t from 1")
    rng = np.random.default_rng(7)
    param = rng.standard_normal((4, 6))
    m, v = np.zeros_like(param), np.zeros_like(param)
    rm, rv, rp = m.copy(), v.copy(), param.copy()
    for step in (1, 2, 3):
        grad = rng.standard_normal(param.shape) * (10.0 if step == 2 else 1e-3)
        checked = (f"adamw_update(param, grad, exp_avg, exp_avg_sq, step={step}, lr={ADAM['lr']}, betas="
                   f"{ADAM['betas']}, eps={ADAM['eps']}, weight_decay={ADAM['weight_decay']}), steps 1 to 3 in a row")
        got = call(adamw_update, "adamw_update", checked, param, grad, m, v, step, **ADAM)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise Failure(checked, "return (param, exp_avg, exp_avg_sq)", hint=hint_adam)
        new_p = array(got[0], "adamw_update(...)[0] (param)", checked, param.shape)
        want_p, rm, rv = ref_adamw_update(rp, grad, rm, rv, step, **ADAM)
        against_array(new_p, want_p, "param", checked, GRAD,
                      partial(first_match, new_p, _adam_mistakes(rp, grad, m, v, step), want_p, GRAD), hint_adam)
        param, m, v = new_p, array(got[1], "exp_avg", checked, param.shape), array(got[2], "exp_avg_sq", checked,
                                                                                     param.shape)
        rp = want_p
    checked = "adamw_update with weight_decay=0 and betas=(0.0, 0.0) (each parameter at its boundary)"
    grad = rng.standard_normal(param.shape)
    got = call(adamw_update, "adamw_update", checked, param, grad, m, v, 4, 1e-3, (0.0, 0.0), 1e-8, 0.0)
    want_p = ref_adamw_update(param, grad, m, v, 4, 1e-3, (0.0, 0.0), 1e-8, 0.0)[0]
    against_array(array(got[0], "adamw_update(...)[0]", checked, param.shape), want_p, "param", checked, GRAD,
                  hint=hint_adam)
    return ["checked: clip_grad_norm on the shipped model's gradients and on small ones (clipped, not clipped, at "
            "the threshold), and three AdamW steps in a row (with a gradient 1e4 times larger in step 2) against "
            "arcee_np's, which equal torch's"]


def _clip_mistakes(g, name, max_norm, total):
    norm_of = float(np.sqrt(np.sum(g[name] ** 2)))
    return {
        "you clipped each gradient by its own norm; clipping uses one global norm over all of them":
            g[name] * min(1.0, max_norm / (norm_of + 1e-6)),
        "you scaled by max_norm / total even when the norm is below max_norm: the factor is min(1, ...)":
            g[name] * (max_norm / (total + 1e-6)),
        "you left out torch's 1e-6: the factor is max_norm / (total + 1e-6)": g[name] * min(1.0, max_norm / total),
    }


def _adam_mistakes(p, g, m, v, t):
    lr, (b1, b2), eps, wd = ADAM["lr"], ADAM["betas"], ADAM["eps"], ADAM["weight_decay"]

    def adam(p, g, decay=True, correct1=True, correct2=True, eps_inside=False):
        mm = b1 * m + (1 - b1) * g
        vv = b2 * v + (1 - b2) * g * g
        mh = mm / (1 - b1 ** t) if correct1 else mm
        vh = vv / (1 - b2 ** t) if correct2 else vv
        denom = np.sqrt(vh + eps) if eps_inside else np.sqrt(vh) + eps
        return p * (1 - lr * wd if decay else 1) - lr * mh / denom
    return {
        "you added the weight decay to the gradient (Adam with L2); AdamW decays the weight itself: p *= 1 - lr * wd":
            adam(p, g + wd * p, decay=False),
        "the bias correction is missing: divide m by 1 - b1**t and v by 1 - b2**t": adam(p, g, correct1=False,
                                                                                         correct2=False),
        "only the first moment is bias-corrected: v needs / (1 - b2**t) too": adam(p, g, correct2=False),
        "eps is inside the square root; it is added after it: sqrt(v_hat) + eps": adam(p, g, eps_inside=True),
        "you left out the weight decay": adam(p, g, decay=False),
        "you decayed by weight_decay alone; it is lr * weight_decay: p *= 1 - lr * wd":
            adam(p, g, decay=False) - p * wd,
        "your step counter starts at 0: the bias correction is 1 - b**t with t = 1 at the first step (1 - b**0 = 0 "
        "divides by zero)": _adam_from_zero(p, g, m, v, t),
    }


def _adam_from_zero(p, g, m, v, t):
    """AdamW with the step counted from 0 (t - 1 in the bias correction), in NumPy so that t - 1 = 0 gives inf/NaN."""
    lr, (b1, b2), eps, wd = ADAM["lr"], ADAM["betas"], ADAM["eps"], ADAM["weight_decay"]
    with np.errstate(all="ignore"):
        mm, vv = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat = mm / np.float64(1 - b1 ** (t - 1))
        v_hat = vv / np.float64(1 - b2 ** (t - 1))
        return p * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + eps)


@check("train_step")
def check_train_step(train_step):
    base = model64()
    ids = gradient_trace().inputs["input_ids"]
    labels = ids.copy()
    labels[:, :4] = -100
    no_decay = tuple(n for n in base.state_dict() if "norm" in n)
    settings = dict(lr=2e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_norm=1.0)
    checked = (f"3 calls of train_step(params, state, loss_and_grads, lr=2e-3, betas=(0.9, 0.95), eps=1e-8, "
               f"weight_decay=0.1, max_norm=1.0, no_decay=the {len(no_decay)} norm weights) on the shipped model "
               f"(float64), against arcee_np's AdamW and clip_grad_norm")
    hint = ("loss, grads = loss_and_grads(params); grads, norm = clip_grad_norm(grads, max_norm); for each name: "
            "state[name] holds step, exp_avg, exp_avg_sq (zeros at first); step += 1; params[name], m, v = "
            "adamw_update(...) with weight_decay 0 for the names in no_decay; return (loss, norm)")

    def make_loss(model):
        def loss_and_grads(params):  # params: the model's own weights (model_parameters), updated in place
            loss, grads = loss_and_gradients(model, ids, labels=labels)
            return float(loss), {n: np.asarray(g) for n, g in grads.items()}
        return loss_and_grads

    yours = ArceeForCausalLM.from_pretrained(arcee_np.default_model_path(), dtype="float64")
    theirs = ArceeForCausalLM.from_pretrained(arcee_np.default_model_path(), dtype="float64")
    params, ref_params = model_parameters(yours), model_parameters(theirs)
    optimizer = AdamW(ref_params, lr=2e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, no_decay=no_decay)
    state, ref_loss_fn, worst = {}, make_loss(theirs), 0.0
    for step in range(1, 4):
        where = f"{checked}; step {step}"
        got = pair(call(train_step, "train_step", where, params, state, make_loss(yours), **settings,
                        no_decay=no_decay), "train_step", where, "(loss, norm)")
        loss, grads = ref_loss_fn(ref_params)
        grads, norm = ref_clip_grad_norm(grads, 1.0)
        optimizer.step(grads)
        if not np.isclose(float(np.asarray(got[0])), loss, rtol=1e-12):
            raise Failure(where, f"returned loss {float(np.asarray(got[0])):.12g}; expected {loss:.12g}",
                          "the weights differ from the reference's already before this step" if step > 1 else None,
                          hint)
        if not np.isclose(float(np.asarray(got[1])), float(norm), rtol=1e-10):
            raise Failure(where, f"returned norm {float(np.asarray(got[1])):.10g}; expected {float(norm):.10g} (the "
                          f"global norm before clipping)", hint=hint)
        for name in ref_params:
            worst = max(worst, against_array(params[name], ref_params[name], f"params[{name!r}] after step {step}",
                                             where, GRAD, lambda name=name: _step_mistake(name, no_decay), hint))
    return [f"checked: {checked}: loss, norm and every weight after each step (max abs error {fmt(worst)})"]


def _step_mistake(name, no_decay):
    if name in no_decay:
        return (f"{name} is in no_decay: it gets weight_decay 0 (norm weights are not decayed); or its state "
                f"(step, exp_avg, exp_avg_sq) was not kept between steps")
    return "keep each weight's state between calls (step counts 1, 2, 3; exp_avg and exp_avg_sq carry over)"


def _reference_train_step(params, state, loss_and_grads, lr, betas, eps, weight_decay, max_norm, no_decay):
    loss, grads = loss_and_grads(params)
    grads, norm = ref_clip_grad_norm(grads, max_norm)
    for name, grad in grads.items():
        s = state.setdefault(name, {"step": 0, "exp_avg": np.zeros_like(grad), "exp_avg_sq": np.zeros_like(grad)})
        s["step"] += 1
        params[name], s["exp_avg"], s["exp_avg_sq"] = ref_adamw_update(
            params[name], grad, s["exp_avg"], s["exp_avg_sq"], s["step"], lr, betas, eps,
            0.0 if name in no_decay else weight_decay)
    return loss, norm


def _reference_mlp_backward(grad, x, up_weight, down_weight):
    from arcee_np.blocks import mlp_backward as ref_mlp_backward
    up = x @ up_weight.T
    dx, grads = ref_mlp_backward(grad, x, up, np.maximum(up, 0) ** 2, up_weight, down_weight)
    return dx, grads["up_proj.weight"], grads["down_proj.weight"]


def _reference_attention_backward(grad_context, q, k, v, probs, scale):
    from arcee_np.blocks import attention_backward as ref_attention_backward
    B, H, T, hd = q.shape
    out = (probs @ np.repeat(v, H // k.shape[1], axis=1)).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
    return ref_attention_backward(grad_context, q, k, v, probs, out, scale)


EXERCISES = {
    "rms_norm_backward": Exercise("ex10_backward", ("rms_norm_backward",), check_rms_norm_backward),
    "mlp_backward": Exercise("ex10_backward", ("mlp_backward",), check_mlp_backward),
    "attention_backward": Exercise("ex10_backward", ("attention_backward",), check_attention_backward),
    "optimizer": Exercise("ex10_backward", ("clip_grad_norm", "adamw_update"), check_optimizer),
    "train_step": Exercise("ex10_backward", ("train_step",), check_train_step),
}
REFERENCE = {
    "rms_norm_backward": lambda grad, x, weight, eps: ref_rms_norm_backward(grad, x, weight, eps),
    "mlp_backward": _reference_mlp_backward,
    "attention_backward": _reference_attention_backward,
    "clip_grad_norm": ref_clip_grad_norm,
    "adamw_update": ref_adamw_update,
    "train_step": _reference_train_step,
}
