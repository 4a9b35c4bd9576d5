"""The checks of exercises 11-12: the sampling step and the loss."""

from __future__ import annotations

import math
from functools import lru_cache, partial

import numpy as np
from arcee_np.blocks import causal_lm_loss as ref_causal_lm_loss
from arcee_np.blocks import log_softmax as ref_log_softmax
from arcee_np.generation import apply_temperature as ref_temperature
from arcee_np.generation import sample_from_scores
from arcee_np.generation import top_k_filter as ref_top_k
from arcee_np.generation import top_p_filter as ref_top_p

from checking import (FLOAT32, Exercise, Failure, against_array, array, call, check, first_match)

from .shipped import describe_ids, model, padded_reference, reference, softmax, token_words, tokenizer


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
        against_array(got, ref_temperature(scores, t), "apply_temperature", checked, FLOAT32, partial(
            first_match, got, {"you multiplied by the temperature; divide the scores by it": scores * t}),
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
    ties = np.array([[3, 1, 2, 2, 2, 0, -1, 2], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=np.float32)
    checked = f"top_k_filter(scores, 2) on scores {ties.tolist()} (the 2nd largest ties: every tie stays)"
    got = array(call(top_k_filter, "top_k_filter", checked, ties.copy(), 2), "top_k_filter", checked, ties.shape,
                "[B, V]")
    _kept_set(got, np.asarray(ref_top_k(ties, 2)), ties, checked, "the 2 largest scores of each row, ties included")
    checked = (f"top_p_filter(scores, 0.75) on scores {ties.tolist()[1:]} (8 equal tokens, 1/8 each: 6 of them reach "
               f"0.75 exactly; among equal scores the lower token id counts as more likely)")
    got = array(call(top_p_filter, "top_p_filter", checked, ties[1:].copy(), 0.75), "top_p_filter", checked,
                ties[1:].shape, "[B, V]")
    _kept_set(got, np.asarray(ref_top_p(ties[1:], 0.75)), ties[1:], checked,
              "the smallest set of most likely tokens whose probability reaches 0.75 (ties: lower ids first)", 0.75)
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
    for t, k, p in SAMPLE_SETTINGS:
        us = np.array([0.42, 0.87])
        checked = f"sample_next(scores, temperature={t}, top_k={k}, top_p={p}, u={us.tolist()}) on {words}"
        got = np.asarray(call(sample_next, "sample_next", checked, scores, t, k, p, us)).reshape(-1)
        want = reference_sample(scores, t, k, p, us)
        if not np.array_equal(got, want):
            raise Failure(checked, f"sample_next gave {got.tolist()}, expected {want.tolist()} ({token_words(want)})",
                          _order_mistake(sample_next, scores),
                          "apply the steps in transformers' order: temperature, then top-k (0: off), then top-p "
                          "(1.0: off), then draw")
    return ["checked: temperature, top-k, top-p, the draw and the whole sampling step on the shipped model's "
            f"next-token scores ({V} tokens, 2 rows), and on tied scores at top-k's and top-p's thresholds: same kept "
            f"tokens, same draws"]


class FixedDraws:
    """Stands in for a NumPy Generator: ``random(n)`` returns the given uniforms."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=np.float64)

    def random(self, n):
        return self.u[:n]


def reference_sample(scores, t, k, p, u):
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
    elif p is None and n_got < n_want:
        looks = "ties with the k-th largest score stay too: keep every score >= the k-th largest"
    elif p is None and n_got > n_want:
        looks = "you kept more than the k largest scores: the threshold is the k-th largest, sorted in descending order"
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
    reaching = np.argmax(np.cumsum(probs, -1) >= u[:, None], -1)
    if np.array_equal(got, reaching) and not np.array_equal(reaching, want):
        return ("you took the first token whose cdf reaches u (>=); take the first whose cdf exceeds it (>): with "
                "u = 0 yours draws a token of probability 0")
    if np.any(~np.isfinite(scores[np.arange(len(got)), np.clip(got, 0, scores.shape[1] - 1)])):
        return "you drew a token whose score is -inf (probability 0)"
    return None


SAMPLE_SETTINGS = ((0.8, 50, 0.95), (1.5, 0, 0.9), (0.5, 5, 1.0), (1.3, 20, 0.8))  # temperature, top-k, top-p


def _order_mistake(sample_next, scores):
    """The slip your sample_next matches on 32 draws per row in every setting of SAMPLE_SETTINGS (one draw rarely
    tells the slips apart), if one does."""
    u = np.tile(np.linspace(0.01, 0.99, 32), len(scores))
    many = np.repeat(scores, 32, axis=0)

    def steps(t, k, p, order="tkp", use="tkp"):
        s = many
        for step in order:
            if step in use and step == "t":
                s = np.asarray(ref_temperature(s, t))
            elif step in use and step == "k" and k > 0:
                s = np.asarray(ref_top_k(s, k))
            elif step in use and step == "p" and p < 1.0:
                s = np.asarray(ref_top_p(s, p))
        return sample_from_scores(s, FixedDraws(u))
    messages = {
        "you filtered before applying the temperature; the temperature comes first": (("kpt", "tkp"), ("pkt", "tkp")),
        "your sample_next skips top-p (apply it when top_p < 1.0)": (("tkp", "tk"),),
        "your sample_next skips top-k (apply it when top_k > 0)": (("tkp", "tp"),),
        "your sample_next skips the temperature": (("tkp", "kp"),),
        "you applied top-p before top-k; transformers applies top-k first": (("tpk", "tkp"),),
    }
    matching = set(messages)
    for t, k, p in SAMPLE_SETTINGS:
        try:
            with np.errstate(all="ignore"):
                got = np.asarray(sample_next(many, t, k, p, u)).reshape(-1)
        except Exception:  # noqa: BLE001 - no diagnosis then; the verdict already says where
            return None
        if np.array_equal(got, steps(t, k, p)):
            continue
        matching &= {m for m, ways in messages.items() if any(np.array_equal(got, steps(t, k, p, *way))
                                                               for way in ways)}
    return "; or ".join(m for m in messages if m in matching) or None


# ---------------------------------------------------------------------------------------------- 12 the loss
@check("loss")
def check_loss(log_softmax, causal_lm_loss):
    ref = reference()
    logits, ids = ref["logits"], ref.inputs["input_ids"]
    checked = f"log_softmax(logits) on the shipped model's logits for {describe_ids(ids)}"
    hint = "log_softmax(s) = s - max(s) - log(sum(exp(s - max(s)))) over the last axis"
    got = array(call(log_softmax, "log_softmax", checked, logits), "log_softmax", checked, logits.shape, "[B, T, V]")
    against_array(got, ref_log_softmax(logits), "log_softmax", checked, FLOAT32, lambda: first_match(got, {
        "you took the log-softmax over the tokens (axis 1); it runs over the vocabulary (the last axis)":
            np.asarray(ref_log_softmax(np.swapaxes(logits, 1, 2))).swapaxes(1, 2),
        "you returned the softmax itself; take its log": np.exp(np.asarray(ref_log_softmax(logits))),
        "you left out the log of the sum: log_softmax(s) = s - max(s) - log(sum(exp(s - max(s))))":
            logits - logits.max(-1, keepdims=True),
    }), hint)
    hot = logits * np.float32(100)
    checked_hot = f"log_softmax of logits up to {float(np.abs(hot).max()):.0f} (exp overflows float32 past 88)"
    with np.errstate(all="ignore"):
        got = array(call(log_softmax, "log_softmax", checked_hot, hot), "log_softmax", checked_hot, hot.shape)
    expected_hot = np.asarray(ref_log_softmax(hot))
    best = np.take_along_axis(got, np.argmax(hot, axis=-1)[..., None], -1)      # the most likely tokens' values
    underflowed = bool(np.any(np.isneginf(got)) and np.all(np.isfinite(best)))    # finite there: log(softmax)
    against_array(got, expected_hot, "log_softmax", checked_hot, FLOAT32,
                  "you took log(softmax(s)): the softmax of a very unlikely token underflows to 0 and log(0) = -inf; "
                  "compute s - max - log(sum(exp(s - max))) directly" if underflowed else
                  "exp of a large score overflowed to inf" if not np.all(np.isfinite(got)) else None,
                  "subtract each row's maximum before exp: the result does not change, and exp can no longer "
                  "overflow")

    hint = ("the logits at position t predict token t + 1: score logits[:, :-1] against labels[:, 1:], leave out "
            "labels equal to -100, and return the mean of -log_softmax[label] over the tokens counted")
    T = ids.shape[1]
    labels_ignored = ids.copy()
    labels_ignored[:, : T // 2] = -100
    padded = padded_reference()
    pad_mask = padded.inputs["attention_mask"]
    pad_labels = np.where(pad_mask == 1, padded.inputs["input_ids"], -100)   # padding is not scored
    cases = ((logits, ids, describe_ids(ids) + ", labels = input_ids"),
             (logits, labels_ignored, describe_ids(ids) + f", the first {T // 2} labels -100"),
             (padded["logits"], pad_labels, f"a batch of 2 left-padded lines with {int(pad_mask[0].sum())} and "
              f"{int(pad_mask[1].sum())} tokens, the padding labelled -100"))
    for logits, labels, what in cases:
        checked = f"causal_lm_loss(logits, labels) on {what}"
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
            f"ignored labels, and on a padded batch of 2 lines of different lengths: {float(out.loss):.4f} nats per "
            f"token on the first, as model(ids, labels=ids).loss"]


def _loss_mistake(value, logits, labels):
    logp = np.asarray(ref_log_softmax(logits.astype(np.float32)))
    V = logits.shape[-1]

    def nll(lp, lab, ignore=True, wrap=False):
        keep = lab != -100 if ignore else np.ones(lab.shape, dtype=bool)
        index = np.where(lab < 0, lab + V, lab) if wrap else np.clip(lab, 0, V - 1)
        picked = np.take_along_axis(lp, index[..., None], -1)[..., 0]
        return -picked[keep]

    shifted = nll(logp[:, :-1], labels[:, 1:])
    counted = labels[:, 1:] != -100
    per_sequence = [nll(logp[b:b + 1, :-1], labels[b:b + 1, 1:]) for b in range(len(labels))]
    candidates = {
        "you scored each position against its own token; position t predicts token t + 1 (shift by one)":
            nll(logp, labels).mean(),
        "you shifted the wrong way: logits[:, t] predict labels[:, t + 1], so use logits[:, :-1] with labels[:, 1:]":
            nll(logp[:, 1:], labels[:, :-1]).mean(),
        "you summed the losses; take the mean over the counted tokens": shifted.sum(),
        "you counted the -100 labels as tokens (logp[..., -100] is the 100th token from the end): leave them out":
            nll(logp[:, :-1], labels[:, 1:], ignore=False, wrap=True).mean(),
        "you counted the -100 labels as tokens: leave them out of the sum and of the count":
            nll(logp[:, :-1], labels[:, 1:], ignore=False).mean(),
        "you divided by every position, ignored ones included": shifted.sum() / labels[:, 1:].size,
        "you averaged each sequence, then the sequences; the mean is over all counted tokens of the batch":
            np.mean([x.mean() for x in per_sequence if x.size]) if counted.any(1).all() and len(labels) > 1
            else math.nan,
        "you divided the sum by the batch size; divide by the number of counted tokens":
            shifted.sum() / len(labels),
        "your loss is in bits (log2); use the natural log (nats)": shifted.mean() / math.log(2),
    }
    want = shifted.mean()
    found = [m for m, c in candidates.items()
             if not math.isclose(want, float(c), rel_tol=1e-5) and math.isclose(value, float(c), rel_tol=1e-5)]
    return "; or ".join(found) or None


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
    "sample_next": reference_sample,
    "log_softmax": ref_log_softmax,
    "causal_lm_loss": ref_causal_lm_loss,
}
