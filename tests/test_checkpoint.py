"""Checkpoints: our safetensors reader, bf16 widening, sharding, tying, and errors that list every problem."""

import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from arcee_np import ArceeForCausalLM, ArceeModel, CheckpointError
from arcee_np.io.safetensors import read_safetensors

from conftest import random_model, small_config


def test_reader_matches_safetensors_package(tmp_path, rng):
    tensors = {"a": rng.normal(size=(3, 5)).astype(np.float32), "b": rng.normal(size=7).astype(np.float16),
               "c": rng.integers(0, 9, (2, 2)).astype(np.int64), "d": rng.normal(size=(4,)).astype(np.float64)}
    save_file(tensors, tmp_path / "t.safetensors")
    read = read_safetensors(tmp_path / "t.safetensors")
    for name, array in tensors.items():
        assert read[name].dtype == array.dtype and np.array_equal(read[name], array)


def test_float32_tensors_are_memory_mapped_not_copied(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = ArceeForCausalLM.from_pretrained(tmp_path)
    weight = loaded.params["layers.0.mlp.up_proj.weight"]
    assert not weight.flags.owndata and not weight.flags.writeable  # a view into the mapped file
    assert isinstance(weight.base, (memoryview, np.ndarray)) or weight.base is not None


def test_bfloat16_is_read_in_place_and_widens_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 2.0**-66, 65280.0], dtype=np.float32)  # all representable in bf16
    raw = (values.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "bf16.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw.tobytes())
    read = read_safetensors(tmp_path / "bf16.safetensors")["w"]
    assert read.dtype == ml_dtypes.bfloat16 and not read.flags.owndata  # the stored dtype, a view of the file
    assert np.array_equal(read.astype(np.float32), values)


def test_sharded_save_and_load_round_trip(tmp_path, model, rng):
    model.save_pretrained(tmp_path, max_shard_size=20_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len([f for f in os.listdir(tmp_path) if f.startswith("model-000")]) >= 2
    loaded = ArceeForCausalLM.from_pretrained(tmp_path)
    ids = rng.integers(0, 97, (2, 6))
    assert np.array_equal(loaded(ids).logits, model(ids).logits)


def test_tied_embeddings_save_once_and_load(tmp_path, rng):
    tied = random_model(small_config(tie_word_embeddings=True))
    assert "lm_head.weight" not in tied.state_dict()
    tied.save_pretrained(tmp_path)
    loaded = ArceeForCausalLM.from_pretrained(tmp_path)
    ids = rng.integers(0, 97, (1, 5))
    embed = loaded.params["embed_tokens.weight"]
    hidden = ArceeModel.from_pretrained(tmp_path)(ids).last_hidden_state
    assert np.allclose(loaded(ids).logits, hidden @ embed.T, atol=1e-6)


def test_base_model_loads_from_causal_lm_checkpoint(tmp_path, model, rng):
    model.save_pretrained(tmp_path)
    base = ArceeModel.from_pretrained(tmp_path)
    ids = rng.integers(0, 97, (1, 4))
    out = model(ids, output_hidden_states=True)
    assert np.array_equal(base(ids).last_hidden_state, out.hidden_states[-1])


def test_missing_unexpected_and_misshaped_are_listed_together(tmp_path, model):
    tensors = model.state_dict()
    del tensors["model.layers.1.mlp.up_proj.weight"]
    del tensors["model.norm.weight"]
    tensors["model.layers.0.mlp.gate_proj.weight"] = np.zeros((48, 32), np.float32)
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
    model.config.save_pretrained(tmp_path)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        ArceeForCausalLM.from_pretrained(tmp_path)
    message = str(err.value)
    for fragment in ("missing (2)", "model.layers.1.mlp.up_proj.weight", "model.norm.weight", "unexpected (1)",
                     "gate_proj", "wrong shape (1)", "k_proj.weight: checkpoint (8, 32), config wants (16, 32)"):
        assert fragment in message


def test_truncated_and_malformed_files_give_clear_errors(tmp_path, model):
    model.save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(data[:4])
    with pytest.raises(CheckpointError, match="truncated"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 8) + b"{garbage")
    with pytest.raises(CheckpointError, match="malformed"):
        ArceeForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        ArceeForCausalLM.from_pretrained(tmp_path)


def test_pickle_checkpoints_are_refused(tmp_path, model):
    model.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match="never unpickles"):
        ArceeForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_dtype_modes_convert_weights(tmp_path, model, dtype):
    """Vectors take the model's dtype; matrices its compute dtype when widened at load (float64 in golden
    mode, float32 for the products of the 16-bit modes); the outputs and the state dict the model's dtype."""
    model.save_pretrained(tmp_path)
    loaded = ArceeForCausalLM.from_pretrained(tmp_path, dtype=dtype, widen="at_load")
    compute = "float64" if dtype == "float64" else "float32"
    assert all(str(v.dtype) == (dtype if v.ndim == 1 else compute) for v in loaded.params.values())
    assert all(str(v.dtype) == dtype for v in loaded.state_dict().values())
    out = loaded(np.array([[1, 2, 3]]))
    assert str(out.logits.dtype) == dtype


def test_bad_dtype_and_device(tmp_path, model):
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        ArceeForCausalLM.from_pretrained(tmp_path, dtype="float8")
    with pytest.raises(ValueError, match='dtype="bfloat16" is not available on device="array_api_strict"'):
        ArceeForCausalLM.from_pretrained(tmp_path, dtype="bfloat16", device="array_api_strict")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        ArceeForCausalLM.from_pretrained(tmp_path, device="tpu")
