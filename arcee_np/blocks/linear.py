"""The linear layer of transformers (``nn.Linear``): weights stored ``[out, in]``, in any dtype."""

from .namespace import array_namespace
from .precision import as_dtype, product_dtype

# A widened row tile holds at most this many elements (2 MiB in float32): it stays in the CPU's cache
# while the product reads it.
ROW_TILE_ELEMENTS = 1 << 19


def linear(x, weight, bias=None):
    """``y = x @ weight.T (+ bias)``.

    x: [..., in]; weight: [out, in], an array or a *stored weight* (an object with ``shape`` and
    ``widened_rows(start, stop)``, which keeps its values in the dtype they were stored in: bfloat16,
    float16, quantized blocks ...); bias: [out] or None. Returns [..., out] in x's dtype.

    The leading axes are folded into one so the product is a single matrix multiply. For float16 and
    bfloat16 activations it runs in float32 and the result is rounded once, as torch's CPU kernels do. A
    stored weight is widened one tile of rows at a time (``row_tile``), so no widened copy of the whole
    matrix is ever held.
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
    for start in range(0, out_features, step):
        stop = min(start + step, out_features)
        y[:, start:stop] = rows @ weight.widened_rows(start, stop).T  # [N, stop - start]
    return y
