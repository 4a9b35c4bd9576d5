"""The linear layer of transformers (``nn.Linear``): weights stored ``[out, in]``, in any dtype."""

from .namespace import array_namespace
from .precision import as_dtype, product_dtype
from .tile_map import map_tiles

# A widened row tile holds at most this many elements (8 MiB in float32): it stays in the CPU's last-level
# cache while the product reads it, and is wide enough for the product to run at full speed.
ROW_TILE_ELEMENTS = 1 << 21


def linear(x, weight, bias=None):
    """``y = x @ weight.T (+ bias)``.

    x: [..., in]; weight: [out, in], an array or a *stored weight* (an object with ``shape`` and
    ``widened_rows(start, stop)``, which keeps its values in the dtype they were stored in: bfloat16,
    float16, quantized blocks ...); bias: [out] or None. Returns [..., out] in x's dtype.

    The leading axes are folded into one so the product is a single matrix multiply. For float16 and
    bfloat16 activations it runs in float32 and the result is rounded once, as torch's CPU kernels do. A
    stored weight is widened one tile of rows at a time (``row_tile``), so no widened copy of the whole
    matrix is ever held; on NumPy the tiles run side by side, one per core (blocks/tile_map.py), since
    widening is an elementwise pass that NumPy runs on one core.
    """
    xp = array_namespace(x)
    lead = x.shape[:-1]
    work = product_dtype(xp, x.dtype)
    rows = as_dtype(xp.reshape(x, (-1, x.shape[-1])), work)  # [N, in]
    if hasattr(weight, "widened_rows"):
        y = tiled_product(rows, weight)
    else:
        y = rows @ as_dtype(weight, work).T  # [N, out]
    if bias is not None:
        y = y + as_dtype(bias, work)
    return xp.reshape(as_dtype(y, x.dtype), (*lead, weight.shape[0]))


def row_tile(columns):
    """How many rows of a ``columns``-wide weight one widened tile holds (at least 1)."""
    return max(1, ROW_TILE_ELEMENTS // columns)


def tiled_product(rows, weight):
    """``rows @ weight.T`` for a stored weight, one widened tile of weight rows (output columns) at a time.

    rows: [N, in] in the compute dtype; weight: a stored weight [out, in]. Returns [N, out].
    """
    xp = array_namespace(rows)
    out_features, in_features = weight.shape
    y = xp.empty((rows.shape[0], out_features), dtype=rows.dtype)
    step = row_tile(in_features)

    def widen_and_multiply(start):  # one tile of weight rows: the columns start:stop of y
        stop = min(start + step, out_features)
        y[:, start:stop] = rows @ weight.widened_rows(start, stop).T  # [N, stop - start]

    map_tiles(widen_and_multiply, range(0, out_features, step), xp)  # independent tiles: on every core (NumPy)
    return y


def linear_backward(grad, x, weight, has_bias=False):
    """The vector-Jacobian product of ``y = x @ weight.T (+ bias)``.

    ``dx = grad @ weight``, ``dweight = grad^T x`` (summed over every leading position),
    ``dbias = sum of grad over the leading axes``.

    grad: [..., out]; x: [..., in]; weight: [out, in], an array or a stored weight (as for ``linear``);
    has_bias: whether the forward added a bias. The products run in the compute dtype (float32 for
    float16/bfloat16 activations, as the forward's); with a stored weight ``dx`` sums the products of
    ``grad``'s column tiles with widened tiles of the weight's rows, so no widened copy of the matrix is held.
    Returns (dx [..., in], dweight [out, in], dbias [out] or None), in x's dtype.
    """
    xp = array_namespace(grad, x)
    work = product_dtype(xp, x.dtype)
    rows = as_dtype(xp.reshape(grad, (-1, grad.shape[-1])), work)  # [N, out]
    inputs = as_dtype(xp.reshape(x, (-1, x.shape[-1])), work)  # [N, in]
    if hasattr(weight, "widened_rows"):
        dx = tiled_input_gradient(rows, weight)
    else:
        dx = rows @ as_dtype(weight, work)  # [N, in]
    dweight = xp.matrix_transpose(rows) @ inputs  # [out, in]
    dbias = as_dtype(xp.sum(rows, axis=0), x.dtype) if has_bias else None
    return xp.reshape(as_dtype(dx, x.dtype), x.shape), as_dtype(dweight, x.dtype), dbias


def tiled_input_gradient(rows, weight):
    """``rows @ weight`` for a stored weight: the sum over tiles of weight rows of ``rows[:, tile] @ tile``.

    rows: [N, out] in the compute dtype; weight: a stored weight [out, in]. Returns [N, in].
    """
    out_features, in_features = weight.shape
    step = row_tile(in_features)
    total = None
    for start in range(0, out_features, step):
        stop = min(start + step, out_features)
        part = rows[:, start:stop] @ weight.widened_rows(start, stop)  # [N, in]
        if total is None:
            total = part
        else:
            total += part
    return total
