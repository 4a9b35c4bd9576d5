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
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError
from .io.atomic import write_text_files
from .validation.config import check_config, check_config_json
from .validation.files import check_path, read_json

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
        check_config(self)  # every field, before anything is derived from them
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.rope_scaling = _normalise_rope_scaling(self.rope_scaling, self.max_position_embeddings)

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
        """Raise ConfigError naming the field, its value and the fix (construction does this; call it again
        after changing fields by hand)."""
        check_config(self)

    # ------------------------------------------------------------------ dict / json
    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str = "config") -> "ArceeConfig":
        """Build from a config.json dict in either the v4 or the v5 spelling (contradicting spellings are
        refused). ``source`` (the file) starts every error message."""
        try:
            check_config_json(config)
            config = copy.deepcopy(dict(config))
            config.pop("model_type", None)
            rope_parameters = config.pop("rope_parameters", None)
            if rope_parameters is not None:  # v5: theta and scaling in one dict (check_config_json: they agree)
                rope_parameters = dict(rope_parameters)
                config["rope_theta"] = rope_parameters.pop("rope_theta", config.get("rope_theta", 10000.0))
                rope_type = rope_parameters.get("rope_type", rope_parameters.get("type"))
                config["rope_scaling"] = None if rope_type == "default" else rope_parameters
            if "id2label" in config and "num_labels" not in config:
                config["num_labels"] = len(config["id2label"])
                if config["id2label"] == _default_labels(config["num_labels"])[0]:  # rebuilt by to_dict
                    config.pop("id2label")
                    config.pop("label2id", None)
            known = {f.name for f in fields(cls)} - {"extra"}
            kwargs = {k: v for k, v in config.items() if k in known}
            extra = {k: v for k, v in config.items() if k not in known}
            return cls(**kwargs, extra=extra)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

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
        path = check_path(path, "the config path")
        file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
        if not os.path.exists(path):
            from .errors import MissingFileError

            raise MissingFileError(f"no checkpoint at {path!r}: point at a folder written by save_pretrained "
                                   f"(transformers' or arcee_np's), holding config.json.")
        return cls.from_dict(read_json(file, CONFIG_NAME, ConfigError), source=file)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` into the folder ``path`` (created if needed), replaced whole (io.atomic)."""
        write_text_files(path, {CONFIG_NAME: json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"})


def _default_labels(num_labels: int) -> tuple[dict, dict]:
    """transformers' default ``id2label`` / ``label2id`` for ``num_labels`` classes."""
    return ({str(i): f"LABEL_{i}" for i in range(num_labels)}, {f"LABEL_{i}": i for i in range(num_labels)})


def _normalise_rope_scaling(scaling: dict | None, max_position_embeddings: int) -> dict | None:
    """``rope_scaling`` (checked by check_config) as ``{"rope_type": ..., **params}``; None means plain RoPE.

    The legacy ``type`` key becomes ``rope_type`` as transformers does. For YaRN, a missing
    ``original_max_position_embeddings`` defaults to ``max_position_embeddings`` and a missing ``factor``
    to ``max_position_embeddings / original_max_position_embeddings`` (transformers v5).
    """
    if scaling is None:
        return None
    scaling = dict(scaling)
    legacy_type = scaling.pop("type", None)
    scaling.setdefault("rope_type", legacy_type)
    scaling.pop("rope_theta", None)
    if scaling["rope_type"] == "default":
        return None
    if scaling["rope_type"] == "linear":  # position interpolation: only a factor
        return scaling
    original = scaling.get("original_max_position_embeddings") or max_position_embeddings
    scaling["original_max_position_embeddings"] = original
    if scaling.get("factor") is None:
        scaling["factor"] = max_position_embeddings / original
    return scaling

