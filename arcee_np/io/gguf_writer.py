"""Writing an Arcee checkpoint as a GGUF file, as llama.cpp's ``convert_hf_to_gguf.py`` does, with gguf-py.

For learning and testing without llama.cpp: the same tensor names, the same Q/K row permutation, the same
metadata keys and the same type rules as the converter (vectors and ``*_norm.weight`` in F32, matrices in
the file type, a matrix whose rows are not whole blocks in F16), for the types gguf-py quantizes the way
ggml's reference code does: F32, F16, BF16, Q8_0 and Q4_0 (the last as ``llama-quantize --pure`` makes
it). The K formats need llama.cpp's quantizer. The checkpoint's byte-level BPE tokenizer is written as the
converter writes it (``gguf_tokenizer.converter_tokenizer_keys``), so the file is a model on its own.

``metadata`` adds or replaces keys (``{"arcee.rope.scaling.attn_factor": 0.7}``) and a value of None
drops one, to build the conversions a check should catch (a YaRN model converted without its YaRN keys,
as older converters did).
"""

from __future__ import annotations

import os

import numpy as np

from ..config import ArceeConfig
from .gguf import ARCHITECTURE, GGUF_TO_HF, ROTARY_PROJECTIONS
from .gguf_tokenizer import converter_tokenizer_keys

WRITABLE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")
_FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "BF16": 32}  # general.file_type (llama_ftype)
_HF_TO_GGUF = {hf: gguf_name for gguf_name, hf in GGUF_TO_HF.items()}


def gguf_name(hf_name: str) -> str:
    """The GGUF name of a transformers tensor name
    (``model.layers.2.mlp.up_proj.weight`` -> ``blk.2.ffn_up.weight``)."""
    stem, _, suffix = hf_name.rpartition(".")
    parts = stem.split(".")
    if len(parts) > 2 and parts[1] == "layers" and parts[2].isdigit():
        key = ".".join(parts[:2] + ["{i}"] + parts[3:])
        return _HF_TO_GGUF[key].replace("{i}", parts[2]) + "." + suffix
    return _HF_TO_GGUF[stem] + "." + suffix


def permute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """The converter's reordering of q_proj/k_proj rows (or biases): per head, rows ``[s*hd/2 + j]`` -> ``[2j + s]``.

    ``weight.reshape(heads, 2, hd/2, ...).swapaxes(1, 2)``: transformers' rotate-half pairs ``(j, j + hd/2)``
    become adjacent rows, as llama.cpp's rotation wants. ``arcee_np.io.gguf.rotary_row_order`` undoes it.
    """
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path: str | os.PathLike, config: ArceeConfig, tensors: dict, file_type: str = "F32",
               metadata: dict | None = None, tokenizer: str | os.PathLike | None = None) -> None:
    """Write ``tensors`` (transformers' names: ``model.embed_tokens.weight`` ..., ``lm_head.weight`` unless tied;
    NumPy arrays of any float dtype) with ``config``'s metadata as a GGUF file of ``file_type``; ``tokenizer``:
    a folder whose tokenizer.json (and tokenizer_config.json) is written into the file as well."""
    import gguf

    if file_type not in WRITABLE_TYPES:
        raise ValueError(f"file_type {file_type!r} cannot be written without llama.cpp; choose one of "
                         f"{', '.join(WRITABLE_TYPES)} (K formats: llama.cpp's llama-quantize).")
    keys = _metadata(config, file_type)
    if tokenizer is not None:
        ids = {"bos": config.bos_token_id, "eos": config.eos_token_id, "pad": config.pad_token_id}
        keys.update(converter_tokenizer_keys(tokenizer, config.vocab_size, ids))
    for key, value in (metadata or {}).items():
        if value is None:
            keys.pop(key, None)
        else:
            keys[key] = value
    writer = gguf.GGUFWriter(os.fspath(path), ARCHITECTURE)
    for key, value in keys.items():
        if key != "general.architecture":
            _add_value(writer, key, value)
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    for name, array in tensors.items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue
        target = gguf_name(name)
        data = np.asarray(array, dtype=np.float32)
        stem = target.split(".")[-2]
        if stem in ROTARY_PROJECTIONS:
            data = permute_rotary_rows(data, heads[stem])
        kind = file_type if data.ndim == 2 and not target.endswith("_norm.weight") else "F32"
        qtype = gguf.GGMLQuantizationType[kind]
        if kind != "F32" and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            qtype = gguf.GGMLQuantizationType.F16  # rows that are not whole blocks, as the converter falls back
        writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _metadata(config: ArceeConfig, file_type: str) -> dict:
    """The keys convert_hf_to_gguf.py writes for an Arcee config (its tokenizer aside)."""
    a = ARCHITECTURE
    keys = {
        f"{a}.block_count": config.num_hidden_layers,
        f"{a}.context_length": config.max_position_embeddings,
        f"{a}.embedding_length": config.hidden_size,
        f"{a}.feed_forward_length": config.intermediate_size,
        f"{a}.attention.head_count": config.num_attention_heads,
        f"{a}.attention.head_count_kv": config.num_key_value_heads,
    }
    scaling = config.rope_scaling
    if scaling is not None and scaling["rope_type"] == "linear":  # position interpolation: freq_scale 1/factor
        keys[f"{a}.rope.scaling.type"] = "linear"
        keys[f"{a}.rope.scaling.factor"] = float(scaling["factor"])
    elif scaling is not None and scaling.get("factor") is not None:
        keys[f"{a}.rope.scaling.type"] = "yarn"
        keys[f"{a}.rope.scaling.factor"] = float(scaling["factor"])
        keys[f"{a}.rope.scaling.original_context_length"] = int(scaling["original_max_position_embeddings"])
        for hf_key, suffix in (("attention_factor", "yarn_attn_factor"), ("beta_fast", "yarn_beta_fast"),
                               ("beta_slow", "yarn_beta_slow")):
            if scaling.get(hf_key) is not None:
                keys[f"{a}.rope.scaling.{suffix}"] = float(scaling[hf_key])
    keys[f"{a}.rope.freq_base"] = float(config.rope_theta)
    keys[f"{a}.attention.layer_norm_rms_epsilon"] = float(config.rms_norm_eps)
    keys[f"{a}.attention.key_length"] = config.head_dim
    keys[f"{a}.attention.value_length"] = config.head_dim
    keys["general.file_type"] = _FILE_TYPES[file_type]
    keys[f"{a}.vocab_size"] = config.vocab_size
    keys[f"{a}.rope.dimension_count"] = config.head_dim
    for token, value in (("bos", config.bos_token_id), ("eos", config.eos_token_id), ("padding", config.pad_token_id)):
        if isinstance(value, int):
            keys[f"tokenizer.ggml.{token}_token_id"] = value
    return keys


def _add_value(writer, key: str, value) -> None:
    """One metadata key with the GGUF value type the converter uses (uint32 counts, float32 numbers)."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        writer.add_array(key, value)  # strings, or int32 (token types), as the converter writes them
    else:
        raise TypeError(f"metadata value for {key!r} must be bool, int, float, str or a list of str or int, got "
                        f"{type(value).__name__}.")


def convert_checkpoint(folder: str | os.PathLike, path: str | os.PathLike, file_type: str = "F32",
                       metadata: dict | None = None) -> None:
    """A transformers checkpoint folder (config.json + safetensors, and its tokenizer.json when it has one)
    written as a GGUF file (``write_gguf``)."""
    from .checkpoint import read_checkpoint

    tokenizer = folder if os.path.isfile(os.path.join(folder, "tokenizer.json")) else None
    write_gguf(path, ArceeConfig.from_pretrained(folder), read_checkpoint(folder), file_type, metadata, tokenizer)
