"""The metadata of a GGUF file read into an ArceeConfig, with a note per key that matters.

Which metadata counts is a choice (``metadata=``):

* ``"llama.cpp"`` (default): what llama.cpp's Arcee loader and context setup use. For YaRN that is the
  factor, the original context and ``rope.scaling.attn_factor``; the converter's ``rope.scaling.yarn_*``
  keys are not read for this architecture, the correction range is always floored/ceiled, beta_fast/slow
  are 32/1, and the cos/sin multiplier is ``(1 + 0.1 ln factor) * attn_factor``. arcee_np then computes what
  llama.cpp computes from this file;
* ``"file"``: every key the file carries, as the converter meant it (``yarn_attn_factor`` is transformers'
  ``attention_factor``, ``yarn_beta_fast``/``yarn_beta_slow`` its betas).

``GGUFMetadata.notes`` lists the keys read, the keys ignored under the chosen reading, and the transformers
settings no GGUF key can carry (``hidden_act``: llama.cpp's Arcee always uses ReLU²; ``mscale``,
``mscale_all_dim``, ``truncate``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import ArceeConfig
from ..errors import CheckpointError, ConfigError

ARCHITECTURE = "arcee"
METADATA_READINGS = ("llama.cpp", "file")


def float32_decimal(value: float) -> float:
    """The shortest decimal that rounds to the same float32 as ``value`` (``np.float32(1e-5)`` -> ``1e-05``)."""
    return float(str(np.float32(value)))


@dataclass
class MetadataNote:
    """One line of the metadata reading: a GGUF key (or a transformers setting), its value, and what
    happens to it: ``"read"`` (sets the config), ``"ignored"`` (in the file, not used under this reading),
    ``"not carried"`` (a transformers setting no key of this file holds)."""

    key: str
    value: object
    status: str
    meaning: str


@dataclass
class GGUFMetadata:
    """The config a GGUF file gives under a reading (``"llama.cpp"`` or ``"file"``), and the notes behind it."""

    config: ArceeConfig
    reading: str
    notes: list[MetadataNote] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The notes as aligned text lines."""
        width = max((len(n.key) for n in self.notes), default=0)
        return [f"{n.status:<12} {n.key:<{width}} = {n.value!r:<14} {n.meaning}" for n in self.notes]


_YARN_KEYS_READ_BY_LLAMA_CPP = ("rope.scaling.type", "rope.scaling.factor", "rope.scaling.original_context_length",
                                "rope.scaling.attn_factor")
_CONVERTER_YARN_KEYS = {  # written by convert_hf_to_gguf.py when config.json has them; read by no Arcee loader
    "rope.scaling.yarn_attn_factor": "attention_factor",
    "rope.scaling.yarn_beta_fast": "beta_fast",
    "rope.scaling.yarn_beta_slow": "beta_slow",
}
_UNSUPPORTED_YARN_KEYS = ("rope.scaling.yarn_ext_factor", "rope.scaling.yarn_log_multiplier")


def read_metadata(file, reading: str = "llama.cpp") -> GGUFMetadata:
    """The ArceeConfig of a GGUF file under ``reading`` (module docstring), with a note per key that matters.

    Raises ConfigError when the file is not an Arcee model or sets something Arcee cannot express.
    """
    if reading not in METADATA_READINGS:
        raise ValueError(f"unknown metadata reading {reading!r}; choose one of {', '.join(METADATA_READINGS)}.")
    where = file.path
    if file.architecture != ARCHITECTURE:
        raise ConfigError(f"{where} holds a {file.architecture!r} model (general.architecture); arcee_np reads "
                          f"Arcee GGUF files (general.architecture 'arcee', converted from ArceeForCausalLM).")
    notes: list[MetadataNote] = []

    def get(key, meaning, required=False, default=None):
        full = f"{ARCHITECTURE}.{key}"
        if full not in file.metadata:
            if required:
                raise ConfigError(f"{where} lacks the metadata key {full!r} ({meaning}); re-convert the checkpoint "
                                  f"with llama.cpp's convert_hf_to_gguf.py.")
            return default
        value = file.metadata[full]
        notes.append(MetadataNote(full, value, "read", meaning))
        return value

    embed = file.tensors.get("token_embd.weight")
    if embed is None:
        raise CheckpointError(f"{where} has no token_embd.weight tensor: not a complete Arcee model.")
    hidden = int(get("embedding_length", "hidden_size", required=True))
    heads = int(get("attention.head_count", "num_attention_heads", required=True))
    kv_heads = int(get("attention.head_count_kv", "num_key_value_heads", default=heads))
    head_dim = int(get("attention.key_length", "head_dim", default=hidden // heads))
    value_dim = int(get("attention.value_length", "head_dim of the values", default=head_dim))
    rotary = int(get("rope.dimension_count", "rotary dimensions per head", default=head_dim))
    if value_dim != head_dim or rotary != head_dim:
        raise ConfigError(f"{where}: key length {head_dim}, value length {value_dim} and rotary dimensions {rotary} "
                          f"must be equal for Arcee (every feature of a head is rotated).")
    kwargs = dict(
        num_hidden_layers=int(get("block_count", "num_hidden_layers", required=True)),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length", "intermediate_size", required=True)),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=int(get("context_length", "max_position_embeddings", required=True)),
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", "rms_norm_eps", required=True),
        rope_theta=get("rope.freq_base", "rope_theta", default=10000.0),
        vocab_size=int(get("vocab_size", "vocab_size", default=embed.shape[0])),
        hidden_act="relu2",
        tie_word_embeddings="output.weight" not in file.tensors,
        attention_bias="blk.0.attn_q.bias" in file.tensors,
        mlp_bias="blk.0.ffn_up.bias" in file.tensors,
    )
    scale = get("attention.scale", "attention score scale")
    if scale is not None and scale != 0 and not math.isclose(scale, head_dim**-0.5, rel_tol=1e-6):
        raise ConfigError(f"{where} sets arcee.attention.scale = {scale} (not 1/sqrt(head_dim)); Arcee scores keys "
                          f"with 1/sqrt(head_dim) only.")
    kwargs["rope_scaling"] = _rope_scaling(file, reading, get, notes)
    for token in ("bos", "eos", "padding"):
        key = f"tokenizer.ggml.{token}_token_id"
        if key in file.metadata:
            target = {"bos": "bos_token_id", "eos": "eos_token_id", "padding": "pad_token_id"}[token]
            kwargs[target] = int(file.metadata[key])
            notes.append(MetadataNote(key, file.metadata[key], "read", target))
    notes.append(MetadataNote("hidden_act", "relu2", "not carried",
                              "no key: llama.cpp's Arcee graph always uses relu(x)**2"))
    notes.append(MetadataNote("tie_word_embeddings", kwargs["tie_word_embeddings"], "read",
                              "from the tensors: no output.weight means the head reuses token_embd"))
    try:
        config = ArceeConfig(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: its metadata gives an invalid Arcee config: {err}") from err
    return GGUFMetadata(config, reading, notes)


def _rope_scaling(file, reading: str, get, notes: list) -> dict | None:
    """The rope_scaling dict (None: plain RoPE) the file gives under ``reading``."""
    where = file.path
    kind = get("rope.scaling.type", "rope_type (none/linear/yarn)")
    factor = get("rope.scaling.factor", "YaRN factor")
    attn_factor = get("rope.scaling.attn_factor", "llama.cpp's multiplier of the YaRN attention factor")
    present = {key: file.arch_value(key) for key in (*_CONVERTER_YARN_KEYS, *_UNSUPPORTED_YARN_KEYS)
               if file.arch_value(key) is not None}
    if kind in (None, "none") or (kind == "linear" and factor in (None, 0, 1)):
        if attn_factor not in (None, 1.0):
            raise ConfigError(f"{where} sets arcee.rope.scaling.attn_factor = {attn_factor} without YaRN; Arcee "
                              f"scales cos/sin only under YaRN.")
        for key, value in present.items():
            notes.append(MetadataNote(f"{ARCHITECTURE}.{key}", value, "ignored", "a YaRN key, but RoPE is not YaRN"))
        return None
    if kind == "linear":  # position interpolation: llama.cpp's freq_scale = 1 / factor, transformers' "linear"
        for key, value in present.items():
            notes.append(MetadataNote(f"{ARCHITECTURE}.{key}", value, "ignored", "a YaRN key, but RoPE is linear"))
        return {"rope_type": "linear", "factor": float(factor)}
    if kind != "yarn":
        raise ConfigError(f"{where} sets arcee.rope.scaling.type = {kind!r}; arcee_np reads plain RoPE, linear "
                          f"scaling and YaRN.")
    if not factor:
        raise ConfigError(f"{where} sets YaRN without arcee.rope.scaling.factor; re-convert the checkpoint.")
    original = get("rope.scaling.original_context_length", "original_max_position_embeddings",
                   default=file.arch_value("context_length"))
    scaling = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": int(original)}
    if attn_factor not in (None, 1.0):
        scaling["attention_factor"] = float((1.0 + 0.1 * math.log(factor)) * attn_factor)
    for key, value in present.items():
        full = f"{ARCHITECTURE}.{key}"
        if reading == "file" and key in _CONVERTER_YARN_KEYS:
            scaling[_CONVERTER_YARN_KEYS[key]] = value
            notes.append(MetadataNote(full, value, "read", f"transformers' {_CONVERTER_YARN_KEYS[key]} (the "
                                      f"converter's meaning; llama.cpp's Arcee loader ignores it)"))
        elif key in _CONVERTER_YARN_KEYS:
            notes.append(MetadataNote(full, value, "ignored", f"transformers' {_CONVERTER_YARN_KEYS[key]}: llama.cpp's "
                                                              f"Arcee loader does not read it"))
        elif reading == "file":
            raise ConfigError(f"{where} sets {full} = {value}, which has no transformers Arcee counterpart.")
        else:
            notes.append(MetadataNote(full, value, "ignored", "llama.cpp's Arcee loader does not read it"))
    for setting, meaning in (("mscale", "no key: the converter never writes it"),
                             ("mscale_all_dim", "no key: the converter never writes it"),
                             ("truncate", "no key: ggml always floors/ceils the YaRN correction range")):
        notes.append(MetadataNote(setting, None, "not carried", meaning))
    return scaling
