"""A checkpoint folder: its sharded index, and its tensors against the model's config.

``check_index`` reads ``model.safetensors.index.json`` (an object whose ``weight_map`` maps tensor names
to shard files inside the folder) and ``check_shards_match_index`` checks that every tensor the index
names is in the shard it names and that the shards hold nothing else. ``check_layer_count`` and
``mismatch_error`` say how a checkpoint's tensors differ from what the config wants, briefly, all at once.
Every error is a CheckpointError naming the file.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..backend import DTYPES
from ..errors import CheckpointError, MissingFileError
from .files import read_json
from .values import shown

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_SHOWN_NAMES = 6
FLOAT_DTYPES = tuple(DTYPES)  # the dtypes a model computes in


def is_float_weight(array) -> bool:
    """Whether a checkpoint tensor (an array, or a stored weight whose ``.dtype`` is a NumPy scalar type) holds
    floating-point values a model can compute with."""
    try:
        name = np.dtype(array.dtype).name
    except TypeError:  # another library's dtype object (array_api_strict ...)
        name = str(array.dtype).split(".")[-1]
    return name in FLOAT_DTYPES


def check_index(index_file: str, folder: str) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index: tensor name -> path of its shard (which exists)."""
    data = read_json(index_file, "model.safetensors.index.json", CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{index_file} must hold a JSON object with a 'weight_map', got {type(data).__name__}.")
    if not isinstance(data.get("metadata", {}), (dict, type(None))):
        raise CheckpointError(f"{index_file}: 'metadata' must be an object, got {shown(data['metadata'])}.")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_file}: 'weight_map' must be an object mapping tensor names to shard files, got "
                              f"{shown(weight_map)}. Re-save the checkpoint.")
    root = os.path.normpath(os.path.abspath(folder))
    shards = {}
    for shard in sorted(set(weight_map.values())):
        path = os.path.normpath(os.path.join(root, shard))
        if os.path.isabs(shard) or os.path.commonpath([root, path]) != root:
            raise CheckpointError(f"{index_file} names the shard {shard!r}, outside the checkpoint folder: a sharded "
                                  f"checkpoint keeps its shards beside its index. Refusing to read it.")
        shards[shard] = path
    missing = [name for name, path in shards.items() if not os.path.isfile(path)]
    if missing:
        raise MissingFileError(f"{index_file} names shard(s) that are not in {folder}: {', '.join(missing)}.")
    return {name: shards[shard] for name, shard in weight_map.items()}


def check_shards_match_index(index_file: str, weight_map: dict[str, str], names_by_shard: dict[str, list]) -> None:
    """Every tensor of the index is in the shard it names, and every tensor of a shard is in the index there."""
    absent = sorted(name for name, shard in weight_map.items() if name not in names_by_shard[shard])
    stray = sorted(f"{name} (in {os.path.basename(shard)})" for shard, names in names_by_shard.items()
                   for name in names if weight_map.get(name) != shard)
    if absent or stray:
        lines = [f"{index_file} does not describe its shards:"]
        if absent:
            lines.append(f"  named in the index but not in its shard ({len(absent)}): {summarize(absent)}")
        if stray:
            lines.append(f"  in a shard but not listed there by the index ({len(stray)}): {summarize(stray)}")
        lines.append("Re-save the checkpoint (save_pretrained writes the index and the shards together).")
        raise CheckpointError("\n".join(lines))


def summarize(names: list[str]) -> str:
    """The first few names, then how many more."""
    shown_names = ", ".join(names[:_SHOWN_NAMES])
    return shown_names + (f" ... and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else "")


def check_layer_count(names, num_layers: int) -> None:
    """Refuse a config whose layer count differs from the checkpoint's (before listing 8 tensors a layer)."""
    layers = {int(m.group(1)) for m in map(_LAYER.search, names) if m}
    if layers and len(layers) != num_layers:
        raise CheckpointError(f"the checkpoint holds {len(layers)} decoder layers (layers.{min(layers)} to "
                              f"layers.{max(layers)}) but the config asks for num_hidden_layers={num_layers}: "
                              f"config.json belongs to another model. Use the config saved with these weights.")


def mismatch_error(missing, unexpected, misshaped, not_float) -> CheckpointError:
    """One error listing (briefly) every missing, unexpected, mis-shaped and non-floating-point tensor."""
    lines = ["the checkpoint does not match the model's config:"]
    for label, names in (("missing", missing), ("unexpected", sorted(unexpected)), ("wrong shape", misshaped),
                         ("not floating point", not_float)):
        if names:
            lines.append(f"  {label} ({len(names)}): {summarize(names)}")
    lines.append("Check that config.json belongs to these weights and that the model class matches the checkpoint "
                 "(ArceeForCausalLM, ArceeModel, ArceeForSequenceClassification ...).")
    return CheckpointError("\n".join(lines))
