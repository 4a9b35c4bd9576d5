"""The checks of exercises 24-25: Q8_0 blocks, dequantized and quantized bit for bit as ggml (gguf-py) does."""

from __future__ import annotations

import numpy as np
from arcee_np.io.quants import dequantize_q8_0 as ref_dequantize
from gguf.quants import Q8_0

from checking import EXACT, Exercise, Failure, against_array, array, call, check, first_match

from .shipped import weights


def probe_blocks() -> np.ndarray:
    """[n, 32] float32 blocks: real weights of the shipped model, then the edges where a shortcut differs."""
    real = weights()["layers.0.mlp.up_proj.weight"][:8].reshape(-1, 32)[:48]
    steps = np.arange(-16, 16, dtype=np.float32)
    edge = np.stack([
        np.zeros(32, dtype=np.float32),                                  # d = 0: q = 0, no division by zero
        steps * np.float32(0.5) + np.float32(0.25),                      # halves after scaling: rounding mode
        -np.abs(steps) - 1,                                              # the largest |x| is negative
        np.where(steps == 3, np.float32(-127), steps),                   # exactly -127: q = -127, never -128
        np.linspace(-1e-3, 2e-3, 32, dtype=np.float32),                  # small values: d far below 1
        np.full(32, np.float32(5.5)),                                    # every value at the maximum
        np.where(steps == 0, np.float32(3e4), np.float32(1)),            # one huge value: the rest rounds to 0
    ])
    halves = np.arange(32, dtype=np.float32) - np.float32(15.5)        # max|x| 127: d = 1, x / d lands on .5
    halves[0] = 127
    return np.concatenate([real, edge, halves[None], halves[None] / 2]).astype(np.float32)


@check("dequantize_q8_0")
def check_dequantize_q8_0(dequantize_q8_0):
    blocks = Q8_0.quantize_blocks(probe_blocks())
    checked = f"dequantize_q8_0(blocks) on {len(blocks)} Q8_0 blocks (34 bytes each) of real weights and edge cases"
    hint = ("d = blocks[:, :2] viewed as little-endian float16 ('<f2'), widened to float32; q = blocks[:, 2:] viewed "
            "as int8 (signed); return d * q, [n, 32] float32")
    got = array(call(dequantize_q8_0, "dequantize_q8_0", checked, blocks.copy()), "dequantize_q8_0", checked,
                (len(blocks), 32), "[n, 32]", hint)
    want = ref_dequantize(blocks)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    against_array(got, want, "the values", checked, EXACT, lambda: first_match(got, {
        "you read q as unsigned bytes (uint8); they are int8: 255 means -1": d * blocks[:, 2:].astype(np.float32),
        "you read d big-endian; GGUF is little-endian": blocks[:, :2].copy().view(">f2").astype(np.float32)
        * blocks[:, 2:].copy().view(np.int8),
        "you divided by d; Q8_0 stores x / d, so x = d * q": blocks[:, 2:].copy().view(np.int8) / d,
    }, want, EXACT), hint)
    if got.dtype != np.float32:
        raise Failure(checked, f"returned {got.dtype}; ggml dequantizes to float32", hint=hint)
    return [f"checked: {checked}: equal to arcee_np.io.quants (and gguf-py) bit for bit"]


@check("quantize_q8_0")
def check_quantize_q8_0(quantize_q8_0):
    x = probe_blocks()
    checked = (f"quantize_q8_0(x) on {len(x)} blocks of 32: real weights of the shipped model, a zero block, values "
               f"on .5 after scaling, a negative maximum, exactly -127, tiny and huge values")
    hint = ("d = max|x| / 127 in float32; q = round(x * (1 / d)) half away from zero (np.sign(y) * np.floor(|y| + "
            "0.5)), 0 where d == 0; store d as float16 (2 bytes) then q as int8: [n, 34] uint8")
    got = array(call(quantize_q8_0, "quantize_q8_0", checked, x.copy()), "quantize_q8_0", checked, (len(x), 34),
                "[n, 34] uint8 (2 bytes of d, 32 of q)", hint)
    want = Q8_0.quantize_blocks(x)
    if got.dtype != np.uint8:
        raise Failure(checked, f"returned {got.dtype}; a block is 34 bytes: view the float16 d and the int8 q as uint8 "
                      f"and concatenate them", hint=hint)
    wrong = np.argwhere(got != want)
    if wrong.size:
        block, byte = (int(i) for i in wrong[0])
        if byte < 2:
            part, yours, theirs = "d (bytes 0-1)", got[block, :2].view("<f2")[0], want[block, :2].view("<f2")[0]
        else:
            part, yours, theirs = f"q[{byte - 2}] (int8)", got[block, byte:byte + 1].view(np.int8)[0], \
                want[block, byte:byte + 1].view(np.int8)[0]
        where = (f"block {block}, {part}: yours {yours} vs gguf-py's {theirs} ({len(wrong)} "
                 f"bytes differ; block {block}: {x[block][:4].tolist()} ...)")
        raise Failure(checked, where, _quantize_mistake(got, x), hint)
    return [f"checked: {checked}: equal to gguf-py's Q8_0 (bit-exact with ggml) byte for byte"]


def _encode(d, q):
    return np.concatenate([d.astype(np.float16).view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)


def _quantize_mistake(got, x):
    absmax = np.abs(x).max(1, keepdims=True)
    d = absmax / np.float32(127)
    with np.errstate(all="ignore"):
        inv = np.where(d == 0, 0, 1 / d).astype(np.float32)
        y = x * inv

        def away(v):
            return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
        signed_max = x.max(1, keepdims=True) / np.float32(127)
        d16 = d.astype(np.float16).astype(np.float32)
        d128 = absmax / np.float32(128)
        variants = {
            "you rounded half to even (np.round / np.rint); ggml rounds half away from zero (C's roundf)":
                _encode(d, np.rint(y)),
            "you truncated toward zero (astype(int8)) instead of rounding": _encode(d, np.trunc(y)),
            "your scale uses max(x), not max(|x|): a block whose largest magnitude is negative overflows":
                _encode(signed_max, np.clip(away(x / signed_max), -128, 127)),
            "you divided by 128; Q8_0 uses 127 (q spans -127 .. 127)": _encode(d128, np.clip(away(
                x * np.where(d128 == 0, 0, np.float32(1) / d128).astype(np.float32)), -128, 127)),
            "you scaled by the float16-rounded d; ggml rounds x * (1 / d) with the float32 d and stores d as float16 "
            "afterwards": _encode(d, away(x * np.where(d16 == 0, 0, 1 / d16).astype(np.float32))),
        }
    for message, variant in variants.items():
        if np.array_equal(got, variant):
            return message
    if np.any(np.all(got[np.all(x == 0, axis=1)][:, 2:] == 0, axis=1) == 0):
        return "an all-zero block must give d = 0 and q = 0 (guard the division by d)"
    return None


EXERCISES = {
    "dequantize_q8_0": Exercise("ex11_q8_0", ("dequantize_q8_0",), check_dequantize_q8_0),
    "quantize_q8_0": Exercise("ex11_q8_0", ("quantize_q8_0",), check_quantize_q8_0),
}
REFERENCE = {"dequantize_q8_0": ref_dequantize, "quantize_q8_0": Q8_0.quantize_blocks}
