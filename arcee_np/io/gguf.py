"""llama.cpp's GGUF files in: metadata into an ArceeConfig, tensors under transformers' names, undoing the
converter's changes, quantized matrices kept in their blocks and dequantized where they are used.

A GGUF file is a header of typed key/value metadata (``arcee.block_count``, ``arcee.rope.freq_base`` ...),
a table of tensors (name, shape, ggml type, offset) and the tensor bytes. It is read with ``gguf``, the
reader llama.cpp ships, over a memory map: nothing is copied, pages are read when used.

What ``convert_hf_to_gguf.py`` did to an Arcee checkpoint, and how it is undone here:

* names: ``model.layers.3.self_attn.q_proj.weight`` became ``blk.3.attn_q.weight`` (``GGUF_TO_HF``);
* rotary layout: transformers rotates feature ``j`` of a head with feature ``j + hd/2`` (rotate-half);
  llama.cpp's Arcee graph rotates adjacent features ``2j, 2j + 1``. The converter therefore reorders the
  rows of ``q_proj`` and ``k_proj`` within each head, so that row ``2j + s`` of the file is row
  ``s * hd/2 + j`` of transformers' matrix (``s`` = 0, 1). ``rotary_row_order`` gives, for every row of
  transformers' matrix, the file row holding it; quantized rows are whole blocks, so this is a row gather;
* tied embeddings: a file without ``output.weight`` uses ``token_embd.weight`` as the head (llama.cpp falls
  back the same way), which is ``tie_word_embeddings=True``;
* numbers: the converter writes floats as float32; they are read back as the shortest decimal that rounds
  to the same float32 (``1e-05``, not ``9.99999974738e-06``), the value config.json most likely held.

Which metadata counts is a choice (``metadata=``): gguf_metadata.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..blocks.precision import product_dtype
from ..blocks.stored import StoredMatrix
from ..config import ArceeConfig
from ..errors import CheckpointError
from ..validation.files import GGUF_MAGIC, is_gguf  # noqa: F401 (is_gguf: part of this module's surface)
from .gguf_metadata import (ARCHITECTURE, METADATA_READINGS, GGUFMetadata, MetadataNote,  # noqa: F401 (surface)
                            float32_decimal, read_metadata)
from .quants import FORMATS, Format


# GGUF tensor name -> transformers' name ("{i}": the layer)
GGUF_TO_HF = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "blk.{i}.attn_norm": "model.layers.{i}.input_layernorm",
    "blk.{i}.attn_q": "model.layers.{i}.self_attn.q_proj",
    "blk.{i}.attn_k": "model.layers.{i}.self_attn.k_proj",
    "blk.{i}.attn_v": "model.layers.{i}.self_attn.v_proj",
    "blk.{i}.attn_output": "model.layers.{i}.self_attn.o_proj",
    "blk.{i}.ffn_norm": "model.layers.{i}.post_attention_layernorm",
    "blk.{i}.ffn_up": "model.layers.{i}.mlp.up_proj",
    "blk.{i}.ffn_down": "model.layers.{i}.mlp.down_proj",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(.+)")
ROTARY_PROJECTIONS = ("attn_q", "attn_k")  # the matrices whose rows the converter reorders


def hf_name(gguf_name: str) -> str | None:
    """transformers' name of a GGUF tensor (``blk.2.ffn_up.weight`` -> ``model.layers.2.mlp.up_proj.weight``),
    or None for a tensor arcee_np does not know."""
    stem, dot, suffix = gguf_name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        return None
    layer = _LAYER_NAME.fullmatch(stem)
    key, index = (f"blk.{{i}}.{layer.group(2)}", layer.group(1)) if layer else (stem, None)
    target = GGUF_TO_HF.get(key)
    return None if target is None else target.replace("{i}", index or "") + "." + suffix


# ---------------------------------------------------------------------------------------------- the rotary layout
def rotary_row_order(rows: int, heads: int) -> np.ndarray:
    """For each row of transformers' q_proj/k_proj ``[heads * hd, in]``, the row of the GGUF tensor that holds it.

    The converter's permutation (``LlamaModel.permute``) reshapes the rows to ``[heads, 2, hd/2]`` and swaps
    the last two axes, so file row ``h*hd + 2j + s`` is transformers' row ``h*hd + s*hd/2 + j``: the two
    features a rotate-half pair ``(j, j + hd/2)`` become neighbours ``(2j, 2j + 1)``, the pairs llama.cpp's
    rotation (``LLAMA_ROPE_TYPE_NORM``) turns together. Returns [rows] int64.
    """
    half = rows // heads // 2
    file_rows = np.arange(rows, dtype=np.int64).reshape(heads, half, 2)  # file row of (head, j, s)
    return file_rows.transpose(0, 2, 1).reshape(rows)  # indexed by transformers' (head, s, j)


# ---------------------------------------------------------------------------------------------- a GGUF matrix
class GGUFWeight(StoredMatrix):
    """A matrix of a GGUF file kept in its ggml format (memory-mapped) and dequantized where it is used.

    A stored weight (blocks/stored.py, whose products ``linear`` and ``embed`` use): ``shape`` ``(rows,
    cols)`` in transformers' ``[out, in]`` layout; ``dtype``, the model's dtype; ``stored_dtype``, the ggml
    type (``"Q4_K"`` ...); ``widened_rows(start, stop)`` and ``widened_take(indices)`` return those rows
    dequantized exactly as ggml does (``arcee_np.io.quants``), in ``compute_dtype`` on the model's backend.
    Each row of a GGUF tensor is whole blocks, so a row tile or a row gather decodes only its own bytes.

    raw: [rows, row_bytes] uint8 (a view into the file); fmt: its Format; cols: values per row;
    row_order: [rows] file row of each row (the rotary permutation of q/k), or None for the file's order.
    """

    def __init__(self, raw: np.ndarray, fmt: Format, cols: int, xp, dtype, compute_dtype,
                 row_order: np.ndarray | None = None):
        self.raw = raw
        self.format = fmt
        self.shape = (int(raw.shape[0]), int(cols))
        self.xp = xp
        self.dtype = dtype
        self.compute_dtype = compute_dtype
        self.row_order = row_order
        self._host_dtype = np.dtype(str(compute_dtype).split(".")[-1].rstrip("'>"))

    @property
    def stored_dtype(self) -> str:
        return self.format.name

    @property
    def nbytes(self) -> int:
        """Bytes the stored blocks take."""
        return int(self.raw.nbytes)

    def dequantized(self, file_rows) -> np.ndarray:
        """The values of file rows (a slice or an index array) as float32 NumPy [n, cols], as ggml decodes them."""
        return self.format.dequantize_rows(self.raw[file_rows], self.shape[1])

    def _to_backend(self, values: np.ndarray):
        from ..backend import to_device

        return to_device(values.astype(self._host_dtype, copy=False), self.xp)

    def widened_rows(self, start: int, stop: int):
        """Rows ``start:stop`` (transformers' order) in the compute dtype: [stop - start, cols]."""
        rows = slice(start, stop) if self.row_order is None else self.row_order[start:stop]
        return self._to_backend(self.dequantized(rows))

    def widened_take(self, indices):
        """The rows at ``indices`` (1-D integers, any backend) in the compute dtype: [n, cols]."""
        from ..backend import to_numpy

        rows = np.asarray(to_numpy(indices), dtype=np.int64)
        if self.row_order is not None:
            rows = self.row_order[rows]
        return self._to_backend(self.dequantized(rows))

    def __repr__(self) -> str:
        order = ", rotary rows reordered" if self.row_order is not None else ""
        return f"GGUFWeight(shape={self.shape}, stored_dtype={self.stored_dtype}{order})"


# ---------------------------------------------------------------------------------------------- the file
@dataclass
class GGUFTensor:
    """One tensor of the table: its GGUF name, ggml type name, shape in transformers' order and bytes."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    data: np.ndarray  # a view into the file: [rows, cols] floats, or [rows, row_bytes] uint8 for block types

    @property
    def raw(self) -> np.ndarray:
        """The bytes as [rows, row_bytes] uint8 (1-D tensors: [1, bytes])."""
        return self.data.reshape(self.shape[0] if len(self.shape) == 2 else 1, -1).view(np.uint8)

    def dequantize(self) -> np.ndarray:
        """All values as float32 (ggml's decoding), in the file's row order: ``shape``."""
        fmt = FORMATS[self.type_name]
        cols = self.shape[-1]
        return fmt.dequantize_rows(self.raw, cols).reshape(self.shape)


class GGUFFile:
    """An open GGUF file: ``metadata`` (key -> Python value; large arrays summarised), ``value_types`` (key ->
    GGUF value type name), ``tensors`` (GGUF name -> GGUFTensor), all over one read-only memory map."""

    def __init__(self, path: str | os.PathLike):
        import gguf

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no GGUF file at {self.path!r}.")
        if not is_gguf(self.path):
            raise CheckpointError(f"{self.path} is not a GGUF file (it does not start with the bytes 'GGUF'). "
                                  f"Convert the checkpoint with llama.cpp's convert_hf_to_gguf.py.")
        try:
            reader = gguf.GGUFReader(self.path, "r")
        except (ValueError, KeyError, IndexError, OverflowError) as err:
            raise CheckpointError(f"{self.path} is a truncated or malformed GGUF file ({err}). Re-download or "
                                  f"re-convert it.") from err
        self.size = os.path.getsize(self.path)
        self.metadata, self.value_types = {}, {}
        for key, entry in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            self.metadata[key] = _field_value(entry)
            self.value_types[key] = entry.types[0].name if entry.types else "?"
        self.tensors = {}
        for tensor in reader.tensors:
            type_name = tensor.tensor_type.name
            end = tensor.data_offset + tensor.n_bytes
            if end > self.size:
                raise CheckpointError(f"{self.path} is truncated: tensor {tensor.name!r} ends at byte {end} but the "
                                      f"file has {self.size}. Re-download or re-convert it.")
            shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
            self.tensors[tensor.name] = GGUFTensor(tensor.name, type_name, shape, tensor.data)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def arch_value(self, key: str, default=None):
        """``{architecture}.{key}`` (``"rope.freq_base"`` -> ``arcee.rope.freq_base``), else ``default``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def type_counts(self) -> dict[str, int]:
        """How many tensors each ggml type holds."""
        counts: dict[str, int] = {}
        for tensor in self.tensors.values():
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + 1
        return counts


_LARGE_ARRAY = 64  # metadata arrays longer than this (the tokenizer's vocabulary ...) are summarised


def _field_value(entry):
    """A metadata field as a Python value; float32 numbers as their shortest decimal; long arrays summarised."""
    import gguf

    types = entry.types
    if types and types[0] == gguf.GGUFValueType.ARRAY and len(entry.data) > _LARGE_ARRAY:
        return f"<array of {len(entry.data)} {types[-1].name.lower()}>"
    value = entry.contents()
    if types and types[-1] == gguf.GGUFValueType.FLOAT32:
        value = [float32_decimal(v) for v in value] if isinstance(value, list) else float32_decimal(value)
    return value


# ---------------------------------------------------------------------------------------------- loading
def gguf_state_dict(file: GGUFFile, config: ArceeConfig, xp, dtype, compute_dtype) -> dict:
    """The file's tensors under transformers' names, rotary rows restored.

    Vectors (norms, biases) and matrices stored in F32/F16/BF16 that need no reordering are NumPy views
    into the file (float32, float16, or bfloat16 from ml_dtypes); every other matrix (block types, and the
    reordered q/k) is a GGUFWeight for ``xp``, model dtype ``dtype`` and ``compute_dtype``.
    Raises CheckpointError listing every tensor arcee_np cannot read.
    """
    tensors, unknown, unsupported = {}, [], []
    for name, tensor in file.tensors.items():
        target = hf_name(name)
        if target is None:
            unknown.append(name)
            continue
        if tensor.type_name not in FORMATS:
            unsupported.append(f"{name} ({tensor.type_name})")
            continue
        stem = name.split(".")[-2]
        heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(stem)
        if heads is not None and tensor.shape[0] % (2 * heads):
            raise CheckpointError(f"{file.path}: {name} has {tensor.shape[0]} rows, not a multiple of 2 x {heads} "
                                  f"heads; the file does not match its metadata.")
        if len(tensor.shape) == 1:
            tensors[target] = _plain(tensor).reshape(tensor.shape)
            if heads is not None:  # a q/k bias: reordered like the rows of its matrix
                tensors[target] = tensors[target][rotary_row_order(tensor.shape[0], heads)]
        elif heads is None and tensor.type_name in ("F32", "F16", "BF16"):
            tensors[target] = _plain(tensor)
        else:
            order = rotary_row_order(tensor.shape[0], heads) if heads is not None else None
            tensors[target] = GGUFWeight(tensor.raw, FORMATS[tensor.type_name], tensor.shape[1], xp, dtype,
                                         compute_dtype, order)
    if unknown or unsupported:
        lines = [f"{file.path} holds tensors arcee_np cannot read:"]
        if unknown:
            lines.append(f"  not part of an Arcee model ({len(unknown)}): {', '.join(unknown)}")
        if unsupported:
            lines.append(f"  in a ggml type arcee_np does not decode ({len(unsupported)}): {', '.join(unsupported)}; "
                         f"supported: {', '.join(FORMATS)}. Re-quantize with one of those.")
        raise CheckpointError("\n".join(lines))
    return tensors


def _plain(tensor: GGUFTensor) -> np.ndarray:
    """An F32/F16/BF16 tensor as a NumPy view of the file (bfloat16 through ml_dtypes), shaped [rows, cols]."""
    if tensor.type_name == "BF16":
        import ml_dtypes

        return tensor.data.view(np.uint16).view(ml_dtypes.bfloat16).reshape(tensor.shape)
    if tensor.type_name not in ("F32", "F16"):  # a 1-D tensor in a block type: decode it (tiny)
        return tensor.dequantize()
    return tensor.data.reshape(tensor.shape)


def read_gguf(path, dtype: str = "float32", device: str = "cpu", metadata: str = "llama.cpp",
              config: ArceeConfig | None = None) -> tuple[ArceeConfig, dict, GGUFMetadata]:
    """Everything a model needs from a GGUF file (a path, or a GGUFFile already open): ``(config, tensors,
    metadata)``.

    config: the one the metadata gives under ``metadata`` (a reading in METADATA_READINGS), unless one is
    passed (a transformers config.json's, to run the file's weights with settings it does not carry);
    tensors: ``gguf_state_dict`` for the model's backend ``device`` and ``dtype``; metadata: the notes.
    """
    from ..backend import namespace_for_device, resolve_dtype

    xp = namespace_for_device(device)
    model_dtype = resolve_dtype(xp, dtype)
    compute = product_dtype(xp, model_dtype)
    file = path if isinstance(path, GGUFFile) else GGUFFile(path)
    notes = read_metadata(file, metadata)
    config = notes.config if config is None else config
    return config, gguf_state_dict(file, config, xp, model_dtype, compute), notes
