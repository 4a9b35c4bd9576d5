"""RMSNorm, with transformers' casting points."""

from .namespace import array_namespace
from .precision import as_dtype, reduction_dtype


def rms_norm(x, weight, eps):
    """``y = weight * (x / sqrt(mean(x**2, -1) + eps))``.

    As transformers' ArceeRMSNorm: the normalisation runs in float32 (float64 when ``x`` is float64,
    arcee_np's golden mode), the result is cast back to ``x``'s dtype *before* the weight multiply, and
    the product takes the wider of the two dtypes.

    x: [..., D]; weight: [D]; eps: float. Returns [..., D].
    """
    xp = array_namespace(x, weight)
    work = as_dtype(x, reduction_dtype(xp, x.dtype))
    variance = xp.sum(work * work, axis=-1, keepdims=True) / x.shape[-1]  # [..., 1]: the mean square
    normed = work * (1.0 / xp.sqrt(variance + eps))
    return weight * as_dtype(normed, x.dtype)


def rms_norm_backward(grad, x, weight, eps):
    """The vector-Jacobian product of rms_norm at ``(x, weight)``, with the forward's casting points.

    With ``r = 1 / sqrt(mean(x**2, -1) + eps)`` and ``n = x * r`` (float32, or float64), ``y = weight * n``:

    * ``dweight = sum over the leading axes of grad * n`` (n cast to x's dtype, as the forward multiplies it);
    * ``dx = r * (g - n * mean(g * n, -1))`` with ``g = grad * weight`` in float32, cast back to x's dtype.

    grad: [..., D] (the gradient of the output); x: [..., D]; weight: [D]; eps: float.
    Returns (dx [..., D], dweight [D]).
    """
    xp = array_namespace(grad, x, weight)
    work = as_dtype(x, reduction_dtype(xp, x.dtype))
    inverse = 1.0 / xp.sqrt(xp.mean(work * work, axis=-1, keepdims=True) + eps)  # [..., 1]
    normed = work * inverse
    features = x.shape[-1]
    dweight = xp.sum(xp.reshape(grad * as_dtype(normed, x.dtype), (-1, features)), axis=0)  # [D]
    g = as_dtype(grad * weight, work.dtype)
    dx = inverse * (g - normed * xp.mean(g * normed, axis=-1, keepdims=True))
    return as_dtype(dx, x.dtype), as_dtype(dweight, weight.dtype)
