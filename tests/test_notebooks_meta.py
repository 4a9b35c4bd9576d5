"""The committed notebooks are well-formed and were executed top to bottom with their outputs kept.

This does not run them (CI runs ``pytest --nbmake notebooks``); it checks what is committed: valid nbformat,
every code cell executed, no error output, enough pictures, files small enough to review, and the course's
shape: each concept notebook shows the source of a block, ends with what was learned and a link onwards, and
links only to files that exist (or to the notebooks that docs/learn.md lists). The committed outputs carry no
stderr, no warnings and no paths of the machine that executed them, and every "Next" link follows the path of
docs/learn.md: each concept notebook links its exercise notebook, and each notebook the one after it.
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
MACHINE_PATHS = ("/work/", "/tmp/", "/root/", "/home/", "/Users/", "site-packages", "C:\\Users")
WARNING = re.compile(r"\b[A-Z]\w*Warning\b")   # UserWarning, DeprecationWarning, TqdmWarning, ...


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
    """The notebooks docs/learn.md names (some are written beside this course and may not be here yet)."""
    return set(re.findall(r"notebooks/(?:exercises/)?((?:[0-9][0-9]|ex[0-9]+)_\w+\.ipynb)",
                          (ROOT / "docs" / "learn.md").read_text("utf-8")))


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


@pytest.mark.parametrize("path", CONCEPTS, ids=lambda p: p.name)
def test_pictures_use_the_course_style(path):
    """Every picture is drawn in notebooks/course.mplstyle (110 dpi, 10 pt): no figure overrides the dpi,
    shrinks its text below 8 pt, is wider than 8 inches, or calls tight_layout (the style's constrained
    layout is on; mixing the two warns)."""
    code = "\n".join(cell.source for cell in read(path).cells if cell.cell_type == "code")
    if "plt." not in code:
        pytest.skip(f"{path.name} draws no picture")
    assert 'plt.style.use("course.mplstyle")' in code, f"{path.name} does not use notebooks/course.mplstyle"
    assert not re.search(r"\bdpi\s*=", code), f"{path.name} overrides the style's dpi"
    small = re.findall(r"fontsize\s*=\s*([0-9.]+)", code)
    assert all(float(size) >= 8 for size in small), f"{path.name} has text of {min(map(float, small))} pt"
    wide = [float(w) for w in re.findall(r"figsize\s*=\s*\(\s*([0-9.]+)", code)]
    assert all(width <= 8 for width in wide), f"{path.name} has a figure {max(wide)} inches wide"
    assert "tight_layout" not in code, f"{path.name} calls tight_layout; the style's constrained layout is on"


def output_text(output) -> str:
    """Everything an output shows as text: a stream, the text forms of a result, an error's traceback."""
    parts = [output.get("text", "")] + ["\n".join(output.get("traceback", []))]
    parts += [value if isinstance(value, str) else "".join(value)
              for kind, value in output.get("data", {}).items() if not kind.startswith("image/")]
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_outputs_carry_no_stderr_warnings_or_machine_paths(path):
    code = [cell for cell in read(path).cells if cell.cell_type == "code"]
    for index, cell in enumerate(code):
        for output in cell.get("outputs", []):
            text = output_text(output)
            where = f"{path.name}: code cell {index}"
            assert not (output.get("output_type") == "stream" and output.get("name") == "stderr"), \
                f"{where} wrote to stderr: {text[:200]!r} (fix the cause, then execute the notebook again)"
            assert not WARNING.search(text), f"{where} shows a warning: {text[:200]!r}"
            found = [fragment for fragment in MACHINE_PATHS if fragment in text]
            assert not found, f"{where} shows a path of the machine that executed it ({found[0]}): {text[:200]!r}"


def course_path() -> list[tuple[str, str | None]]:
    """docs/learn.md's path, row by row: (the notebook read, the exercise notebook written or None), as
    paths relative to notebooks/; a row with only an exercise gives (exercise, None)."""
    text = (ROOT / "docs" / "learn.md").read_text("utf-8")
    table = text.split("## The path", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[1].strip().isdigit():
            continue
        read_, write = (re.findall(r"\(\.\./notebooks/([^)]+\.ipynb)\)", cell) for cell in cells[2:4])
        rows.append((read_[0], write[0] if write else None) if read_ else (write[0], None))
    return rows


def path_order() -> list[str]:
    """Every notebook of the path in reading order: each concept notebook, then its exercise notebook."""
    return [name for row in course_path() for name in row if name]


def next_targets(relative: str) -> list[str]:
    """The notebooks linked from the paragraph starting with "Next" in a notebook's last markdown cell, as
    paths relative to notebooks/ (empty when there is no such paragraph)."""
    path = ROOT / "notebooks" / relative
    last = [cell for cell in read(path).cells if cell.cell_type == "markdown"][-1].source
    paragraphs = [p for p in re.split(r"\n\s*\n", last) if re.search(r"(^|\s)Next\b", p)]
    links = re.findall(r"\]\(([^)#]+\.ipynb)\)", " ".join(paragraphs))
    return [(path.parent / link).resolve().relative_to((ROOT / "notebooks").resolve()).as_posix() for link in links]


def test_learn_md_path_lists_every_notebook_once():
    order = path_order()
    assert len(order) >= 20, f"docs/learn.md's path table has only {len(order)} notebooks"
    assert len(order) == len(set(order)), "a notebook appears twice on docs/learn.md's path"
    committed = {path.relative_to(ROOT / "notebooks").as_posix() for path in NOTEBOOKS}
    assert not committed - set(order), f"notebooks missing from docs/learn.md's path: {sorted(committed - set(order))}"


@pytest.mark.parametrize("position", range(len(path_order()) - 1), ids=lambda i: path_order()[i])
def test_next_link_follows_the_path(position):
    """A notebook's "Next" points to the notebook after it on docs/learn.md's path (notebooks written beside
    this one that are not committed yet are skipped: the check runs once they are)."""
    order = path_order()
    here, after = order[position], order[position + 1]
    if not (ROOT / "notebooks" / here).exists():
        pytest.skip(f"{here} is not in this tree yet")
    targets = next_targets(here)
    assert targets, f"{here}: its last markdown cell has no 'Next: [...](....ipynb)' paragraph"
    assert after in targets, f"{here}: 'Next' links {targets}, but docs/learn.md's path continues with {after}"


@pytest.mark.parametrize("row", [row for row in course_path() if row[1]], ids=lambda row: row[0])
def test_concept_notebooks_link_their_exercise(row):
    concept, exercise = row
    if not (ROOT / "notebooks" / concept).exists():
        pytest.skip(f"{concept} is not in this tree yet")
    assert exercise in next_targets(concept), f"{concept} does not link its exercise {exercise} under 'Next'"
