"""The linear layer of transformers (``nn.Linear``): weights stored ``[out, in]``, in any dtype."""

import math
import warnings

from .namespace import array_namespace
from .precision import as_dtype, product_dtype, times_transposed
from .stacked import row_stack_of
from .stored import is_stored


def linear(x, weight, bias=None):
    """``y = x @ weight.T (+ bias)``.

    x: [..., in]; weight: [out, in], an array or a stored weight (blocks/stored.py: kept in the dtype it
    was stored in, multiplied one widened tile of rows at a time); bias: [out] or None. Returns [..., out]
    in x's dtype.

    The leading axes are folded into one so the product is a single matrix multiply (with few rows, weight
    first: blocks/precision.py ``times_transposed``). For float16 and bfloat16 activations it runs in
    float32 and the result is rounded once, as torch's CPU kernels do.
    """
    xp = array_namespace(x)
    work = product_dtype(xp, x.dtype)
    rows = as_dtype(xp.reshape(x, (-1, x.shape[-1])), work)  # [N, in]
    y = weight.product(rows) if is_stored(weight) else times_transposed(rows, as_dtype(weight, work))  # [N, out]
    if bias is not None:
        y = y + as_dtype(bias, work)
    return xp.reshape(as_dtype(y, x.dtype), (*x.shape[:-1], weight.shape[0]))


# Stacked weights are multiplied as one product for at most this many rows (positions): a decode step, a
# short prompt, a draft's verification, where a product's fixed cost and a small product's single BLAS thread
# show. A long prompt's products are large enough to run at full speed one by one, and three separate outputs
# let q's be freed after RoPE, which its peak memory feels.
STACKED_ROWS = 256


def linear_stacked(x, weights, biases) -> list:
    """``[linear(x, w, b) for w, b in zip(weights, biases)]``: the same products of one input with several
    weights, as one product when the weights are the consecutive rows of one array (blocks/stacked.py), none
    has a bias and ``x`` has at most STACKED_ROWS rows; else one by one.

    x: [..., in]; weights: [out_i, in] each; biases: [out_i] or None each. Returns a list of [..., out_i]
    (with a stack, views of the one product's [..., sum out_i]).
    """
    few = math.prod(x.shape[:-1]) <= STACKED_ROWS and all(bias is None for bias in biases)
    stack = row_stack_of(weights) if few else None
    if stack is None:
        return [linear(x, weight, bias) for weight, bias in zip(weights, biases, strict=True)]
    y = linear(x, stack)  # [..., sum out_i]
    parts, start = [], 0
    for weight in weights:
        parts.append(y[..., start:start + weight.shape[0]])
        start += weight.shape[0]
    return parts


def linear_backward(grad, x, weight, has_bias=False):
    """The vector-Jacobian product of ``y = x @ weight.T (+ bias)``.

    ``dx = grad @ weight``, ``dweight = grad^T x`` (summed over every leading position),
    ``dbias = sum of grad over the leading axes``.

    grad: [..., out]; x: [..., in]; weight: [out, in], an array or a stored weight (as for ``linear``);
    has_bias: whether the forward added a bias. The products run in the compute dtype (float32 for
    float16/bfloat16 activations, as the forward's). Returns (dx [..., in], dweight [out, in], dbias [out]
    or None), in x's dtype.
    """
    xp = array_namespace(grad, x)
    work = product_dtype(xp, x.dtype)
    rows = as_dtype(xp.reshape(grad, (-1, grad.shape[-1])), work)  # [N, out]
    inputs = as_dtype(xp.reshape(x, (-1, x.shape[-1])), work)  # [N, in]
    dx = weight.input_gradient(rows) if is_stored(weight) else rows @ as_dtype(weight, work)  # [N, in]
    dweight = xp.matrix_transpose(rows) @ inputs  # [out, in]
    dbias = as_dtype(xp.sum(rows, axis=0), x.dtype) if has_bias else None
    return xp.reshape(as_dtype(dx, x.dtype), x.shape), as_dtype(dweight, x.dtype), dbias


_MOVED = {"ROW_TILE_ELEMENTS": "arcee_np.blocks.stored.ROW_TILE_ELEMENTS",
          "row_tile": "arcee_np.blocks.stored.row_tile", "tiled_product": "arcee_np.blocks.stored.StoredMatrix.product",
          "tiled_input_gradient": "arcee_np.blocks.stored.StoredMatrix.input_gradient"}


def __getattr__(name: str):
    """The stored-weight products that moved to blocks/stored.py, with a DeprecationWarning naming where."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import stored

    warnings.warn(f"arcee_np.blocks.linear.{name} is deprecated: use {_MOVED[name]}", DeprecationWarning,
                  stacklevel=2)
    if name == "tiled_product":
        return lambda rows, weight: weight.product(rows)
    if name == "tiled_input_gradient":
        return lambda rows, weight: weight.input_gradient(rows)
    return getattr(stored, name)
