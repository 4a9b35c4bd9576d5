"""The HTML report: self-contained, every section present, and opened in a real headless browser (Debian's
chromium): no console message, the first-divergence section visible in the first screen, a screenshot kept as a
test artifact (under $ARCEE_NP_TEST_ARTIFACTS, default test-artifacts/ at the repository root)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arcee_np.oracle.html_report import HtmlReport, models_report
from conftest import random_model
from test_attribution import CONFIG, IDS, planted

pytest.importorskip("matplotlib")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
ARTIFACTS = Path(os.environ.get("ARCEE_NP_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
# Where the first-divergence section sits once the page has loaded, written into the DOM for --dump-dom.
PROBE = ("<script>const e=document.getElementById('first-divergence'),r=e.getBoundingClientRect(),"
         "s=getComputedStyle(e);document.body.setAttribute('data-probe',[r.top,r.height,s.display,s.visibility,"
         "innerHeight].join('|'))</script>")


@pytest.fixture(scope="module")
def page():
    reference = random_model(CONFIG)
    candidate, edits = planted(reference, "gqa")
    return models_report(candidate, reference, IDS, edits=edits, tokens=[f"tok{i}" for i in IDS[0]],
                         title="planted GQA bug")


def test_the_page_is_self_contained_with_every_section(page, tmp_path):
    text = page.html
    for anchor in ("first-divergence", "per-layer", "attention", "attribution", "logit-lens", "table"):
        assert f'<section id="{anchor}">' in text
    assert text.index("DIVERGE") < text.index('id="first-divergence"') < text.index('id="per-layer"')
    assert "first divergence at layers.2.attn.scores" in text and "cause: layers.2.attn.out" in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<link" not in text  # nothing fetched
    assert "<script" not in text
    assert text.count("data:image/png;base64,") == 7
    size = page.save(tmp_path / "report.html")
    assert size == len(text.encode()) < 5 * 2**20
    assert page._repr_html_() in text and page._repr_html_().startswith("<style>")


def test_a_missing_matplotlib_is_named_with_the_extra(monkeypatch):
    from arcee_np.oracle import figures

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"arcee-np\[report\]"):
        figures.pyplot()


def test_save_to_an_unwritable_place_names_it(tmp_path):
    from arcee_np import FileAccessError

    with pytest.raises(FileAccessError, match="cannot write the HTML report"):
        HtmlReport("t", "<p>x</p>").save(tmp_path / "missing-folder" / "r.html")


def chromium(tmp_path, url, *flags):
    """Run headless chromium on ``url``: (stdout, the console messages from its log)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *flags, url], capture_output=True,
                         text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return run.stdout, console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_opens_in_headless_chromium(page, tmp_path):
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><html><body><script>console.error('planted')</script></body></html>")
    assert any("planted" in line for line in chromium(tmp_path, control.as_uri(), "--dump-dom")[1])  # seen

    path = tmp_path / "report.html"
    page.save(path)
    _, console = chromium(tmp_path, path.as_uri(), "--dump-dom")
    assert console == []

    probed = tmp_path / "probed.html"
    probed.write_text(page.html.replace("</body>", PROBE + "</body>"))
    dom, _ = chromium(tmp_path, probed.as_uri(), "--dump-dom", "--window-size=1200,1600")
    top, height, display, visibility, viewport = re.search(r'data-probe="([^"]+)"', dom).group(1).split("|")
    assert display != "none" and visibility == "visible" and float(height) > 200
    assert 0 <= float(top) < float(viewport)  # on the first screen, right under the verdict

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "html_report_planted_gqa.png"
    shutil.copy(path, ARTIFACTS / "html_report_planted_gqa.html")
    _, console = chromium(tmp_path, path.as_uri(), f"--screenshot={shot}", "--window-size=1200,2400")
    assert console == []
    print(f"screenshot: {shot}")
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1200) and float(np.std(pixels)) > 0.05  # not a blank page


def test_a_page_from_two_traces_has_the_lens_and_says_what_a_trace_can():
    from arcee_np.oracle.compare import compare_traces
    from arcee_np.oracle.html_report import traces_report
    from arcee_np.oracle.tracefile import trace_model

    reference = random_model(CONFIG)
    candidate, _ = planted(reference, "rms_norm")
    ours, theirs = trace_model(reference, IDS), trace_model(candidate, IDS)
    page = traces_report(compare_traces(theirs, ours), ours, theirs, model=reference)
    text = page.html
    assert '<section id="logit-lens">' in text and '<section id="attribution">' in text
    assert "make the port patchable" in text and "first divergence at layers.2.post_norm" in text
    plain = traces_report(compare_traces(ours, ours), ours, ours).html
    assert "AGREE" in plain and 'id="logit-lens"' not in plain and 'id="attribution"' not in plain
