"""Every exercise in course order, arcee_np's code behind each name, and the loader that runs the exercise cells
of your saved notebooks (``your_code``, ``yours_or_reference``)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

import checking
from checking import missing, run_cells

from . import (
    ex1_embeddings_rmsnorm,
    ex2_rope_yarn,
    ex3_attention,
    ex4_mlp_layer,
    ex5_sampling_loss,
    ex6_your_arcee,
    ex7_tour,
    ex8_golden_testing,
    ex9_online_softmax,
    ex10_backward,
    ex11_q8_0,
    ex12_bpe,
    ex13_inference_cost,
    ex14_long_context,
    ex15_decoding,
)

CORE = (ex1_embeddings_rmsnorm, ex2_rope_yarn, ex3_attention, ex4_mlp_layer, ex5_sampling_loss, ex6_your_arcee)
MORE = (ex7_tour, ex8_golden_testing, ex9_online_softmax, ex10_backward, ex11_q8_0, ex12_bpe,  # one per concept
        ex13_inference_cost, ex14_long_context, ex15_decoding)        # notebook of the second half, each on its own
EXERCISES = {name: exercise for module in CORE + MORE for name, exercise in module.EXERCISES.items()}
REFERENCE = {name: code for module in CORE + MORE for name, code in module.REFERENCE.items()}
NOTEBOOKS = list(dict.fromkeys(e.notebook for e in EXERCISES.values()))
CORE_NOTEBOOKS = [module.__name__.rsplit(".", 1)[-1] for module in CORE]  # each builds on the ones before it


# ---------------------------------------------------------------------------------------------- your code, loaded
def your_code(notebook: str) -> dict:
    """The functions your saved ``notebook`` defines in its exercise cells, run with what they may use: numpy as
    np, math, and from earlier notebooks yours where they pass and arcee_np's where they do not yet."""
    return _your_code(notebook, _saved_state())


def _saved_state() -> tuple:
    """When each exercise notebook was last saved: results computed from them hold until one changes."""
    return tuple((checking.HERE / f"{name}.ipynb").stat().st_mtime_ns for name in NOTEBOOKS)


@lru_cache(maxsize=32)
def _your_code(notebook: str, state: tuple) -> dict:
    earlier = [name for e in EXERCISES.values() if notebook in CORE_NOTEBOOKS and e.notebook in CORE_NOTEBOOKS
               and CORE_NOTEBOOKS.index(e.notebook) < CORE_NOTEBOOKS.index(notebook) for name in e.names]
    namespace = {"np": np, "math": math, "__name__": f"your_{notebook}"}
    if earlier:
        namespace.update(zip(earlier, yours_or_reference(*earlier, quiet=True), strict=True))
    return run_cells(notebook, namespace)


@lru_cache(maxsize=64)
def _passes(exercise_name: str, state: tuple) -> bool:
    return run_exercise(exercise_name, _your_code(EXERCISES[exercise_name].notebook, state)).passed


def run_exercise(name: str, namespace: dict):
    """Run exercise ``name``'s check on the functions of ``namespace`` (your notebook's, or solutions')."""
    exercise = EXERCISES[name]
    functions = [namespace.get(n) or missing(n, exercise.notebook, namespace) for n in exercise.names]
    return exercise.check(*functions)


def yours_or_reference(*names, quiet: bool = False):
    """For each name, your function when its exercise passes its check, else arcee_np's; prints which is which.

    Reads the saved notebooks: save an exercise notebook before another one uses its functions.
    """
    state = _saved_state()
    chosen, yours, theirs = [], [], []
    for name in names:
        exercise_name, exercise = next((k, e) for k, e in EXERCISES.items() if name in e.names)
        if _passes(exercise_name, state):
            chosen.append(_your_code(exercise.notebook, state)[name])
            yours.append(name)
        else:
            chosen.append(REFERENCE[name])
            theirs.append(name)
    if not quiet:
        print("yours (their exercises pass):", ", ".join(yours) or "none yet")
        print("arcee_np's (your exercise does not pass yet):", ", ".join(theirs) or "none")
    return tuple(chosen)
