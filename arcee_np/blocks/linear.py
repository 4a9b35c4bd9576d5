"""The linear layer of transformers (``nn.Linear``): weights stored ``[out, in]``."""

from .namespace import array_namespace


def linear(x, weight, bias=None):
    """``y = x @ weight.T (+ bias)``.

    x: [..., in]; weight: [out, in]; bias: [out] or None. Returns [..., out].
    The leading axes are folded into one so the product is a single matrix multiply.
    """
    xp = array_namespace(x, weight)
    lead = x.shape[:-1]
    y = xp.reshape(x, (-1, x.shape[-1])) @ weight.T  # [N, out]
    if bias is not None:
        y = y + bias
    return xp.reshape(y, (*lead, weight.shape[0]))


def linear_backward(grad, x, weight, has_bias=False):
    """The vector-Jacobian product of ``y = x @ weight.T (+ bias)``.

    ``dx = grad @ weight``, ``dweight = grad^T x`` (summed over every leading position),
    ``dbias = sum of grad over the leading axes``.

    grad: [..., out]; x: [..., in]; weight: [out, in]; has_bias: whether the forward added a bias.
    Returns (dx [..., in], dweight [out, in], dbias [out] or None).
    """
    xp = array_namespace(grad, x)
    rows = xp.reshape(grad, (-1, grad.shape[-1]))  # [N, out]
    inputs = xp.reshape(x, (-1, x.shape[-1]))  # [N, in]
    dx = xp.reshape(rows @ weight, (*x.shape[:-1], x.shape[-1]))
    dweight = xp.matrix_transpose(rows) @ inputs  # [out, in]
    dbias = xp.sum(rows, axis=0) if has_bias else None
    return dx, dweight, dbias
