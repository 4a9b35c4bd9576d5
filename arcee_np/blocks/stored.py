"""Stored weights: matrices kept in the dtype they were stored in and widened a tile of rows where used.

A checkpoint's bfloat16 or float16 matrices (io/weights.py) and a GGUF file's quantized blocks
(io/gguf.py) can stay as the file stores them when the model computes in a wider dtype: a
:class:`StoredMatrix` hands out its rows widened to the compute dtype, one tile at a time, so no widened
copy of the whole matrix is ever held. The readers subclass it (they say how to widen rows); the blocks
ask ``is_stored(weight)`` and call the three products here, which are the plain formulas computed tile by
tile:

* ``weight.product(rows)`` is ``rows @ weight.T`` (the forward of ``linear``);
* ``weight.input_gradient(rows)`` is ``rows @ weight`` (the backward of ``linear``);
* ``weight.widened_take(ids)`` is ``weight[ids]`` (``embed``): only the gathered rows are widened.

On NumPy the tiles of ``product`` run side by side, one per core (blocks/tile_map.py), since widening is
an elementwise pass that NumPy runs on one core. Widening is exact, so the products equal those with the
widened matrix up to the order of their sums (tests/test_weights.py).
"""

from .namespace import array_namespace
from .tile_map import map_tiles

# A widened row tile holds at most this many elements (8 MiB in float32): it stays in the CPU's last-level
# cache while the product reads it, and is wide enough for the product to run at full speed.
ROW_TILE_ELEMENTS = 1 << 21


def is_stored(weight) -> bool:
    """Whether ``weight`` is a stored weight (a StoredMatrix) rather than a plain array."""
    return isinstance(weight, StoredMatrix)


def row_tile(columns):
    """How many rows of a ``columns``-wide weight one widened tile holds (at least 1)."""
    return max(1, ROW_TILE_ELEMENTS // columns)


class StoredMatrix:
    """A weight matrix [rows, cols] in its stored form, widened to its ``compute_dtype`` where it is used.

    Subclasses set ``shape`` ``(rows, cols)`` (transformers' ``[out, in]`` layout), ``dtype`` (the dtype
    its values have in the model), ``compute_dtype`` and the ``stored_dtype`` name, and implement
    ``widened_rows(start, stop)`` -> [stop - start, cols] and ``widened_take(indices)`` -> [n, cols], both
    in the compute dtype.
    """

    shape: tuple
    dtype: object
    compute_dtype: object

    @property
    def ndim(self) -> int:
        return 2

    def widened_rows(self, start: int, stop: int):
        """Rows ``start:stop`` in the compute dtype: [stop - start, cols]."""
        raise NotImplementedError

    def widened_take(self, indices):
        """The rows at ``indices`` (1-D integers) in the compute dtype: [n, cols]."""
        raise NotImplementedError

    def product(self, rows):
        """``rows @ self.T``, one widened tile of weight rows (output columns) at a time.

        rows: [N, in] in the compute dtype. Returns [N, out].
        """
        xp = array_namespace(rows)
        out_features, in_features = self.shape
        y = xp.empty((rows.shape[0], out_features), dtype=rows.dtype)
        step = row_tile(in_features)

        def widen_and_multiply(start):  # one tile of weight rows: the columns start:stop of y
            stop = min(start + step, out_features)
            y[:, start:stop] = rows @ self.widened_rows(start, stop).T  # [N, stop - start]

        map_tiles(widen_and_multiply, range(0, out_features, step), xp)  # independent tiles: on every core (NumPy)
        return y

    def input_gradient(self, rows):
        """``rows @ self``: the sum over tiles of weight rows of ``rows[:, tile] @ tile``.

        rows: [N, out] in the compute dtype. Returns [N, in].
        """
        out_features, in_features = self.shape
        step = row_tile(in_features)
        total = None
        for start in range(0, out_features, step):
            stop = min(start + step, out_features)
            part = rows[:, start:stop] @ self.widened_rows(start, stop)  # [N, in]
            if total is None:
                total = part
            else:
                total += part
        return total
