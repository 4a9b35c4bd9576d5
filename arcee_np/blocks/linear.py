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
