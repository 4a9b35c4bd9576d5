"""The activations transformers' ACT2FN gives Arcee configs: relu2 (AFM's), relu, silu, gelu, gelu_pytorch_tanh.

For float16/bfloat16 inputs, silu and the gelus are evaluated in float32 and rounded once, as torch's
kernels do; relu is exact in any dtype and relu2 rounds once, in its square.
"""

import math

from .namespace import array_namespace
from .precision import product_dtype

_ERF_TERMS = 100  # enough for float64 accuracy (~2e-15) over |x| <= 6; erf(6) is 1 to float64 precision


def relu2(x):
    """``relu(x) ** 2``: AFM's ungated MLP activation (transformers' ReLUSquaredActivation). x: any shape."""
    xp = array_namespace(x)
    r = xp.maximum(x, xp.zeros((), dtype=x.dtype))
    return r * r


def relu(x):
    """``max(x, 0)``. x: any shape."""
    xp = array_namespace(x)
    return xp.maximum(x, xp.zeros((), dtype=x.dtype))


def _in_float32(function, x):
    """``function(x)`` evaluated in float32 for float16/bfloat16 ``x`` and rounded once to x's dtype."""
    xp = array_namespace(x)
    work = product_dtype(xp, x.dtype)
    if work == x.dtype:
        return function(x)
    return xp.astype(function(xp.astype(x, work)), x.dtype)


def silu(x):
    """``x * sigmoid(x) = x / (1 + exp(-x))``. x: any shape."""
    xp = array_namespace(x)
    return _in_float32(lambda v: v / (1.0 + xp.exp(-v)), x)


def erf(x):
    """The error function, from the array API alone (which has no erf).

    ``erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))``: a series of positive terms,
    so no cancellation; summed in float64 and cast back. x: any shape.
    """
    xp = array_namespace(x)
    ax = xp.clip(xp.abs(xp.astype(x, xp.float64)), 0.0, 6.0)
    square = ax * ax
    term, total = ax, ax
    for n in range(_ERF_TERMS):
        term = term * (2.0 * square) / (2 * n + 3)
        total = total + term
    value = xp.clip((2.0 / math.sqrt(math.pi)) * xp.exp(-square) * total, 0.0, 1.0)
    return xp.astype(xp.sign(xp.astype(x, xp.float64)) * value, x.dtype)


def gelu(x):
    """Exact GELU: ``x * (1 + erf(x / sqrt(2))) / 2`` (transformers' ``"gelu"``). x: any shape."""
    return _in_float32(lambda v: 0.5 * v * (1.0 + erf(v / math.sqrt(2.0))), x)


def gelu_pytorch_tanh(x):
    """Tanh GELU: ``x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2``. x: any shape."""
    xp = array_namespace(x)
    return _in_float32(lambda v: 0.5 * v * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v * v * v))), x)


ACTIVATIONS = {
    "relu2": relu2,
    "relu": relu,
    "silu": silu,
    "gelu": gelu,
    "gelu_pytorch_tanh": gelu_pytorch_tanh,
}


# ---------------------------------------------------------------------------------------------- backward
# Each ``<name>_backward(grad, x)`` is the vector-Jacobian product of the activation at its input ``x``:
# ``dx = grad * act'(x)``, written as torch's autograd kernels write it. grad, x: the same shape.


def relu2_backward(grad, x):
    """``dx = grad * 2 relu(x)`` (the derivative of ``relu(x)**2``)."""
    return grad * (2.0 * relu(x))


def relu_backward(grad, x):
    """``dx = grad`` where ``x > 0``, else 0."""
    xp = array_namespace(grad, x)
    return xp.where(x > 0, grad, xp.zeros_like(grad))


def silu_backward(grad, x):
    """``dx = grad * s (1 + x (1 - s))`` with ``s = sigmoid(x)``."""
    xp = array_namespace(grad, x)
    s = 1.0 / (1.0 + xp.exp(-x))
    return grad * (s * (1.0 + x * (1.0 - s)))


def gelu_backward(grad, x):
    """``dx = grad * (Phi(x) + x phi(x))``: ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``,
    ``phi(x) = exp(-x^2/2) / sqrt(2 pi)``."""
    xp = array_namespace(grad, x)
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    pdf = xp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
    return grad * (cdf + x * pdf)


def gelu_pytorch_tanh_backward(grad, x):
    """``dx = grad * ((1 + t) / 2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))``,
    ``t = tanh(sqrt(2/pi) (x + 0.044715 x^3))``."""
    xp = array_namespace(grad, x)
    beta, kappa = math.sqrt(2.0 / math.pi), 0.044715
    square = x * x
    t = xp.tanh(beta * (x + kappa * square * x))
    left_derivative = 0.5 * (1.0 + t)
    right_derivative = 0.5 * x * (1.0 - t * t) * (beta * (1.0 + 3.0 * kappa * square))
    return grad * (left_derivative + right_derivative)


ACTIVATION_BACKWARDS = {
    "relu2": relu2_backward,
    "relu": relu_backward,
    "silu": silu_backward,
    "gelu": gelu_backward,
    "gelu_pytorch_tanh": gelu_pytorch_tanh_backward,
}
