"""Fuzzing config.json: fields of wrong types and ranges, whole files that are not configs, and the v4 / v5
spellings of the RoPE settings in every combination.

A generated config either loads into an ArceeConfig whose fields keep the given values and satisfy every
invariant the model relies on, or is refused with a ConfigError naming the file and the field.
"""

from __future__ import annotations

import json
import math

from hypothesis import assume, given, strategies as st

from arcee_np import ArceeConfig, ConfigError, MissingFileError
from arcee_np.validation.config import SUPPORTED_ACTIVATIONS

from fuzzing import JSON_VALUES, assert_refused, is_finite_number

BASE = {"model_type": "arcee", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "hidden_act": "relu2", "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "use_cache": True,
        "initializer_range": 0.02, "attention_dropout": 0.0, "head_dim": None}
# fields whose errors may name a field they interact with (heads divide, head_dim derives ...)
RELATED = {"hidden_size": ("head_dim",), "num_attention_heads": ("num_key_value_heads", "head_dim"),
           "num_key_value_heads": ("num_attention_heads",), "head_dim": ("hidden_size",),
           "max_position_embeddings": ("rope_scaling",)}
FIELDS = sorted(set(BASE) | {"rope_scaling", "rope_parameters", "num_labels", "problem_type", "classifier_dropout",
                             "id2label", "token_classification_bias"})


def check_invariants(c: ArceeConfig) -> None:
    """What the forward relies on, whatever config.json said."""
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "head_dim", "num_labels"):
        value = getattr(c, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 1, (name, value)
    assert c.num_attention_heads % c.num_key_value_heads == 0 and c.head_dim % 2 == 0
    for name in ("rms_norm_eps", "rope_theta"):
        assert is_finite_number(getattr(c, name)) and getattr(c, name) > 0, name
    assert c.hidden_act in SUPPORTED_ACTIVATIONS
    for name in ("use_cache", "tie_word_embeddings", "attention_bias", "mlp_bias"):
        assert isinstance(getattr(c, name), bool), name
    if c.rope_scaling is not None:
        assert c.rope_scaling["rope_type"] in ("linear", "yarn") and is_finite_number(c.rope_scaling["factor"])
        assert c.rope_scaling["factor"] >= 1


@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=3))
def test_fields_of_any_type_load_correctly_or_are_refused_by_name(changes):
    data = {**BASE, **changes}
    try:
        c = ArceeConfig.from_dict(data, source="fuzz/config.json")
    except ConfigError as err:
        names = [n for k in changes for n in (k, *RELATED.get(k, ()))]
        assert_refused(err, *names)
        assert str(err).startswith("fuzz/config.json: ")
        return
    check_invariants(c)
    for name, value in changes.items():
        if name in ("vocab_size", "hidden_size", "num_hidden_layers", "rms_norm_eps", "hidden_act", "mlp_bias"):
            assert getattr(c, name) == value and type(getattr(c, name)) is type(value)  # kept, not coerced


@given(st.one_of(JSON_VALUES, st.binary(max_size=40)))
def test_a_config_file_that_is_not_a_config_is_refused_naming_it(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("cfg")
    file = folder / "config.json"
    file.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    try:
        c = ArceeConfig.from_pretrained(folder)
    except (ConfigError, MissingFileError) as err:
        assert_refused(err, str(file))
        return
    assume(False)  # rare: a generated dict that is a valid config
    check_invariants(c)


THETAS = st.one_of(st.none(), st.sampled_from([10000.0, 500000.0]))
TYPES = st.sampled_from([None, "default", "yarn"])


@given(THETAS, THETAS, TYPES, TYPES, TYPES, st.booleans())
def test_rope_spellings_that_disagree_are_refused(top_theta, inner_theta, v4_type, legacy_type, v5_type, both):
    """v4: rope_theta + rope_scaling{rope_type | type}; v5: rope_parameters{rope_theta, rope_type}. Whatever is
    accepted agrees with every spelling that was given; a contradiction names one of them."""
    data = {k: v for k, v in BASE.items() if k != "rope_theta"}
    if top_theta is not None:
        data["rope_theta"] = top_theta
    scaling = {"factor": 4.0, "original_max_position_embeddings": 32}
    if v4_type is not None or legacy_type is not None:
        data["rope_scaling"] = {**scaling, **({"rope_type": v4_type} if v4_type else {}),
                                **({"type": legacy_type} if legacy_type else {})}
    if both or "rope_scaling" not in data:
        params = {**({"rope_theta": inner_theta} if inner_theta else {}), "rope_type": v5_type or "default"}
        if params["rope_type"] == "yarn":
            params.update(scaling)
        data["rope_parameters"] = params
    try:
        c = ArceeConfig.from_dict(data, source="config.json")
    except ConfigError as err:
        assert_refused(err, "rope_theta", "rope_scaling", "rope_parameters", "rope_type", "type")
        return
    given_thetas = {t for t in (top_theta, data.get("rope_parameters", {}).get("rope_theta")) if t is not None}
    assert given_thetas <= {c.rope_theta} and (given_thetas or c.rope_theta == 10000.0)
    given_types = {t for t in (v4_type, legacy_type, data.get("rope_parameters", {}).get("rope_type")) if t}
    assert given_types <= {c.rope_type}
    assert not math.isnan(c.rope_theta)
