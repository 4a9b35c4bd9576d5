"""The exercises in notebooks/exercises/: every solution passes its check, every untouched stub fails it with
the check's own message (never an exception), and each notebook is committed unsolved, executed and clean."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
sys.path.insert(0, str(EXERCISES_DIR))

import checking  # noqa: E402
import checks  # noqa: E402

SOLUTIONS = {name: importlib.import_module(f"solutions.{name}") for name in checks.NOTEBOOKS}
s1, s2, s3, s4, s5, s6 = (SOLUTIONS[name] for name in checks.NOTEBOOKS[:6])
NAMES = list(checks.EXERCISES)
CONCEPTS_WITH_EXERCISES = {"01_tour": "ex7_tour", "02_embeddings_rmsnorm": "ex1_embeddings_rmsnorm",
                           "03_rope_yarn": "ex2_rope_yarn", "04_attention": "ex3_attention",
                           "05_mlp_relu2": "ex4_mlp_layer", "06_generation": "ex5_sampling_loss",
                           "07_golden_testing": "ex8_golden_testing", "08_attention_at_length": "ex9_online_softmax",
                           "09_backprop_training": "ex10_backward", "10_quantization": "ex11_q8_0",
                           "11_tokenization": "ex12_bpe", "12_cost_of_inference": "ex13_inference_cost",
                           "13_long_context": "ex14_long_context", "15_decoding": "ex15_decoding"}


def test_at_least_twenty_exercises_one_notebook_for_every_concept_notebook():
    assert len(checks.EXERCISES) >= 20
    assert sorted(p.stem for p in EXERCISES_DIR.glob("*.ipynb")) == sorted(SOLUTIONS)
    for concept, exercise in CONCEPTS_WITH_EXERCISES.items():
        assert (EXERCISES_DIR.parent / f"{concept}.ipynb").exists(), concept
        assert exercise in checks.NOTEBOOKS, exercise


def test_the_readme_lists_every_exercise_notebook_and_the_count():
    readme = (EXERCISES_DIR / "README.md").read_text(encoding="utf-8")
    for notebook in checks.NOTEBOOKS:
        assert f"({notebook}.ipynb)" in readme, notebook
    assert f"{len(checks.EXERCISES)} exercises" in readme.replace("\n", " ")


@pytest.mark.parametrize("notebook", sorted({e.notebook for e in checks.EXERCISES.values()}))
def test_each_exercise_notebook_is_committed_unsolved_and_executed_without_noise(notebook):
    cells = json.loads((EXERCISES_DIR / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell executed"
    verdicts = []
    for cell in code:
        for output in cell["outputs"]:
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            assert output.get("name") != "stderr" and output.get("output_type") != "error", text
            assert not any(path in text for path in ("/work", "/tmp", "/root", "/home")), text
            verdicts += [text] if text.startswith(("✓", "✗")) else []
    assert len(verdicts) >= sum(e.notebook == notebook for e in checks.EXERCISES.values()), verdicts  # one a check
    assert all(v.startswith("✗") and "not written yet" in v for v in verdicts), "every check shows: not right yet"
    stubs = [c for c in code if "exercise" in c["metadata"].get("tags", [])]
    assert stubs and all("raise NotImplementedError" in "".join(c["source"]) for c in stubs)
    assert "Next" in "".join(cells[-1]["source"])


@pytest.mark.parametrize("name", NAMES)
def test_each_exercise_has_a_stub_a_check_cell_and_a_solution(name):
    exercise = checks.EXERCISES[name]
    stubs = "\n".join(source for _, source in checking.exercise_cells(exercise.notebook))
    for function in exercise.names:
        assert f"def {function}(" in stubs or f"class {function}" in stubs, f"no stub of {function}"
        assert hasattr(SOLUTIONS[exercise.notebook], function), f"no solution of {function}"
    cells = json.loads((EXERCISES_DIR / f"{exercise.notebook}.ipynb").read_text())["cells"]
    calls = [c for c in cells if c["cell_type"] == "code" and f"{exercise.check.__name__}(" in "".join(c["source"])]
    assert calls, f"{exercise.notebook} never runs {exercise.check.__name__}"


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_passes(name):
    verdict = checks.run_exercise(name, vars(SOLUTIONS[checks.EXERCISES[name].notebook]))
    assert verdict.passed, str(verdict)
    assert str(verdict).startswith(f"✓ {name}: matches arcee_np")


@pytest.mark.parametrize("name", NAMES)
def test_the_untouched_stub_fails_with_the_checks_message(name):
    verdict = checks.run_exercise(name, checks.your_code(checks.EXERCISES[name].notebook))
    assert not verdict.passed
    text = str(verdict)
    assert text.startswith(f"✗ {name}: not right yet") and "is not written yet" in text and "hint:" in text, text


def test_a_missing_function_is_reported_not_raised():
    verdict = checks.run_exercise("embed", {})
    assert not verdict.passed and "defines no `embed`" in str(verdict)


# ---------------------------------------------------------------------------------------------- wrong answers
# (the classic mistakes and many more: tests/test_exercise_mistakes.py)
def test_an_exception_in_your_code_names_the_line():
    def embed(input_ids, weight):
        rows = weight @ input_ids      # a mistake that raises
        return rows

    text = str(checks.check_embed(embed))
    assert "`embed` raised ValueError" in text and "rows = weight @ input_ids" in text, text


# ---------------------------------------------------------------------------------------------- your code, loaded
def test_yours_or_reference_takes_your_passing_code_and_arcee_nps_otherwise(tmp_path, monkeypatch):
    """The loader runs a saved notebook's exercise cells: solved ones (here: cells importing the solutions) are used,
    unsolved ones fall back to arcee_np's functions."""
    for path in EXERCISES_DIR.glob("*.ipynb"):
        shutil.copy(path, tmp_path / path.name)
    solved = tmp_path / "ex1_embeddings_rmsnorm.ipynb"
    nb = json.loads(solved.read_text())
    for cell in nb["cells"]:
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            names = [n for n in ("embed", "rms_norm") if f"def {n}(" in "".join(cell["source"])]
            cell["source"] = [f"from solutions.ex1_embeddings_rmsnorm import {', '.join(names)}\n"]
    solved.write_text(json.dumps(nb))
    monkeypatch.setattr(checking, "HERE", tmp_path)
    monkeypatch.setattr(checks, "HERE", tmp_path)
    embed, rms_norm, attention = checks.yours_or_reference("embed", "rms_norm", "attention", quiet=True)
    assert embed is s1.embed
    assert rms_norm is s1.rms_norm
    assert attention is checks.REFERENCE["attention"]
    namespace = checks.your_code("ex4_mlp_layer")      # later notebooks see the earlier functions
    assert namespace["rms_norm"] is s1.rms_norm and namespace["attention"] is checks.REFERENCE["attention"]


def test_reference_functions_pass_every_check():
    """The fallbacks behind yours_or_reference are arcee_np's own functions in the exercises' signatures."""
    for name in NAMES:
        verdict = checks.run_exercise(name, checks.REFERENCE)
        assert verdict.passed, str(verdict)


def test_generate_text_with_the_solutions_equals_arcee_nps_generate():
    verdict = checks.generate_text(s6.arcee_forward, s3.KVCache, s5.sample_next, max_new_tokens=24, seed=3)
    assert verdict.passed, str(verdict)
    assert "token for token" in str(verdict)
