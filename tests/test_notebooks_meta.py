"""The committed notebooks are well-formed and were executed top to bottom with their outputs kept.

This does not run them (CI runs ``pytest --nbmake notebooks``); it checks what is committed: valid nbformat,
every code cell executed, no error output, enough pictures, and files small enough to review.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MAX_BYTES = 400_000
MIN_PICTURES = 8


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
