"""ArceeModel and ArceeForCausalLM: thin classes with transformers' call surface over model.py.

A model holds its config, its weights (``backbone`` params named as ArceeModel's state dict, ``head``
params named as the head's) on one backend (``device``) in one dtype, and nothing else: every call is a
pure function of the weights and the inputs, except the KV cache the caller passes in and gets back.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from .backend import DTYPES, device_of, namespace_for_device, resolve_dtype, to_device, to_numpy
from .blocks import (IGNORE_INDEX, causal_lm_loss, last_non_pad_index, linear, lm_head, pool_positions,
                     question_answering_loss, sequence_classification_loss, split_start_end,
                     token_classification_loss)
from .cache import KVCache
from .io.weights import host_dtype, place_weights, widen_whole
from .io.gguf import is_gguf, read_gguf
from .io.checkpoint import backbone_shapes, read_checkpoint, split_checkpoint, write_checkpoint
from .config import ArceeConfig
from .errors import ConfigError
from .generation import generate_tokens, resolve_settings
from .inputs import check_inputs
from .model import ATTENTION_IMPLEMENTATIONS, backbone
from .outputs import (BaseModelOutputWithPast, CausalLMOutputWithPast, QuestionAnsweringModelOutput,
                      SequenceClassifierOutputWithPast, TokenClassifierOutput)
from .trace import record


class ArceePreTrainedModel:
    """Loading, saving and the backbone call shared by every Arcee class.

    Subclasses set ``prefix`` (where their backbone sits in the state dict) and ``head_shapes(config)``.
    """

    prefix = "model."

    def __init__(self, config: ArceeConfig, backbone_params: dict, head_params: dict | None = None,
                 dtype: str = "float32", device: str = "cpu", widen: str = "auto",
                 attn_implementation: str = "tiled"):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
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
                        widen: str = "auto", attn_implementation: str = "tiled"):
        """Load a transformers (or arcee_np) checkpoint folder: config.json + safetensors (single or sharded),
        or a llama.cpp GGUF file (``from_gguf`` with its defaults).

        dtype: "float32" (default: as transformers float32), "float64" (golden mode: every step in float64),
        "float16" or "bfloat16" (transformers' casting points in that dtype; products in float32);
        device: "cpu" (NumPy), "cuda" (CuPy) or "array_api_strict";
        widen: when weights stored in a narrower dtype than the computation are widened (arcee_np.io.weights):
        "at_load" (fastest), "per_use" (a tile of rows each time a block uses them: memory stays near the
        file's size plus the activations), or "auto" (default: at load when that costs at most 2 GiB more
        than the stored weights, else per use);
        attn_implementation: "tiled" (default: the online softmax over key tiles, memory linear in the
        length; the same numbers as eager to float32 rounding) or "eager" (transformers' eager path, the whole
        [B, H, T, S] probability array in memory). ``output_attentions=True`` and traces of ``attn.scores`` /
        ``attn.probs`` run eager whatever is chosen, as transformers falls back from sdpa.

        Memory: the file is memory-mapped; matrices already in the compute dtype are used in place (their
        pages count in RSS, not as the process's own memory). Widening at load adds the widened size;
        per use adds one tile per block call. ``arcee-np info`` states both per dtype.
        """
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
        resolve_dtype(namespace_for_device(device), dtype)  # fail on a bad device or dtype before reading weights
        check_attn_implementation(attn_implementation)
        if is_gguf(path):
            return cls.from_gguf(path, dtype=dtype, device=device, widen=widen, attn_implementation=attn_implementation)
        config = ArceeConfig.from_pretrained(path)
        return cls.from_state_dict(config, read_checkpoint(path), dtype=dtype, device=device, widen=widen,
                                   attn_implementation=attn_implementation)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, dtype: str = "float32", device: str = "cpu", widen: str = "auto",
                  metadata: str = "llama.cpp", config: ArceeConfig | None = None, attn_implementation: str = "tiled"):
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
                        widen: str = "auto", attn_implementation: str = "tiled"):
        """A model from ``tensors`` named as transformers' state dict (``model.layers.0.mlp.up_proj.weight``
        ...; NumPy arrays in any float dtype, or arrays of the model's backend), checked against ``config``.
        dtype, device, widen, attn_implementation: as ``from_pretrained``."""
        backbone_params, head_params = split_checkpoint(tensors, config, cls.prefix, cls.head_shapes(config),
                                                        cls.ignored_names(config))
        return cls(config, backbone_params, head_params, dtype=dtype, device=device, widen=widen,
                   attn_implementation=attn_implementation)

    @classmethod
    def from_config(cls, config: ArceeConfig, seed: int = 0, dtype: str = "float32", device: str = "cpu",
                    widen: str = "auto", attn_implementation: str = "tiled"):
        """A randomly initialised model, as transformers initialises one: linear and embedding weights drawn
        from a normal distribution of mean 0 and standard deviation initializer_range, biases 0, norm weights 1."""
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
        saves them), bfloat16 included."""
        self.config.save_pretrained(path)
        write_checkpoint(path, self.state_dict(), max_shard_size=max_shard_size)

    def num_parameters(self) -> int:
        """How many weights the model holds (a tied embedding counts once)."""
        return sum(int(np.prod(v.shape)) for v in (*self.params.values(), *self.head_params.values()))

    # ------------------------------------------------------------------ the backbone call
    def _run_backbone(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                      inputs_embeds=None, use_cache=None, output_attentions=False, output_hidden_states=False,
                      labels=None):
        """Check the inputs, run the backbone; returns (BackboneOutput, cache or None, labels)."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        input_ids, inputs_embeds, attention_mask, position_ids, labels = check_inputs(
            self.config, self.xp, self._dtype, input_ids, inputs_embeds, attention_mask, position_ids, past, labels)
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(self.config.num_hidden_layers)
        out = backbone(self.params, self.config, input_ids, inputs_embeds, attention_mask, position_ids, cache,
                       output_hidden_states, output_attentions, self.attn_implementation)
        return out, cache if use_cache or past_key_values is not None else None, labels

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_attention_heads}/{c.num_key_value_heads}, vocab={c.vocab_size}, "
                f"params={self.num_parameters():,}, dtype={self.dtype}, device={self.device})")


def check_attn_implementation(name: str) -> str:
    """``name`` if it is an attention implementation arcee_np has, else a ValueError saying which it has."""
    if name not in ATTENTION_IMPLEMENTATIONS:
        hint = ' (transformers\' "sdpa" and "flash_attention_2" compute what "tiled" computes)' if name in (
            "sdpa", "flash_attention_2") else ""
        raise ValueError(f"unknown attn_implementation {name!r}; choose one of "
                         f"{', '.join(map(repr, ATTENTION_IMPLEMENTATIONS))}{hint}.")
    return name


def _host_array(value) -> np.ndarray:
    """A param as a NumPy array: a stored weight widened whole, any backend's array copied to the host."""
    if hasattr(value, "widened_rows"):
        value = widen_whole(value)
    return np.asarray(to_numpy(value))


class ArceeModel(ArceePreTrainedModel):
    """The bare decoder (transformers' ArceeModel): embeddings, layers, final norm; no head."""

    prefix = ""

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, use_cache=None, output_attentions=False, output_hidden_states=False):
        """input_ids [B, T] (or inputs_embeds [B, T, D]) -> BaseModelOutputWithPast."""
        out, cache, _ = self._run_backbone(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                           use_cache, output_attentions, output_hidden_states)
        return BaseModelOutputWithPast(out.last_hidden_state, cache, out.hidden_states, out.attentions)


GENERATION_CONFIG_NAME = "generation_config.json"


def read_generation_config(path) -> dict:
    """A checkpoint folder's generation_config.json as a dict; {} when the folder has none."""
    file = os.path.join(os.fspath(path), GENERATION_CONFIG_NAME)
    if not os.path.isfile(file):
        return {}
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file} is not valid JSON ({err}); fix or delete it.") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a JSON object of generation settings; fix or delete it.")
    return data


class ArceeForCausalLM(ArceePreTrainedModel):
    """The decoder with its language-model head (transformers' ArceeForCausalLM)."""

    @classmethod
    def head_shapes(cls, config):
        return {} if config.tie_word_embeddings else {"lm_head.weight": (config.vocab_size, config.hidden_size)}

    @classmethod
    def ignored_names(cls, config):
        return ("lm_head.weight",) if config.tie_word_embeddings else ()

    @property
    def lm_head_weight(self):
        """[V, D]: the head's own matrix, or the embedding matrix when tied."""
        return self.params["embed_tokens.weight"] if self.config.tie_word_embeddings else \
            self.head_params["lm_head.weight"]

    def state_dict(self):
        out = super().state_dict()
        if self.config.tie_word_embeddings:  # transformers saves the tied matrix once, under the embedding
            out.pop("lm_head.weight", None)
        return out

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, labels=None, use_cache=None, output_attentions=False,
                 output_hidden_states=False, logits_to_keep=0):
        """input_ids [B, T] -> CausalLMOutputWithPast with logits [B, T', V] (T' from ``logits_to_keep``:
        an int keeps the last that many positions, 0 all; a 1-D index array keeps those) and, with labels
        [B, T] (-100 = ignored), the mean next-token cross-entropy."""
        out, cache, labels = self._run_backbone(input_ids, attention_mask, position_ids, past_key_values,
                                                inputs_embeds, use_cache, output_attentions, output_hidden_states,
                                                labels)
        if not isinstance(logits_to_keep, int):
            logits_to_keep = to_device(np.asarray(to_numpy(logits_to_keep), dtype=np.int64), self.xp)
        logits = record("logits", lm_head(out.last_hidden_state, self.lm_head_weight, logits_to_keep))
        loss = None
        if labels is not None:
            if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
                raise ValueError("labels need the logits of every position: leave logits_to_keep at 0.")
            loss = causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(loss, logits, cache, out.hidden_states, out.attentions)

    # ------------------------------------------------------------------ generation
    @property
    def generation_config(self) -> dict:
        """The checkpoint's generation_config.json as a dict ({} when it has none): generate's defaults."""
        return self.__dict__.setdefault("_generation_config", {})

    @generation_config.setter
    def generation_config(self, value: dict | None) -> None:
        self.__dict__["_generation_config"] = dict(value or {})

    @classmethod
    def from_pretrained(cls, path, dtype="float32", device="cpu", widen="auto", attn_implementation="tiled"):
        """As ArceePreTrainedModel.from_pretrained, and reads generation_config.json (when present) into
        ``model.generation_config``."""
        model = super().from_pretrained(path, dtype=dtype, device=device, widen=widen,
                                        attn_implementation=attn_implementation)
        if not is_gguf(path):
            model.generation_config = read_generation_config(path)
        return model

    def save_pretrained(self, path, max_shard_size=None):
        """As ArceePreTrainedModel.save_pretrained, plus generation_config.json when the model has one."""
        super().save_pretrained(path, max_shard_size=max_shard_size)
        if self.generation_config:
            with open(os.path.join(path, GENERATION_CONFIG_NAME), "w", encoding="utf-8") as fh:
                json.dump(self.generation_config, fh, indent=2, sort_keys=True)
                fh.write("\n")

    def _generation_step(self, input_ids, attention_mask, position_ids, cache):
        """generate's step: the logits [B, V] of the last position, appending to ``cache``."""
        out = self(input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=cache,
                   use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def generate(self, input_ids, attention_mask=None, max_new_tokens=None, max_length=None, min_new_tokens=None,
                 do_sample=None, temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                 eos_token_id=None, pad_token_id=None, seed=None, streamer=None) -> np.ndarray:
        """Greedy decoding or sampling as transformers' ``generate``; returns prompt + new tokens [B, T + n]
        (a NumPy int64 array; n <= max_new_tokens, fewer when every row has emitted eos).

        input_ids: [B, T] (left-pad batches, with their attention_mask [B, T]). Every knob left at None takes
        the value in ``self.generation_config`` (generation_config.json), else transformers' default:
        max_new_tokens (max_length counts the prompt too; with neither, 20 new tokens), min_new_tokens 0,
        do_sample False, temperature 1.0, top_k 50 (0 = off), top_p 1.0, repetition_penalty 1.0, eos/pad ids
        from the model config (pad None -> the first eos). ``seed`` makes sampling reproducible. ``streamer``:
        ``put(token_ids)`` / ``end()`` as transformers' streamers (e.g. arcee_np.tokenizer.TextStreamer).
        Uses a KV cache preallocated to the final length and computes only the last position's logits.
        """
        ids = np.asarray(to_numpy(input_ids))
        if ids.ndim == 1:
            raise ValueError(f"input_ids must be 2-D [batch, seq], got shape {ids.shape}; add the batch axis: "
                             f"input_ids[None, :].")
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"input_ids must be 2-D [batch, seq] with at least one token, got shape {ids.shape}.")
        settings = resolve_settings(
            ids.shape[1], self.config.vocab_size, self.config.max_position_embeddings, self.generation_config,
            {"eos_token_id": self.config.eos_token_id, "pad_token_id": self.config.pad_token_id},
            max_new_tokens=max_new_tokens, max_length=max_length, min_new_tokens=min_new_tokens,
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed)
        cache = KVCache(self.config.num_hidden_layers, max_length=settings.max_length)
        return generate_tokens(self._generation_step, ids, settings, attention_mask, cache, streamer)


# ---------------------------------------------------------------------------------------------- other heads
def _batch_size(input_ids, inputs_embeds) -> int:
    """Rows of a forward call, read before any work (the full checks run in ``_run_backbone``)."""
    source = input_ids if input_ids is not None else inputs_embeds
    shape = np.shape(source) if isinstance(source, (list, tuple)) else tuple(source.shape)
    return int(shape[0]) if len(shape) >= 2 else 1


def _class_labels(labels, name: str, count: int, classes: int, per: str = "row"):
    """Integer class labels flattened to [count], each in [0, classes) or -100 (ignored); a clear error if not."""
    host = np.asarray(to_numpy(labels))
    if host.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class ids, got dtype {host.dtype}; convert with .astype('int64').")
    if host.size != count:
        raise ValueError(f"{name} must hold {count} class ids (one per {per}), got shape {tuple(host.shape)}.")
    flat = host.reshape(-1).astype(np.int64)
    bad = flat[((flat < 0) | (flat >= classes)) & (flat != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(f"{name} must lie in [0, num_labels={classes}) or be {IGNORE_INDEX} (ignored); found "
                         f"{bad[:5].tolist()}.")
    return flat


class ArceeForSequenceClassification(ArceePreTrainedModel):
    """The decoder with a classification head read at each row's last non-pad token (transformers'
    ArceeForSequenceClassification): ``score`` [num_labels, D], no bias."""

    @classmethod
    def head_shapes(cls, config):
        return {"score.weight": (config.num_labels, config.hidden_size)}

    def _problem_type(self, labels: np.ndarray) -> str:
        """``config.problem_type``, inferred and set on the config when None, as transformers does."""
        if self.config.problem_type is None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (np.int32, np.int64):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        return self.config.problem_type

    def _check_labels(self, labels, batch: int):
        """The labels for this config's problem type as a backend array ([B] ints, [B] / [B, C] floats)."""
        host = np.asarray(to_numpy(labels))
        problem_type, classes = self._problem_type(host), self.config.num_labels
        if problem_type == "single_label_classification":
            return to_device(_class_labels(host, "labels", batch, classes), self.xp)
        if problem_type not in ("regression", "multi_label_classification"):
            raise ValueError(f"config.problem_type {problem_type!r} is unknown; use 'regression', "
                             f"'single_label_classification' or 'multi_label_classification'.")
        want = (batch,) if problem_type == "regression" and classes == 1 else (batch, classes)
        if host.size != int(np.prod(want)) or (len(want) == 2 and host.shape != want):
            raise ValueError(f"labels for {problem_type} must be {list(want)} numbers, got shape {tuple(host.shape)}.")
        loss_dtype = "float64" if self.dtype == "float64" else "float32"
        return to_device(host.reshape(want).astype(loss_dtype), self.xp)

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, labels=None, use_cache=None, output_attentions=False, output_hidden_states=False):
        """input_ids [B, T] -> SequenceClassifierOutputWithPast with logits [B, num_labels] taken at each row's
        last token that is not ``config.pad_token_id`` (left or right padding; the mask is not consulted) and,
        with labels, the loss of ``config.problem_type`` (inferred and set when None: regression for one label,
        single-label for integer labels, else multi-label)."""
        batch = _batch_size(input_ids, inputs_embeds)
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined: set config.pad_token_id "
                             "(the id your tokenizer pads with).")
        if labels is not None:
            labels = self._check_labels(labels, batch)
        out, cache, _ = self._run_backbone(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                           use_cache, output_attentions, output_hidden_states)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["score.weight"]))  # [B, T, C]
        length = logits.shape[1]
        if pad is not None and input_ids is not None:
            index = last_non_pad_index(to_device(np.asarray(to_numpy(input_ids), dtype=np.int64), self.xp), pad)
        else:
            if pad is not None:
                warnings.warn(f"{type(self).__name__} does not detect padding in inputs_embeds: it pools the last "
                              f"position of every row.", stacklevel=2)
            index = self.xp.full((batch,), length - 1, dtype=self.xp.int64)
        pooled = pool_positions(logits, index)  # [B, C]
        loss = None if labels is None else sequence_classification_loss(pooled, labels, self.config.problem_type)
        return SequenceClassifierOutputWithPast(loss, pooled, cache, out.hidden_states, out.attentions)


class ArceeForQuestionAnswering(ArceePreTrainedModel):
    """The decoder with a span head (transformers' ArceeForQuestionAnswering): ``qa_outputs`` [2, D] with bias.
    The backbone sits under ``transformer.`` in the state dict, as in transformers."""

    prefix = "transformer."

    @classmethod
    def head_shapes(cls, config):
        return {"qa_outputs.weight": (2, config.hidden_size), "qa_outputs.bias": (2,)}

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=False,
                 output_hidden_states=False):
        """input_ids [B, T] -> QuestionAnsweringModelOutput with start_logits, end_logits [B, T] and, when both
        start_positions and end_positions ([B] integers) are given, the mean of the two cross-entropies;
        positions are clamped to [0, T] and T (past the end) is ignored."""
        batch = _batch_size(input_ids, inputs_embeds)
        positions = []
        for name, value in (("start_positions", start_positions), ("end_positions", end_positions)):
            if value is not None:
                host = np.asarray(to_numpy(value))
                if host.dtype.kind not in "iu" or host.size != batch:
                    raise ValueError(f"{name} must be {batch} integer token positions (one per row), got dtype "
                                     f"{host.dtype} and shape {tuple(host.shape)}.")
                positions.append(to_device(host.reshape(-1).astype(np.int64), self.xp))
        out, _, _ = self._run_backbone(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                       False, output_attentions, output_hidden_states)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["qa_outputs.weight"],
                                         self.head_params["qa_outputs.bias"]))  # [B, T, 2]
        start_logits, end_logits = split_start_end(logits)
        loss = question_answering_loss(start_logits, end_logits, *positions) if len(positions) == 2 else None
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)


class ArceeForTokenClassification(ArceePreTrainedModel):
    """The decoder with a per-token classifier (transformers' ArceeForTokenClassification): ``score``
    [num_labels, D], with a bias when ``config.token_classification_bias`` (the default). Dropout before the
    head is an identity: arcee_np always runs in inference mode."""

    @classmethod
    def head_shapes(cls, config):
        shapes = {"score.weight": (config.num_labels, config.hidden_size)}
        if config.token_classification_bias:
            shapes["score.bias"] = (config.num_labels,)
        return shapes

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, labels=None, use_cache=None, output_attentions=False, output_hidden_states=False):
        """input_ids [B, T] -> TokenClassifierOutput with logits [B, T, num_labels] and, with labels [B, T]
        (class ids, -100 = ignored), the mean cross-entropy over the labelled tokens."""
        if labels is not None:
            host = np.asarray(to_numpy(labels))
            _class_labels(host, "labels", host.size, self.config.num_labels, "token")  # the values; shapes: _run_backbone
        out, _, labels = self._run_backbone(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                            use_cache, output_attentions, output_hidden_states, labels)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["score.weight"],
                                         self.head_params.get("score.bias")))  # [B, T, C]
        loss = None if labels is None else token_classification_loss(logits, labels)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
