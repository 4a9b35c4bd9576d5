"""The decoding exercises (notebooks/exercises/ex15_decoding.ipynb): every solution passes its check, every
untouched stub fails it with the check's own message, and classic wrong answers get their diagnosis."""

from __future__ import annotations

import json
import linecache
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
sys.path.insert(0, str(EXERCISES_DIR))

import checking  # noqa: E402
import checks_decoding as checks  # noqa: E402
from solutions import ex15_decoding as solution  # noqa: E402

NOTEBOOK = "ex15_decoding"
NAMES = list(checks.EXERCISES)


def run(name: str, namespace: dict):
    exercise = checks.EXERCISES[name]
    return exercise.check(*[namespace.get(n) or checking.missing(n, NOTEBOOK, namespace) for n in exercise.names])


def test_three_exercises_each_with_a_stub_a_check_cell_and_a_solution():
    assert len(NAMES) >= 3
    stubs = "\n".join(source for _, source in checking.exercise_cells(NOTEBOOK))
    cells = json.loads((EXERCISES_DIR / f"{NOTEBOOK}.ipynb").read_text(encoding="utf-8"))["cells"]
    for exercise in checks.EXERCISES.values():
        for function in exercise.names:
            assert f"def {function}(" in stubs and hasattr(solution, function), function
        assert any(f"{exercise.check.__name__}(" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_committed_unsolved_and_executed_without_noise():
    cells = json.loads((EXERCISES_DIR / f"{NOTEBOOK}.ipynb").read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code)
    texts = ["".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
             for c in code for o in c["outputs"]]
    assert not any(o.get("name") == "stderr" or o.get("output_type") == "error" for c in code for o in c["outputs"])
    assert not any(path in text for text in texts for path in ("/work", "/tmp", "/root", "/home"))
    verdicts = [t for t in texts if t.startswith(("✓", "✗"))]
    assert len(verdicts) == len(NAMES) and all(t.startswith("✗") and "not written yet" in t for t in verdicts)
    assert "Next" in "".join(cells[-1]["source"])


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_passes(name):
    verdict = run(name, vars(solution))
    assert verdict.passed, str(verdict)
    assert str(verdict).startswith(f"✓ {name}: matches arcee_np")


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes(name):
    verdict = run(name, checks.REFERENCE)
    assert verdict.passed, str(verdict)


@pytest.mark.parametrize("name", NAMES)
def test_the_untouched_stub_fails_with_the_checks_message(name):
    namespace = checking.run_cells(NOTEBOOK, {"np": np, "math": math, "__name__": "your_ex15"})
    verdict = run(name, namespace)
    text = str(verdict)
    assert not verdict.passed
    assert text.startswith(f"✗ {name}: not right yet") and "is not written yet" in text and "hint:" in text, text


# ---------------------------------------------------------------------------------------------- wrong answers
def _min_p_absolute(scores, min_p):
    return np.where(solution.softmax(scores.astype(np.float64)) < min_p, -np.inf, scores)


def _min_p_non_strict(scores, min_p):
    probs = solution.softmax(scores.astype(np.float64))
    return np.where(probs <= min_p * probs.max(axis=-1, keepdims=True), -np.inf, scores)


def _beam_not_accumulated(log_probs, running_scores, num_beams):
    _, origin, tokens = solution.beam_step(log_probs, np.zeros_like(running_scores), num_beams)
    return running_scores[origin] + log_probs[origin, tokens], origin, tokens


def _beam_best_per_beam(log_probs, running_scores, num_beams):
    tokens = np.argmax(log_probs, axis=-1)
    totals = running_scores + log_probs[np.arange(len(tokens)), tokens]
    order = np.argsort(-totals, kind="stable")[:num_beams]
    return totals[order], order, tokens[order]


def _beam_swapped(log_probs, running_scores, num_beams):
    scores, origin, tokens = solution.beam_step(log_probs, running_scores, num_beams)
    flat = origin * log_probs.shape[-1] + tokens
    return scores, flat % log_probs.shape[-1], flat // log_probs.shape[-1]


def _accept_when_p_above_q(candidates, p, q, u):
    return solution.speculative_accept(candidates, p, q, np.append(np.where(
        p[np.arange(len(candidates)), candidates] >= q[np.arange(len(candidates)), candidates], 0.0, 0.999999),
        u[-1]))


def _resample_from_p(candidates, p, q, u):
    tokens, n = solution.speculative_accept(candidates, p, q, u)
    if n < len(candidates):
        tokens[-1] = solution.draw(p[n], u[-1])
    return tokens, n


def _keep_testing(candidates, p, q, u):
    k = len(candidates)
    accepted = u[:k] <= p[np.arange(k), candidates] / q[np.arange(k), candidates]
    tokens, n = solution.speculative_accept(candidates, p, q, u)
    return np.append(candidates[accepted], tokens[-1]), int(accepted.sum())


WRONG = {  # the exercise, the wrong functions, what the verdict must say
    "min_p absolute": ("min_p", [_min_p_absolute], ["you compared with min_p itself", "relative"]),
    "min_p with <=": ("min_p", [_min_p_non_strict], ["min_p_filter(scores, 1.0)", "the best token always stays"]),
    "min_p filling with 0": ("min_p", [lambda s, m: np.where(np.isinf(solution.min_p_filter(s, m)), 0.0, s)],
                             ["removed tokens hold 0; they must be -inf"]),
    "min_p returning probabilities": ("min_p", [lambda s, m: np.where(np.isinf(solution.min_p_filter(s, m)),
                                                                      -np.inf, solution.softmax(s))],
                                      ["the kept scores changed"]),
    "beam scores not accumulated": ("beam_step", [_beam_not_accumulated, solution.hypothesis_score],
                                    ["step 1", "you left out the running scores", "extends beam 0 only"]),
    "beam: each beam's best token": ("beam_step", [_beam_best_per_beam, solution.hypothesis_score],
                                     ["step 1", "kept each beam's best token", "may all come from one beam"]),
    "beam and token swapped": ("beam_step", [_beam_swapped, solution.hypothesis_score], ["beam i // V, token i % V"]),
    "length penalty over the whole length": ("beam_step", [solution.beam_step, lambda s, n, lp: s / (n + 4) ** lp],
                                             ["length_penalty=1.0", "prompt included"]),
    "length penalty without its exponent": ("beam_step", [solution.beam_step, lambda s, n, lp: s / n],
                                            ["length_penalty=2.0", "without its exponent"]),
    "accept when p > q": ("speculative_accept", [_accept_when_p_above_q],
                          ["you accepted 0 draft tokens; expected 2", "accept with probability min(1, p/q)"]),
    "resample from p": ("speculative_accept", [_resample_from_p], ["drawn with u[k]", "you resampled from p"]),
    "keep testing after a rejection": ("speculative_accept", [_keep_testing],
                                       ["you accepted 3 draft tokens; expected 2", "stop there"]),
}


@pytest.mark.parametrize("mistake", sorted(WRONG))
def test_a_classic_mistake_gets_its_diagnosis(mistake):
    name, functions, fragments = WRONG[mistake]
    verdict = run(name, dict(zip(checks.EXERCISES[name].names, functions, strict=True)))
    missing = [f for f in fragments if f not in " ".join(str(verdict).split())]   # the verdict wraps long lines
    assert not verdict.passed and not missing, f"{mistake}: {missing} not in\n{verdict}"


def test_an_exception_in_your_code_names_its_line():
    source = "def speculative_accept(candidates, p, q, u):\n    ratio = p / q    # shapes [k + 1, V] and [k, V]\n"
    linecache.cache["<your cell>"] = (len(source), None, source.splitlines(keepends=True), "<your cell>")
    namespace = {}
    exec(compile(source, "<your cell>", "exec"), namespace)
    text = " ".join(str(run("speculative_accept", namespace)).split())
    assert "`speculative_accept` raised ValueError" in text and "ratio = p / q" in text, text
