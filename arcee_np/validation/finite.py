"""NaN and Inf are never silent in the weights (checked at load); a forward pass's output is checked by the
model classes (pretrained.py ``check_finite_output``, which reruns the forward to name where they appeared).

``check_finite_weights`` looks at every floating-point tensor once: a sum, which is NaN or Inf exactly when
a value is (or, rarely, when the sum itself overflows: then an exact test decides), so it costs one read of
the weights and no temporary arrays.
"""

from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError

_SUM_DTYPE = {"float16": np.float32, "bfloat16": np.float32}  # sum narrow floats in float32: no overflow


def check_finite_weights(tensors: dict, file: str) -> None:
    """Raise NonFiniteError at the first floating-point tensor of ``tensors`` (read from ``file``) that holds
    NaN or Inf."""
    for name, array in tensors.items():
        dtype = str(array.dtype)
        if not dtype.startswith(("float", "bfloat")) or array.size == 0:
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.sum(array, dtype=_SUM_DTYPE.get(dtype, array.dtype))
        if np.isfinite(total):
            continue
        bad = ~np.isfinite(array.astype(_SUM_DTYPE.get(dtype, array.dtype), copy=False))
        if not bad.any():
            continue  # the sum overflowed; every value is finite
        nans = int(np.isnan(array.astype(np.float32, copy=False)).sum())
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
        raise NonFiniteError(
            f"{file}: tensor {name!r} holds {nans} NaN and {int(bad.sum()) - nans} Inf values (the first at index "
            f"{first}); the checkpoint is corrupt or was saved from a diverged run. Re-download or re-save it; "
            f"from_pretrained(..., check_finite=False) loads it anyway, to inspect it.", name=name)
