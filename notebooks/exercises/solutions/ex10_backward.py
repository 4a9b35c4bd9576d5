"""Solutions: the backward of RMSNorm, of the ReLU² MLP and of attention; clipping, AdamW and a training step."""

import numpy as np


def rms_norm_backward(grad, x, weight, eps):
    """y = w * n, n = x r, r = 1 / sqrt(mean(x^2) + eps): dw = sum over rows of grad * n;
    dx = r * (g - n * mean(g * n)) with g = grad * w. x, grad: [..., D]. Returns (dx, dweight [D])."""
    r = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    n = x * r
    g = grad * weight
    dx = r * (g - n * np.mean(g * n, axis=-1, keepdims=True))
    return dx, (grad * n).reshape(-1, x.shape[-1]).sum(axis=0)


def mlp_backward(grad, x, up_weight, down_weight):
    """mlp(x) = relu(x U^T)^2 D^T. Returns (dx [..., D], d_up_weight [I, D], d_down_weight [D, I])."""
    up = x @ up_weight.T
    act = np.maximum(up, 0) ** 2
    d_act = grad @ down_weight                          # [..., I]
    d_up = d_act * 2 * np.maximum(up, 0)                # relu(u)^2 ' = 2 relu(u)
    rows = x.shape[-1], up.shape[-1], grad.shape[-1]
    d_down = grad.reshape(-1, rows[2]).T @ act.reshape(-1, rows[1])    # [D, I]
    d_up_weight = d_up.reshape(-1, rows[1]).T @ x.reshape(-1, rows[0])  # [I, D]
    return d_up @ up_weight, d_up_weight, d_down


def attention_backward(grad_context, q, k, v, probs, scale):
    """O = P V, P = softmax(S), S = q k^T * scale, query head n reading KV head n // (H / KV).

    grad_context: [B, T, H*hd]; q: [B, H, T, hd]; k, v: [B, KV, S, hd]; probs: [B, H, T, S].
    Returns (dq [B, H, T, hd], dk, dv [B, KV, S, hd]), dk and dv summed over each KV head's query heads.
    """
    B, H, T, hd = q.shape
    KV = k.shape[1]
    group = H // KV
    d_out = grad_context.reshape(B, T, H, hd).transpose(0, 2, 1, 3)          # [B, H, T, hd]
    kk, vv = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    dv = probs.swapaxes(-1, -2) @ d_out                                      # [B, H, S, hd]
    dp = d_out @ vv.swapaxes(-1, -2)                                         # [B, H, T, S]
    ds = probs * (dp - (probs * dp).sum(axis=-1, keepdims=True))             # softmax's backward
    dq = ds @ kk * scale
    dk = ds.swapaxes(-1, -2) @ q * scale
    fold = (B, KV, group, k.shape[2], hd)                                     # sum each KV head's group
    return dq, dk.reshape(fold).sum(axis=2), dv.reshape(fold).sum(axis=2)


def clip_grad_norm(grads, max_norm):
    """The global L2 norm over every gradient; all scaled by min(1, max_norm / (norm + 1e-6))."""
    total = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    coefficient = min(1.0, max_norm / (total + 1e-6))
    return {name: g * coefficient for name, g in grads.items()}, total


def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay):
    """Decoupled weight decay, then Adam with bias correction (step counts from 1)."""
    beta1, beta2 = betas
    param = param * (1 - lr * weight_decay)
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), exp_avg, exp_avg_sq


def train_step(params, state, loss_and_grads, lr, betas, eps, weight_decay, max_norm, no_decay):
    """One step: (loss, grads) = loss_and_grads(params); clip; AdamW on every weight (no decay for the names in
    no_decay); params and state (name -> {"step", "exp_avg", "exp_avg_sq"}) are updated in place.
    Returns (loss, the norm before clipping)."""
    loss, grads = loss_and_grads(params)
    grads, norm = clip_grad_norm(grads, max_norm)
    for name, grad in grads.items():
        s = state.setdefault(name, {"step": 0, "exp_avg": np.zeros_like(grad), "exp_avg_sq": np.zeros_like(grad)})
        s["step"] += 1
        decay = 0.0 if name in no_decay else weight_decay
        params[name], s["exp_avg"], s["exp_avg_sq"] = adamw_update(
            params[name], grad, s["exp_avg"], s["exp_avg_sq"], s["step"], lr, betas, eps, decay)
    return loss, norm
