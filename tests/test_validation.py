"""The validation layer, case by case: what each surface refuses, with which error class, naming what; the
cases the fuzz tests (tests/test_fuzz_*.py) generate at random are pinned here one by one."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import arcee_np
from arcee_np import (ArceeConfig, ArceeError, ArceeForCausalLM, CacheError, CheckpointError, ConfigError,
                      InputError, InputTypeError, KVCache, NonFiniteError, TokenizerError, TraceFileError)
from arcee_np.cli import main
from arcee_np.io.safetensors import read_safetensors
from arcee_np.io.tokenizer import ArceeTokenizer
from arcee_np.oracle.tracefile import load_trace

from conftest import random_model, small_config
from tiny_lm import write_tiny_lm

MODEL = random_model()  # vocab 97, 2 layers, 2 KV heads of 8, float32
IDS = np.array([[5, 6, 7, 8]])


def test_every_error_class_is_exported_and_fits_a_builtin():
    import arcee_np.errors as errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert {c.__name__ for c in classes} <= set(arcee_np.__all__)
    for cls in classes:
        assert issubclass(cls, ArceeError)
        assert cls is ArceeError or issubclass(cls, (ValueError, TypeError, OSError, FloatingPointError, RuntimeError))


# ---------------------------------------------------------------------------------------------- config.json
@pytest.mark.parametrize("config, field", [
    ({"rope_theta": 5000.0, "rope_parameters": {"rope_type": "default", "rope_theta": 20000.0}}, "rope_theta"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}, "rope_parameters": {"rope_type": "default"}},
     "rope_scaling"),
    ({"rope_scaling": {"type": "yarn", "rope_type": "default", "factor": 4.0}}, "type="),
])
def test_contradicting_rope_spellings_are_refused(config, field):
    """transformers 5 would take rope_parameters' theta, rope_scaling over rope_parameters and rope_type over type."""
    with pytest.raises(ConfigError, match=field):
        ArceeConfig.from_dict(config)


def test_agreeing_rope_spellings_load():
    c = ArceeConfig.from_dict({"rope_theta": 20000.0, "rope_parameters": {"rope_type": "yarn", "rope_theta": 20000.0,
                                                                         "factor": 4.0},
                               "rope_scaling": {"type": "yarn", "rope_type": "yarn", "factor": 4.0},
                               "max_position_embeddings": 4096})
    assert c.rope_theta == 20000.0 and c.rope_scaling["factor"] == 4.0 and c.rope_type == "yarn"


@pytest.mark.parametrize("field, value", [("rms_norm_eps", None), ("rms_norm_eps", float("inf")),
                                          ("hidden_size", "256"), ("tie_word_embeddings", "no"),
                                          ("num_hidden_layers", 2.0), ("eos_token_id", "12")])
def test_config_fields_of_the_wrong_type_or_range(tmp_path, field, value):
    MODEL.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, field: value}))
    with pytest.raises(ConfigError, match=field) as info:
        ArceeForCausalLM.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_a_config_of_another_model_is_named_briefly(tmp_path):
    MODEL.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # every default: 32 layers, 2560 wide
    with pytest.raises(CheckpointError, match="2 decoder layers .* num_hidden_layers=32") as info:
        ArceeForCausalLM.from_pretrained(tmp_path)
    assert len(str(info.value)) < 400
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(ConfigError, match="JSON object"):
        ArceeForCausalLM.from_pretrained(tmp_path)


def test_generation_config_is_checked_at_load_naming_the_file(tmp_path):
    MODEL.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": "hot"}))
    with pytest.raises(ConfigError, match="generation_config.json: temperature"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 500}))
    with pytest.raises(ConfigError, match=r"eos_token_id \[500\] lies outside the vocabulary"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="model.generation_config: top_k"):
        MODEL.generation_config = {"top_k": 2.5}


# ---------------------------------------------------------------------------------------------- safetensors, index
def _file(tmp_path, header, data):
    raw = json.dumps(header).encode()
    path = tmp_path / "f.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize("offsets, problem", [
    ({"a": [0, 8], "b": [4, 12]}, "overlaps 'a'"), ({"a": [8, 16], "b": [0, 8]}, None),
    ({"a": [0, 8], "b": [12, 20]}, "unused"), ({"a": [0, 8], "b": [8, 16], "c": [16, 16]}, None),
])
def test_offsets_must_tile_the_data(tmp_path, offsets, problem):
    header = {n: {"dtype": "F32", "shape": [(e - b) // 4], "data_offsets": [b, e]} for n, (b, e) in offsets.items()}
    path = _file(tmp_path, header, bytes(range(max(e for _, e in offsets.values()))))
    if problem is None:
        assert {n: v.tobytes() for n, v in read_safetensors(path).items()} == \
            {n: v.tobytes() for n, v in load_file(str(path)).items()}
    else:
        with pytest.raises(CheckpointError, match=problem):
            read_safetensors(path)


@pytest.mark.parametrize("shape", ["23", [2.0, 2.0], [-1, -4], [True, 4], [2 ** 64, 1], [2 ** 62, 4, 0]])
def test_shapes_are_lists_of_non_negative_integers(tmp_path, shape):
    with pytest.raises(CheckpointError, match="tensor 'a'"):
        read_safetensors(_file(tmp_path, {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}, bytes(16)))


def test_duplicate_names_deep_nesting_and_bad_metadata(tmp_path):
    raw = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], ' \
          b'"data_offsets": [1, 2]}}'
    path = tmp_path / "d.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\x01\x02")
    with pytest.raises(CheckpointError, match="'a' twice"):
        read_safetensors(path)
    raw = b'{"__metadata__": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(CheckpointError, match="too deeply"):
        read_safetensors(path)
    with pytest.raises(CheckpointError, match="__metadata__ must map strings to strings"):
        read_safetensors(_file(tmp_path, {"__metadata__": {"format": 1}}, b""))


def test_an_index_must_match_its_shards(tmp_path):
    MODEL.save_pretrained(tmp_path, max_shard_size=20_000)
    index_file = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    first = sorted(index["weight_map"])[0]
    index_file.write_text(json.dumps({"weight_map": {k: v for k, v in index["weight_map"].items() if k != first}}))
    with pytest.raises(CheckpointError, match=f"not listed there by the index .*{first}"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    index_file.write_text(json.dumps({"weight_map": {**index["weight_map"], first: "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    index_file.write_text(json.dumps({"weight_map": list(index["weight_map"])}))
    with pytest.raises(CheckpointError, match="'weight_map' must be an object"):
        ArceeForCausalLM.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------- non-finite values
@pytest.fixture
def nan_checkpoint(tmp_path):
    MODEL.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 4] = np.nan
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_nan_weights_are_refused_at_load_and_located_at_run_time(nan_checkpoint):
    with pytest.raises(NonFiniteError, match=r"'model.layers.1.mlp.up_proj.weight' holds 1 NaN .*index \(3, 4\)"):
        ArceeForCausalLM.from_pretrained(nan_checkpoint)
    model = ArceeForCausalLM.from_pretrained(nan_checkpoint, check_finite=False)
    with pytest.raises(NonFiniteError, match="logits of ArceeForCausalLM hold NaN/Inf.*layers.1.mlp.up") as info:
        model(IDS)
    assert info.value.name == "layers.1.mlp.up"
    with pytest.raises(NonFiniteError, match="layers.1.mlp.up"):
        model.generate(IDS, max_new_tokens=3)
    cache = KVCache(2)
    with pytest.raises(NonFiniteError):
        model(IDS, past_key_values=cache)
    assert cache.get_seq_length() == 4  # locating reran the step on a cache cropped back first


def test_eps_infinity_is_a_config_error():
    with pytest.raises(ConfigError, match="rms_norm_eps must be a finite number > 0, got inf"):
        small_config(rms_norm_eps=float("inf"))


def test_the_finite_check_costs_nothing_on_finite_outputs(monkeypatch):
    import arcee_np.validation.finite as finite

    calls = []
    monkeypatch.setattr(finite, "detect_nonfinite", lambda: calls.append(1), raising=False)
    MODEL(IDS)
    assert calls == []  # the sentinel runs only after the cheap check found NaN/Inf


# ---------------------------------------------------------------------------------------------- call arguments
@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(labels=np.array([[1, -5, 2, 3]])), InputError, r"labels must lie in \[0, vocab_size=97\) or be -100"),
    (dict(logits_to_keep=1.5), InputTypeError, "logits_to_keep must be an integer"),
    (dict(logits_to_keep="1"), InputTypeError, "logits_to_keep"),
    (dict(logits_to_keep=np.array([0, 9])), InputError, r"lie in \[-4, 4\)"),
    (dict(attention_mask=np.full((1, 4), 0.5)), InputError, "1 for tokens and 0 for padding"),
    (dict(use_cache="no"), InputTypeError, "use_cache must be True or False"),
    (dict(past_key_values="cache"), InputTypeError, "past_key_values must be an arcee_np KVCache"),
])
def test_forward_arguments(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        MODEL(IDS, **kwargs)


def test_logits_to_keep_takes_numpy_integers():
    assert np.allclose(MODEL(IDS, logits_to_keep=np.int64(1)).logits[0, 0], MODEL(IDS).logits[0, -1], atol=1e-6)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(input_ids=IDS.astype(np.float32)), InputTypeError, "input_ids must hold integers"),
    (dict(attention_mask=np.full((1, 4), 2)), InputError, "1 for tokens and 0 for padding"),
    (dict(eos_token_id="12"), InputTypeError, "eos_token_id must be a token id"),
    (dict(max_new_tokens=10 ** 9), InputError, "past the model's max_position_embeddings=256"),
    (dict(num_beam=4), InputError, r"unknown arguments \[.num_beam.\]"),
])
def test_generate_refuses_what_the_forward_refuses(kwargs, error, fragment):
    kwargs = {"input_ids": IDS, "max_new_tokens": 2, **kwargs}
    start = time.perf_counter()
    with pytest.raises(error, match=fragment):
        MODEL.generate(**kwargs)
    assert time.perf_counter() - start < 5  # refused before any allocation or step


def test_generate_checks_its_arguments_once_not_per_step(monkeypatch):
    import arcee_np.pretrained as models  # the module whose forward calls check the arguments

    calls = []
    original = models.check_forward_inputs
    monkeypatch.setattr(models, "check_forward_inputs", lambda *a, **k: calls.append(1) or original(*a, **k))
    tokens = MODEL.generate(IDS, max_new_tokens=5, eos_token_id=[])
    assert tokens.shape == (1, 9) and calls == []  # the steps run the unchecked forward


def test_caches_that_do_not_fit():
    other = random_model(small_config(num_key_value_heads=4, attention_bias=False))
    cache = KVCache(2)
    other(IDS, past_key_values=cache)
    with pytest.raises(CacheError, match="another model"):
        MODEL(np.array([[3]]), past_key_values=cache)
    with pytest.raises(CacheError, match="has 3 layers but the model has 2"):
        MODEL(IDS, past_key_values=KVCache(3))
    cache = KVCache(2)
    MODEL(IDS, past_key_values=cache)
    with pytest.raises(CacheError, match=r"\(2, 2, 4, 8\)"):
        MODEL(np.array([[3], [4]]), past_key_values=cache)
    as_float64 = random_model(dtype="float64")
    with pytest.raises(CacheError, match="float64"):
        as_float64(np.array([[3]]), past_key_values=cache)


def test_a_legacy_tuple_cache_is_converted():
    cache = KVCache(2)
    MODEL(IDS, past_key_values=cache)
    legacy = tuple((np.array(k), np.array(v)) for k, v in cache.to_legacy())
    step = np.array([[9]])
    out = MODEL(step, past_key_values=legacy)
    assert isinstance(out.past_key_values, KVCache) and out.past_key_values.get_seq_length() == 5
    assert np.allclose(out.logits, MODEL(step, past_key_values=cache).logits, atol=1e-6)


# ---------------------------------------------------------------------------------------------- tokenizer, traces
@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return write_tiny_lm(tmp_path_factory.mktemp("lm"))


def test_decode_refuses_ids_outside_the_vocabulary(lm):
    tok = ArceeTokenizer.from_pretrained(lm)
    with pytest.raises(InputError, match=r"\[99999\] lie outside the vocabulary"):
        tok.decode([5, 99999])
    with pytest.raises(InputError, match=r"\[-1\]"):
        tok.decode([5, -1])
    with pytest.raises(InputTypeError, match="integer token ids"):
        tok.decode([5.7, 6.2])


@pytest.mark.parametrize("template, fragment", [
    ("{% for m in messages %}{{ m['content'] }", "does not parse"),
    ("{{ raise_exception('no system turns') }}", "refused the conversation: no system turns"),
    ("{{ messages[0]['content'] + 5 }}", "failed while rendering"),
    ("{{ ''.__class__.__mro__ }}", "the sandbox it renders in forbids"),
    ("{{ no_such_function() }}", "not defined"),
])
def test_chat_template_errors_name_the_file(tmp_path, lm, template, fragment):
    folder = tmp_path / "lm"
    shutil.copytree(lm, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    tok = ArceeTokenizer.from_pretrained(folder)
    with pytest.raises(TokenizerError, match=fragment) as info:
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert str(folder / "tokenizer_config.json") in str(info.value)


def test_tokenizer_files_of_the_wrong_shape(tmp_path, lm):
    folder = tmp_path / "lm"
    shutil.copytree(lm, folder)
    (folder / "tokenizer_config.json").write_text("[]")
    with pytest.raises(TokenizerError, match="tokenizer_config.json must hold a JSON object"):
        ArceeTokenizer.from_pretrained(folder)
    (folder / "tokenizer_config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not UTF-8"):
        ArceeTokenizer.from_pretrained(folder)


def test_trace_metadata_is_checked(tmp_path):
    path = tmp_path / "t.safetensors"
    for header, fragment in (({"format": "arcee_np.trace", "version": 1, "inputs": []}, "'names' must be a list"),
                             ({"format": "arcee_np.trace", "version": 1, "names": ["embed", "embed"], "inputs": []},
                              "twice"),
                             ({"format": "arcee_np.trace", "version": 2, "names": [], "inputs": []}, "version 2")):
        save_file({"embed": np.ones(2, np.float32)}, str(path), metadata={"arcee_np.trace": json.dumps(header)})
        with pytest.raises(TraceFileError, match=fragment):
            load_trace(path)


# ---------------------------------------------------------------------------------------------- the command line
def run(capsys, *argv):
    try:
        status = main(list(argv))
    except SystemExit as done:
        status = done.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    return status, out, err


def test_cli_refuses_bad_outputs_before_any_work(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()  # a checkpoint that would fail to load: the --out / --json check must come first
    status, _, err = run(capsys, "trace", "--model", str(broken), "--ids", "1 2", "--out",
                         str(tmp_path / "no" / "t.safetensors"))
    assert status == 2 and "--out" in err and "does not exist" in err
    status, _, err = run(capsys, "compare", "a", "b", "--json", str(tmp_path))
    assert status == 2 and "--json" in err and "is a folder" in err
    status, _, err = run(capsys, "compare", "a", "b", "--atol", "nan")
    assert status == 2 and "--atol" in err


def test_cli_generate_on_nan_weights_fails_in_one_line(tmp_path, lm, capsys):
    folder = tmp_path / "nan"
    shutil.copytree(lm, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = np.inf
    save_file(tensors, str(folder / "model.safetensors"))
    status, out, err = run(capsys, "generate", "x", "--model", str(folder), "--max-new-tokens", "3")
    assert status == 1 and "model.layers.1.mlp.up_proj.weight" in err and "1 Inf" in err and out == ""


def test_cli_against_transformers_never_reads_a_pickle(tmp_path, capsys):
    MODEL.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a zip, would fail to unpickle")
    status, _, err = run(capsys, "compare", "--against", "transformers", "--model", str(tmp_path), "--ids", "1 2")
    assert status == 1 and "never unpickles" in err
    status, _, err = run(capsys, "compare", "--against", "transformers", "--model", str(tmp_path / "none"),
                         "--ids", "1 2")
    assert status == 2 and "does not exist" in err  # a local path: never handed to huggingface_hub


def test_cli_turns_any_error_into_one_line(monkeypatch, capsys):
    import arcee_np.cli as cli

    for err, status, fragment in ((MemoryError(), 1, "out of memory"), (ConfigError("bad"), 1, "bad"),
                                  (RuntimeError("boom"), 1, "internal error (RuntimeError: boom)")):
        def fail(args, err=err):
            raise err
        monkeypatch.setattr(cli, "cmd_info", fail)
        got, _, message = run(capsys, "info")
        assert got == status and fragment in message and message.startswith("arcee-np info: error: ")


# ---------------------------------------------------------------------------------------------- sizes
def test_allocations_that_cannot_fit_are_refused_before_they_are_tried(monkeypatch):
    import arcee_np.validation.memory as memory

    with pytest.raises(InputError, match="from_config needs .* GiB"):
        ArceeForCausalLM.from_config(ArceeConfig(num_hidden_layers=10 ** 9, vocab_size=64, hidden_size=32,
                                                 intermediate_size=32, num_attention_heads=4))
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)  # bytes: below the logits and the cache
    monkeypatch.setattr(memory, "_SMALL", 0)
    with pytest.raises(InputError, match="the logits of 1 x 4 positions .* logits_to_keep=1"):
        MODEL(IDS)
    with pytest.raises(InputError, match="the KV cache of 1 x 200 positions"):
        MODEL.generate(IDS, max_new_tokens=196)


def test_empty_batches_and_bad_cache_sizes():
    with pytest.raises(InputError, match="empty"):
        MODEL(np.zeros((0, 3), np.int64))
    with pytest.raises(InputError, match=r"KVCache\(num_layers\) must be an integer >= 1"):
        KVCache(0)


def test_info_refuses_a_layer_count_the_weights_do_not_have(tmp_path, capsys):
    MODEL.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "num_hidden_layers": 10 ** 9}))
    start = time.perf_counter()
    status, _, err = run(capsys, "info", "--model", str(tmp_path))
    assert status == 1 and "num_hidden_layers=1000000000" in err and time.perf_counter() - start < 10
