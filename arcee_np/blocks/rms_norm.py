"""RMSNorm, with transformers' casting points."""

from .namespace import array_namespace
from .precision import as_dtype


def rms_norm(x, weight, eps):
    """``y = weight * (x / sqrt(mean(x**2, -1) + eps))``.

    As transformers' ArceeRMSNorm: the normalisation runs in float32 (float64 when ``x`` is float64,
    arcee_np's golden mode), the result is cast back to ``x``'s dtype *before* the weight multiply, and
    the product takes the wider of the two dtypes.

    x: [..., D]; weight: [D]; eps: float. Returns [..., D].
    """
    xp = array_namespace(x, weight)
    work = x if x.dtype == xp.float64 else as_dtype(x, xp.float32)
    variance = xp.mean(work * work, axis=-1, keepdims=True)  # [..., 1]
    normed = work * (1.0 / xp.sqrt(variance + eps))
    return weight * as_dtype(normed, x.dtype)
