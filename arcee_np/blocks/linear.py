"""The linear layer of transformers (``nn.Linear``): weights stored ``[out, in]``, in any dtype."""

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


def linear_stacked(x, weights, biases) -> list:
    """``[linear(x, w, b) for w, b in zip(weights, biases)]``: the same products of one input with several
    weights, as one product in a decode step (one new position per sequence) when the weights are the
    consecutive rows of one array (blocks/stacked.py) and none has a bias; else one by one.

    A decode step's products are matrix-vector products, whose fixed cost, and for small ones the single
    BLAS thread they get, one product pays once. A prompt's products are matrix products, each large enough
    to run at full speed alone; one by one they give the plain formulas' numbers bit for bit, and q's output
    can be freed after RoPE, which a long prompt's peak memory feels.

    x: [B, T, in]; weights: [out_i, in] each; biases: [out_i] or None each. Returns a list of [B, T, out_i]
    (with a stack, views of the one product's [B, 1, sum out_i]).
    """
    decode_step = x.shape[-2] == 1 and all(bias is None for bias in biases)
    stack = row_stack_of(weights) if decode_step else None
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
