"""``arcee-np finetune``: a run on a tiny model writes a checkpoint arcee_np reloads with a lower held-out loss,
the tokenizer files and finetune.json; bad data, a missing tokenizer and an unwritable --out fail with one
line before any training."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from arcee_np import ArceeForCausalLM
from arcee_np.cli import main
from arcee_np.io.tokenizer import ArceeTokenizer
from arcee_np.training.data import heldout_loss
from arcee_np.training.finetune import ProgressBar, split_tokens

from tiny_lm import TEXT, write_tiny_lm

CORPUS = "\n".join(TEXT[:4]) * 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(write_tiny_lm(tmp_path_factory.mktemp("finetune_lm")))


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return str(path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_finetune_writes_a_better_checkpoint(tiny, data, tmp_path, capsys):
    out = tmp_path / "tuned"
    code, stdout, stderr = run(capsys, "finetune", "--data", data, "--model", tiny, "--steps", 30, "--out", out,
                               "--batch-size", 4, "--seq-len", 32, "--lr", 3e-3)
    assert code == 0, stderr
    assert "finetune 100% |" in stderr and "loss" in stderr  # the progress bar (one line a tenth off a terminal)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "finetune.json"} <= set(os.listdir(out))
    record = json.loads((out / "finetune.json").read_text())
    assert len(record["train_losses"]) == 30
    assert record["heldout_loss_after"] < record["heldout_loss_before"] - 0.5
    assert f"held-out loss after 30 steps: {record['heldout_loss_after']:.4f}" in stdout
    tuned, tokenizer = ArceeForCausalLM.from_pretrained(out), ArceeTokenizer.from_pretrained(out)
    ids = np.asarray(tokenizer.encode(CORPUS, add_special_tokens=False))
    _, heldout = split_tokens(ids, 32, 0.1, data)
    total, count = heldout_loss(tuned, heldout, 32, tokenizer.bos_token_id, tokenizer.pad_token_id)
    assert total / count == pytest.approx(record["heldout_loss_after"], abs=1e-5)  # the saved weights are the trained
    original = ArceeForCausalLM.from_pretrained(tiny)
    assert not np.array_equal(tuned.state_dict()["model.norm.weight"], original.state_dict()["model.norm.weight"])


@pytest.mark.parametrize("problem", ["empty", "whitespace", "short", "not_utf8", "missing"])
def test_bad_data_is_refused_before_training(tiny, tmp_path, capsys, problem):
    path = tmp_path / "data.txt"
    if problem == "empty":
        path.write_text("")
    elif problem == "whitespace":
        path.write_text(" \n\t\n")
    elif problem == "short":
        path.write_text("ROMEO: But soft")
    elif problem == "not_utf8":
        path.write_bytes(b"caf\xe9 au lait " * 50)
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "finetune", "--data", path, "--model", tiny, "--steps", 5, "--out", out,
                               "--seq-len", 32)
    assert code == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    expected = {"empty": "is empty", "whitespace": "is empty", "short": "too few for one training sequence",
                "not_utf8": "is not UTF-8 text", "missing": "is not a file"}[problem]
    assert stderr.startswith("arcee-np finetune: error: --data") and expected in stderr
    assert not out.exists()  # refused before anything was written


def test_missing_tokenizer_is_refused(tiny, data, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(tiny, bare)
    (bare / "tokenizer.json").unlink()
    code, _, stderr = run(capsys, "finetune", "--data", data, "--model", bare, "--steps", 5, "--out", tmp_path / "o")
    assert code == 1 and "no tokenizer.json in" in stderr and "finetune encodes --data" in stderr


def test_unwritable_out_is_refused(tiny, data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out, expected in ((blocker, "is a file"), (blocker / "sub", "cannot be written"), (tiny, "model's own folder")):
        code, _, stderr = run(capsys, "finetune", "--data", data, "--model", tiny, "--steps", 5, "--out", out,
                              "--seq-len", 32)
        assert code == 1 and expected in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_usage_errors(tiny, data, tmp_path, capsys):
    for flags, expected in ((["--steps", "0"], "--steps"), (["--steps", "5", "--seq-len", "1"], "--seq-len"),
                            (["--steps", "5", "--eval-fraction", "1"], "--eval-fraction")):
        with pytest.raises(SystemExit) as stop:
            run(capsys, "finetune", "--data", data, "--model", tiny, "--out", tmp_path / "o", *flags)
        assert stop.value.code == 2 and expected in capsys.readouterr().err
    code, _, stderr = run(capsys, "finetune", "--data", data, "--model", tiny, "--steps", 5, "--out", tmp_path / "o",
                          "--seq-len", 1000)
    assert code == 1 and "max_position_embeddings" in stderr


def test_progress_bar_off_a_terminal_prints_a_tenth_of_the_steps(capsys):
    import io

    stream = io.StringIO()
    bar = ProgressBar(20, stream=stream)
    for step in range(1, 21):
        bar.update(step, 1.0 / step)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("finetune 100% |") and "20/20  loss 0.0500" in lines[-1]


def test_finetune_reads_the_tokenizer_beside_a_gguf_file(tiny, data, tmp_path, capsys):
    """``--model FILE.gguf`` alone uses the tokenizer stored in the file and writes it to --out; a tokenizer.json
    beside the file wins, as for ``generate``, and is copied to --out."""
    from arcee_np.io.gguf_writer import convert_checkpoint

    folder = tmp_path / "gguf"
    folder.mkdir()
    gguf = folder / "tiny-F32.gguf"
    convert_checkpoint(tiny, gguf, "F32")  # the tokenizer written into the file, as llama.cpp's converter does
    code, _, err = run(capsys, "finetune", "--data", data, "--model", gguf, "--steps", 1, "--out", tmp_path / "o1",
                       "--batch-size", 2, "--seq-len", 16)
    assert code == 0, err
    written, original = ArceeTokenizer.from_pretrained(tmp_path / "o1"), ArceeTokenizer.from_pretrained(tiny)
    assert written.encode(CORPUS) == original.encode(CORPUS)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(tiny, name), folder / name)
    out = tmp_path / "o2"
    code, _, err = run(capsys, "finetune", "--data", data, "--model", gguf, "--steps", 2, "--out", out,
                       "--batch-size", 2, "--seq-len", 16)
    assert code == 0, err
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
    tuned, base = ArceeForCausalLM.from_pretrained(out), ArceeForCausalLM.from_pretrained(gguf)
    assert tuned.num_parameters() == base.num_parameters()


def test_finetune_refuses_a_dtype_it_does_not_train_in(tiny, data, tmp_path, capsys):
    code, _, err = run(capsys, "finetune", "--data", data, "--model", tiny, "--steps", 1, "--out", tmp_path / "o",
                       "--dtype", "float16")
    assert code == 2 and "finetune runs in float32 or float64" in err and "--dtype float32" in err
