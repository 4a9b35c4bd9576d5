"""The checks of exercises 31-33 (ex15_decoding): min-p filtering, one beam-search step with a finished
hypothesis' score, and the acceptance rule of speculative sampling, against arcee_np.generation (whose
processors, beam search and speculative sampling equal transformers')."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
from arcee_np import ArceeForCausalLM
from arcee_np.generation import expand_beams, log_softmax, speculative_sampling
from arcee_np.generation import min_p_filter as ref_min_p

from checking import FLOAT32, Exercise, Failure, against_array, array, call, check, first_match, fmt, pair

from .ex5_sampling_loss import next_token_scores
from .shipped import TEXT, model, softmax, token_words, tokenizer

BEAM_PROMPT = "ROMEO:\n"
MASKED = np.float32(-1.0e9)  # the running score beams 1..K-1 start with, as transformers' beam search



# ---------------------------------------------------------------------------------------------- 31 min-p
@check("min_p")
def check_min_p(min_p_filter):
    scores = next_token_scores()
    words = "the next-token scores [2, V] of the shipped model after 'ROMEO:\\n' and after 'JULIET:\\nO Romeo,'"
    hint = ("probs = softmax(scores); drop (set to -inf) the tokens with probs < min_p * probs.max(axis=-1, "
            "keepdims=True); the others keep their scores unchanged")
    probs = softmax(scores, dtype=np.float64)
    for min_p in (0.05, 0.2, 0.5, 1.0):
        checked = f"min_p_filter(scores, {min_p}) on {words}"
        got = array(call(min_p_filter, "min_p_filter", checked, scores, min_p), "min_p_filter", checked,
                    scores.shape, "[B, V]", hint)
        want = np.asarray(ref_min_p(scores, min_p))
        kept, expected = np.isfinite(got), np.isfinite(want)
        if np.array_equal(kept, expected):
            if not np.array_equal(got[expected], want[expected]):
                raise Failure(checked, "the kept scores changed; a filter only removes tokens and leaves the others "
                                       "as they were (return scores, not probabilities)", hint=hint)
            continue
        fill = got[~expected]
        if fill.size and np.all(np.isfinite(fill)) and np.array_equal(got == fill.flat[0], ~expected):
            raise Failure(checked, f"removed tokens hold {fmt(float(fill.flat[0]))}; they must be -inf", hint=hint)
        row = int(np.flatnonzero((kept != expected).any(axis=1))[0])
        best = probs[row].max()
        looks = first_match(kept[row], {
            "you removed the tokens at the threshold too (<=); the best token always stays (p < min_p * max p is "
            "strict)": probs[row] > min_p * best,
            f"you compared with min_p itself (p < {min_p}); min-p is relative: p < min_p * max(p) = "
            f"{min_p} * {best:.3f}": probs[row] >= min_p,
            "you compared the scores (logits) with min_p * max(score); compare probabilities": scores[row] >= min_p *
            scores[row].max(),
            "you kept the tokens below the threshold and dropped the others": probs[row] < min_p * best,
        }, expected[row])
        extra, lost = np.flatnonzero(kept[row] & ~expected[row]), np.flatnonzero(expected[row] & ~kept[row])
        detail = (f"; you keep {token_words(extra[:3])} that should go" if extra.size else "") + \
                 (f"; you drop {token_words(lost[:3])} that should stay" if lost.size else "")
        raise Failure(checked, f"row {row}: you kept {int(kept[row].sum())} tokens; expected {int(expected[row].sum())}"
                               f" (probability >= {min_p} * {best:.3f}){detail}", looks, hint)
    return ["checked: min_p_filter for min_p = 0.05, 0.2, 0.5 and 1.0 on the shipped model's next-token scores "
            "(2 rows): the same tokens kept as arcee_np's MinPLogitsWarper, scores unchanged"]


# ---------------------------------------------------------------------------------------------- 32 beam step
def beam_log_probs(sequences) -> np.ndarray:
    """log_softmax of the shipped model's next-token logits after each running sequence [K, S]: [K, V] float32."""
    logits = np.asarray(model()(np.asarray(sequences)).logits[:, -1, :], dtype=np.float32)
    return np.asarray(log_softmax(logits), dtype=np.float32)


@check("beam_step")
def check_beam_step(beam_step, hypothesis_score):
    beams, steps = 3, 4
    prompt = np.array([tokenizer().encode(BEAM_PROMPT)] * beams)
    sequences = prompt
    running = np.array([0.0] + [MASKED] * (beams - 1), dtype=np.float32)
    hint = ("totals = running_scores[:, None] + log_probs (every beam x every token), flatten to [K * V], take the "
            "num_beams largest, best first; origin beam = index // V, token = index % V")
    for step in range(steps):
        # the first step's beams all hold the prompt: one row of log-probabilities, K times
        log_probs = beam_log_probs(sequences) if step else np.repeat(beam_log_probs(prompt[:1]), beams, axis=0)
        checked = (f"beam_step(log_probs, running_scores, {beams}) at step {step + 1} of a 3-beam search after "
                   f"{BEAM_PROMPT!r} (running_scores {np.round(running, 3).tolist()})")
        value = call(beam_step, "beam_step", checked, log_probs, running.copy(), beams)
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise Failure(checked, f"`beam_step` returned {type(value).__name__}; it should return three arrays "
                                   "(scores, beam_indices, tokens)", hint=hint)
        scores, origin, tokens = (array(v, "beam_step", checked, (beams,), "[num_beams]", hint) for v in value)
        want_scores, want_origin, want_tokens = (a[0] for a in expand_beams(log_probs[None], running[None], beams))
        if not (np.array_equal(origin, want_origin) and np.array_equal(tokens, want_tokens)):
            unsummed = np.stack(expand_beams(log_probs[None], np.zeros_like(running)[None], beams)[1:])[:, 0]
            per_beam = np.stack(_best_per_beam(log_probs, running))
            mistakes = {
                "you ranked the new tokens by their own log-probability; add each beam's running score first (the "
                "beam's whole-sequence log-probability)": unsummed,
                "you kept each beam's best token; the best continuations may all come from one beam": per_beam,
                "you swapped the beam and the token: flat index i over [K, V] is beam i // V, token i % V":
                    np.stack(_swapped(log_probs, running, beams)),
            }
            if np.array_equal(unsummed, per_beam):   # the first step: both mistakes pick one token for every beam
                mistakes = {"you left out the running scores or kept each beam's best token: beams 1..K-1 start at "
                            "-1e9 so that the first step extends beam 0 only, and the best continuations may all "
                            "come from one beam": unsummed, **dict(list(mistakes.items())[2:])}
            looks = first_match(np.stack([origin, tokens]), mistakes, np.stack([want_origin, want_tokens]))
            raise Failure(checked, f"step {step + 1}: you chose beams {origin.tolist()} tokens {tokens.tolist()} "
                                   f"({token_words(tokens)}); expected beams {want_origin.tolist()} tokens "
                                   f"{want_tokens.tolist()} ({token_words(want_tokens)})", looks, hint)
        against_array(scores, want_scores, "scores", checked, FLOAT32,
                      "the scores are the running scores plus the chosen token's log-probability", hint)
        sequences = np.concatenate([sequences[want_origin], want_tokens[:, None]], axis=1)
        running = want_scores.astype(np.float32)
    _check_hypothesis_score(hypothesis_score)
    return [f"checked: {steps} steps of a 3-beam search on the shipped model against arcee_np's expand_beams, and the "
            "finished hypothesis' score against generate's sequences_scores for length_penalty 1, 2, 0 and -0.5"]


def _best_per_beam(log_probs, running):
    tokens = np.argmax(log_probs, axis=-1)
    totals = running + log_probs[np.arange(len(running)), tokens]
    order = np.argsort(-totals, kind="stable")
    return order, tokens[order]


def _swapped(log_probs, running, beams):
    vocab = log_probs.shape[-1]
    flat = np.argsort(-(running[:, None] + log_probs).reshape(-1), kind="stable")[:beams]
    return flat % vocab, flat // vocab


def _check_hypothesis_score(hypothesis_score):
    ids = np.array([tokenizer().encode(BEAM_PROMPT)])
    hint = "score = sum_log_probs / generated_length ** length_penalty (generated tokens only, the prompt not counted)"
    for penalty in (1.0, 2.0, 0.0, -0.5):
        out = model().generate(ids, max_new_tokens=5, do_sample=False, num_beams=3, repetition_penalty=1.0,
                               length_penalty=penalty, return_dict_in_generate=True, output_scores=True)
        rows = out.beam_indices[0][out.beam_indices[0] >= 0]
        new = out.sequences[0, ids.shape[1]:ids.shape[1] + len(rows)]
        total = float(sum(out.scores[t][row, token] for t, (row, token) in enumerate(zip(rows, new, strict=True))))
        checked = (f"hypothesis_score({total:.4f}, {len(rows)}, {penalty}): the best hypothesis of "
                   f"generate(num_beams=3, max_new_tokens=5, length_penalty={penalty}) after {BEAM_PROMPT!r}")
        got = call(hypothesis_score, "hypothesis_score", checked, total, len(rows), penalty)
        got = array(got, "hypothesis_score", checked, hint=hint).reshape(-1)[:1]
        want = np.asarray(out.sequences_scores[:1], dtype=np.float64)
        T, n = ids.shape[1], len(rows)
        against_array(got, want, "sequences_scores[0]", checked, FLOAT32, lambda got=got, total=total, n=n,
                      penalty=penalty, want=want, T=T: first_match(got, {
                          "you divided by the whole length, prompt included; count the generated tokens only":
                              [total / (T + n) ** penalty],
                          "you multiplied by the length term; divide by it": [total * n ** penalty],
                          "you divided by the length without its exponent (length_penalty)": [total / n],
                          "you returned the plain sum; divide by generated_length ** length_penalty": [total],
                      }, want), hint)


# ---------------------------------------------------------------------------------------------- 33 speculative
class Uniforms:
    """Stands in for a NumPy Generator: ``random(n)`` returns the next n of the given uniforms."""

    def __init__(self, u):
        self.u, self.used = np.asarray(u, dtype=np.float64), 0

    def random(self, n):
        self.used += n
        return self.u[self.used - n:self.used]


@lru_cache(maxsize=None)
def draft_model() -> ArceeForCausalLM:
    """The shipped model's first layer (its embedding, final norm and tied head too): a 1-layer draft."""
    target = model()
    kept = {name: value for name, value in target.params.items()
            if not name.startswith("layers.") or name.startswith("layers.0.")}
    return ArceeForCausalLM(dataclasses.replace(target.config, num_hidden_layers=1), kept)


@lru_cache(maxsize=None)
def line_distributions() -> tuple:
    """(p, q): the target's and the 1-layer draft's next-token probabilities at every position of TEXT, float64."""
    ids = np.array([tokenizer().encode(TEXT)])
    logits = [np.asarray(m(ids).logits[0], dtype=np.float64) for m in (model(), draft_model())]
    return tuple(softmax(x, dtype=np.float64) for x in logits)


def speculative_cases() -> list:
    """(what, candidates [k], p [k + 1, V], q [k, V], u [k + 1]) built from the real distributions."""
    p_all, q_all = line_distributions()
    k = 4
    cases = []
    for what, start, pick, rule in (
            ("draft tokens the draft over-estimates (p < q), the third rejected", 2, np.subtract, "reject 2"),
            ("draft tokens the target likes more (p > q): all accepted, then a token from p", 8, None, "accept"),
            ("the first draft token rejected at once", 14, np.subtract, "reject 0")):
        p, q = p_all[start:start + k + 1], q_all[start:start + k]
        candidates = np.argmax(pick(q, p[:k]) if pick is not None else p[:k] - q, axis=-1)
        ratio = p[np.arange(k), candidates] / q[np.arange(k), candidates]
        u = np.append(ratio.clip(0, 1) / 2, 0.37)               # below the ratio: accepted
        if rule == "reject 2":
            u[2] = (1 + ratio[2]) / 2                             # above it: rejected
        elif rule == "reject 0":
            u[0] = (1 + ratio[0]) / 2
            u[k] = 0.81
        else:
            u[:k] = (0.9, 0.99, 0.5, 0.7)
        cases.append((what, candidates.astype(np.int64), p, q, u))
    return cases


def reference_accept(candidates, p, q, u):
    tokens, n = speculative_sampling(candidates, np.log(q), np.log(p), Uniforms(u))
    return np.asarray(tokens, dtype=np.int64), int(n)


def _accept_mistakes(candidates, p, q, u) -> dict:
    """{the classic mistake: what it returns} on one case."""
    k, rows = len(candidates), np.arange(len(candidates))
    ratio = p[rows, candidates] / q[rows, candidates]

    def finish(n, dist):
        cdf = np.cumsum(dist / dist.sum())
        return tuple(np.append(candidates[:n], min(np.searchsorted(cdf, u[k], side="right"), len(cdf) - 1))), n

    def first_false(accepted):
        return int((np.cumsum(~accepted) < 1).sum())

    n = first_false(u[:k] <= ratio)
    def residual(m):
        return np.maximum(p[m] - q[m], 0) if m < k else p[k]

    out = {
        "you accepted when p >= q; accept with probability min(1, p/q): compare a uniform u with p/q": finish(
            first_false(ratio >= 1), residual(first_false(ratio >= 1))),
        "you compared u with q/p; the ratio is target over draft, p/q": finish(
            first_false(u[:k] <= 1 / ratio), residual(first_false(u[:k] <= 1 / ratio))),
        "after a rejection you resampled from p; draw from max(p - q, 0) normalised": finish(n, p[n]),
        "after a rejection you resampled from q; draw from max(p - q, 0) normalised": finish(n, q[n] if n < k else
                                                                                             p[k]),
    }
    accepted_anywhere = u[:k] <= ratio
    if not accepted_anywhere.all() and accepted_anywhere[n + 1:].any():
        kept = candidates[accepted_anywhere]
        out["you kept testing after the first rejection; stop there: later draft tokens were drafted after the "
            "rejected one"] = (tuple(np.append(kept, -1)), int(accepted_anywhere.sum()))
    return out


@check("speculative_accept")
def check_speculative_accept(speculative_accept):
    hint = ("for i in range(k): accept candidate i when u[i] <= p[i, c_i] / q[i, c_i]; at the first rejection return "
            "(candidates[:i] + [draw from max(p[i] - q[i], 0) normalised with u[k]], i); after k acceptances draw "
            "the extra token from p[k] with u[k]. Draw as exercise 11: the first token whose cumulative "
            "probability exceeds u")
    for what, candidates, p, q, u in speculative_cases():
        k = len(candidates)
        checked = (f"speculative_accept(candidates={candidates.tolist()}, p [{k + 1}, V], q [{k}, V], "
                   f"u={np.round(u, 3).tolist()}): {what}; p and q are the shipped model's and its first layer's "
                   f"next-token probabilities along {TEXT!r}")
        value = pair(call(speculative_accept, "speculative_accept", checked, candidates.copy(), p, q, u.copy()),
                     "speculative_accept", checked, "(tokens, n_accepted)")
        tokens = array(value[0], "speculative_accept(...)[0]", checked, hint=hint).reshape(-1)
        n = value[1]
        if not isinstance(n, (int, np.integer)):
            raise Failure(checked, f"the second result is {type(n).__name__}; return the number of accepted draft "
                                   "tokens as an int", hint=hint)
        want_tokens, want_n = reference_accept(candidates, p, q, u)
        if int(n) == want_n and np.array_equal(tokens, want_tokens):
            continue
        rows = np.arange(k)
        ratio = p[rows, candidates] / q[rows, candidates]
        mistakes = _accept_mistakes(candidates, p, q, u)
        looks = next((message for message, (m_tokens, m_n) in mistakes.items()
                      if m_n == int(n) and (m_n, tuple(m_tokens)) != (want_n, tuple(want_tokens))
                      and (m_tokens[-1] == -1 and np.array_equal(tokens[:-1], m_tokens[:-1])
                           or np.array_equal(tokens, m_tokens))), None)
        if int(n) != want_n:
            where = (f"you accepted {int(n)} draft tokens; expected {want_n}: p/q = {np.round(ratio, 3).tolist()} "
                     f"against u = {np.round(u[:k], 3).tolist()}")
        elif int(n) == k and len(tokens) != k + 1:
            where = f"you returned {len(tokens)} tokens; after {k} acceptances return them and one more, from p[k]"
        else:
            where = (f"token {len(want_tokens) - 1} (the one drawn with u[k] = {u[k]:.3g}): you returned "
                     f"{tokens.tolist()}, expected {want_tokens.tolist()} ({token_words(want_tokens[-1:])})")
        raise Failure(checked, where, looks, hint)
    return ["checked: speculative_accept on 3 cases built from the shipped model (4 draft tokens each: a rejection "
            "in the middle, every token accepted, a rejection at once) against arcee_np's speculative_sampling "
            "(transformers' rule) with the same uniforms"]


# ---------------------------------------------------------------------------------------------- the exercises
EXERCISES = {
    "min_p": Exercise("ex15_decoding", ("min_p_filter",), check_min_p),
    "beam_step": Exercise("ex15_decoding", ("beam_step", "hypothesis_score"), check_beam_step),
    "speculative_accept": Exercise("ex15_decoding", ("speculative_accept",), check_speculative_accept),
}
REFERENCE = {  # arcee_np's code behind each name, in the exercises' signatures
    "min_p_filter": ref_min_p,
    "beam_step": lambda log_probs, running_scores, num_beams: tuple(
        a[0] for a in expand_beams(log_probs[None], running_scores[None], num_beams)),
    "hypothesis_score": lambda sum_log_probs, generated_length, length_penalty:
        sum_log_probs / generated_length ** length_penalty,
    "speculative_accept": reference_accept,
}
