"""The dtypes arithmetic runs in: the two numeric rules of the whole package, stated once.

* Products (``product_dtype``): torch's CPU kernels for float16/bfloat16 matrix products accumulate in
  float32 and round the result once to the activation dtype; arcee_np does the same with float32 BLAS on
  widened operands, which is also what makes these modes run at float32 speed. float32 and float64
  products run as they are.
* Reductions (``reduction_dtype``): softmax, RMSNorm, the losses and the RoPE tables run in float32, as
  transformers upcasts them; float64 (arcee_np's golden mode) stays float64.
"""

from .namespace import array_namespace


def product_dtype(xp, dtype):
    """The dtype a product of ``dtype`` operands is computed in: float32 for float16/bfloat16, else ``dtype``."""
    return dtype if dtype == xp.float32 or dtype == xp.float64 else xp.float32


def reduction_dtype(xp, dtype):
    """The dtype a reduction over ``dtype`` values runs in: float64 stays float64, everything else float32."""
    return xp.float64 if dtype == xp.float64 else xp.float32


def as_dtype(x, dtype):
    """``x`` in ``dtype``: x itself when it already is (no call into the library), else a converted copy.
    A decode step converts hundreds of arrays that mostly have the dtype already."""
    return x if x.dtype == dtype else array_namespace(x).astype(x, dtype)


def matmul(a, b):
    """``a @ b`` computed in product_dtype and rounded once to ``a``'s dtype.

    a: [..., M, K]; b: [..., K, N] of the same dtype. Returns [..., M, N].
    """
    xp = array_namespace(a, b)
    work = product_dtype(xp, a.dtype)
    if work == a.dtype:
        return a @ b
    return xp.astype(xp.astype(a, work) @ xp.astype(b, work), a.dtype)
