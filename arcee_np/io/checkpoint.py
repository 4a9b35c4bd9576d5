"""Checkpoints: safetensors in and out, transformers' tensor names and shapes, validation.

Reading goes through ``safetensors.py`` (a parser over a memory map: no second copy in memory, clear
errors for truncated or malformed files) and writes with the same module. The checks of the index and
of the tensors against the config live in ``arcee_np.validation.checkpoint``. Never pickle:
``pytorch_model.bin`` checkpoints are refused with the way to convert them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets

import numpy as np

from ..errors import CheckpointError, MissingFileError
from ..validation.checkpoint import (check_index, check_layer_count, check_shards_match_index, is_float_weight,
                                     mismatch_error)
from ..validation.files import check_folder
from ..validation.finite import check_finite_weights
from .atomic import FolderWrite
from .safetensors import read_safetensors, write_safetensors

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


def read_config(path: str | os.PathLike):
    """The ArceeConfig of a checkpoint: a folder's config.json, or a llama.cpp GGUF file's metadata (read as
    llama.cpp reads it; docs/gguf.md)."""
    from ..config import ArceeConfig
    from .gguf import GGUFFile, is_gguf, read_metadata

    return read_metadata(GGUFFile(path)).config if is_gguf(path) else ArceeConfig.from_pretrained(path)


def checkpoint_files(folder: str | os.PathLike) -> list[str]:
    """The safetensors file(s) of a checkpoint folder: one ``model.safetensors`` or the shards of an index."""
    return _weights_files(folder)[0]


def _weights_files(folder) -> tuple[list[str], dict[str, str] | None]:
    """(the safetensors files, the index's tensor -> shard map or None for a single file) of ``folder``."""
    folder = check_folder(folder, "checkpoint folder")
    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, INDEX_NAME)
    if os.path.exists(single):
        return [single], None
    if os.path.exists(index):
        weight_map = check_index(index, folder)
        return sorted(set(weight_map.values())), weight_map
    if any(f.endswith((".bin", ".pt", ".pth")) for f in os.listdir(folder)):
        raise CheckpointError(
            f"{folder} holds only PyTorch pickle weights (pytorch_model.bin ...); arcee_np never unpickles. Convert "
            f"once with transformers: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder, "
            f"safe_serialization=True)."
        )
    raise MissingFileError(f"no {WEIGHTS_NAME} or {INDEX_NAME} in {folder}: it is not a safetensors checkpoint.")


def read_checkpoint(folder: str | os.PathLike, check_finite: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint folder (single file or sharded), name -> NumPy array.

    A sharded checkpoint's shards must hold exactly what its index says. ``check_finite``: refuse a
    floating-point tensor holding NaN or Inf (NonFiniteError naming the file and the tensor).
    """
    files, weight_map = _weights_files(folder)
    tensors: dict[str, np.ndarray] = {}
    names_by_file = {}
    for file in files:
        shard = read_safetensors(file)
        if check_finite:
            check_finite_weights(shard, file)
        names_by_file[file] = list(shard)
        tensors.update(shard)
    if weight_map is not None:
        check_shards_match_index(os.path.join(os.fspath(folder), INDEX_NAME), weight_map, names_by_file)
    return tensors


# ---------------------------------------------------------------------------------------------- names
def backbone_shapes(config) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of transformers' ArceeModel for ``config`` (no prefix)."""
    d, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    q_dim = config.num_attention_heads * config.head_dim
    kv_dim = config.num_key_value_heads * config.head_dim
    shapes = {"embed_tokens.weight": (v, d), "norm.weight": (d,)}
    for layer in range(config.num_hidden_layers):
        p = f"layers.{layer}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q_dim, d),
            p + "self_attn.k_proj.weight": (kv_dim, d),
            p + "self_attn.v_proj.weight": (kv_dim, d),
            p + "self_attn.o_proj.weight": (d, q_dim),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.up_proj.weight": (i, d),
            p + "mlp.down_proj.weight": (d, i),
        })
        if config.attention_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q_dim,), p + "self_attn.k_proj.bias": (kv_dim,),
                           p + "self_attn.v_proj.bias": (kv_dim,), p + "self_attn.o_proj.bias": (d,)})
        if config.mlp_bias:
            shapes.update({p + "mlp.up_proj.bias": (i,), p + "mlp.down_proj.bias": (d,)})
    return shapes


def parameter_count(config, head_shapes: dict | None = None) -> int:
    """How many numbers the backbone (and ``head_shapes``) of ``config`` hold, without listing every layer."""
    one_layer = backbone_shapes(dataclasses.replace(config, num_hidden_layers=1))
    per_layer = sum(math.prod(s) for n, s in one_layer.items() if n.startswith("layers."))
    rest = sum(math.prod(s) for n, s in one_layer.items() if not n.startswith("layers."))
    return rest + config.num_hidden_layers * per_layer + sum(math.prod(s) for s in (head_shapes or {}).values())


def split_checkpoint(tensors: dict, config, prefix: str, head_shapes: dict, ignored: tuple = ()):
    """Check a checkpoint's tensors against the model's and split them into (backbone, head) dicts.

    ``prefix`` is where the class keeps its backbone (``"model."``, ``"transformer."`` or ``""``); a
    checkpoint of another class is accepted when its backbone prefix differs (as transformers does: a
    bare ArceeModel checkpoint under a head class, or a head checkpoint under ArceeModel, whose head
    tensors are then unused). ``ignored``: names that may be present and are dropped (``lm_head.weight``
    when embeddings are tied). Raises CheckpointError listing every missing, unexpected and mis-shaped
    tensor at once.
    """
    check_layer_count(tensors, config.num_hidden_layers)  # before listing every tensor of every layer
    expected_backbone = backbone_shapes(config)
    source_prefix = _backbone_prefix(tensors, prefix)
    backbone, head, unexpected, misshaped, not_float = {}, {}, [], [], []
    for name, array in tensors.items():
        if source_prefix is not None and name.startswith(source_prefix) and \
                name[len(source_prefix):] in expected_backbone:
            local, want, target = name[len(source_prefix):], expected_backbone[name[len(source_prefix):]], backbone
        elif name in head_shapes:
            local, want, target = name, head_shapes[name], head
        elif name in ignored or (not head_shapes and prefix == "" and source_prefix != ""):
            continue  # tied copies, or the head of a head checkpoint loaded as a bare backbone
        else:
            unexpected.append(name)
            continue
        if tuple(array.shape) != tuple(want):
            misshaped.append(f"{name}: checkpoint {tuple(array.shape)}, config wants {tuple(want)}")
        if not is_float_weight(array):
            not_float.append(f"{name} ({array.dtype})")
        target[local] = array
    missing = [prefix + n for n in expected_backbone if n not in backbone]
    missing += [n for n in head_shapes if n not in head]
    if missing or unexpected or misshaped or not_float:
        raise mismatch_error(missing, unexpected, misshaped, not_float)
    return backbone, head


def _backbone_prefix(tensors: dict, prefix: str) -> str | None:
    """The prefix the checkpoint's backbone tensors carry: the class's own, or another known one."""
    for candidate in (prefix, "model.", "transformer.", ""):
        if candidate + "embed_tokens.weight" in tensors:
            return candidate
    return prefix


# ---------------------------------------------------------------------------------------------- writing
def write_checkpoint(folder: str | os.PathLike, tensors: dict[str, np.ndarray], max_shard_size: int | None = None,
                     json_files: dict[str, dict] | None = None) -> None:
    """Write ``tensors`` as ``model.safetensors``, or as shards of at most ``max_shard_size`` bytes plus
    ``model.safetensors.index.json`` (transformers' layout), then ``json_files`` ({name: content}, in order:
    config.json last).

    Every file goes to a temporary name first and is moved into place when complete (io.atomic): the
    weights, then the index, then the JSON files, and the files of the checkpoint that was there before are
    removed as soon as the new weights take over. A save interrupted at any moment leaves the old checkpoint
    or the new one. Shards never overwrite the files the old checkpoint reads (they take other names when
    the usual ones are in use), so the index is the one switch from the old shards to the new.
    """
    folder = os.fspath(folder)
    shards = _shards({name: np.ascontiguousarray(array) for name, array in tensors.items()}, max_shard_size)
    with FolderWrite(folder) as out:
        in_use = _files_in_use(folder)
        if len(shards) == 1:
            write_safetensors(out.add(WEIGHTS_NAME), shards[0], metadata={"format": "pt"})
            written = {WEIGHTS_NAME}
        else:
            names = _shard_names(len(shards), in_use)
            weight_map = {}
            for name, shard in zip(names, shards, strict=True):
                write_safetensors(out.add(name), shard, metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(array.nbytes for shard in shards for array in shard.values())
            out.write_text(INDEX_NAME, _json_text({"metadata": {"total_size": total}, "weight_map": weight_map}))
            written = {*names, INDEX_NAME}
        for stale in sorted((in_use | _orphan_shards(folder)) - written):
            out.remove(stale)  # model.safetensors goes after the index: while it exists it is what loads
        for name, content in (json_files or {}).items():
            out.write_text(name, _json_text(content))


def _json_text(content) -> str:
    """A checkpoint's JSON file as transformers writes it: indented, keys sorted, a final newline."""
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def _shards(tensors: dict[str, np.ndarray], max_shard_size: int | None) -> list[dict[str, np.ndarray]]:
    """The tensors in order, cut into shards of at most ``max_shard_size`` bytes (one tensor may exceed it)."""
    shards: list[dict[str, np.ndarray]] = [{}]
    used = 0
    for name, array in tensors.items():
        if max_shard_size is not None and shards[-1] and used + array.nbytes > max_shard_size:
            shards.append({})
            used = 0
        shards[-1][name] = array
        used += array.nbytes
    return shards


_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}(-[0-9a-f]{8})?\.safetensors")


def _shard_names(count: int, in_use: set[str]) -> list[str]:
    """transformers' shard names ``model-00001-of-00003.safetensors`` ..., with a random suffix when the
    checkpoint in the folder reads a file of that name (a sharded save over one with as many shards)."""
    names = [f"model-{number:05d}-of-{count:05d}.safetensors" for number in range(1, count + 1)]
    if in_use.isdisjoint(names):
        return names
    suffix = secrets.token_hex(4)
    return [name.replace(".safetensors", f"-{suffix}.safetensors") for name in names]


def _files_in_use(folder: str) -> set[str]:
    """The weight files the checkpoint in ``folder`` loads from now (model.safetensors first, else the index
    and the shards it names); empty when there is none."""
    if os.path.exists(os.path.join(folder, WEIGHTS_NAME)):
        return {WEIGHTS_NAME}
    try:
        with open(os.path.join(folder, INDEX_NAME), encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map", {})
        return {INDEX_NAME, *(name for name in weight_map.values() if os.path.basename(name) == name)}
    except (OSError, ValueError, AttributeError):
        return set()


def _orphan_shards(folder: str) -> set[str]:
    """Shard files (of arcee_np's names) in ``folder``: those no index will name are removed by a save."""
    return {name for name in os.listdir(folder) if _SHARD_NAME.fullmatch(name)} if os.path.isdir(folder) else set()
