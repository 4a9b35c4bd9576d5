"""The arcee-np command line (generate, info; errors as one line) and pipeline("text-generation"), on a tiny
random model with its own tokenizer and on the shipped Shakespeare model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import arcee_np
from arcee_np import ArceeForCausalLM
from arcee_np.cli import build_parser, main
from arcee_np.pipeline import pipeline
from arcee_np.io.tokenizer import ArceeTokenizer

from tiny_lm import write_tiny_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(write_tiny_lm(tmp_path_factory.mktemp("tiny_lm")))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_streams_prompt_and_continuation(tiny, capsys):
    code, out, err = run(capsys, "generate", "ROMEO:", "--model", tiny, "--greedy", "--max-new-tokens", "12")
    assert code == 0 and err == ""
    model, tok = ArceeForCausalLM.from_pretrained(tiny), ArceeTokenizer.from_pretrained(tiny)
    ids = np.array([tok.encode("ROMEO:")])
    expected = tok.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0], skip_special_tokens=True)
    assert out == expected + "\n"


def test_sampling_flags_and_seed(tiny, capsys):
    args = ("generate", "JULIET:", "--model", tiny, "--max-new-tokens", "10", "--temperature", "1.3", "--top-k", "0",
            "--top-p", "0.9", "--repetition-penalty", "1.2", "--seed", "4", "--no-prompt")
    first, second = run(capsys, *args), run(capsys, *args)
    assert first == second and first[0] == 0 and not first[1].startswith("JULIET")
    assert run(capsys, *args[:-2], "5", "--no-prompt")[1] != first[1]


def test_generate_reads_stdin_and_chat(tiny, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("ROMEO:"))
    piped = run(capsys, "generate", "--model", tiny, "--greedy", "--max-new-tokens", "5")
    assert piped[0] == 0 and piped[1].startswith("ROMEO:")
    chat = run(capsys, "generate", "Hi", "--chat", "--model", tiny, "--greedy", "--max-new-tokens", "5")
    assert chat[0] == 0 and "<|user|>" not in chat[1]


def test_info_text_and_json(tiny, capsys):
    code, out, _ = run(capsys, "info", "--model", tiny)
    params = ArceeForCausalLM.from_pretrained(tiny).num_parameters()
    assert code == 0 and f"parameters: {params:,}" in out and "hidden_size: 32" in out and "float16" in out
    code, out, _ = run(capsys, "info", "--model", tiny, "--json")
    info = json.loads(out)
    assert info["parameters"] == params and info["weights_bytes"]["float32"] == 4 * params
    assert info["kv_cache_bytes_per_token"]["float32"] == 2 * 2 * 2 * 8 * 4  # K and V, layers, kv heads, hd
    assert set(info["memory"]) == {"float32", "float64", "float16", "bfloat16"}
    float32 = info["memory"]["float32"]  # a float32 file run in float32: every weight used in place
    assert float32["mapped_bytes"] == 4 * params and float32["copied_bytes"] == 0 and float32["policy"] == "at_load"
    assert info["memory"]["float64"]["copied_bytes"] == 8 * params
    assert info["generation_config"]["top_k"] == 40 and info["tokenizer"]["eos_token"] == "<|end_of_text|>"


@pytest.mark.parametrize("broken, needle", [({"tokenizer.json": "{"}, "tokenizer.json is not valid JSON"),
                                            ({"tokenizer_config.json": "[]"}, "tokenizer_config.json must hold")])
def test_info_refuses_broken_tokenizer_files(tiny, tmp_path, capsys, broken, needle):
    """A checkpoint's broken tokenizer file is refused (exit 1, named), as its other files are; only a GGUF
    file's own tokenizer of a type arcee_np cannot rebuild is reported as a problem line."""
    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    for name, text in broken.items():
        (folder / name).write_text(text, encoding="utf-8")
    code, out, err = run(capsys, "info", "--model", str(folder))
    assert code == 1 and needle in err and "tokenizer:" not in out


@pytest.mark.parametrize("argv, code, needle", [
    (["generate", "x", "--model", "/no/such/folder"], 2, "'/no/such/folder' does not exist"),
    (["generate", "x", "--temperature", "0"], 2, "'0' is not a number > 0"),
    (["generate", "x", "--top-p", "1.5"], 2, "is not a number in [0, 1]"),
    (["generate", "x", "--max-new-tokens", "many"], 2, "'many' is not an integer >= 1"),
    (["generate", "x", "--dtype", "int8"], 2, "invalid choice"),
    (["generate", "x", "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
    (["frobnicate"], 2, "invalid choice"),
    ([], 2, "required"),
])
def test_bad_input_is_one_line_on_stderr(argv, code, needle, capsys):
    try:
        got = main(argv)
    except SystemExit as exit_info:  # argparse's own usage errors
        got = exit_info.code
    out, err = capsys.readouterr()
    assert got == code and needle in err and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_checkpoint_errors_are_one_line(tiny, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 4)
    code, out, err = run(capsys, "generate", "x", "--model", str(broken))
    assert code == 1 and "truncated" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "info", "--model", str(broken), "--json")  # info reads the headers too
    assert code == 1 and "truncated" in err and len(err.strip().splitlines()) == 1
    (broken / "tokenizer.json").unlink()
    code, _, err = run(capsys, "generate", "x", "--model", str(broken))
    assert code == 1 and "tokenizer.json" in err


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"generate", "info"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: arcee-np " + name in capsys.readouterr().out


def test_pipeline_text_generation(tiny):
    generate = pipeline("text-generation", model=tiny)
    model, tok = generate.model, generate.tokenizer
    one = generate("ROMEO:", max_new_tokens=6, do_sample=False)
    alone = model.generate(np.array([tok.encode("ROMEO:")]), max_new_tokens=6, do_sample=False)[0]
    assert one == [{"generated_text": "ROMEO:" + tok.decode(alone[len(tok.encode("ROMEO:")):],
                                                            skip_special_tokens=True)}]
    batch = generate(["ROMEO:", "JULIET: O Romeo, Romeo"], max_new_tokens=6, do_sample=False)
    assert batch[0] == one and len(batch) == 2 and batch[1][0]["generated_text"].startswith("JULIET: O Romeo, Romeo")
    new_only = generate("ROMEO:", max_new_tokens=6, do_sample=False, return_full_text=False)
    assert "ROMEO:" + new_only[0]["generated_text"] == one[0]["generated_text"]
    chat = generate([{"role": "user", "content": "Hi"}], max_new_tokens=4, do_sample=False)
    assert chat[0]["generated_text"][-1]["role"] == "assistant" and len(chat[0]["generated_text"]) == 2
    with pytest.raises(ValueError, match="text-generation"):
        pipeline("summarization", model=tiny)


# ------------------------------------------------------------------------------------- the shipped model
def test_default_model_path_has_the_checkpoint():
    path = arcee_np.default_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert os.path.isfile(os.path.join(path, name)), name


def test_default_model_path_names_missing_files(monkeypatch, tmp_path):
    import arcee_np.shipped as shipped

    monkeypatch.setattr(shipped, "__file__", str(tmp_path / "shipped.py"))
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors, tokenizer.json missing"):
        shipped.default_model_path()


def test_cli_generates_from_the_shipped_model(capsys):
    code, out, err = run(capsys, "generate", "ROMEO:", "--max-new-tokens", "20", "--seed", "0")
    assert code == 0 and err == "" and out.startswith("ROMEO:") and len(out) > len("ROMEO:") + 10
    assert run(capsys, "generate", "ROMEO:", "--max-new-tokens", "20", "--seed", "0")[1] == out  # reproducible


def test_console_script_runs():
    exe = shutil.which("arcee-np")
    command = [exe] if exe else [sys.executable, "-m", "arcee_np.cli"]
    done = subprocess.run(command + ["generate", "ROMEO:", "--max-new-tokens", "5", "--greedy"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ROMEO:") and done.stderr == ""


def test_beam_search_and_ngram_flags(tiny, capsys):
    code, out, err = run(capsys, "generate", "ROMEO:", "--model", tiny, "--greedy", "--max-new-tokens", "10",
                         "--num-beams", "3", "--no-repeat-ngram-size", "2")
    assert code == 0 and err == ""
    model, tok = ArceeForCausalLM.from_pretrained(tiny), ArceeTokenizer.from_pretrained(tiny)
    ids = np.array([tok.encode("ROMEO:")])
    best = model.generate(ids, max_new_tokens=10, do_sample=False, num_beams=3, no_repeat_ngram_size=2)
    assert out == tok.decode(best[0], skip_special_tokens=True) + "\n"


def test_min_p_and_stop_flags(tiny, capsys):
    model, tok = ArceeForCausalLM.from_pretrained(tiny), ArceeTokenizer.from_pretrained(tiny)
    ids = np.array([tok.encode("JULIET:")])
    sampled = model.generate(ids, max_new_tokens=12, do_sample=True, min_p=0.3, seed=3)
    code, out, _ = run(capsys, "generate", "JULIET:", "--model", tiny, "--max-new-tokens", "12", "--min-p", "0.3",
                       "--seed", "3", "--no-prompt")
    assert code == 0 and out == tok.decode(sampled[0, ids.shape[1]:], skip_special_tokens=True) + "\n"
    greedy = tok.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:])
    stop = greedy[len(greedy) // 2:len(greedy) // 2 + 2]
    code, out, _ = run(capsys, "generate", "JULIET:", "--model", tiny, "--greedy", "--max-new-tokens", "12",
                       "--stop", stop, "--stop", "never-there", "--no-prompt")
    expected = model.generate(ids, max_new_tokens=12, do_sample=False, stop_strings=[stop], tokenizer=tok)
    assert code == 0 and out == tok.decode(expected[0, ids.shape[1]:], skip_special_tokens=True) + "\n"
    assert stop in out and len(out) < len(greedy) + 1


def test_empty_stop_is_a_usage_error(tiny, capsys):
    code, _, err = run(capsys, "generate", "x", "--model", tiny, "--stop", "")
    assert code == 2 and "--stop needs some text" in err
