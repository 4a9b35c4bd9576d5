"""Arcee's MLP: ungated, ``down(act(up(x)))`` with ReLU² in AFM (Llama's MLP minus the gate)."""

from .activations import ACTIVATION_BACKWARDS, ACTIVATIONS
from .linear import linear, linear_backward


def mlp(x, up_weight, down_weight, up_bias=None, down_bias=None, activation="relu2", tap=None):
    """``down_proj(act(up_proj(x)))``; with relu2, ``down(relu(up x)^2)``.

    x: [..., D]; up_weight: [I, D]; down_weight: [D, I]; biases: [I] / [D] or None (``mlp_bias``);
    activation: a key of ACTIVATIONS; tap: optional ``tap(name, array)`` shown ``"up"`` and ``"act"``
    (both [..., I]), whose returned arrays the MLP goes on with (as the trace does). Returns [..., D].
    """
    up = linear(x, up_weight, up_bias)
    if tap is not None:
        up = tap("up", up)
    act = ACTIVATIONS[activation](up)
    if tap is not None:
        act = tap("act", act)
    return linear(act, down_weight, down_bias)


def mlp_backward(grad, x, up, act, up_weight, down_weight, has_bias=False, activation="relu2", tap=None):
    """The vector-Jacobian product of mlp, from its saved intermediates.

    ``dact = grad @ down``, ``dup = act'(up) * dact``, ``dx = dup @ up_weight`` (ReLU²: ``act' = 2 relu``);
    the weight gradients are the two linear layers' (linear_backward).

    grad, x: [..., D]; up, act: [..., I] (the forward's ``up`` and ``act``, as its tap shows them);
    up_weight: [I, D]; down_weight: [D, I]; has_bias: ``mlp_bias``; tap: optional ``tap(name, array)`` shown
    ``"act"`` and ``"up"`` (their gradients, [..., I]), as the forward's tap shows the values.
    Returns (dx [..., D], grads), grads a dict ``{"up_proj.weight": [I, D], "down_proj.weight": [D, I]}`` plus
    ``"up_proj.bias"`` / ``"down_proj.bias"`` when has_bias.
    """
    d_act, d_down, d_down_bias = linear_backward(grad, act, down_weight, has_bias)
    if tap is not None:
        d_act = tap("act", d_act)
    d_up = ACTIVATION_BACKWARDS[activation](d_act, up)
    if tap is not None:
        d_up = tap("up", d_up)
    dx, d_up_weight, d_up_bias = linear_backward(d_up, x, up_weight, has_bias)
    grads = {"up_proj.weight": d_up_weight, "down_proj.weight": d_down}
    if has_bias:
        grads.update({"up_proj.bias": d_up_bias, "down_proj.bias": d_down_bias})
    return dx, grads
