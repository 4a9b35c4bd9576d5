"""scripts/gpu_check.py in its CPU smoke mode: the GPU script's whole code path, NumPy and torch CPU, tiny shape.

The real run needs a CUDA GPU (``PYTHONPATH=. python scripts/gpu_check.py --out gpu_check.json``); this
keeps the script from rotting between GPU sessions. Skipped without torch and transformers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_smoke(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH=str(ROOT), CUPY_TF32="1")  # the script must turn TF32 off
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu-smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())  # default path: $OUT/gpu_check.json

    assert report["mode"] == "cpu-smoke"
    assert report["ok"] is True and "error" not in report, report.get("error")
    assert report["tf32"]["CUPY_TF32"] == "0" and report["tf32"]["CUPY_TF32_before"] == "1"
    assert report["tests"]["returncode"] in (0, 5), report["tests"]  # 5: the GPU module skipped itself
    assert report["model"]["weights_shared"] is True  # arcee_np runs on transformers' own weight buffers
    assert report["model"]["parameters"] > 0 and report["bandwidth"]["gb_per_s"] > 0
    assert not report["skipped"], report["skipped"]

    sides = {(r["batch"], r["side"]) for r in report["results"]}
    assert sides == {(b, s) for b in (1, 3) for s in ("arcee_np", "transformers_eager", "transformers_sdpa")}
    for r in report["results"]:
        assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["decode_s"] > 0, r
        assert len(r["runs"]["decode_s"]) == r["reps"]
    for batch in ("1", "3"):
        assert set(report["ratios"][batch]) == {"vs_eager", "vs_sdpa"}
        roof = report["roofline"][batch]
        assert 0 < roof["weights_and_kv_tok_s"] < roof["weights_only_tok_s"]
        agree = report["agreement"][batch]
        assert agree["identical_rows"] == agree["rows"], agree  # float32 greedy: the same tokens
    assert "arcee_np" in proc.stdout and "roofline" in proc.stdout
