"""ArceePreTrainedModel: what every Arcee class shares (construction, loading and saving, the checked
backbone call, the refusal of NaN/Inf output) and the checks of a model's path and attention choice.

A model holds its config, its weights (``backbone`` params named as ArceeModel's state dict, ``head``
params named as the head's) on one backend (``device``) in one dtype, and nothing else: every call is a
pure function of the weights and the inputs, except the KV cache the caller passes in and gets back.
"""

from __future__ import annotations

import os

import numpy as np

from .backend import device_of, namespace_for_device, resolve_dtype, to_numpy
from .blocks.namespace import array_namespace
from .blocks.stacked import stack_rows
from .blocks.stored import is_stored
from .config import CONFIG_NAME, ArceeConfig
from .errors import CheckpointError, InputError, NonFiniteError
from .io.checkpoint import backbone_shapes, parameter_count, read_checkpoint, split_checkpoint, write_checkpoint
from .io.gguf import is_gguf, read_gguf
from .io.safetensors import release_mapped_pages
from .io.weights import host_dtype, place_weights, widen_whole
from .model import ATTENTION_CHOICES, backbone
from .trace import detect_nonfinite, tracing
from .validation.arguments import ForwardInputs, check_dtype, check_flag, check_forward_inputs
from .validation.files import check_folder, check_path
from .validation.memory import check_allocation


class ArceePreTrainedModel:
    """Loading, saving and the backbone call shared by every Arcee class.

    Subclasses set ``prefix`` (where their backbone sits in the state dict) and ``head_shapes(config)``.
    """

    prefix = "model."

    def __init__(self, config: ArceeConfig, backbone_params: dict, head_params: dict | None = None,
                 dtype: str = "float32", device: str = "cpu", widen: str = "auto",
                 attn_implementation: str = "auto"):
        check_dtype(dtype)
        self.config = config
        self.attn_implementation = check_attn_implementation(attn_implementation)
        self.xp = namespace_for_device(device)
        self.device = device_of(self.xp)
        self.dtype = dtype
        self._dtype = resolve_dtype(self.xp, dtype)
        backbone_params, head_params = split_checkpoint(
            {self.prefix + k: v for k, v in backbone_params.items()} | dict(head_params or {}),
            config, self.prefix, self.head_shapes(config), self.ignored_names(config))
        placed = place_weights({self.prefix + k: v for k, v in backbone_params.items()} | head_params, self.xp,
                               self._dtype, widen)
        self.params = {k[len(self.prefix):]: placed[k] for k in (self.prefix + n for n in backbone_params)}
        self.head_params = {k: placed[k] for k in head_params}
        stack_attention_projections(self.params, config)

    # ------------------------------------------------------------------ the head's description
    @classmethod
    def head_shapes(cls, config) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the head's own tensors (none for the bare backbone)."""
        return {}

    @classmethod
    def ignored_names(cls, config) -> tuple[str, ...]:
        """Checkpoint tensors accepted and dropped (tied copies)."""
        return ()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32", device: str = "cpu",
                        widen: str = "auto", attn_implementation: str = "auto", check_finite: bool = True):
        """Load a transformers (or arcee_np) checkpoint folder: config.json + safetensors (single or sharded),
        or a llama.cpp GGUF file (``from_gguf`` with its defaults).

        dtype: "float32" (default: as transformers float32), "float64" (golden mode: every step in float64),
        "float16" or "bfloat16" (transformers' casting points in that dtype; products in float32);
        device: "cpu" (NumPy), "cuda" (CuPy) or "array_api_strict";
        widen: when weights stored in a narrower dtype than the computation are widened (arcee_np.io.weights):
        "at_load" (fastest), "per_use" (a tile of rows each time a block uses them: memory stays near the
        file's size plus the activations), or "auto" (default: at load when that costs at most 2 GiB more
        than the stored weights, else per use);
        attn_implementation: "tiled" (the online softmax over key tiles, memory linear in the length; the
        same numbers as eager to float32 rounding), "tiled_numpy" (the same, laid out for NumPy's in-place
        passes; the reference elsewhere), "eager" (transformers' eager path, the whole [B, H, T, S]
        probability array in memory) or "auto" (default: "tiled_numpy" on NumPy, "tiled" on CuPy and
        array_api_strict; model.choose_attention). ``output_attentions=True`` and traces of ``attn.scores`` /
        ``attn.probs`` run eager whatever is chosen, as transformers falls back from sdpa;
        check_finite: every weight of a safetensors checkpoint is checked for NaN/Inf at load (NonFiniteError
        naming the file and the tensor; one read of the weights); False skips that, for speed or to inspect a
        broken checkpoint.

        Memory: the file is memory-mapped; matrices already in the compute dtype are used in place (their
        pages count in RSS, not as the process's own memory). Widening at load adds the widened size;
        per use adds one tile per block call. ``arcee-np info`` states both per dtype.
        """
        check_dtype(dtype)
        check_flag("check_finite", check_finite)
        resolve_dtype(namespace_for_device(device), dtype)  # fail on a bad device or dtype before reading weights
        check_attn_implementation(attn_implementation)
        path = checkpoint_path(path)
        if is_gguf(path):
            return cls.from_gguf(path, dtype=dtype, device=device, widen=widen, attn_implementation=attn_implementation)
        config = ArceeConfig.from_pretrained(path)
        tensors = read_checkpoint(path, check_finite=check_finite)
        try:
            return cls.from_state_dict(config, tensors, dtype=dtype, device=device, widen=widen,
                                       attn_implementation=attn_implementation)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, dtype: str = "float32", device: str = "cpu", widen: str = "auto",
                  metadata: str = "llama.cpp", config: ArceeConfig | None = None, attn_implementation: str = "auto"):
        """A model from a llama.cpp GGUF file (a path or an open ``arcee_np.io.gguf.GGUFFile``) in any type
        ``arcee_np.io.quants`` decodes (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K);
        ``from_pretrained`` calls it for a path to such a file.

        metadata: "llama.cpp" (default: the settings llama.cpp's Arcee loader uses, so the model computes what
        llama.cpp computes) or "file" (every key the converter wrote); config: run the file's weights with
        this config instead (e.g. the transformers checkpoint's). Quantized matrices stay in their blocks and
        are dequantized a row tile at a time where used (docs/gguf.md). dtype, device, widen,
        attn_implementation: as ``from_pretrained``.
        """
        config, tensors, _ = read_gguf(path, dtype, device, metadata, config)
        return cls.from_state_dict(config, tensors, dtype=dtype, device=device, widen=widen,
                                   attn_implementation=attn_implementation)

    @classmethod
    def from_state_dict(cls, config: ArceeConfig, tensors: dict, dtype: str = "float32", device: str = "cpu",
                        widen: str = "auto", attn_implementation: str = "auto"):
        """A model from ``tensors`` named as transformers' state dict (``model.layers.0.mlp.up_proj.weight``
        ...; NumPy arrays in any float dtype, or arrays of the model's backend), checked against ``config``.
        dtype, device, widen, attn_implementation: as ``from_pretrained``."""
        backbone_params, head_params = split_checkpoint(tensors, config, cls.prefix, cls.head_shapes(config),
                                                        cls.ignored_names(config))
        return cls(config, backbone_params, head_params, dtype=dtype, device=device, widen=widen,
                   attn_implementation=attn_implementation)

    @classmethod
    def from_config(cls, config: ArceeConfig, seed: int = 0, dtype: str = "float32", device: str = "cpu",
                    widen: str = "auto", attn_implementation: str = "auto"):
        """A randomly initialised model, as transformers initialises one: linear and embedding weights drawn
        from a normal distribution of mean 0 and standard deviation initializer_range, biases 0, norm weights 1."""
        check_allocation(4 * parameter_count(config, cls.head_shapes(config)), f"{cls.__name__}.from_config",
                         "choose a smaller config")
        rng = np.random.default_rng(seed)
        shapes = {cls.prefix + k: v for k, v in backbone_shapes(config).items()} | cls.head_shapes(config)
        tensors = {}
        for name, shape in shapes.items():
            if name.endswith("norm.weight"):
                tensors[name] = np.ones(shape, dtype=np.float32)
            elif name.endswith(".bias"):
                tensors[name] = np.zeros(shape, dtype=np.float32)
            else:
                tensors[name] = rng.normal(0.0, config.initializer_range, size=shape).astype(np.float32)
        return cls.from_state_dict(config, tensors, dtype=dtype, device=device, widen=widen,
                                   attn_implementation=attn_implementation)

    # ------------------------------------------------------------------ state dict and saving
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every weight under transformers' name, as NumPy arrays in the model's dtype (as transformers'
        state_dict: a float32 model gives float32 arrays, whatever the file stored; weights kept stored
        are widened here, which for a big model takes the memory of the whole widened model)."""
        dtype = host_dtype(self.dtype)
        items = [(self.prefix + k, v) for k, v in self.params.items()] + list(self.head_params.items())
        return {name: _host_array(value).astype(dtype, copy=False) for name, value in items}

    def save_pretrained(self, path: str | os.PathLike, max_shard_size: int | None = None) -> None:
        """Write config.json and safetensors (sharded above ``max_shard_size`` bytes) that transformers'
        ``from_pretrained`` loads to the same outputs; the tensors are in the model's dtype (as transformers
        saves them), bfloat16 included. Each file is written under a temporary name and moved into place
        when complete, the weights first and config.json last (io.checkpoint.write_checkpoint): a save
        interrupted at any moment leaves the old checkpoint or the new one."""
        write_checkpoint(path, self.state_dict(), max_shard_size=max_shard_size, json_files=self._json_files())

    def _json_files(self) -> dict:
        """The checkpoint's JSON files, in the order they are moved into place (config.json last)."""
        return {CONFIG_NAME: self.config.to_dict()}

    def num_parameters(self) -> int:
        """How many weights the model holds (a tied embedding counts once)."""
        return sum(int(np.prod(v.shape)) for v in (*self.params.values(), *self.head_params.values()))

    # ------------------------------------------------------------------ the backbone call
    def _check_call(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                    inputs_embeds=None, use_cache=None, output_attentions=False,
                    output_hidden_states=False) -> ForwardInputs:
        """Every class's forward arguments, checked and on the model's backend (validation.arguments)."""
        return check_forward_inputs(self.config, self.xp, self._dtype, input_ids, inputs_embeds, attention_mask,
                                    position_ids, past_key_values, use_cache, output_attentions, output_hidden_states)

    def _run_backbone(self, inputs: ForwardInputs):
        """The backbone on checked inputs; returns BackboneOutput."""
        return backbone(self.params, self.config, inputs.input_ids, inputs.inputs_embeds, inputs.attention_mask,
                        inputs.position_ids, inputs.cache, inputs.output_hidden_states, inputs.output_attentions,
                        self.attn_implementation)

    def _refuse_nonfinite(self, value, inputs: ForwardInputs, rerun, what: str = "logits") -> None:
        """NonFiniteError when the output ``value`` holds NaN/Inf, naming the first intermediate that does
        (``rerun()`` repeats the forward; the cache is first cropped back to what it held before)."""
        def locate():
            if inputs.cache is not None:
                inputs.cache.crop(inputs.past_length)
            rerun()

        check_finite_output(value, f"the {what} of {type(self).__name__}", locate)

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_attention_heads}/{c.num_key_value_heads}, vocab={c.vocab_size}, "
                f"params={self.num_parameters():,}, dtype={self.dtype}, device={self.device})")


# A file-backed model's q, k and v weights are copied into stacks only when all the copies together take at
# most this much of the process's own memory (the 125M model: 47 MB; AFM-4.5B in float32: 1.3 GB, left as is).
STACK_COPY_BYTES = 256 * 1024**2


def stack_attention_projections(params: dict, config) -> None:
    """Put each layer's q, k and v projection weights in ``params`` as the row views of one stacked array
    (blocks/stacked.py), so that self_attention computes the three products as one; in place.

    Only where the three are plain NumPy arrays of one dtype and the layer has no attention biases (a stored
    weight is multiplied one widened tile at a time; CuPy and array_api_strict keep three arrays). Weights
    already in the process's memory (widened or rounded at load) are replaced by the stack; weights read in
    place from the file are copied, which a big model is spared (STACK_COPY_BYTES), and their file pages are
    released (io/safetensors.py release_mapped_pages), so the process holds the copy instead of them.
    """
    groups = []
    for layer in range(config.num_hidden_layers):
        names = [f"layers.{layer}.self_attn.{part}_proj.weight" for part in "qkv"]
        weights = [params[name] for name in names]
        if all(type(w) is np.ndarray and w.dtype == weights[0].dtype for w in weights) and \
                not any(name[:-len("weight")] + "bias" in params for name in names):
            groups.append(names)
    mapped = sum(params[name].nbytes for names in groups for name in names if not params[name].flags.owndata)
    for names in groups:
        weights = [params[name] for name in names]
        if mapped <= STACK_COPY_BYTES or all(w.flags.owndata for w in weights):
            read_only = not all(w.flags.writeable for w in weights)  # a file's pages: the copies stay read-only
            for name, view in zip(names, stack_rows(weights), strict=True):
                if read_only:
                    view.flags.writeable = False
                params[name] = view
            for weight in weights:
                release_mapped_pages(weight)  # the file's pages of the copied weights leave the process's memory


def checkpoint_path(path) -> str:
    """``path`` as a string when it names a checkpoint folder or a GGUF file; CheckpointError for another
    file, MissingFileError when nothing is there."""
    path = check_path(path, "the checkpoint path")
    if os.path.isfile(path) and not is_gguf(path):
        raise CheckpointError(f"{path} is a file that is neither a checkpoint folder nor a GGUF file (it does not "
                              f"start with the bytes 'GGUF'); give the folder of config.json and the safetensors "
                              f"files, or a llama.cpp .gguf file.")
    return path if is_gguf(path) else check_folder(path, "checkpoint folder")


def check_attn_implementation(name: str) -> str:
    """``name`` if it is an attention implementation arcee_np has, else an InputError saying which it has."""
    if name not in ATTENTION_CHOICES:
        hint = ' (transformers\' "sdpa" and "flash_attention_2" compute what "tiled" computes)' if name in (
            "sdpa", "flash_attention_2") else ""
        raise InputError(f"unknown attn_implementation {name!r}; choose one of "
                         f"{', '.join(map(repr, ATTENTION_CHOICES))}{hint}.")
    return name


def _host_array(value) -> np.ndarray:
    """A param as a NumPy array: a stored weight widened whole, any backend's array copied to the host."""
    if is_stored(value):
        value = widen_whole(value)
    return np.asarray(to_numpy(value))


def check_finite_output(value, what: str, locate) -> None:
    """Raise NonFiniteError when ``value`` (an xp array: the logits) holds NaN or Inf. ``locate()`` reruns the
    forward that made it under ``detect_nonfinite`` and raises its NonFiniteError naming the first
    intermediate that holds them; its message is kept and the caller's ``what`` put in front. The normal
    path costs one reduction over the output."""
    xp = array_namespace(value)
    if bool(xp.all(xp.isfinite(value))):
        return
    if tracing():  # a trace records NaN/Inf as they come: that is what a debugging session wants to see
        return
    try:
        with detect_nonfinite():
            locate()
    except NonFiniteError as err:
        raise NonFiniteError(f"{what} hold NaN/Inf, first appearing as {err}", err.name, err.value, err.trace,
                             err.previous) from None
    raise NonFiniteError(f"{what} hold NaN/Inf but no named intermediate does: check the head's weights "
                         f"(lm_head / score) for overflow in this dtype.", what)
