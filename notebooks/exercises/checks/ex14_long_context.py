"""The checks of exercises 29-30: linear (position interpolation) and NTK-aware RoPE scaling, against arcee_np's
rope tables."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
from arcee_np.blocks import default_inv_freq, rope_cos_sin, rope_frequencies
from arcee_np.oracle.compare import Tolerance

from checking import RELATIVE, Exercise, Failure, against_array, array, call, check, first_match

ANGLES = Tolerance(1e-5, 1e-5, "float32 angles of up to 64 radians")
CASES = ((32, 10000.0, 4.0, "the shipped model stretched 4x"), (128, 10000.0, 20.0, "AFM-4.5B's head, 20x"),
         (32, 10000.0, 1.0, "factor 1 (no stretching: plain RoPE)"), (16, 500000.0, 8.0, "head_dim 16, theta 5e5"))


@check("linear_inv_freq")
def check_linear_inv_freq(linear_inv_freq):
    hint = "inv_freq[j] = theta ** (-2j / hd) / factor: every pair turns factor times slower (positions / factor)"
    for hd, theta, factor, what in CASES:
        checked = f"linear_inv_freq({hd}, {theta:g}, {factor:g}) ({what})"
        got = array(call(linear_inv_freq, "linear_inv_freq", checked, hd, theta, factor), "linear_inv_freq", checked,
                    (hd // 2,), "[head_dim / 2]", hint)
        want, _ = rope_frequencies(hd, theta, {"rope_type": "linear", "factor": factor}, xp, xp.float32)
        plain = np.asarray(default_inv_freq(hd, theta, xp, xp.float32))
        against_array(got, want, "inv_freq", checked, RELATIVE, lambda got=got, plain=plain, hd=hd, theta=theta,
                      factor=factor, want=want: first_match(got, {
                          "you multiplied the frequencies by the factor; divide them (slower turns reach further)":
                              plain * factor,
                          "you divided theta by the factor; linear scaling divides the frequencies themselves":
                              np.asarray(default_inv_freq(hd, theta / factor, xp, xp.float32)),
                          "you multiplied theta by the factor: that changes each pair differently (NTK-like); linear "
                          "divides every frequency by factor": np.asarray(default_inv_freq(hd, theta * factor, xp,
                                                                                          xp.float32)),
                      }, np.asarray(want), RELATIVE), hint)
    hd, theta, factor, _ = CASES[0]
    checked = "cos/sin tables at positions 0..255 with your linear frequencies, against plain RoPE at positions / 4"
    inv = np.asarray(call(linear_inv_freq, "linear_inv_freq", checked, hd, theta, factor), dtype=np.float32)
    positions = np.arange(256)[None]
    cos, _ = rope_cos_sin(positions, inv, 1.0, xp.float32)
    plain_cos, _ = rope_cos_sin(positions / factor, np.asarray(default_inv_freq(hd, theta, xp, xp.float64)), 1.0,
                                xp.float32)
    against_array(np.asarray(cos), np.asarray(plain_cos), "cos", checked, ANGLES, hint=hint)
    return ["checked: linear_inv_freq for 4 heads and factors (1 included) against arcee_np's rope_frequencies, and "
            "its tables equal plain RoPE at positions / factor"]


@check("ntk_theta")
def check_ntk_theta(ntk_theta):
    hint = ("theta' = theta * factor ** (hd / (hd - 2)): then the slowest pair j = hd/2 - 1, whose frequency is "
            "theta ** (-(hd - 2) / hd), turns exactly factor times slower, and pair 0 (frequency 1) not at all")
    for hd, theta, factor, what in CASES:
        checked = f"ntk_theta({hd}, {theta:g}, {factor:g}) ({what}), through arcee_np's rope frequencies"
        got = call(ntk_theta, "ntk_theta", checked, hd, theta, factor)
        if not isinstance(got, (int, float, np.floating, np.integer)):
            raise Failure(checked, f"`ntk_theta` returned {type(got).__name__}; return one number, the new base",
                          hint=hint)
        want = theta * factor ** (hd / (hd - 2))
        inv = np.asarray(default_inv_freq(hd, float(got), xp, xp.float32))
        expected = np.asarray(default_inv_freq(hd, want, xp, xp.float32))
        against_array(inv, expected, f"inv_freq with base {float(got):.6g} (expected base {want:.6g})", checked,
                      RELATIVE, lambda got=got, hd=hd, theta=theta, factor=factor, want=want: first_match(
                          np.asarray(got), {
                          "you multiplied theta by the factor: the slowest pair then turns less than factor times "
                          "slower; the exponent hd / (hd - 2) makes it exactly factor": theta * factor,
                          "your exponent is (hd - 2) / hd; it is hd / (hd - 2)": theta * factor ** ((hd - 2) / hd),
                          "you divided theta by the factor; a larger base turns the pairs slower":
                              theta / factor ** (hd / (hd - 2)),
                      }, np.asarray(want), RELATIVE), hint)
        slowest = inv[-1] / np.asarray(default_inv_freq(hd, theta, xp, xp.float32))[-1]
        if not np.isclose(slowest, 1 / factor, rtol=1e-5):
            raise Failure(checked, f"the slowest pair turns {1 / slowest:.4g} times slower; expected {factor:g}",
                          hint=hint)
    return ["checked: ntk_theta for 4 heads and factors (1 included) through arcee_np's frequencies: the slowest pair "
            "exactly factor times slower, the fastest unchanged"]


EXERCISES = {
    "linear_inv_freq": Exercise("ex14_long_context", ("linear_inv_freq",), check_linear_inv_freq),
    "ntk_theta": Exercise("ex14_long_context", ("ntk_theta",), check_ntk_theta),
}
REFERENCE = {
    "linear_inv_freq": lambda head_dim, theta, factor: rope_frequencies(
        head_dim, theta, {"rope_type": "linear", "factor": factor}, xp, xp.float32)[0],
    "ntk_theta": lambda head_dim, theta, factor: theta * factor ** (head_dim / (head_dim - 2)),
}
