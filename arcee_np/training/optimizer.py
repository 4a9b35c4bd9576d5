"""AdamW and global-norm gradient clipping, step for step as torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_ compute them (in float64 equal to the last bits; float32 to rounding).

    optimizer = AdamW(model.params, lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1, no_decay=norm_names)
    loss, grads = loss_and_gradients(model, ids, labels=ids)
    grads, norm = clip_grad_norm(grads, 1.0)
    optimizer.step(grads)             # updates the arrays of the params dict it was given

Both work on dicts ``{name: array}`` of any backend (NumPy, CuPy, array_api_strict); the update itself,
adamw_update, is a plain function of arrays and numbers.
"""

from __future__ import annotations

from ..blocks.namespace import array_namespace
from ..blocks.stored import is_stored

TORCH_CLIP_EPS = 1e-6  # torch adds it to the total norm before dividing


def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay):
    """One AdamW step of one tensor, in the operation order of torch's AdamW (its single-tensor path):

    ``p *= 1 - lr wd`` (decoupled weight decay); ``m = lerp(m, g, 1 - beta1)``;
    ``v = v beta2 + (1 - beta2) g g``; ``p += -lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.

    param, grad, exp_avg (m), exp_avg_sq (v): the same shape; step: t, the number of this step (from 1);
    lr, eps, weight_decay: floats; betas: (beta1, beta2). Returns the new (param, exp_avg, exp_avg_sq).
    """
    beta1, beta2 = betas
    if weight_decay != 0:
        param = param * (1 - lr * weight_decay)
    weight = 1 - beta1
    if abs(weight) < 0.5:  # torch's lerp: the form that is exact at weight 0 ...
        exp_avg = exp_avg + weight * (grad - exp_avg)
    else:  # ... or at weight 1
        exp_avg = grad - (grad - exp_avg) * (1 - weight)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    xp = array_namespace(param, grad)
    step_size = lr / (1 - beta1**step)
    denom = xp.sqrt(exp_avg_sq) / (1 - beta2**step) ** 0.5 + eps
    return param + (-step_size) * exp_avg / denom, exp_avg, exp_avg_sq


class AdamW:
    """torch.optim.AdamW over a dict of weights: ``step(grads)`` replaces each array of ``params`` by its update.

    params: ``{name: array}`` (e.g. ``model.params``, ``model.head_params``; the dict is updated in place, so
    a model holding it sees the new weights); lr, betas, eps, weight_decay: torch's arguments and defaults;
    no_decay: names that get no weight decay (torch: a parameter group with ``weight_decay=0``, as usual for
    norm weights and biases). ``lr`` may be changed between steps (a schedule). Moments start at zero and
    each weight counts its own steps, as in torch (a weight with no gradient in ``grads`` is left alone).
    """

    def __init__(self, params: dict, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, no_decay=()):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW needs lr >= 0, eps >= 0, weight_decay >= 0 and betas in [0, 1); got lr={lr}, "
                             f"eps={eps}, weight_decay={weight_decay}, betas={betas}.")
        unknown = sorted(set(no_decay) - set(params))
        if unknown:
            raise ValueError(f"no_decay names weights that are not in params: {unknown[:5]}.")
        stored = sorted(name for name, value in params.items() if is_stored(value))
        if stored:
            raise TypeError(f"AdamW updates plain arrays, but {stored[:3]} are kept in their stored dtype and widened "
                            f"on use: load the model with from_pretrained(..., widen='at_load').")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.no_decay = frozenset(no_decay)
        self.state: dict[str, dict] = {}

    def step(self, grads: dict) -> None:
        """Apply one update from ``grads`` (``{name: gradient}``, names as in params; extra names are an error)."""
        unknown = sorted(set(grads) - set(self.params))
        if unknown:
            raise KeyError(f"gradients for weights the optimizer does not hold: {unknown[:5]}.")
        for name, grad in grads.items():
            param = self.params[name]
            state = self.state.get(name)
            if state is None:
                xp = array_namespace(param)
                state = self.state[name] = {"step": 0, "exp_avg": xp.zeros_like(param),
                                            "exp_avg_sq": xp.zeros_like(param)}
            state["step"] += 1
            decay = 0.0 if name in self.no_decay else self.weight_decay
            self.params[name], state["exp_avg"], state["exp_avg_sq"] = adamw_update(
                param, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], self.lr, self.betas, self.eps,
                decay)


def clip_grad_norm(grads: dict, max_norm: float):
    """torch.nn.utils.clip_grad_norm_ (norm 2) on a dict of gradients: the global norm over all of them, and
    every gradient scaled by ``min(1, max_norm / (norm + 1e-6))``.

    grads: ``{name: array}``; max_norm: float. Returns (clipped ``{name: array}``, total norm as a 0-d array).
    """
    if not grads:
        raise ValueError("clip_grad_norm needs at least one gradient.")
    first = next(iter(grads.values()))
    xp = array_namespace(first)
    norms = xp.stack([xp.sqrt(xp.sum(g * g)) for g in grads.values()])  # per tensor, as torch's vector_norm
    total = xp.sqrt(xp.sum(norms * norms))
    coefficient = xp.minimum(max_norm / (total + TORCH_CLIP_EPS), xp.ones_like(total))
    return {name: g * coefficient for name, g in grads.items()}, total
