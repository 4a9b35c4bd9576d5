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
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..config import ArceeConfig
from ..errors import CheckpointError, ConfigError
from .quants import FORMATS, Format

ARCHITECTURE = "arcee"
GGUF_MAGIC = b"GGUF"
METADATA_READINGS = ("llama.cpp", "file")

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


def is_gguf(path) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


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
class GGUFWeight:
    """A matrix of a GGUF file kept in its ggml format (memory-mapped) and dequantized where it is used.

    A stored weight (the protocol ``blocks/linear.py`` and ``blocks/embedding.py`` use): ``shape`` ``(rows,
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
    def ndim(self) -> int:
        return 2

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


def float32_decimal(value: float) -> float:
    """The shortest decimal that rounds to the same float32 as ``value`` (``np.float32(1e-5)`` -> ``1e-05``)."""
    return float(str(np.float32(value)))


# ---------------------------------------------------------------------------------------------- metadata
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


def read_metadata(file: GGUFFile, reading: str = "llama.cpp") -> GGUFMetadata:
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


def _rope_scaling(file: GGUFFile, reading: str, get, notes: list) -> dict | None:
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
    from ..backend import is_wide, namespace_for_device, resolve_dtype

    xp = namespace_for_device(device)
    model_dtype = resolve_dtype(xp, dtype)
    compute = model_dtype if is_wide(xp, model_dtype) else xp.float32
    file = path if isinstance(path, GGUFFile) else GGUFFile(path)
    notes = read_metadata(file, metadata)
    config = notes.config if config is None else config
    return config, gguf_state_dict(file, config, xp, model_dtype, compute), notes
