"""Every ```python block of README.md and docs/*.md runs.

The blocks of one file run in order in one shared namespace (a reader pastes them into one session), with
a fresh temporary directory as the working directory, so snippets that write files leave nothing behind. A
block may opt out only when the line before its fence is an HTML comment ``<!-- not-run: reason -->``
(CUDA-only snippets and the like); the reason is required.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^([ \t]*)```python[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)  # also fences indented in lists
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.*?)\s*-->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line number, code, opt-out reason or None)`` of every ```python block of a Markdown page."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        code = textwrap.dedent(match.group(2)) if match.group(1) else match.group(2)
        blocks.append((line, code, reason.group(1) if reason else None))
    return blocks


def test_the_extractor_finds_blocks_and_opt_outs():
    text = ("x\n```python\na = 1\n```\n<!-- not-run: needs CUDA -->\n```python\nimport cupy\n```\n```bash\nls\n```\n"
            "* item:\n\n  ```python\n  b = 2\n  ```\n")
    assert python_blocks(text) == [(2, "a = 1\n", None), (6, "import cupy\n", "needs CUDA"), (14, "b = 2\n", None)]


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"snippets_of_{page.stem}"}
    ran = 0
    for line, code, reason in python_blocks(page.read_text(encoding="utf-8")):
        if reason is not None:
            continue
        label = f"{page.relative_to(ROOT)}:{line}"
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                exec(compile(code, label, "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - re-raised with the block's location
            raise AssertionError(f"the ```python block at {label} failed: {type(err).__name__}: {err}") from err
        ran += 1
    if not ran:
        pytest.skip(f"{page.name}: every python block is marked not-run")


def test_opt_outs_are_rare_and_give_a_reason():
    skipped = [(p.name, line, reason) for p in PAGES for line, _, reason in python_blocks(p.read_text("utf-8"))
               if reason is not None]
    assert len(skipped) <= 4, f"too many not-run snippets: {skipped}"


def test_index_lists_every_page_and_its_links_resolve():
    index = ROOT / "docs" / "index.md"
    text = index.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", text)
    for target in links:
        assert (index.parent / target).exists(), f"docs/index.md links to a missing {target}"
    linked = {Path(t).name for t in links}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs/index.md does not list {sorted(pages - linked)}"


ARCEE_REF = re.compile(r"`arcee_np/([\w/]+)\.py: (\w+)`((?:(?:,| and) `\w+`)*)")
TRANSFORMERS_MODULES = ("models.arcee.modeling_arcee", "modeling_rope_utils", "masking_utils", "loss.loss_utils",
                        "cache_utils", "activations", "modeling_layers", "modeling_utils")


def test_architecture_names_every_arcee_np_function_that_exists():
    """docs/architecture.md's `arcee_np/<file>.py: name, `name`` references resolve, so the page cannot rot."""
    import importlib

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    refs = [(m.group(1).replace("/", "."), [m.group(2), *re.findall(r"`(\w+)`", m.group(3))])
            for m in ARCEE_REF.finditer(text)]
    assert len(refs) >= 15, "the pattern no longer matches the page's references"
    missing = [f"arcee_np/{mod.replace('.', '/')}.py: {name}" for mod, names in refs for name in names
               if not hasattr(importlib.import_module(f"arcee_np.{mod}"), name)]
    assert not missing, f"docs/architecture.md names functions that do not exist: {missing}"


def test_architecture_names_every_transformers_counterpart_that_exists():
    """Every ``transformers:`` part of docs/architecture.md names things transformers really has."""
    import importlib

    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    modules = [importlib.import_module(f"transformers.{name}") for name in TRANSFORMERS_MODULES]
    source = (Path(transformers.__file__).parent / "models" / "arcee" / "modeling_arcee.py").read_text("utf-8")
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    segments = re.findall(r"transformers: (.*?)(?=\n\n|\n\* |\n## |$)", text, re.S)
    checked, missing = 0, []
    for segment in segments:
        found = []   # objects named so far in this segment: "ArceeRotaryEmbedding (its `forward`)" is a method
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", segment):
            if name.endswith(".py") or name in {"modeling_arcee", "nn.Embedding"}:
                continue
            head, *rest = name.split(".")
            owner = next((getattr(m, head) for m in modules if hasattr(m, head)), None)
            if owner is None and not rest:
                owner = next((getattr(obj, head) for obj in found if hasattr(obj, head)), None)
            for attr in rest if owner is not None else ():   # ArceeModel.embed_tokens: set by the constructor
                owner = getattr(owner, attr, None) or (True if f"self.{attr} =" in source else None)
            if owner is None:
                missing.append(name)
            else:
                found.append(owner)
            checked += 1
    assert checked >= 25, "the pattern no longer matches the page's transformers references"
    assert not missing, f"docs/architecture.md names transformers objects that do not exist: {missing}"
