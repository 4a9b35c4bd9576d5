"""A GGUF file on the command line is a model like a checkpoint folder: ``arcee-np info``, ``trace`` and
``compare`` take it, ``generate``, ``--prompt`` and ``info`` read the tokenizer stored in it (or a tokenizer.json
beside it), and files that only look like GGUF are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from arcee_np import ArceeForCausalLM, CheckpointError
from arcee_np.cli import main
from arcee_np.io.tokenizer import ArceeTokenizer
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


def test_generate_reads_the_tokenizer_stored_in_the_gguf_file(tmp_path, capsys):
    alone = tmp_path / "alone.gguf"
    shutil.copyfile(Q4_K, alone)
    code, out, err = run(capsys, "generate", "x", "--model", alone, "--max-new-tokens", 2, "--greedy")
    assert code == 0 and out.startswith("x"), err


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


# ---------------------------------------------------------------------------------------------- a file alone
TOKENIZER_CASES = Path(__file__).parent / "golden_gguf_tokenizer"


@pytest.mark.parametrize("name", ["shipped/shipped-Q4_K_M.gguf", "llama3_1000/llama3_1000-F32.gguf",
                                  "default_4000/default_4000-F16.gguf", "gpt2_300/gpt2_300-F32.gguf"])
def test_generate_runs_from_a_gguf_file_alone(tmp_path, capsys, name):
    """The file copied alone into an empty folder: generate reads the tokenizer stored in it."""
    alone = tmp_path / "model.gguf"
    shutil.copyfile(TOKENIZER_CASES / name, alone)
    code, out, err = run(capsys, "generate", "ROMEO:", "--model", alone, "--max-new-tokens", 4, "--greedy")
    assert code == 0, err
    assert out.startswith("ROMEO:")
    code, out, err = run(capsys, "generate", "Speak.", "--model", alone, "--chat", "--max-new-tokens", 2, "--greedy")
    assert code == 0, err


def test_info_says_which_tokenizer_is_used(tmp_path, capsys):
    alone = tmp_path / "model.gguf"
    shutil.copyfile(TOKENIZER_CASES / "shipped" / "shipped-Q4_K_M.gguf", alone)
    code, out, _ = run(capsys, "info", "--model", alone, "--json")
    tokenizer = json.loads(out)["tokenizer"]
    assert code == 0 and tokenizer["source"].startswith("the GGUF file's own tokenizer")
    assert tokenizer["vocab_size"] == 4096 and tokenizer["chat_template"]
    shutil.copyfile(TOKENIZER_CASES / "shipped" / "hf" / "tokenizer.json", tmp_path / "tokenizer.json")
    code, out, _ = run(capsys, "info", "--model", alone)
    assert code == 0 and f"tokenizer: source '{tmp_path / 'tokenizer.json'} (beside the GGUF file)'" in out


def test_trace_prompt_uses_the_tokenizer_stored_in_the_file(tmp_path, capsys):
    alone = tmp_path / "model.gguf"
    shutil.copyfile(TOKENIZER_CASES / "llama3_1000" / "llama3_1000-F32.gguf", alone)
    out = tmp_path / "t.safetensors"
    code, _, err = run(capsys, "trace", "--model", alone, "--prompt", "ROMEO: 12345", "--out", out, "--layers-only")
    assert code == 0, err
    ids = load_trace(out).inputs["input_ids"]
    assert ids.tolist()[0] == ArceeTokenizer.from_pretrained(alone).encode("ROMEO: 12345")


def test_an_unsupported_tokenizer_in_the_file_is_refused_by_name(tmp_path, capsys):
    from arcee_np.io.gguf_writer import convert_checkpoint

    path = tmp_path / "model.gguf"
    convert_checkpoint(CASE / "hf", path, metadata={"tokenizer.ggml.pre": "qwen2"})
    code, out, err = run(capsys, "generate", "x", "--model", path)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "'qwen2' (tokenizer.ggml.pre)" in err and "tokenizer.json" in err


def test_gguf_check_prompt_compares_the_two_tokenizers(tmp_path, capsys):
    """--prompt encodes with the file's tokenizer and says whether the reference's tokenizer.json agrees; a file
    whose stored tokenizer encodes otherwise (here: it adds bos, the checkpoint's does not) is a finding."""
    from arcee_np.io.gguf_writer import convert_checkpoint

    argv = ["--reference", CASE / "hf", "--prompt", "ROMEO: 12345 ducats!!", "--length", 8, "--no-llama-cpp"]
    code, out, err = run(capsys, "gguf-check", F32, *argv)
    assert code == 0, out + err
    assert "ids from the GGUF file's own tokenizer" in out and "tokenizer.json gives the same ids" in out
    path = tmp_path / "adds-bos.gguf"
    convert_checkpoint(CASE / "hf", path, metadata={"tokenizer.ggml.add_bos_token": True})
    code, out, _ = run(capsys, "gguf-check", path, *argv)
    assert code == 1 and "tokenizer.json gives other ids  <-- found" in out
