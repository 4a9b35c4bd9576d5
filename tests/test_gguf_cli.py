"""A GGUF file on the command line is a model like a checkpoint folder: ``arcee-np info``, ``trace`` and
``compare`` take it, ``generate`` reads the tokenizer.json beside it, and files that only look like GGUF are
refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from arcee_np import ArceeForCausalLM, CheckpointError
from arcee_np.cli import main
from arcee_np.oracle.tracefile import load_trace

CASE = Path(__file__).parent / "golden_gguf" / "default_rope"
F32 = CASE / "default_rope-F32.gguf"
Q4_K = CASE / "default_rope-Q4_K.gguf"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_describes_a_gguf_file(capsys):
    code, out, _ = run(capsys, "info", "--model", Q4_K, "--json")
    info = json.loads(out)
    model = ArceeForCausalLM.from_pretrained(Q4_K)
    assert code == 0 and info["parameters"] == model.num_parameters()
    assert info["checkpoint_files"] == [Q4_K.name] and info["checkpoint_bytes"] == Q4_K.stat().st_size
    per_use = info["memory"]["float32"]
    assert per_use["policy"] in ("at_load", "per_use") and info["config"]["num_hidden_layers"] == 2


def test_trace_of_a_gguf_file_equals_the_python_forward(tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    code, _, err = run(capsys, "trace", "--model", F32, "--ids", "1 5 9 3", "--out", out, "--layers-only")
    assert code == 0, err
    logits = ArceeForCausalLM.from_pretrained(F32)(np.array([[1, 5, 9, 3]])).logits
    np.testing.assert_array_equal(load_trace(out)["logits"], logits)


def test_generate_reads_the_tokenizer_beside_the_gguf_file(tmp_path, capsys):
    alone = tmp_path / "alone.gguf"
    shutil.copyfile(Q4_K, alone)
    code, out, err = run(capsys, "generate", "x", "--model", alone)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "tokenizer.json beside the GGUF file" in err


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all", b"GGU"])
def test_a_file_that_is_not_gguf_is_refused(tmp_path, capsys, content):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(content)
    code, out, err = run(capsys, "info", "--model", fake)
    assert code == 2 and out == "" and "is a file that is not a GGUF file" in err
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a GGUF file"):
        ArceeForCausalLM.from_pretrained(fake)


def test_compare_against_transformers_points_a_gguf_file_to_gguf_check(capsys):
    code, _, err = run(capsys, "compare", "--against", "transformers", "--model", F32, "--ids", "1 2 3")
    assert code == 2 and "arcee-np gguf-check" in err
