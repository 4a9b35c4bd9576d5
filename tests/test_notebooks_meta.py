"""The committed notebooks are well-formed and were executed top to bottom with their outputs kept.

This does not run them (CI runs ``pytest --nbmake notebooks``); it checks what is committed: valid nbformat,
every code cell executed, no error output, enough pictures, files small enough to review, and the course's
shape: each concept notebook shows the source of a block, ends with what was learned and a link onwards, and
links only to files that exist (or to the notebooks that docs/learn.md lists).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))                 # exercises/ included
CONCEPTS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 400_000
MIN_PICTURES = 30
NO_BLOCK_SOURCE = {"12_cost_of_inference.ipynb"}   # it measures the machine; it teaches no block


def read(path):
    return nbformat.read(str(path), as_version=4)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_valid_executed_and_error_free(path):
    nb = read(path)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    for index, cell in enumerate(code):
        assert cell.get("execution_count") is not None, f"{path.name}: code cell {index} was never executed"
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        assert not errors, f"{path.name}: code cell {index} holds an error: {errors[0].get('ename')}"
    assert sum(len(cell.get("outputs", [])) for cell in code) >= len(code) // 2, \
        f"{path.name}: most code cells have no output (committed with outputs cleared?)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_size(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes (limit {MAX_BYTES})"


def count_pictures(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def test_enough_pictures():
    total = sum(count_pictures(read(path)) for path in NOTEBOOKS)
    assert total >= MIN_PICTURES, f"{total} image/png outputs across the notebooks (want >= {MIN_PICTURES})"


def markdown(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


@pytest.mark.parametrize("path", CONCEPTS, ids=lambda p: p.name)
def test_concept_notebooks_show_the_code_they_teach(path):
    if path.name in NO_BLOCK_SOURCE:
        pytest.skip(f"{path.name} teaches no block")
    code = "\n".join(cell.source for cell in read(path).cells if cell.cell_type == "code")
    assert "inspect.getsource(" in code, f"{path.name} never shows the source of the block it teaches"


@pytest.mark.parametrize("path", CONCEPTS, ids=lambda p: p.name)
def test_concept_notebooks_end_with_what_was_learned_and_where_next(path):
    last = [cell for cell in read(path).cells if cell.cell_type == "markdown"][-1].source
    assert "learned" in last.lower(), f"{path.name}: no summary of what was learned at the end"
    assert "Next" in last and re.search(r"\]\([^)]+\.ipynb\)", last), f"{path.name}: no link to the next notebook"


def _course_notebooks() -> set[str]:
    """The notebooks docs/learn.md puts on the path (some are written beside this course and may not be here)."""
    return set(re.findall(r"notebooks/([0-9][0-9]_\w+\.ipynb)", (ROOT / "docs" / "learn.md").read_text("utf-8")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_links_resolve(path):
    course = _course_notebooks()
    for target in re.findall(r"\]\(([^)#:]+)\)", markdown(read(path))):
        if (path.parent / target).exists():
            continue
        assert Path(target).name in course, f"{path.name} links to a missing {target}"


def test_learn_md_lists_every_concept_notebook_and_exercise():
    text = (ROOT / "docs" / "learn.md").read_text("utf-8")
    for path in CONCEPTS + sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb")):
        assert path.name in text, f"docs/learn.md does not list {path.name}"
