"""A tiny tokenizer (byte-level BPE trained on a few lines) and a random Arcee model that uses it, written to a
folder as transformers would save them: for the tokenizer, CLI and pipeline tests (no network, ~1 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arcee_np import ArceeConfig, ArceeForCausalLM

TEXT = ["ROMEO: But soft, what light through yonder window breaks?",
        "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
        "It is the east, and Juliet is the sun. Arise, fair sun!",
        "Good night, good night! Parting is such sweet sorrow.",
        "Héllo wörld — ünïcode ✓ 你好"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}"
                 "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
                 "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
                 "<|{{ message['role'] }}|>\n{{ message['content'] | trim }}{{ eos_token }}\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def write_tokenizer(folder: Path, vocab_size: int = 300, chat_template: bool = True, **config) -> Path:
    """Train a byte-level BPE on TEXT and save tokenizer.json + tokenizer_config.json into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
        ("<|begin_of_text|>", 0)])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
                "pad_token": SPECIALS[2], "add_bos_token": True, "add_eos_token": False,
                "clean_up_tokenization_spaces": False}
    if chat_template:
        settings["chat_template"] = CHAT_TEMPLATE
    settings.update(config)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
    return folder


def write_tiny_lm(folder: Path, seed: int = 0, generation_config: dict | None = None) -> Path:
    """tokenizer + a random ArceeForCausalLM (vocab 300, hidden 32, 2 layers) + generation_config.json."""
    write_tokenizer(folder)
    config = ArceeConfig(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = ArceeForCausalLM.from_config(config, seed=seed)
    rng = np.random.default_rng(seed)
    tensors = {k: (v * 8 if v.ndim == 2 else v + rng.normal(0, 0.2, v.shape)).astype(np.float32)
               for k, v in model.state_dict().items()}  # sharper next-token distributions than random init
    model = ArceeForCausalLM(config, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                             {k: v for k, v in tensors.items() if not k.startswith("model.")})
    model.generation_config = generation_config if generation_config is not None else {
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "do_sample": True, "temperature": 0.8,
        "top_k": 40, "max_new_tokens": 16}
    model.save_pretrained(folder)
    return Path(folder)
