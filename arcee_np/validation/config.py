"""config.json and ArceeConfig: the type and range of every field, and the RoPE settings in both spellings.

``check_config_json`` checks what only a config.json can get wrong (not an object, another model_type,
labels that are not a mapping, v4 and v5 RoPE spellings that contradict each other); ``check_config``
checks every field of an ArceeConfig, however it was built. Both raise ConfigError.

Contradicting spellings are refused rather than resolved. transformers 5 resolves them silently and
unevenly: ``rope_parameters["rope_theta"]`` wins over a top-level ``rope_theta``, a ``rope_scaling`` dict
replaces ``rope_parameters`` whole (dropping its ``rope_theta``), and ``rope_type`` wins over ``type``;
transformers 4 reads only the top-level ``rope_theta`` and ``rope_scaling``. Spellings that agree are fine.
"""

from __future__ import annotations

from ..blocks.activations import ACTIVATIONS
from ..blocks.rope import ROPE_TYPES
from ..errors import ConfigError
from .values import is_integer, require_choice, require_flag, require_int, require_real, shown

SUPPORTED_ROPE_TYPES = tuple(ROPE_TYPES)  # the blocks' tables are the one list
SUPPORTED_ACTIVATIONS = tuple(ACTIVATIONS)
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
YARN_KEYS = ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
             "mscale_all_dim", "truncate")

_POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "max_position_embeddings", "num_labels")
_OPTIONAL_POSITIVE_INTS = ("num_key_value_heads", "head_dim")  # None: derived
_FLAGS = ("use_cache", "tie_word_embeddings", "attention_bias", "mlp_bias", "token_classification_bias")


def check_config(c) -> None:
    """Every field of the ArceeConfig ``c`` (before ``num_key_value_heads``/``head_dim`` are derived)."""
    for name in _POSITIVE_INTS:
        require_int(name, getattr(c, name), ConfigError, low=1)
    for name in _OPTIONAL_POSITIVE_INTS:
        if getattr(c, name) is not None:
            require_int(name, getattr(c, name), ConfigError, low=1)
    for name in _FLAGS:
        require_flag(name, getattr(c, name), ConfigError)
    require_real("rms_norm_eps", c.rms_norm_eps, ConfigError, low=0, low_open=True)
    require_real("rope_theta", c.rope_theta, ConfigError, low=0, low_open=True)
    require_real("initializer_range", c.initializer_range, ConfigError, low=0)
    require_real("attention_dropout", c.attention_dropout, ConfigError, low=0, high=1)
    if c.classifier_dropout is not None:
        require_real("classifier_dropout", c.classifier_dropout, ConfigError, low=0, high=1)
    require_choice("hidden_act", c.hidden_act, SUPPORTED_ACTIVATIONS, ConfigError)
    if c.problem_type is not None:
        require_choice("problem_type", c.problem_type, PROBLEM_TYPES, ConfigError)
    for name in ("pad_token_id", "bos_token_id"):
        if getattr(c, name) is not None:
            require_int(name, getattr(c, name), ConfigError, low=0)
    eos = c.eos_token_id
    if eos is not None and not (is_integer(eos) and eos >= 0) and \
            not (isinstance(eos, list) and all(is_integer(i) and i >= 0 for i in eos)):
        raise ConfigError(f"eos_token_id must be a token id (an integer >= 0), a list of them or null, got {shown(eos)}.")

    heads = c.num_attention_heads
    kv_heads = c.num_key_value_heads if c.num_key_value_heads is not None else heads
    if heads % kv_heads:
        raise ConfigError(
            f"num_attention_heads ({heads}) must be divisible by num_key_value_heads ({kv_heads}): each KV head "
            f"serves the same number of query heads. Choose num_key_value_heads among the divisors of {heads}.")
    head_dim = c.head_dim if c.head_dim is not None else c.hidden_size // heads
    if head_dim == 0:
        raise ConfigError(f"head_dim is hidden_size // num_attention_heads = {c.hidden_size} // {heads} = 0; "
                          f"set head_dim, or a hidden_size of at least num_attention_heads.")
    if head_dim % 2:
        raise ConfigError(f"head_dim must be even for rotary embeddings (pairs of features), got {head_dim}.")
    if c.rope_scaling is not None:
        check_rope_scaling(c.rope_scaling, "rope_scaling")
        scaling = c.rope_scaling
        if scaling.get("rope_type", scaling.get("type")) == "yarn" and scaling.get("factor") is None:
            original = scaling.get("original_max_position_embeddings") or c.max_position_embeddings
            if c.max_position_embeddings < original:
                raise ConfigError(
                    f"rope_scaling has no YaRN factor and its default, max_position_embeddings / "
                    f"original_max_position_embeddings = {c.max_position_embeddings} / {original}, is below 1; "
                    f"set factor.")


def check_rope_scaling(scaling, name: str) -> None:
    """A ``rope_scaling`` (v4) or ``rope_parameters`` (v5) dict: its type names and the parameters it holds."""
    if not isinstance(scaling, dict):
        raise ConfigError(f"{name} must be an object (a dict) or null, got {shown(scaling)}.")
    for key in ("rope_type", "type"):
        if key in scaling and not isinstance(scaling[key], str):
            raise ConfigError(f"{name}.{key} must be a string ('default' or 'yarn'), got {shown(scaling[key])}.")
    if "type" in scaling and "rope_type" in scaling and scaling["type"] != scaling["rope_type"]:
        raise ConfigError(f"{name} gives type={scaling['type']!r} and rope_type={scaling['rope_type']!r}, which "
                          f"disagree (transformers 5 takes rope_type, older code type): keep one of them.")
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type is None:
        raise ConfigError(f"{name} has no 'rope_type' (or legacy 'type'); set it to 'default', 'linear' or 'yarn'.")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"{name}: unknown rope_type {rope_type!r}; arcee_np supports {', '.join(map(repr, SUPPORTED_ROPE_TYPES))} "
            f"(the types Arcee checkpoints use). Convert the checkpoint or drop {name} for plain RoPE.")
    if "rope_theta" in scaling:
        require_real(f"{name}.rope_theta", scaling["rope_theta"], ConfigError, low=0, low_open=True)
    takes = {"yarn": YARN_KEYS, "linear": ("factor",), "default": ()}[rope_type]
    unknown = sorted(set(scaling) - {"rope_type", "type", "rope_theta", *takes})
    if unknown:
        described = f"takes {', '.join(takes)}" if takes else "takes no parameters"
        raise ConfigError(f"{name}: unknown parameter(s) {unknown} for rope_type {rope_type!r}, which {described} "
                          f"besides rope_theta.")
    if rope_type == "linear":  # position interpolation: positions are divided by the factor
        require_real(f"{name}.factor (linear)", scaling.get("factor"), ConfigError, low=1)
    if rope_type != "yarn":
        return
    if scaling.get("factor") is not None:
        require_real(f"{name}.factor (YaRN)", scaling["factor"], ConfigError, low=1)
    if scaling.get("original_max_position_embeddings") is not None:
        require_int(f"{name}.original_max_position_embeddings", scaling["original_max_position_embeddings"],
                    ConfigError, low=1)
    if scaling.get("attention_factor") is not None:
        require_real(f"{name}.attention_factor", scaling["attention_factor"], ConfigError, low=0, low_open=True)
    for key in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
        if scaling.get(key) is not None:
            require_real(f"{name}.{key}", scaling[key], ConfigError)
    if scaling.get("truncate") is not None:
        require_flag(f"{name}.truncate", scaling["truncate"], ConfigError)


def check_config_json(data) -> None:
    """What a config.json dict can get wrong beyond ArceeConfig's fields: its shape, model_type, labels and
    contradicting RoPE spellings."""
    if not isinstance(data, dict):
        raise ConfigError(f"must hold a JSON object of settings ({{\"vocab_size\": ..., ...}}), got "
                          f"{type(data).__name__} {shown(data)}; it is not a model config.")
    model_type = data.get("model_type", "arcee")
    if model_type != "arcee":
        raise ConfigError(f"model_type {shown(model_type)} is not an Arcee model; arcee_np runs model_type 'arcee' "
                          f"only.")
    for key in ("id2label", "label2id"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{key} must be an object mapping labels, got {shown(data[key])}.")
    if data.get("id2label") == {}:
        raise ConfigError("id2label is empty: a model has at least one label; drop the key or name the labels.")
    if isinstance(data.get("id2label"), dict):
        bad = [k for k, v in data["id2label"].items() if not (str(k).isdigit() and isinstance(v, str))]
        if bad:
            raise ConfigError(f"id2label must map class ids (\"0\", \"1\" ...) to names, got the entry {bad[0]!r}.")
    check_rope_spellings(data)


def check_rope_spellings(data: dict) -> None:
    """Refuse v4 (``rope_theta``, ``rope_scaling``) and v5 (``rope_parameters``) RoPE settings that disagree."""
    params, scaling = data.get("rope_parameters"), data.get("rope_scaling")
    if params is None:
        return
    check_rope_scaling(params, "rope_parameters")
    theta = data.get("rope_theta")
    if theta is not None:
        require_real("rope_theta", theta, ConfigError, low=0, low_open=True)
    if theta is not None and "rope_theta" in params and theta != params["rope_theta"]:
        raise ConfigError(
            f"rope_theta is {shown(theta)} at the top level (the transformers 4 spelling) but "
            f"{shown(params['rope_theta'])} in rope_parameters (the transformers 5 spelling); transformers 5 reads "
            f"the second, 4.x the first. Keep one.")
    if scaling is not None:
        check_rope_scaling(scaling, "rope_scaling")
        if _scaling_of(scaling) != _scaling_of(params):
            raise ConfigError(
                f"rope_scaling {shown(scaling)} and rope_parameters {shown(params)} describe different RoPE "
                f"settings (transformers 5 takes rope_scaling and drops rope_parameters, 4.x ignores "
                f"rope_parameters). Keep one of them.")


def _scaling_of(settings: dict) -> dict:
    """The scaling a RoPE dict describes, for comparison: its type and parameters, without rope_theta."""
    out = {k: v for k, v in settings.items() if k not in ("type", "rope_type", "rope_theta")}
    out["rope_type"] = settings.get("rope_type", settings.get("type"))
    return out
