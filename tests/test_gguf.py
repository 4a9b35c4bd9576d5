"""Reading GGUF files: names, the rotary row order, metadata readings, the forward, errors.

The fixtures (tests/golden_gguf, scripts/make_gguf_fixtures.py) were made by llama.cpp's own converter and
quantizer from transformers checkpoints; their expectations are transformers' logits (float32, and float64
with its float32 casts lifted) and llama.cpp's logits on each file.
"""

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from arcee_np import ArceeConfig, ArceeForCausalLM, CheckpointError, ConfigError
from arcee_np.io.checkpoint import read_checkpoint
from arcee_np.io.gguf import GGUFFile, GGUFWeight, hf_name, read_metadata, rotary_row_order
from arcee_np.io.gguf_writer import convert_checkpoint, gguf_name, permute_rotary_rows, write_gguf

FIXTURES = Path(__file__).parent / "golden_gguf"
GOLDEN = Path(__file__).parent / "golden"
META = json.loads((FIXTURES / "meta.json").read_text())
GGUF_FILES = sorted(FIXTURES.glob("*/*.gguf"))
F32_FILES = [p for p in GGUF_FILES if p.stem.endswith("-F32")]


def case_of(path: Path) -> Path:
    return path.parent


def kind_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[1]


def expected(path: Path) -> dict:
    return load_file(case_of(path) / "expected.safetensors")


def hf_config(path: Path) -> ArceeConfig:
    return ArceeConfig.from_pretrained(case_of(path) / "hf")


# ---------------------------------------------------------------------------------------------- names and layout
def test_names_round_trip():
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                 "model.layers.11.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.bias",
                 "model.layers.3.mlp.down_proj.weight", "model.layers.2.post_attention_layernorm.weight"):
        assert hf_name(gguf_name(name)) == name
    assert gguf_name("model.layers.2.mlp.up_proj.weight") == "blk.2.ffn_up.weight"
    assert hf_name("rope_freqs.weight") is None


@pytest.mark.parametrize("heads, head_dim", [(1, 2), (2, 8), (4, 16), (20, 128)])
def test_rotary_row_order_undoes_the_converters_permutation(heads, head_dim):
    """convert_hf_to_gguf.py's LlamaModel.permute: reshape(heads, 2, hd/2, cols).swapaxes(1, 2)."""
    rows = heads * head_dim
    weight = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    converted = weight.reshape(heads, 2, head_dim // 2, 3).swapaxes(1, 2).reshape(rows, 3)
    np.testing.assert_array_equal(permute_rotary_rows(weight, heads), converted)
    np.testing.assert_array_equal(converted[rotary_row_order(rows, heads)], weight)
    # the pair (j, j + hd/2) of every head sits in adjacent file rows (2j, 2j + 1)
    order = rotary_row_order(rows, heads).reshape(heads, 2, head_dim // 2)
    np.testing.assert_array_equal(order[:, 1] - order[:, 0], 1)


@pytest.mark.parametrize("path", F32_FILES, ids=lambda p: p.stem)
def test_f32_weights_equal_the_checkpoint(path):
    """Every tensor of an F32 file made by llama.cpp's converter, under transformers' name, rows restored."""
    model = ArceeForCausalLM.from_gguf(path, widen="per_use")
    ours = model.state_dict()
    theirs = {k: np.asarray(v, dtype=np.float32) for k, v in read_checkpoint(case_of(path) / "hf").items()}
    assert set(ours) == set(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_weights_are_memory_mapped():
    """Quantized matrices are views of the file (no copy); F32 matrices that need no reordering too."""
    model = ArceeForCausalLM.from_gguf(FIXTURES / "kquants" / "kquants-Q4_K.gguf", widen="per_use")
    q = model.params["layers.0.self_attn.q_proj.weight"]
    assert isinstance(q, GGUFWeight) and q.stored_dtype == "Q4_K" and q.row_order is not None
    assert isinstance(q.raw.base, np.memmap) or isinstance(getattr(q.raw.base, "base", None), np.memmap)
    f32 = ArceeForCausalLM.from_gguf(FIXTURES / "default_rope" / "default_rope-F32.gguf", widen="per_use")
    up = f32.params["layers.0.mlp.up_proj.weight"]
    assert not up.flags.owndata and not up.flags.writeable


# ---------------------------------------------------------------------------------------------- metadata
CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                 "rope_scaling", "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act", "bos_token_id",
                 "eos_token_id", "pad_token_id")


@pytest.mark.parametrize("case", ["default_rope", "yarn_gqa_tied", "kquants"])
def test_clean_conversion_gives_the_checkpoints_config(case):
    path = next((FIXTURES / case).glob("*.gguf"))
    for reading in ("llama.cpp", "file"):
        config = read_metadata(GGUFFile(path), reading).config
        reference = hf_config(path)
        for name in CONFIG_FIELDS:
            assert getattr(config, name) == getattr(reference, name), (reading, name)


def test_explicit_yarn_under_both_readings():
    path = FIXTURES / "yarn_explicit" / "yarn_explicit-F32.gguf"
    llama = read_metadata(GGUFFile(path), "llama.cpp")
    assert llama.config.rope_scaling == {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256}
    statuses = {n.key: n.status for n in llama.notes}
    for key in ("yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow"):
        assert statuses[f"arcee.rope.scaling.{key}"] == "ignored"
    for setting in ("mscale", "mscale_all_dim", "truncate", "hidden_act"):
        assert statuses[setting] == "not carried"
    file = read_metadata(GGUFFile(path), "file").config.rope_scaling
    assert file == {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256,
                    "attention_factor": 1.0, "beta_fast": 16.0, "beta_slow": 2.0}  # truncate: never written


def test_attn_factor_key_scales_the_yarn_attention_factor(tmp_path):
    """llama.cpp multiplies (1 + 0.1 ln factor) by arcee.rope.scaling.attn_factor; the reading does too."""
    path = tmp_path / "override.gguf"
    convert_checkpoint(FIXTURES / "yarn_gqa_tied" / "hf", path, metadata={"arcee.rope.scaling.attn_factor": 0.5})
    scaling = read_metadata(GGUFFile(path)).config.rope_scaling
    assert scaling["attention_factor"] == pytest.approx(0.5 * (1 + 0.1 * math.log(8.0)), rel=1e-7)


def test_float32_numbers_read_as_their_decimal():
    meta = GGUFFile(FIXTURES / "default_rope" / "default_rope-F32.gguf").metadata
    assert meta["arcee.attention.layer_norm_rms_epsilon"] == 1e-05  # stored as float32 9.99999974738e-06


# ---------------------------------------------------------------------------------------------- the forward
@pytest.mark.parametrize("path", F32_FILES, ids=lambda p: p.stem)
def test_f32_gguf_gives_transformers_logits(path):
    """With the checkpoint's config: float64 to 1e-9 of transformers float64 (casts lifted), float32 to 1e-4."""
    exp = expected(path)
    for widen in ("at_load", "per_use"):
        model64 = ArceeForCausalLM.from_gguf(path, dtype="float64", config=hf_config(path), widen=widen)
        np.testing.assert_allclose(model64(exp["input_ids"]).logits, exp["logits_float64"], rtol=0, atol=1e-9)
        model32 = ArceeForCausalLM.from_gguf(path, config=hf_config(path), widen=widen)
        np.testing.assert_allclose(model32(exp["input_ids"]).logits, exp["logits_float32"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("path", F32_FILES, ids=lambda p: p.stem)
def test_llama_cpp_reading_gives_llama_cpps_logits(path):
    """from_pretrained(file.gguf) computes what llama.cpp computes (flash attention off, F32 KV cache)."""
    logits = ArceeForCausalLM.from_pretrained(path)(expected(path)["input_ids"]).logits[0]
    llama = load_file(case_of(path) / "llama_cpp.safetensors")
    np.testing.assert_allclose(logits, llama["F32"], rtol=1e-5, atol=1e-4)
    # the caveat: llama.cpp's flash attention turns the F32 cache into float16
    assert 1e-3 < np.abs(llama["F32_flash"] - llama["F32"]).max() < 5e-2


def test_ignored_yarn_settings_are_what_llama_cpp_misses():
    """On the explicit-YaRN file llama.cpp differs from transformers by whole logits; arcee_np shows why."""
    path = FIXTURES / "yarn_explicit" / "yarn_explicit-F32.gguf"
    llama = load_file(case_of(path) / "llama_cpp.safetensors")["F32"]
    transformers = expected(path)["logits_float32"][0]
    assert np.abs(llama - transformers).max() > 0.5


@pytest.mark.parametrize("path", [p for p in GGUF_FILES if kind_of(p) not in ("F32", "F16", "BF16")],
                         ids=lambda p: p.stem)
def test_quantized_forward_follows_llama_cpp(path):
    """arcee_np's forward on quantized blocks is closer to llama.cpp's (which also rounds its activations to
    8 bits) than either is to the unquantized checkpoint: the dequantization is the same, the error is not."""
    exp = expected(path)
    ours = ArceeForCausalLM.from_gguf(path, config=hf_config(path), widen="per_use")(exp["input_ids"]).logits[0]
    llama = load_file(case_of(path) / "llama_cpp.safetensors")[kind_of(path)]
    assert np.abs(ours - llama).max() < np.abs(llama - exp["logits_float32"][0]).max()


@pytest.mark.parametrize("path", GGUF_FILES, ids=lambda p: p.stem)
def test_widening_policies_agree(path):
    ids = expected(path)["input_ids"]
    at_load = ArceeForCausalLM.from_gguf(path, widen="at_load")(ids).logits
    per_use = ArceeForCausalLM.from_gguf(path, widen="per_use")(ids).logits
    np.testing.assert_allclose(per_use, at_load, rtol=0, atol=1e-5)


GOLDEN_CASES = sorted(p.parent.name for p in GOLDEN.glob("*/config.json"))


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_every_golden_config_reads_back_bit_for_bit(case, tmp_path):
    """Each golden checkpoint written as an F32 GGUF (as the converter would) runs to the logits of its
    weights in float32 (float64 checkpoints are rounded to float32 by the conversion)."""
    folder = GOLDEN / case
    path = tmp_path / f"{case}.gguf"
    convert_checkpoint(folder, path)
    config = ArceeConfig.from_pretrained(folder)
    ids = np.arange(3, 3 + 10, dtype=np.int64)[None, :] % config.vocab_size
    float32 = {name: np.asarray(array, dtype=np.float32) for name, array in read_checkpoint(folder).items()}
    reference = ArceeForCausalLM.from_state_dict(config, float32, dtype="float64")(ids).logits
    ours = ArceeForCausalLM.from_gguf(path, dtype="float64", config=config)(ids).logits
    np.testing.assert_array_equal(ours, reference)


# ---------------------------------------------------------------------------------------------- the writer
@pytest.mark.parametrize("path", [p for p in GGUF_FILES if kind_of(p) in ("F32", "F16", "BF16", "Q8_0", "Q4_0")],
                         ids=lambda p: p.stem)
def test_writer_reproduces_llama_cpp_byte_for_byte(path, tmp_path):
    out = tmp_path / path.name
    convert_checkpoint(case_of(path) / "hf", out, kind_of(path))
    ours, theirs = GGUFFile(out), GGUFFile(path)
    assert set(ours.tensors) == set(theirs.tensors)
    for name, tensor in theirs.tensors.items():
        assert ours.tensors[name].type_name == tensor.type_name, name
        np.testing.assert_array_equal(ours.tensors[name].raw, tensor.raw, err_msg=name)
    for key, value in ours.metadata.items():
        assert theirs.metadata[key] == value, key


# ---------------------------------------------------------------------------------------------- errors
def test_not_a_gguf_file():
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        GGUFFile(FIXTURES / "default_rope" / "hf" / "model.safetensors")


def test_truncated_file(tmp_path):
    data = (FIXTURES / "default_rope" / "default_rope-Q8_0.gguf").read_bytes()
    for size in (len(data) // 2, 200):
        path = tmp_path / f"cut{size}.gguf"
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="truncated"):
            ArceeForCausalLM.from_pretrained(path)


def test_another_architecture(tmp_path):
    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(ConfigError, match="'llama' model"):
        ArceeForCausalLM.from_pretrained(path)


def test_unsupported_type_and_unknown_tensor(tmp_path):
    folder = FIXTURES / "default_rope" / "hf"
    tensors = read_checkpoint(folder)
    path = tmp_path / "odd.gguf"
    write_gguf(path, ArceeConfig.from_pretrained(folder), tensors)
    reader = GGUFFile(path)
    writer = gguf.GGUFWriter(str(tmp_path / "odd2.gguf"), "arcee")
    for key, value in reader.metadata.items():
        if key != "general.architecture" and not isinstance(value, list):
            (writer.add_uint32 if reader.value_types[key] == "UINT32" else
             writer.add_float32 if reader.value_types[key] == "FLOAT32" else writer.add_string)(key, value)
    for name, tensor in reader.tensors.items():
        data = tensor.dequantize()
        if name == "blk.0.ffn_up.weight":  # IQ4_NL: 32 values in 18 bytes, a type arcee_np does not decode
            blocks = np.zeros((data.shape[0], data.shape[1] // 32 * 18), dtype=np.uint8)
            writer.add_tensor(name, blocks, raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
        else:
            writer.add_tensor(name, data)
    writer.add_tensor("blk.0.attn_sinks.weight", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(CheckpointError) as err:
        ArceeForCausalLM.from_pretrained(tmp_path / "odd2.gguf")
    assert "blk.0.ffn_up.weight (IQ4_NL)" in str(err.value) and "blk.0.attn_sinks.weight" in str(err.value)


def test_linear_rope_scaling_is_read(tmp_path):
    """rope.scaling.type "linear" is transformers' linear position interpolation (llama.cpp's freq_scale
    = 1/factor); an unknown type is refused."""
    path = tmp_path / "linear.gguf"
    convert_checkpoint(FIXTURES / "default_rope" / "hf", path, metadata={"arcee.rope.scaling.type": "linear",
                                                                        "arcee.rope.scaling.factor": 2.0})
    model = ArceeForCausalLM.from_pretrained(path)
    assert model.config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    convert_checkpoint(FIXTURES / "default_rope" / "hf", path, metadata={"arcee.rope.scaling.type": "longrope",
                                                                        "arcee.rope.scaling.factor": 2.0})
    with pytest.raises(ConfigError, match="'longrope'"):
        ArceeForCausalLM.from_pretrained(path)


def test_fixture_meta_records_the_versions():
    assert META["llama_cpp_commit"] and META["gguf_py"] == "0.19.0" and META["llama_cpp_python"] == "0.3.36"
    assert set(META["cases"]) == {p.name for p in FIXTURES.iterdir() if p.is_dir()}
