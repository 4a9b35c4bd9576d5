"""Fuzzing the other files a checkpoint folder holds: tokenizer_config.json, generation_config.json, the
sharded index, and trace files' metadata, each with fields of every type (and whole files of garbage).

Each file either loads and behaves (the tokenizer round-trips text, generate runs, the model's weights are
the shards', the trace lists its tensors) or is refused with one of arcee_np's errors naming the file.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, strategies as st
from safetensors.numpy import save_file

from arcee_np import ArceeError, ArceeForCausalLM
from arcee_np.io.tokenizer import ArceeTokenizer
from arcee_np.oracle.tracefile import load_trace

from conftest import random_model, small_config
from fuzzing import JSON_VALUES, assert_refused
from tiny_lm import write_tokenizer

TOKENIZER_FIELDS = ["bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token", "add_eos_token",
                    "padding_side", "clean_up_tokenization_spaces", "model_max_length", "chat_template"]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok"))


@given(st.one_of(st.dictionaries(st.sampled_from(TOKENIZER_FIELDS), JSON_VALUES, min_size=1, max_size=3),
                 JSON_VALUES, st.binary(max_size=20)))
def test_tokenizer_config_loads_or_is_refused_naming_it(tmp_path_factory, tokenizer_folder, change):
    folder = tmp_path_factory.mktemp("t")
    shutil.copy(tokenizer_folder / "tokenizer.json", folder)
    config = json.loads((tokenizer_folder / "tokenizer_config.json").read_text())
    file = folder / "tokenizer_config.json"
    if isinstance(change, bytes):
        file.write_bytes(change)
    else:
        file.write_text(json.dumps({**config, **change} if isinstance(change, dict) else change))
    try:
        tok = ArceeTokenizer.from_pretrained(folder)
        text = "ROMEO: But soft"
        assert text in tok.decode(tok.encode(text), skip_special_tokens=True)
        if tok.chat_template is not None:
            tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    except ArceeError as err:
        assert_refused(err, str(file), "chat template", "pad_token", "chat_template")


GENERATION_FIELDS = ["max_new_tokens", "max_length", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
                     "repetition_penalty", "eos_token_id", "pad_token_id", "bos_token_id", "num_beams"]
MODEL = random_model(small_config(max_position_embeddings=64))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    MODEL.save_pretrained(folder)
    return folder


@given(st.dictionaries(st.sampled_from(GENERATION_FIELDS), JSON_VALUES, min_size=1, max_size=3))
def test_generation_config_is_checked_at_load_naming_it(checkpoint, change):
    file = checkpoint / "generation_config.json"
    file.write_text(json.dumps(change))
    try:
        model = ArceeForCausalLM.from_pretrained(checkpoint)
    except ArceeError as err:
        assert_refused(err, str(file))
        return
    try:
        out = model.generate(np.array([[3, 4, 5]]), max_new_tokens=2)
    except ArceeError as err:  # values fine alone, together too long or beams: refused before the first step
        assert_refused(err, "max_position_embeddings", "num_beams", "nothing is left", "sampling scores")
        return
    assert out.shape == (1, 5) and (out < 97).all()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The checkpoint's tensors split over two shard files (name -> shard)."""
    folder = tmp_path_factory.mktemp("shards")
    MODEL.save_pretrained(folder, max_shard_size=20_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder, index["weight_map"]


@given(st.data())
def test_a_sharded_index_that_lies_is_refused_naming_it(tmp_path_factory, shards, data):
    source, weight_map = shards
    folder = tmp_path_factory.mktemp("idx")
    for file in source.iterdir():
        shutil.copy(file, folder)
    names, files = sorted(weight_map), sorted(set(weight_map.values()))
    kind = data.draw(st.sampled_from(["drop", "add", "move", "value", "whole", "file"]))
    index = {"metadata": {}, "weight_map": dict(weight_map)}
    if kind == "drop":
        del index["weight_map"][data.draw(st.sampled_from(names))]
    elif kind == "add":
        index["weight_map"][data.draw(st.text(min_size=1, max_size=8))] = data.draw(st.sampled_from(files))
    elif kind == "move":
        name = data.draw(st.sampled_from(names))
        index["weight_map"][name] = data.draw(st.sampled_from(
            [f for f in files if f != weight_map[name]] + ["../x.safetensors", "/tmp/x", "missing.safetensors"]))
    elif kind == "value":
        index["weight_map"][data.draw(st.sampled_from(names))] = data.draw(JSON_VALUES)
    elif kind == "whole":
        index = data.draw(JSON_VALUES)
    else:
        index["weight_map"] = data.draw(JSON_VALUES)
    file = folder / "model.safetensors.index.json"
    file.write_text(json.dumps(index))
    try:
        loaded = ArceeForCausalLM.from_pretrained(folder)
    except ArceeError as err:
        assert_refused(err, str(file), "the checkpoint does not match")
        return
    assert index["weight_map"] == weight_map  # only the true index loads ...
    ids = np.array([[1, 2, 3]])
    assert np.array_equal(loaded(ids).logits, MODEL(ids).logits)  # ... with the shards' weights


@given(st.dictionaries(st.sampled_from(["format", "version", "names", "inputs", "meta"]), JSON_VALUES, min_size=1,
                       max_size=2), st.booleans())
def test_trace_metadata_that_lies_is_refused_naming_the_file(tmp_path_factory, change, inside_meta):
    good = {"format": "arcee_np.trace", "version": 1, "names": ["embed"], "inputs": ["input_ids"],
            "meta": {"dtype": "float32"}}
    header = {**good, "meta": {**good["meta"], **change}} if inside_meta else {**good, **change}
    path = tmp_path_factory.mktemp("trace") / "t.safetensors"
    save_file({"embed": np.ones((1, 2, 4), np.float32), "inputs.input_ids": np.array([[1, 2]])}, str(path),
              metadata={"arcee_np.trace": json.dumps(header)})
    try:
        t = load_trace(path)
    except ArceeError as err:
        assert_refused(err, str(path))
        return
    assert set(t) <= {"embed"} and set(t.inputs) <= {"input_ids"} and isinstance(t.meta, dict)
