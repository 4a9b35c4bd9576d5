"""The one tolerance table: how close a tensor must be to its reference, by dtype and by what is compared.

Every comparison of arcee_np (``compare_traces``, ``arcee-np compare``, ``oracle.testing.assert_close``, the
golden tests) takes its numbers from ``TOLERANCES``; docs/numerics.md gives the measurements behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, InputTypeError
from ..validation.values import require_real


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise (NumPy's allclose rule)."""

    atol: float
    rtol: float
    what: str = ""

    def __str__(self):
        return f"{self.atol:.0e}" if self.rtol == 0 else f"{self.atol:.0e} + {self.rtol:.0e}*|ref|"


# The numerics contract of design.md. atol is the contract's max abs error (for values of order 1); the
# rtol term lets large intermediates (ReLU² outputs, attention scores of big models) carry the error
# their size implies in that dtype.
TOLERANCES = {
    "float32": Tolerance(1e-4, 1e-5, "float32 vs transformers float32 eager (or another float32 port)"),
    "float64": Tolerance(1e-9, 1e-10, "float64 vs transformers float64 with its float32 casts lifted"),
    # Plain transformers float64 rounds through float32 in RMSNorm, the softmax and the RoPE tables; the RoPE
    # angle pos * inv_freq in float32 is off by about pos * 6e-8 rad, so the gap grows with position (shipped
    # model's logits: 1-2e-6 at 16 positions, 2-3e-6 at 64, 2-3.5e-5 at 512). Float32-accurate, no better.
    "float64_plain": Tolerance(1e-4, 1e-5, "float64 vs plain transformers float64 (float32-accurate at its casts)"),
    # 16-bit modes: both sides multiply in float32 and round once; where their BLAS sums the products in another
    # order a result can land one ulp (2**-8 relative in bfloat16, 2**-11 in float16) away, and such flips
    # propagate through the layers (docs/numerics.md has the measured figures).
    "float16": Tolerance(1e-2, 1e-2, "float16 vs transformers float16"),
    "bfloat16": Tolerance(2e-2, 2e-2, "bfloat16 vs transformers bfloat16"),
    "kv_cache": Tolerance(1e-5, 1e-6, "KV-cache decode vs the full forward"),
    "cupy": Tolerance(1e-4, 1e-5, "CuPy float32 vs NumPy float32"),
    # Gradients are smaller than activations (a loss's gradient is about 1/tokens per entry): a tighter atol,
    # with the rtol term carrying the float32 rounding that the large ones accumulate (measured: docs/numerics.md).
    "gradients_float32": Tolerance(1e-5, 1e-4, "gradients, float32 vs transformers float32 autograd"),
    "gradients_float64": Tolerance(1e-10, 1e-10, "gradients, float64 vs transformers float64 (casts lifted) autograd"),
    # The golden fixtures (tests/golden*/, from scripts/make_golden*.py): tiny models on short inputs, compared as
    # max abs error, hold tighter numbers than the contract; each fixture's tolerance is one of these rows.
    "golden_float32": Tolerance(1e-4, 0.0, "golden fixtures: float32 vs transformers float32 eager"),
    "golden_float64_plain": Tolerance(1e-6, 0.0, "golden fixtures: float64 vs plain transformers float64"),
    "golden_float64": Tolerance(1e-9, 0.0, "golden fixtures: float64 vs transformers float64, casts lifted"),
    "golden_float16": Tolerance(1e-2, 0.0, "golden fixtures: float16 vs transformers float16"),
    "golden_bfloat16": Tolerance(1e-3, 2.0 ** -7, "golden fixtures: bfloat16 vs transformers bfloat16 (1 ulp of "
                                 "bfloat16 relative)"),
    "golden_gradients_float64": Tolerance(1e-10, 0.0, "golden fixtures: gradients, float64 vs transformers float64 "
                                          "(casts lifted) autograd"),
    "golden_layer_float32": Tolerance(1e-5, 0.0, "golden fixtures: one decoder layer, float32 vs transformers"),
    # The same forward on array_api_strict and on NumPy: the same operations in the same order.
    "array_api_strict_float32": Tolerance(1e-6, 0.0, "array_api_strict vs NumPy, float32"),
    "array_api_strict_float64": Tolerance(1e-12, 0.0, "array_api_strict vs NumPy, float64"),
}


def gradient_tolerance_for(dtype=None, against: str | None = None) -> Tolerance:
    """The TOLERANCES row for gradients in ``dtype``: float64 (lifted) or, for anything else and for plain
    transformers float64 (``against="transformers"``), the float32 row."""
    name = np.dtype(dtype).name if dtype is not None and not isinstance(dtype, str) else (dtype or "float32")
    lifted = name == "float64" and against != "transformers"
    return TOLERANCES["gradients_float64" if lifted else "gradients_float32"]


def tolerance_for(dtype=None, against: str | None = None, tolerance=None) -> Tolerance:
    """The Tolerance to use: ``tolerance`` itself (a Tolerance, a key of TOLERANCES, or ``(atol, rtol)``),
    else the row of TOLERANCES for ``dtype`` (a name or dtype object; float64 against plain ``"transformers"``
    uses ``float64_plain``)."""
    if isinstance(tolerance, Tolerance):
        return tolerance
    if isinstance(tolerance, str):
        if tolerance not in TOLERANCES:
            raise InputError(f"unknown tolerance {tolerance!r}; choose one of {', '.join(TOLERANCES)}.")
        return TOLERANCES[tolerance]
    if tolerance is not None:
        if not (isinstance(tolerance, (tuple, list)) and len(tolerance) == 2):
            raise InputTypeError(f"tolerance must be a Tolerance, a row of TOLERANCES or (atol, rtol), got "
                                 f"{tolerance!r}.")
        atol, rtol = (require_real(name, value, InputError, low=0)
                      for name, value in zip(("atol", "rtol"), tolerance, strict=True))
        return Tolerance(atol, rtol, "given")
    name = np.dtype(dtype).name if dtype is not None and not isinstance(dtype, str) else (dtype or "float32")
    if name == "float64" and against == "transformers":
        name = "float64_plain"
    if name not in TOLERANCES:
        raise InputError(f"no tolerance for dtype {name!r}; pass tolerance= (one of {', '.join(TOLERANCES)} "
                         f"or (atol, rtol)).")
    return TOLERANCES[name]
