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

from .backend import device_of, namespace_for_device, resolve_dtype, to_device, to_numpy
from .blocks import (causal_lm_loss, last_non_pad_index, linear, lm_head, pool_positions, question_answering_loss,
                     sequence_classification_loss, split_start_end, token_classification_loss)
from .cache import KVCache
from .io.weights import host_dtype, place_weights, widen_whole
from .io.checkpoint import backbone_shapes, parameter_count, read_checkpoint, split_checkpoint, write_checkpoint
from .io.gguf import is_gguf, read_gguf
from .config import ArceeConfig
from .errors import CheckpointError, ConfigError, InputError
from .generation import resolve_settings, run_generation
from .model import ATTENTION_IMPLEMENTATIONS, backbone
from .validation.arguments import (ForwardInputs, check_class_labels, check_dtype, check_flag, check_float_labels,
                                   check_forward_inputs, check_logits_to_keep, check_span_positions,
                                   check_token_labels)
from .validation.files import check_folder, check_path, read_json
from .validation.finite import check_finite_output
from .validation.config import PROBLEM_TYPES
from .validation.generation import (ASSISTANT_KNOBS, check_assistant, check_cache_memory, check_generation_config,
                                   check_prompt, check_tokenizer)
from .validation.memory import check_allocation
from .validation.values import require_choice
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
                        widen: str = "auto", attn_implementation: str = "tiled", check_finite: bool = True):
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
        saves them), bfloat16 included."""
        self.config.save_pretrained(path)
        write_checkpoint(path, self.state_dict(), max_shard_size=max_shard_size)

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
    if name not in ATTENTION_IMPLEMENTATIONS:
        hint = ' (transformers\' "sdpa" and "flash_attention_2" compute what "tiled" computes)' if name in (
            "sdpa", "flash_attention_2") else ""
        raise InputError(f"unknown attn_implementation {name!r}; choose one of "
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
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                  use_cache, output_attentions, output_hidden_states)
        return self._forward(inputs)

    def _forward(self, inputs: ForwardInputs):
        out = self._run_backbone(inputs)
        self._refuse_nonfinite(out.last_hidden_state, inputs, lambda: self._forward(inputs), "hidden states")
        return BaseModelOutputWithPast(out.last_hidden_state, inputs.cache if inputs.return_cache else None,
                                       out.hidden_states, out.attentions)


GENERATION_CONFIG_NAME = "generation_config.json"


def read_generation_config(path, vocab_size: int | None = None) -> dict:
    """A checkpoint folder's generation_config.json as a dict ({} when the folder has none), its values
    checked (ConfigError naming the file; token ids against ``vocab_size`` when given)."""
    file = os.path.join(os.fspath(path), GENERATION_CONFIG_NAME)
    if not os.path.exists(file):
        return {}
    return check_generation_config(read_json(file, GENERATION_CONFIG_NAME, ConfigError), file, vocab_size)


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
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                  use_cache, output_attentions, output_hidden_states)
        if labels is not None:
            labels = check_token_labels(labels, inputs, self.config.vocab_size, "vocab_size", self.xp)
        keep = check_logits_to_keep(logits_to_keep, inputs, self.config.vocab_size, labels is not None, self.xp)
        return self._forward(inputs, labels, keep)

    def _forward(self, inputs: ForwardInputs, labels=None, logits_to_keep=0):
        """The forward of checked arguments (generate's steps call it directly)."""
        out = self._run_backbone(inputs)
        logits = record("logits", lm_head(out.last_hidden_state, self.lm_head_weight, logits_to_keep))
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, labels, logits_to_keep))
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(loss, logits, inputs.cache if inputs.return_cache else None, out.hidden_states,
                                      out.attentions)

    # ------------------------------------------------------------------ generation
    @property
    def generation_config(self) -> dict:
        """The checkpoint's generation_config.json as a dict ({} when it has none): generate's defaults."""
        return self.__dict__.setdefault("_generation_config", {})

    @generation_config.setter
    def generation_config(self, value: dict | None) -> None:
        self.__dict__["_generation_config"] = check_generation_config(value or {}, "model.generation_config",
                                                                      self.config.vocab_size)

    @classmethod
    def from_pretrained(cls, path, dtype="float32", device="cpu", widen="auto", attn_implementation="tiled",
                        check_finite=True):
        """As ArceePreTrainedModel.from_pretrained, and reads generation_config.json (when present, checked
        before the weights are read) into ``model.generation_config``."""
        path = checkpoint_path(path)
        generation_config = None if is_gguf(path) else read_generation_config(
            path, ArceeConfig.from_pretrained(path).vocab_size)
        model = super().from_pretrained(path, dtype=dtype, device=device, widen=widen,
                                        attn_implementation=attn_implementation, check_finite=check_finite)
        if generation_config is not None:
            model.generation_config = generation_config
        return model

    def save_pretrained(self, path, max_shard_size=None):
        """As ArceePreTrainedModel.save_pretrained, plus generation_config.json when the model has one."""
        super().save_pretrained(path, max_shard_size=max_shard_size)
        if self.generation_config:
            with open(os.path.join(path, GENERATION_CONFIG_NAME), "w", encoding="utf-8") as fh:
                json.dump(self.generation_config, fh, indent=2, sort_keys=True)
                fh.write("\n")

    def _generation_step(self, input_ids, attention_mask, position_ids, cache, keep=None):
        """generate's step: the logits [B, V] of the last position (or [B, keep, V] of the last ``keep``: assisted
        decoding), appending to ``cache`` (None: no cache, the whole sequence is fed). Its arguments come from
        the loop (checked once by generate), so it skips the call's checks."""
        batch, length = input_ids.shape
        inputs = ForwardInputs(to_device(input_ids, self.xp), None,
                               None if attention_mask is None else to_device(attention_mask, self.xp),
                               None if position_ids is None else to_device(position_ids, self.xp),
                               cache, 0 if cache is None else cache.get_seq_length(), batch, length, cache is not None)
        logits = self._forward(inputs, logits_to_keep=keep or 1).logits
        return logits[:, -1, :] if keep is None else logits

    def _new_generation_cache(self, settings, rows: int):
        """A KV cache of ``rows`` x ``settings.max_length`` positions (checked to fit), or None without use_cache."""
        if not settings.use_cache:
            return None
        check_cache_memory(self.config, rows, settings.max_length, np.dtype(host_dtype(self.dtype)).itemsize)
        return KVCache(self.config.num_hidden_layers, max_length=settings.max_length)

    def generate(self, input_ids, attention_mask=None, max_new_tokens=None, max_length=None, min_new_tokens=None,
                 do_sample=None, temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                 eos_token_id=None, pad_token_id=None, seed=None, streamer=None, assistant_model=None, tokenizer=None,
                 generation_config=None, **knobs):
        """transformers' ``generate``: greedy decoding, sampling, beam search (``num_beams``) and assisted
        decoding (``assistant_model`` or ``prompt_lookup_num_tokens``); returns prompt + new tokens
        [B * num_return_sequences, T + n] (a NumPy int64 array), or with ``return_dict_in_generate=True`` a
        GenerateDecoderOnlyOutput / GenerateBeamDecoderOnlyOutput (sequences, scores, logits,
        sequences_scores, beam_indices, num_accepted_tokens).

        input_ids: [B, T] (left-pad batches, with their attention_mask [B, T]). Every knob is a key of
        transformers' GenerationConfig (``**knobs``: min_p, num_beams, no_repeat_ngram_size, stop_strings ...;
        docs/generation.md lists them all, and those refused by name); one left at None takes the value in
        ``generation_config`` (a dict for this call) or ``self.generation_config`` (generation_config.json),
        else transformers' default. ``seed`` makes sampling reproducible. ``streamer``: ``put(token_ids)`` /
        ``end()`` as transformers' streamers. ``assistant_model``: a smaller ArceeForCausalLM with the same
        vocabulary (speculative decoding; its generation_config gives num_assistant_tokens and its schedule
        unless the call sets them). ``tokenizer``: for ``stop_strings`` (an ArceeTokenizer). Every argument is
        checked once, before the first step; the sequence may not pass ``max_position_embeddings``; NaN/Inf
        logits raise NonFiniteError naming where they first appeared.
        """
        ids, mask = check_prompt(input_ids, attention_mask, self.config.vocab_size, streamer)
        knobs.update(max_new_tokens=max_new_tokens, max_length=max_length, min_new_tokens=min_new_tokens,
                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                     repetition_penalty=repetition_penalty, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                     seed=seed)
        config = self.generation_config if generation_config is None else check_generation_config(
            generation_config, "generate(generation_config=...)", self.config.vocab_size)
        draft = check_assistant(assistant_model, self.config.vocab_size)
        if draft is not None:
            for key in ASSISTANT_KNOBS:  # transformers reads these from the draft's generation config
                if knobs.get(key) is None and draft.generation_config.get(key) is not None:
                    knobs[key] = draft.generation_config[key]
        settings = resolve_settings(
            ids.shape[1], self.config.vocab_size, self.config.max_position_embeddings, config,
            {"eos_token_id": self.config.eos_token_id, "pad_token_id": self.config.pad_token_id}, **knobs)
        out = run_generation(
            settings, ids, mask, self._generation_step, lambda rows: self._new_generation_cache(settings, rows),
            self.config.vocab_size, streamer, None if tokenizer is None else check_tokenizer(tokenizer).token_texts(),
            None if draft is None else draft._generation_step,
            None if draft is None else (lambda rows: draft._new_generation_cache(settings, rows)),
            None if draft is None else draft.generation_config)
        return out if settings.return_dict_in_generate else out.sequences


# ---------------------------------------------------------------------------------------------- other heads
class ArceeForSequenceClassification(ArceePreTrainedModel):
    """The decoder with a classification head read at each row's last non-pad token (transformers'
    ArceeForSequenceClassification): ``score`` [num_labels, D], no bias."""

    @classmethod
    def head_shapes(cls, config):
        return {"score.weight": (config.num_labels, config.hidden_size)}

    def _problem_type(self, labels) -> str:
        """``config.problem_type``, inferred and set on the config when None, as transformers does."""
        if self.config.problem_type is None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif np.asarray(to_numpy(labels)).dtype in (np.int32, np.int64):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        return self.config.problem_type

    def _check_labels(self, labels, batch: int):
        """The labels for this config's problem type as a backend array ([B] ints, [B] / [B, C] floats)."""
        problem_type, classes = self._problem_type(labels), self.config.num_labels
        require_choice("config.problem_type", problem_type, PROBLEM_TYPES, ConfigError)
        if problem_type == "single_label_classification":
            return check_class_labels(labels, batch, classes, self.xp)
        want = (batch,) if problem_type == "regression" and classes == 1 else (batch, classes)
        return check_float_labels(labels, want, problem_type, self.xp, "float64" if self.dtype == "float64" else
                                  "float32")

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, labels=None, use_cache=None, output_attentions=False, output_hidden_states=False):
        """input_ids [B, T] -> SequenceClassifierOutputWithPast with logits [B, num_labels] taken at each row's
        last token that is not ``config.pad_token_id`` (left or right padding; the mask is not consulted) and,
        with labels, the loss of ``config.problem_type`` (inferred and set when None: regression for one label,
        single-label for integer labels, else multi-label)."""
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                  use_cache, output_attentions, output_hidden_states)
        if self.config.pad_token_id is None and inputs.batch != 1:
            raise InputError("Cannot handle batch sizes > 1 if no padding token is defined: set config.pad_token_id "
                             "(the id your tokenizer pads with).")
        if labels is not None:
            labels = self._check_labels(labels, inputs.batch)
        return self._forward(inputs, labels)

    def _forward(self, inputs: ForwardInputs, labels=None):
        out = self._run_backbone(inputs)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["score.weight"]))  # [B, T, C]
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, labels))
        pad = self.config.pad_token_id
        if pad is not None and inputs.input_ids is not None:
            index = last_non_pad_index(inputs.input_ids, pad)
        else:
            if pad is not None:
                warnings.warn(f"{type(self).__name__} does not detect padding in inputs_embeds: it pools the last "
                              f"position of every row.", stacklevel=3)
            index = self.xp.full((inputs.batch,), inputs.length - 1, dtype=self.xp.int64)
        pooled = pool_positions(logits, index)  # [B, C]
        loss = None if labels is None else sequence_classification_loss(pooled, labels, self.config.problem_type)
        return SequenceClassifierOutputWithPast(loss, pooled, inputs.cache if inputs.return_cache else None,
                                                out.hidden_states, out.attentions)


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
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, False,
                                  output_attentions, output_hidden_states)
        positions = [check_span_positions(name, value, inputs.batch, self.xp) for name, value in
                     (("start_positions", start_positions), ("end_positions", end_positions)) if value is not None]
        return self._forward(inputs, positions)

    def _forward(self, inputs: ForwardInputs, positions=()):
        out = self._run_backbone(inputs)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["qa_outputs.weight"],
                                         self.head_params["qa_outputs.bias"]))  # [B, T, 2]
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, positions))
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
        inputs = self._check_call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                  use_cache, output_attentions, output_hidden_states)
        if labels is not None:
            labels = check_token_labels(labels, inputs, self.config.num_labels, "num_labels", self.xp)
        return self._forward(inputs, labels)

    def _forward(self, inputs: ForwardInputs, labels=None):
        out = self._run_backbone(inputs)
        logits = record("logits", linear(out.last_hidden_state, self.head_params["score.weight"],
                                         self.head_params.get("score.bias")))  # [B, T, C]
        self._refuse_nonfinite(logits, inputs, lambda: self._forward(inputs, labels))
        loss = None if labels is None else token_classification_loss(logits, labels)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)
