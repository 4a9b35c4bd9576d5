"""The checks of exercises 11-12: the sampling step and the loss."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from arcee_np.blocks import causal_lm_loss as ref_causal_lm_loss
from arcee_np.blocks import log_softmax as ref_log_softmax
from arcee_np.generation import apply_temperature as ref_temperature
from arcee_np.generation import sample_from_scores
from arcee_np.generation import top_k_filter as ref_top_k
from arcee_np.generation import top_p_filter as ref_top_p

from checking import (
    FLOAT32,
    Exercise,
    Failure,
    against_array,
    array,
    call,
    check,
    first_match,
)

from .shipped import describe_ids, model, reference, softmax, token_words, tokenizer


# ---------------------------------------------------------------------------------------------- 11 sampling
@check("sampling")
def check_sampling(apply_temperature, top_k_filter, top_p_filter, draw, sample_next):
    scores = next_token_scores()
    V = scores.shape[1]
    words = "the next-token scores [2, V] of the shipped model after 'ROMEO:\\n' and after 'JULIET:\\nO Romeo,'"
    for t in (0.5, 1.0, 2.0):
        checked = f"apply_temperature(scores, {t}) on {words}"
        got = array(call(apply_temperature, "apply_temperature", checked, scores, t), "apply_temperature", checked,
                    scores.shape, "[B, V]")
        against_array(got, ref_temperature(scores, t), "apply_temperature", checked, FLOAT32, lambda: first_match(
            got, {"you multiplied by the temperature; divide the scores by it": scores * t}),
                      "return scores / temperature: still scores (logits), not probabilities")
    for k in (1, 5, 50):
        checked = f"top_k_filter(scores, {k}) on {words}"
        got = array(call(top_k_filter, "top_k_filter", checked, scores, k), "top_k_filter", checked, scores.shape,
                    "[B, V]")
        _kept_set(got, np.asarray(ref_top_k(scores, k)), scores, checked, f"the {k} largest scores of each row")
    for p in (0.5, 0.9):
        checked = f"top_p_filter(scores, {p}) on {words}"
        got = array(call(top_p_filter, "top_p_filter", checked, scores, p), "top_p_filter", checked, scores.shape,
                    "[B, V]")
        _kept_set(got, np.asarray(ref_top_p(scores, p)), scores, checked,
                  f"the smallest set of most likely tokens whose probability reaches {p}", p)
    filtered = np.asarray(ref_top_k(scores, 50))
    for u in (0.0, 0.05, 0.3, 0.5, 0.77, 0.999):
        us = np.array([u, 1 - u if u > 0 else 0.5])
        checked = f"draw(scores, u={us.tolist()}) on {words} after top-k 50 (the rest -inf)"
        got = np.asarray(call(draw, "draw", checked, filtered, us)).reshape(-1)
        want = sample_from_scores(filtered, FixedDraws(us))
        if got.shape != want.shape or not np.array_equal(got, want):
            raise Failure(checked, f"draw gave tokens {got.tolist()}, expected {want.tolist()} "
                          f"({token_words(want)})", _draw_mistake(got, filtered, us, want),
                          "probs = softmax(scores) (-inf gives 0); cdf = cumsum(probs) in vocabulary order; return "
                          "the first token whose cdf exceeds u, for each row")
    settings = ((0.8, 50, 0.95), (1.5, 0, 0.9), (0.5, 5, 1.0))
    for t, k, p in settings:
        us = np.array([0.42, 0.87])
        checked = f"sample_next(scores, temperature={t}, top_k={k}, top_p={p}, u={us.tolist()}) on {words}"
        got = np.asarray(call(sample_next, "sample_next", checked, scores, t, k, p, us)).reshape(-1)
        want = _reference_sample(scores, t, k, p, us)
        if not np.array_equal(got, want):
            raise Failure(checked, f"sample_next gave {got.tolist()}, expected {want.tolist()} ({token_words(want)})",
                          _order_mistake(got, scores, t, k, p, us),
                          "apply the steps in transformers' order: temperature, then top-k (0: off), then top-p "
                          "(1.0: off), then draw")
    return ["checked: temperature, top-k, top-p, the draw and the whole sampling step on the shipped model's "
            f"next-token scores ({V} tokens, 2 rows): same kept tokens, same draws"]


class FixedDraws:
    """Stands in for a NumPy Generator: ``random(n)`` returns the given uniforms."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=np.float64)

    def random(self, n):
        return self.u[:n]


def _reference_sample(scores, t, k, p, u):
    s = np.asarray(ref_temperature(scores, t))
    if k > 0:
        s = np.asarray(ref_top_k(s, k))
    if p < 1.0:
        s = np.asarray(ref_top_p(s, p))
    return sample_from_scores(s, FixedDraws(u))


@lru_cache(maxsize=None)
def next_token_scores() -> np.ndarray:
    tok = tokenizer()
    rows = [np.asarray(model()(np.array([tok.encode(text)])).logits[0, -1], dtype=np.float32)
            for text in ("ROMEO:\n", "JULIET:\nO Romeo,")]
    return np.stack(rows)


def _kept_set(got, expected, scores, checked, what, p=None):
    kept, want = np.isfinite(got), np.isfinite(expected)
    hint = (f"keep {what} unchanged and set every other score to -inf (float('-inf')), so the softmax gives it "
            f"probability exactly 0")
    fill = got[~want]
    if fill.size and np.all(fill == fill.flat[0]) and np.isfinite(fill.flat[0]) \
            and np.array_equal(got != fill.flat[0], want):
        raise Failure(checked, f"removed tokens hold {fill.flat[0]:.4g}; they must be -inf", hint=hint)
    if np.array_equal(kept, want):
        if not np.array_equal(got[want], expected[want]):
            raise Failure(checked, "the kept scores changed; a filter only removes tokens and leaves the others as "
                          "they were", hint=hint)
        return
    row = int(np.flatnonzero((kept != want).any(axis=1))[0])
    n_got, n_want = int(kept[row].sum()), int(want[row].sum())
    probs = softmax(scores[row].astype(np.float64))
    mass = f" holding {probs[kept[row]].sum():.3f} of the probability" if p is not None else ""
    looks = None
    if p is not None and n_got == n_want - 1:
        looks = (f"you dropped the token that makes the mass reach {p}: it stays, the set must reach p (the "
                 f"expected {n_want} tokens hold {probs[want[row]].sum():.3f})")
    elif p is not None and n_got == n_want + 1:
        looks = f"you kept one token more than needed: {n_want} tokens already reach {p}"
    elif p is None and n_got != n_want:
        looks = "k counts the tokens kept; ties with the k-th score stay too (compare with >=)"
    extra = np.flatnonzero(kept[row] & ~want[row])
    lost = np.flatnonzero(want[row] & ~kept[row])
    detail = (f"; you keep {token_words(extra[:3])} that should go" if extra.size else "") + \
             (f"; you drop {token_words(lost[:3])} that should stay" if lost.size else "")
    raise Failure(checked, f"row {row}: you kept {n_got} tokens{mass}; expected {n_want}{detail}", looks, hint)


def _draw_mistake(got, scores, u, want):
    probs = softmax(scores.astype(np.float64))
    order = np.argsort(-probs, axis=-1, kind="stable")
    cdf = np.cumsum(np.take_along_axis(probs, order, -1), -1)
    by_rank = np.take_along_axis(order, np.argmax(cdf > u[:, None], -1)[:, None], -1)[:, 0]
    if np.array_equal(got, by_rank):
        return ("you accumulated the probabilities from the most likely down; that is also a valid draw, but "
                "arcee_np (and so generate's seeded draws) accumulates in vocabulary order: 0, 1, 2, ...")
    if np.any(~np.isfinite(scores[np.arange(len(got)), np.clip(got, 0, scores.shape[1] - 1)])):
        return "you drew a token whose score is -inf (probability 0)"
    return None


def _order_mistake(got, scores, t, k, p, u):
    s = scores
    if p < 1.0:
        s = np.asarray(ref_top_p(s, p))
    if k > 0:
        s = np.asarray(ref_top_k(s, k))
    if np.array_equal(got, sample_from_scores(np.asarray(ref_temperature(s, t)), FixedDraws(u))):
        return "you filtered before applying the temperature; the temperature comes first"
    return None


# ---------------------------------------------------------------------------------------------- 12 the loss
@check("loss")
def check_loss(log_softmax, causal_lm_loss):
    ref = reference()
    logits, ids = ref["logits"], ref.inputs["input_ids"]
    checked = f"log_softmax(logits) on the shipped model's logits for {describe_ids(ids)}"
    hint = "log_softmax(s) = s - max(s) - log(sum(exp(s - max(s)))) over the last axis"
    got = array(call(log_softmax, "log_softmax", checked, logits), "log_softmax", checked, logits.shape, "[B, T, V]")
    against_array(got, ref_log_softmax(logits), "log_softmax", checked, FLOAT32, hint=hint)
    hot = logits * np.float32(100)
    checked_hot = f"log_softmax of logits up to {float(np.abs(hot).max()):.0f} (exp overflows float32 past 88)"
    with np.errstate(all="ignore"):
        got = array(call(log_softmax, "log_softmax", checked_hot, hot), "log_softmax", checked_hot, hot.shape)
    against_array(got, ref_log_softmax(hot), "log_softmax", checked_hot, FLOAT32,
                  "exp of a large score overflowed to inf" if not np.all(np.isfinite(got)) else None,
                  "subtract each row's maximum before exp: the result does not change, and exp can no longer "
                  "overflow")

    hint = ("the logits at position t predict token t + 1: score logits[:, :-1] against labels[:, 1:], leave out "
            "labels equal to -100, and return the mean of -log_softmax[label] over the tokens counted")
    T = ids.shape[1]
    labels_ignored = ids.copy()
    labels_ignored[:, : T // 2] = -100
    for labels, what in ((ids, "labels = input_ids"), (labels_ignored, f"the first {T // 2} labels -100")):
        checked = f"causal_lm_loss(logits, labels) on {describe_ids(ids)}, {what}"
        got = call(causal_lm_loss, "causal_lm_loss", checked, logits, labels)
        value = array(got, "causal_lm_loss", checked)
        if value.size != 1:
            raise Failure(checked, f"`causal_lm_loss` returned shape {value.shape}; expected one number (the mean)",
                          hint=hint)
        want = float(ref_causal_lm_loss(logits, labels))
        if not math.isclose(float(value), want, rel_tol=1e-5, abs_tol=1e-5):
            raise Failure(checked, f"returned {float(value):.6g} nats; expected {want:.6g} (perplexity "
                          f"{math.exp(want):.1f}), the loss arcee_np and transformers compute",
                          _loss_mistake(float(value), logits, labels), hint)
    out = model()(ids, labels=ids)
    return [f"checked: log_softmax (also on huge logits) and the loss on {describe_ids(ids)}, with and without "
            f"ignored labels: {float(out.loss):.4f} nats per token, as model(ids, labels=ids).loss"]


def _loss_mistake(value, logits, labels):
    logp = np.asarray(ref_log_softmax(logits.astype(np.float32)))
    V = logits.shape[-1]

    def nll(lp, lab, ignore=True):
        keep = lab != -100 if ignore else np.ones(lab.shape, dtype=bool)
        picked = np.take_along_axis(lp, np.clip(lab, 0, V - 1)[..., None], -1)[..., 0]
        return -picked[keep]

    shifted = nll(logp[:, :-1], labels[:, 1:])
    candidates = {
        "you scored each position against its own token; position t predicts token t + 1 (shift by one)":
            nll(logp, labels).mean(),
        "you summed the losses; take the mean over the counted tokens": shifted.sum(),
        "you counted the -100 labels; leave them out": nll(logp[:, :-1], labels[:, 1:], ignore=False).mean(),
        "you divided by every position, ignored ones included": shifted.sum() / labels[:, 1:].size,
        "your loss is in bits (log2); use the natural log (nats)": shifted.mean() / math.log(2),
    }
    return next((m for m, c in candidates.items() if math.isclose(value, float(c), rel_tol=1e-5)), None)




EXERCISES = {  # the exercises of this notebook: the names each asks for, its check
    "sampling": Exercise("ex5_sampling_loss", ("apply_temperature", "top_k_filter", "top_p_filter", "draw",
                                               "sample_next"), check_sampling),
    "loss": Exercise("ex5_sampling_loss", ("log_softmax", "causal_lm_loss"), check_loss),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "apply_temperature": ref_temperature,
    "top_k_filter": ref_top_k,
    "top_p_filter": ref_top_p,
    "draw": lambda scores, u: sample_from_scores(np.asarray(scores), FixedDraws(u)),
    "sample_next": _reference_sample,
    "log_softmax": ref_log_softmax,
    "causal_lm_loss": ref_causal_lm_loss,
}
