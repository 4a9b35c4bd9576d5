"""ArceeModel and ArceeForCausalLM: thin classes with transformers' call surface over model.py.

What every class shares (loading, saving, the checked backbone call) is ArceePreTrainedModel
(pretrained.py); the classification and question-answering heads are in task_models.py.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .backend import to_device
from .blocks import causal_lm_loss, lm_head
from .cache import KVCache
from .config import ArceeConfig
from .errors import ConfigError
from .generation import resolve_settings, run_generation
from .io.gguf import is_gguf
from .io.weights import host_dtype
from .outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from .pretrained import ArceePreTrainedModel, check_attn_implementation, checkpoint_path  # noqa: F401 (public)
from .trace import record
from .validation.arguments import ForwardInputs, check_logits_to_keep, check_token_labels
from .validation.files import read_json
from .validation.generation import (ASSISTANT_KNOBS, check_assistant, check_cache_memory, check_generation_config,
                                   check_prompt, check_tokenizer)


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


# The task heads live in task_models.py; they are importable from here as before.
from .task_models import (ArceeForQuestionAnswering, ArceeForSequenceClassification,  # noqa: E402, F401
                          ArceeForTokenClassification)
