"""``pipeline("text-generation")``: prompt in, text out, like transformers' pipeline of that task.

    from arcee_np.pipeline import pipeline
    generate = pipeline("text-generation")                  # the shipped Shakespeare model
    generate("ROMEO:", max_new_tokens=30, seed=0)           # [{"generated_text": "ROMEO: ..."}]
    generate(["ROMEO:", "JULIET:"], do_sample=False)        # [[{...}], [{...}]] (one batch, left padded)
    generate([{"role": "user", "content": "Hi"}])           # a chat: the reply is appended as a message
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, InputTypeError

TASKS = ("text-generation",)


class TextGenerationPipeline:
    """Tokenize the prompt(s), ``model.generate``, decode: transformers' TextGenerationPipeline for one model.

    Calling it takes a string, a list of strings (generated as one left-padded batch) or a chat (a list of
    ``{"role", "content"}`` messages, rendered with the tokenizer's chat template), plus ``return_full_text``
    (default True: the prompt followed by the new text), ``add_special_tokens`` (default: the tokenizer's,
    i.e. bos as its config says) and any keyword of ``ArceeForCausalLM.generate`` (max_new_tokens, do_sample,
    temperature, top_k, top_p, repetition_penalty, seed, ...).
    """

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def __call__(self, text_inputs, return_full_text: bool = True, add_special_tokens: bool = True,
                 skip_special_tokens: bool = True, **generate_kwargs):
        if _is_chat(text_inputs):
            return self._chat(list(text_inputs), skip_special_tokens, generate_kwargs)
        single = isinstance(text_inputs, str)
        prompts = [text_inputs] if single else list(text_inputs) if isinstance(text_inputs, (list, tuple)) else []
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputTypeError("text-generation takes a string, a list of strings or a chat (a list of "
                            "{'role': ..., 'content': ...} messages).")
        batch = self.tokenizer(prompts, add_special_tokens=add_special_tokens, padding=True, padding_side="left",
                               return_tensors="np")
        if batch["input_ids"].shape[1] == 0:
            raise InputError("the prompt is empty and the tokenizer adds no bos token: give some text.")
        sequences = self.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                                        **self._with_tokenizer(generate_kwargs))
        width, per_prompt = batch["input_ids"].shape[1], sequences.shape[0] // len(prompts)  # num_return_sequences
        results = []
        for index, prompt in enumerate(prompts):
            texts = [self.tokenizer.decode(row[width:], skip_special_tokens=skip_special_tokens)
                     for row in sequences[index * per_prompt:(index + 1) * per_prompt]]
            results.append([{"generated_text": prompt + text if return_full_text else text} for text in texts])
        return results[0] if single else results

    def _with_tokenizer(self, generate_kwargs: dict) -> dict:
        """generate's arguments, with the pipeline's tokenizer when stop strings need it (as transformers)."""
        if generate_kwargs.get("stop_strings") or self.model.generation_config.get("stop_strings"):
            return {"tokenizer": self.tokenizer, **generate_kwargs}
        return generate_kwargs

    def _chat(self, messages, skip_special_tokens, generate_kwargs):
        """A chat ending in a user turn gets an assistant reply appended; one ending in an assistant turn is
        continued (prefill), as transformers does."""
        prefill = messages[-1].get("role") == "assistant"
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=not prefill,
                                                 continue_final_message=prefill, return_dict=False)
        row = self.model.generate(np.asarray([ids], dtype=np.int64), **self._with_tokenizer(generate_kwargs))[0]
        text = self.tokenizer.decode(row[len(ids):], skip_special_tokens=skip_special_tokens)
        if prefill:
            reply = [{"role": "assistant", "content": messages[-1]["content"] + text}]
            return [{"generated_text": messages[:-1] + reply}]
        return [{"generated_text": messages + [{"role": "assistant", "content": text}]}]


def _is_chat(inputs) -> bool:
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(m, dict) for m in inputs)


def pipeline(task: str = "text-generation", model=None, tokenizer=None, dtype: str = "float32",
             device: str = "cpu") -> TextGenerationPipeline:
    """A text-generation pipeline over ``model``: a checkpoint folder (with tokenizer.json), a llama.cpp GGUF
    file (its own tokenizer, or the tokenizer.json beside it), an ArceeForCausalLM (then pass ``tokenizer``, an
    ArceeTokenizer, a folder or a GGUF file), or None for the shipped model."""
    from .models import ArceeForCausalLM
    from .shipped import default_model_path
    from .io.gguf import GGUFFile, is_gguf
    from .io.tokenizer import ArceeTokenizer

    if task not in TASKS:
        raise InputError(f"arcee_np's pipeline supports {', '.join(TASKS)}, not {task!r}.")
    if model is None:
        model = default_model_path()
    if isinstance(model, ArceeForCausalLM):
        if tokenizer is None:
            raise InputError("pass tokenizer= (an ArceeTokenizer or a folder with tokenizer.json) with a model object.")
    elif is_gguf(model):  # a llama.cpp file, read once for its weights and its tokenizer
        file = GGUFFile(model)
        tokenizer = file if tokenizer is None else tokenizer
        model = ArceeForCausalLM.from_gguf(file, dtype=dtype, device=device)
    else:
        tokenizer = model if tokenizer is None else tokenizer
        model = ArceeForCausalLM.from_pretrained(model, dtype=dtype, device=device)
    if not isinstance(tokenizer, ArceeTokenizer):
        tokenizer = ArceeTokenizer.from_pretrained(tokenizer)
    return TextGenerationPipeline(model, tokenizer)
