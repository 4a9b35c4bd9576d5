"""ArceeConfig: transformers' defaults, both config.json spellings, validation errors."""

import json

import pytest

from arcee_np import ArceeConfig, ConfigError


def test_defaults_are_transformers_defaults():
    c = ArceeConfig()
    assert (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (32000, 2560, 18432, 32)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (32, 32, 80)
    assert (c.hidden_act, c.max_position_embeddings, c.rms_norm_eps, c.rope_theta) == ("relu2", 4096, 1e-5, 10000.0)
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (128000, 128001, None)
    assert c.tie_word_embeddings is False and c.attention_bias is False and c.mlp_bias is False
    assert c.use_cache is True and c.rope_scaling is None and c.initializer_range == 0.02
    assert c.attention_dropout == 0.0


def test_v4_legacy_type_key_is_read():
    c = ArceeConfig.from_dict({"model_type": "arcee", "rope_theta": 500000.0, "max_position_embeddings": 65536,
                               "rope_scaling": {"type": "yarn", "factor": 20.0,
                                                "original_max_position_embeddings": 4096}})
    assert c.rope_theta == 500000.0 and c.rope_type == "yarn"
    assert c.rope_scaling == {"rope_type": "yarn", "factor": 20.0, "original_max_position_embeddings": 4096}


def test_v5_rope_parameters_are_read():
    c = ArceeConfig.from_dict({"model_type": "arcee", "max_position_embeddings": 65536,
                               "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 20.0,
                                                   "original_max_position_embeddings": 4096, "beta_fast": 16}})
    assert c.rope_type == "yarn" and c.rope_scaling["beta_fast"] == 16 and c.rope_theta == 10000.0
    d = ArceeConfig.from_dict({"model_type": "arcee", "rope_parameters": {"rope_type": "default", "rope_theta": 3.0}})
    assert d.rope_scaling is None and d.rope_theta == 3.0


def test_linear_scaling_is_read_in_both_spellings_and_written_back(tmp_path):
    v5 = ArceeConfig.from_dict({"model_type": "arcee", "rope_parameters": {"rope_type": "linear", "rope_theta": 500.0,
                                                                            "factor": 4.0}})
    v4 = ArceeConfig.from_dict({"model_type": "arcee", "rope_theta": 500.0,
                                "rope_scaling": {"type": "linear", "factor": 4.0}})
    assert v5.rope_type == v4.rope_type == "linear" and v5.rope_theta == 500.0
    assert v5.rope_scaling == v4.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    assert v5.rope_parameters == {"rope_type": "linear", "rope_theta": 500.0, "factor": 4.0}
    v5.save_pretrained(tmp_path)
    assert ArceeConfig.from_pretrained(tmp_path) == v5


def test_yarn_defaults_follow_transformers_v5():
    c = ArceeConfig(max_position_embeddings=1024, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    assert c.rope_scaling["original_max_position_embeddings"] == 1024
    d = ArceeConfig(max_position_embeddings=1024, rope_scaling={"rope_type": "yarn", "factor": None,
                                                                "original_max_position_embeddings": 256})
    assert d.rope_scaling["factor"] == 4.0


def test_round_trip_through_json(tmp_path):
    c = ArceeConfig(vocab_size=100, hidden_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                    rope_scaling={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64},
                    extra={"architectures": ["ArceeForCausalLM"]})
    c.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "arcee" and data["rope_scaling"]["rope_type"] == "yarn"
    assert data["architectures"] == ["ArceeForCausalLM"]
    assert ArceeConfig.from_pretrained(tmp_path) == c


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(num_attention_heads=6, num_key_value_heads=4), "divisible by num_key_value_heads"),
    (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "unknown rope_type 'dynamic'"),
    (dict(rope_scaling={"rope_type": "linear"}), "linear RoPE factor must be a finite number >= 1"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 0.5}), "linear RoPE factor must be a finite number >= 1"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "beta_fast": 32}), "unknown linear RoPE parameter"),
    (dict(rope_scaling={"factor": 2.0}), "no 'rope_type'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 0.5}), "factor must be a number >= 1"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0, "bogus": 1}), "unknown YaRN parameter"),
    (dict(hidden_act="swish"), "hidden_act 'swish' is not supported"),
    (dict(hidden_size=0), "hidden_size must be a positive integer"),
    (dict(head_dim=7), "head_dim must be even"),
])
def test_bad_configs_name_the_problem(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        ArceeConfig(**kwargs)


def test_wrong_model_type_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="model_type 'llama'"):
        ArceeConfig.from_dict({"model_type": "llama"})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ArceeConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ArceeConfig.from_pretrained(tmp_path)
