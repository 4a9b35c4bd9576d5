"""Arcee's MLP: ungated, ``down(act(up(x)))`` with ReLU² in AFM (Llama's MLP minus the gate)."""

from .activations import ACTIVATIONS
from .linear import linear


def mlp(x, up_weight, down_weight, up_bias=None, down_bias=None, activation="relu2", tap=None):
    """``down_proj(act(up_proj(x)))``; with relu2, ``down(relu(up x)^2)``.

    x: [..., D]; up_weight: [I, D]; down_weight: [D, I]; biases: [I] / [D] or None (``mlp_bias``);
    activation: a key of ACTIVATIONS; tap: optional ``tap(name, array)`` shown ``"up"`` and ``"act"``
    (both [..., I]), as the trace does. Returns [..., D].
    """
    up = linear(x, up_weight, up_bias)
    act = ACTIVATIONS[activation](up)
    if tap is not None:
        tap("up", up)
        tap("act", act)
    return linear(act, down_weight, down_bias)
