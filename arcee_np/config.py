"""ArceeConfig: every field and default of transformers' ArceeConfig, read from and written to config.json.

Reads both spellings of the RoPE settings:

* v4 (transformers < 5): top-level ``rope_theta`` plus ``rope_scaling`` (whose type may be under the
  legacy key ``type``);
* v5: ``rope_parameters`` holding ``rope_theta``, ``rope_type`` and the scaling parameters.

Internally the RoPE settings live in ``rope_theta`` and ``rope_scaling`` (``None`` for plain RoPE, else a
dict with ``rope_type``). ``to_dict`` writes the v4 spelling, which every transformers release with Arcee
(4.53 onwards, v5 included) reads.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn")
SUPPORTED_ACTIVATIONS = ("relu2", "relu", "silu", "gelu", "gelu_pytorch_tanh")
YARN_KEYS = (
    "factor",
    "original_max_position_embeddings",
    "attention_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "truncate",
)
CONFIG_NAME = "config.json"


@dataclass
class ArceeConfig:
    """The hyper-parameters of an Arcee model, with transformers' names and defaults.

    ``num_key_value_heads=None`` means one KV head per attention head (MHA); ``head_dim=None`` means
    ``hidden_size // num_attention_heads``. Both are resolved on construction, as transformers does.
    Keys this class does not model (``architectures``, ``id2label``, ``torch_dtype`` ...) are kept in
    ``extra`` and written back by ``to_dict``.
    """

    vocab_size: int = 32000
    hidden_size: int = 2560
    intermediate_size: int = 18432
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "relu2"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    head_dim: int | None = None
    num_labels: int = 2
    problem_type: str | None = None
    classifier_dropout: float | None = None
    token_classification_bias: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.rope_scaling = _normalise_rope_scaling(self.rope_scaling, self.max_position_embeddings)
        self.validate()

    # ------------------------------------------------------------------ derived quantities
    @property
    def rope_type(self) -> str:
        """``"default"``, ``"linear"`` or ``"yarn"``."""
        return "default" if self.rope_scaling is None else self.rope_scaling["rope_type"]

    @property
    def rope_parameters(self) -> dict:
        """The v5 spelling: ``{"rope_type": ..., "rope_theta": ..., **scaling}``."""
        params = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            params.update({k: v for k, v in self.rope_scaling.items() if k != "rope_type"})
        return params

    @property
    def num_key_value_groups(self) -> int:
        """How many query heads share one KV head (``n_rep``)."""
        return self.num_attention_heads // self.num_key_value_heads

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the problem and the fix; called on construction."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads}): each KV head serves the same number of query heads. "
                f"Choose num_key_value_heads among the divisors of {self.num_attention_heads}."
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings (pairs of features), got {self.head_dim}.")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(SUPPORTED_ACTIVATIONS)}."
            )
        if not self.rms_norm_eps > 0:
            raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}.")
        if not self.rope_theta > 0:
            raise ConfigError(f"rope_theta must be positive, got {self.rope_theta!r}.")

    # ------------------------------------------------------------------ dict / json
    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "ArceeConfig":
        """Build from a config.json dict in either the v4 or the v5 spelling."""
        config = copy.deepcopy(dict(config))
        model_type = config.pop("model_type", "arcee")
        if model_type != "arcee":
            raise ConfigError(
                f"config.json has model_type {model_type!r}; arcee_np runs Arcee models (model_type 'arcee') only."
            )
        rope_parameters = config.pop("rope_parameters", None)
        if rope_parameters is not None:
            rope_parameters = dict(rope_parameters)
            config.setdefault("rope_theta", rope_parameters.pop("rope_theta", 10000.0))
            if rope_parameters.get("rope_type", rope_parameters.get("type", "default")) != "default":
                config["rope_scaling"] = rope_parameters
            else:
                config["rope_scaling"] = None
        if "id2label" in config and "num_labels" not in config:
            config["num_labels"] = len(config["id2label"])
            if config["id2label"] == _default_labels(config["num_labels"])[0]:  # rebuilt by to_dict
                config.pop("id2label")
                config.pop("label2id", None)
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in config.items() if k in known}
        extra = {k: v for k, v in config.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """A config.json dict that transformers' ArceeConfig reads (v4 spelling, read by v5 too)."""
        out: dict[str, Any] = {"model_type": "arcee"}
        out.update(self.extra)
        for f in fields(self):
            if f.name != "extra":
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        if "id2label" not in out:  # transformers derives num_labels from id2label
            out["id2label"], out["label2id"] = _default_labels(self.num_labels)
        del out["num_labels"]
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ArceeConfig":
        """Read ``config.json`` from a checkpoint folder (or the file itself)."""
        path = os.fspath(path)
        file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"no config.json at {file!r}: point at a folder written by save_pretrained "
                f"(transformers' or arcee_np's)."
            )
        try:
            with open(file, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file} is not valid JSON ({err}); re-save the model's config.") from err
        return cls.from_dict(data)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` into the folder ``path`` (created if needed)."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")


def _default_labels(num_labels: int) -> tuple[dict, dict]:
    """transformers' default ``id2label`` / ``label2id`` for ``num_labels`` classes."""
    return ({str(i): f"LABEL_{i}" for i in range(num_labels)}, {f"LABEL_{i}": i for i in range(num_labels)})


def _normalise_rope_scaling(scaling: dict | None, max_position_embeddings: int) -> dict | None:
    """Validate ``rope_scaling`` and bring it to ``{"rope_type": ..., **params}``; None means plain RoPE.

    Accepts the legacy ``type`` key (copied to ``rope_type`` as transformers does). For YaRN, a missing
    ``original_max_position_embeddings`` defaults to ``max_position_embeddings`` and a missing ``factor``
    to ``max_position_embeddings / original_max_position_embeddings`` (transformers v5).
    """
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be a dict or null, got {type(scaling).__name__}.")
    scaling = dict(scaling)
    legacy_type = scaling.pop("type", None)
    rope_type = scaling.get("rope_type", legacy_type)
    if rope_type is None:
        raise ConfigError("rope_scaling has no 'rope_type' (or legacy 'type'); set it to 'default', 'linear' or "
                          "'yarn'.")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"unknown rope_type {rope_type!r}; arcee_np supports {', '.join(map(repr, SUPPORTED_ROPE_TYPES))} "
            f"(the types Arcee checkpoints use). Convert the checkpoint or drop rope_scaling for plain RoPE."
        )
    scaling["rope_type"] = rope_type
    scaling.pop("rope_theta", None)
    if rope_type == "default":
        return None
    if rope_type == "linear":
        return _linear_scaling(scaling)
    unknown = sorted(set(scaling) - set(YARN_KEYS) - {"rope_type"})
    if unknown:
        raise ConfigError(f"unknown YaRN parameter(s) {unknown}; known ones are {', '.join(YARN_KEYS)}.")
    original = scaling.get("original_max_position_embeddings") or max_position_embeddings
    scaling["original_max_position_embeddings"] = original
    if scaling.get("factor") is None:
        scaling["factor"] = max_position_embeddings / original
    if not (isinstance(scaling["factor"], (int, float)) and scaling["factor"] >= 1.0):
        raise ConfigError(f"YaRN factor must be a number >= 1, got {scaling['factor']!r}.")
    if not math.isfinite(float(scaling["factor"])):
        raise ConfigError("YaRN factor must be finite.")
    return scaling


def _linear_scaling(scaling: dict) -> dict:
    """Linear RoPE scaling (position interpolation): only ``factor`` (a number >= 1), as transformers requires."""
    unknown = sorted(set(scaling) - {"rope_type", "factor"})
    if unknown:
        raise ConfigError(f"unknown linear RoPE parameter(s) {unknown}; linear scaling takes only 'factor'.")
    factor = scaling.get("factor")
    if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and math.isfinite(factor)
            and factor >= 1.0):
        raise ConfigError(f"linear RoPE factor must be a finite number >= 1 (positions are divided by it), "
                          f"got {factor!r}.")
    return scaling
