"""Write the GGUF tokenizer fixtures under ``tests/golden_gguf_tokenizer/`` with llama.cpp's own converter,
quantizer and tokenizer.

How to run (from the repository root; needs transformers, pinned, torch, and llama-cpp-python)::

    pip install -e ".[golden]" llama-cpp-python==0.3.36
    python scripts/make_gguf_tokenizer_fixtures.py --converter PATH/TO/llama.cpp/convert_hf_to_gguf.py \\
        [--quantize api | --quantize PATH/TO/llama-quantize] [--llama-cpp-commit 0c1e57098]

The converter comes from a llama.cpp checkout (or the one vendored in llama-cpp-python's source
distribution); nothing of llama.cpp is written into the repository except the GGUF files it produces.

Each case is a byte-level BPE tokenizer trained with the ``tokenizers`` library (or the shipped model's),
split by the rule of one llama.cpp pre-tokenizer type, with its special tokens and a chat template, saved
with a tiny random ArceeForCausalLM (2 layers, hidden 32, tied embeddings) and converted by
``convert_hf_to_gguf.py``. The converter names the pre-tokenizer by hashing the ids of a fixed text and
refuses a hash it does not know, which every freshly trained tokenizer's is; its wrapper
(scripts/llama_cpp_tools.py) then answers the case's type, so the file says ``llama-bpe``, ``gpt-2`` or
``default`` on purpose, and the tokenizer really splits that way:

    gpt2_300      300 tokens, GPT-2's ByteLevel split, <|im_start|> <|im_end|> control tokens, ChatML template
    llama3_1000   1000 tokens (+ 24 unused ids: the model's vocab_size is 1024), Llama 3's split and
                  ignore_merges (five whole words in the vocabulary that no merge reaches), Llama 3's special
                  tokens, one user-defined token, add_bos, Llama 3's template
    default_4000  4000 tokens, llama.cpp's "default" cascade of four expressions, <unk>, add_bos and add_eos,
                  a Zephyr-style template
    shipped       the shipped model's tokenizer (4096 tokens, GPT-2's split, add_bos) with a chat template;
                  also quantized to Q4_K_M by llama.cpp's quantizer

For every case it writes ``tests/golden_gguf_tokenizer/<case>/``:

    hf/                 the tokenizer files (tokenizer.json, tokenizer_config.json) and config.json
    <case>-<TYPE>.gguf  the converter's file (F32 or F16), and for ``shipped`` the Q4_K_M file
    ids.json            per text of texts.json: transformers' ids (AutoTokenizer on hf/) and llama.cpp's
                        (llama-cpp-python, vocab_only), with and without special tokens; the same for the
                        texts of texts_more.json (``*_more``); transformers' apply_chat_template ids of a
                        fixed conversation

and ``texts.json`` (the text set), ``texts_more.json`` (200 random strings and three texts in scripts Unicode
16.0 added, where llama.cpp's tables and the tokenizers library's regular expressions disagree) and
``meta.json`` (versions, cases, file sizes). The plain test run
reads these and needs neither torch nor llama.cpp.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from transformers import ArceeConfig, ArceeForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from arcee_np.shipped import default_model_path  # noqa: E402
from llama_cpp_tools import convert, fixture_arguments, llama_cpp_token_ids, quantize, write_meta  # noqa: E402

OUT = REPO / "tests" / "golden_gguf_tokenizer"

# the split rules, as the tokenizer.json of such a model writes them (llama.cpp src/llama-vocab.cpp has each
# type's own expressions; Llama 3's tokenizer.json has the case-insensitive group that llama.cpp spells out)
LLAMA3_TOKENIZER_JSON_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_CASCADE = (r"[\p{P}\$\+<=>\^~\|]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                   r"\p{N}+", r"[0-9][0-9][0-9]")

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
LLAMA3_CHAT = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
ZEPHYR = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
PLAIN_CHAT = ("{% for message in messages %}{{ message['role'] | upper }}: {{ message['content'] }}\n{% endfor %}"
              "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
CONVERSATION = [{"role": "system", "content": "You speak as Shakespeare's players do."},
                {"role": "user", "content": "Wherefore art thou, Romeo? 🌹"}]

# name -> (description, vocab size trained (None: the shipped tokenizer), split, pre-tokenizer name, chat template,
#          special tokens, user-defined tokens, tokenizer_config extras, extra unused ids, outtype, quantized types)
CASES = {
    "gpt2_300": ("300 tokens, GPT-2's ByteLevel split, ChatML control tokens", 300, "gpt2", "gpt-2", CHATML,
                 ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"], [], {}, 0, "F32", ()),
    "llama3_1000": ("1000 tokens and 24 unused ids, Llama 3's split with ignore_merges (whole words no merge "
                    "reaches), Llama 3's special tokens, a user-defined token, add_bos", 1000, "llama3", "llama-bpe",
                    LLAMA3_CHAT,
                    ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>", "<|finetune_right_pad_id|>"], ["[ROMEO]"],
                    {"add_bos_token": True}, 24, "F32", ()),
    "default_4000": ("4000 tokens, llama.cpp's default cascade of four expressions, <unk>, add_bos and add_eos",
                     4000, "default", "default", ZEPHYR, ["<unk>", "<s>", "</s>", "<pad>"], [],
                     {"add_bos_token": True, "add_eos_token": True}, 0, "F16", ()),
    "shipped": ("the shipped model's tokenizer (4096 tokens, GPT-2's split, add_bos) with a chat template", None,
                "gpt2", "gpt-2", PLAIN_CHAT, [], [], {}, 0, "F16", ("Q4_K_M",)),
}
SPECIAL_ROLES = {  # case -> which of its special tokens are bos, eos, pad, unk
    "gpt2_300": {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"},
    "llama3_1000": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                    "pad_token": "<|finetune_right_pad_id|>"},
    "default_4000": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
}

TEXTS = {
    "empty": "",
    "space": " ",
    "prose": "From fairest creatures we desire increase, that thereby beauty's rose might never die. It was the "
             "best of times, it was the worst of times; it was the age of wisdom...",
    "verse": "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
             "Rough winds do shake the darling buds of May,\n  And summer's lease hath all too short a date;\n",
    "contractions": "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? "
                    "We'Ve a'lL DON'T can't won't y'all o'clock",
    "python": "def fib(n: int) -> int:\n    \"\"\"Fibonacci.\"\"\"\n    if n < 2:\n        return n\n"
              "    return fib(n - 1) + fib(n - 2)  # O(2**n)\n\nprint([fib(i) for i in range(10)])\n",
    "c_code": "#include <stdio.h>\nint main(void) {\n\tfor (int i = 0; i < 10; ++i) printf(\"%d\\n\", i);\n"
              "\treturn 0;\n}\n",
    "json": '{"name": "arcee", "layers": [1, 2, 3], "ok": true, "eps": 1e-05, "path": "C:\\\\tmp"}',
    "numbers": "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 1,234,567.89 -42 +7 0x1F 1e-9 "
               "2026-12-07 12:34:56 50% $19.99 ½ ² Ⅻ ٣٤٥ १२३",
    "spaces": "a  b   c    d     e      f\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \nend   ",
    "leading_trailing": "   leading spaces and trailing ones   ",
    "newlines": "\n\nline one\r\nline two\rline three\n\n\n\nlast\n",
    "tabs": "col1\tcol2\t\tcol3\n\tindented\t \ttabs and spaces \t\n",
    "punctuation": "Hello, world! Wait... what?! ------======= '''''' ```````\"\"\"\"......!!!!!!?????? (a) [b] {c} "
                   "<d> @e #f $g %h ^i &j *k _l +m =n |o \\p /q ~r `s; t: u«v» “w” ‘x’ — – …",
    "accents": "Café naïve façade résumé Ångström Zürich São Paulo Łódź Dvořák Tiếng Việt e\u0301 n\u0303 ﬁ",
    "greek": "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν. Καλημέρα κόσμε!",
    "cyrillic": "Съешь же ещё этих мягких французских булок, да выпей чаю. нещо на Български",
    "cjk": "我想在apple工作1314151天～ 日本語のテキストとカタカナ、ひらがな。한국어 문장입니다. 龍",
    "arabic": "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣ وعلامات ترقيم؟",
    "devanagari": "नमस्ते दुनिया! हिन्दी में लिखा गया पाठ। संस्कृतम्",
    "other_scripts": "שלום עולם ภาษาไทย ကာန់តែពិសេសអាច ქართული Հայերեն ᚠᚢᚦ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "emoji": "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 👍🏽 ❤️ 🇫🇷🇯🇵 "
             "👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 🧑🏿\u200d💻",
    "unicode_spaces": "no\u00a0break\u2003em\u3000ideographic\u200bzero\u2028line\u2029para\u0085nel\u000bvt",
    "special_strings": "<s>Hello</s> <pad><unk> <|begin_of_text|>Hi<|eot_id|> <|im_start|>user\nhey<|im_end|> "
                       "<|start_header_id|>x<|end_header_id|> <|begin_of_text|> [ROMEO] ROMEO: [ROMEO]x "
                       "<|endoftext|> <|pad|> <|end_of_text|>",
    "llama_cpp_check": "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
                       "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
                       "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````"
                       "\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
                       "make it, 'D you like some tea? We'Ve a'lL",
    "mixed": "ROMEO: But soft! what light through yonder window breaks? 🌅\nJULIET: Ay me! — ¿Qué? Ça va. 42 times\n",
}


# byte-level words (Ġ: a space) added to the llama-bpe case's vocabulary without merges
WHOLE_WORDS = ["ROMEO", "JULIET", "Ġyonder", "Ġwherefore", "ĠWherefore"]


# Unicode 16.0's new letters, digits and punctuation (Kirat Rai, Garay, Sunuwar, Balinese marks ...): the
# tokenizers library's regular expressions know them, llama.cpp's tables (Unicode 15.1) do not
UNICODE_16 = {
    "kirat_rai": "a\U00016d40\U00016d41b .\U00016d42. 1\U00016d702 'll\U00016d43'll \U00016d6d",
    "garay": "\U00010d50\U00010d51 \U00010d40\U00010d41 x\U00010d70y \u1b4e\u1b4f.",
    "sunuwar": "The \U00011bc0\U00011bc1 \U00011bf0\U00011bf1 (\U00011bc2) \u1c89\u1c8a words",
}
PIECES = [" ", "  ", "\n", "\r\n", "\r", "\t", "\u00a0", "\u3000", "\u2028", "\u0085", "\u000b", "\u200b", "\u200d",
          "\ufe0f", "a", "Z", "é", "e\u0301", "ß", "Ω", "ж", "中", "の", "한", "ب", "न", "ि", "्", "ก", "1", "23",
          "4567", "٣", "१", "½", "²", "Ⅻ", "'", "'s", "'S", "'ll", "'LL", "'Ve", '"', ".", ",", "!", "?", "...", "-",
          "_", "(", ")",
          "[", "]", "{", "}", "<", ">", "$", "+", "=", "^", "~", "|", "`", "@", "#", "%", "&", "*", "/", "\\", ":", ";",
          "«", "»", "—", "…", "“", "€", "©", "🦙", "🚀", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧", "❤️", "𝔘", "\U00016d40",
          "\U00011bf1", "\u1b4e", "<s>", "</s>", "<pad>", "<unk>", "<|im_start|>", "<|eot_id|>", "[ROMEO]",
          "<|begin_of_text|>", "ROMEO", "hello", " world", "the", "The"]


def random_texts(count: int = 200) -> dict[str, str]:
    """``count`` strings of 1 to 24 random pieces (spaces, scripts, digits, punctuation, emoji, special-token
    strings) and random code points, from a fixed seed: the split rules' corners, beyond the written set."""
    rng = random.Random(0)

    def code_point():
        while True:
            value = rng.randint(0x20, 0x2FFFF)
            if not 0xD800 <= value <= 0xDFFF:
                return chr(value)

    return {f"random_{i:03d}": "".join(code_point() if rng.random() < 0.2 else rng.choice(PIECES)
                                       for _ in range(rng.randint(1, 24))) for i in range(count)}


def training_corpus() -> list[str]:
    """What the tokenizers are trained on: the source of a few modules of Python's standard library (English
    prose in docstrings, code, numbers; the same for a given Python version, recorded in meta.json), and the
    text set's lines once each."""
    import importlib
    import inspect

    modules = ("argparse", "textwrap", "json.decoder", "html.entities", "calendar", "difflib")
    return [inspect.getsource(importlib.import_module(name)) for name in modules] + list(TEXTS.values())


def train_tokenizer(case: str, vocab: int, split: str, specials: list[str], user_defined: list[str]):
    """A byte-level BPE of ``vocab`` tokens split by ``split`` (gpt2, llama3, default), as a tokenizers.Tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=split == "llama3"))
    if split == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        regexes = (LLAMA3_TOKENIZER_JSON_REGEX,) if split == "llama3" else DEFAULT_CASCADE
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    whole_words = WHOLE_WORDS if split == "llama3" else []
    trainer = trainers.BpeTrainer(vocab_size=vocab - len(user_defined) - len(whole_words), special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer)
    data = json.loads(tok.to_str())
    for word in whole_words:  # tokens no merge reaches: only ignore_merges finds them (as in Llama 3's vocabulary)
        assert word not in data["model"]["vocab"], word
        data["model"]["vocab"][word] = len(data["model"]["vocab"])
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user_defined])
    assert data["model"]["ignore_merges"] == (split == "llama3"), case
    assert tok.get_vocab_size() == vocab, (case, tok.get_vocab_size())
    return tok


def build_hf(case: str, folder: Path) -> None:
    """The case's tokenizer files, chat template and a tiny random ArceeForCausalLM in ``folder``."""
    _, vocab, split, _, template, specials, user_defined, extra, unused, _, _ = CASES[case]
    if vocab is None:
        folder.mkdir(parents=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(Path(default_model_path()) / name, folder / name)
        tok = PreTrainedTokenizerFast.from_pretrained(folder)
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(case, vocab, split, specials, user_defined),
                                      **SPECIAL_ROLES[case], **extra)
    tok.chat_template = template
    tok.save_pretrained(folder)
    vocab_size = len(tok) + unused
    config = ArceeConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=16, hidden_act="relu2",
                         max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    ArceeForCausalLM(config).save_pretrained(folder)


def expected_ids(case: str, hf: Path, gguf: Path) -> dict:
    """transformers' and llama.cpp's ids of every text (the set, and the random and Unicode 16 texts), with and
    without special tokens, and the chat ids."""
    tok = AutoTokenizer.from_pretrained(hf)
    out = {"transformers": {}, "llama_cpp": {}, "transformers_more": {}, "llama_cpp_more": {}}
    for suffix, texts in (("", TEXTS), ("_more", {**UNICODE_16, **random_texts()})):
        for name, text in texts.items():
            out["transformers" + suffix][name] = {"special": tok.encode(text, add_special_tokens=True),
                                                  "plain": tok.encode(text, add_special_tokens=False)}
            out["llama_cpp" + suffix][name] = {"special": llama_cpp_token_ids(gguf, text, True),
                                               "plain": llama_cpp_token_ids(gguf, text, False)}
    chat = tok.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=False)
    out["chat"] = {"conversation": CONVERSATION, "add_generation_prompt": True, "transformers": list(chat)}
    return out


def main() -> None:
    args, commit = fixture_arguments(__doc__, OUT)
    torch.set_num_threads(1)
    (args.out / "texts.json").write_text(json.dumps(TEXTS, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "texts_more.json").write_text(json.dumps({**UNICODE_16, **random_texts()}, indent=0,
                                                         ensure_ascii=False) + "\n", encoding="utf-8")
    meta_cases = {}
    with tempfile.TemporaryDirectory() as scratch:
        for case, (description, _, _, pre, _, _, _, _, unused, outtype, quantized) in CASES.items():
            work = Path(scratch) / case
            build_hf(case, work)
            hf = args.out / case / "hf"
            hf.mkdir(parents=True)
            for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "chat_template.jinja"):
                if (work / name).exists():
                    shutil.copyfile(work / name, hf / name)
            files = {outtype: args.out / case / f"{case}-{outtype}.gguf"}
            convert(args.converter, work, outtype, files[outtype], pre=pre)
            for kind in quantized:
                files[kind] = args.out / case / f"{case}-{kind}.gguf"
                quantize(args.quantize, files[outtype], files[kind], kind)
            ids = expected_ids(case, hf, files[outtype])
            for kind, path in files.items():  # every file of a case tokenizes alike
                assert all(llama_cpp_token_ids(path, t, True) == ids["llama_cpp"][n]["special"]
                           for n, t in TEXTS.items()), (case, kind)
            (args.out / case / "ids.json").write_text(json.dumps(ids, ensure_ascii=False) + "\n", encoding="utf-8")
            agree = sum(ids["transformers"][n] == ids["llama_cpp"][n] for n in TEXTS)
            more = ids["llama_cpp_more"]
            agree_more = sum(ids["transformers_more"][n] == more[n] for n in more)
            meta_cases[case] = {"description": description, "pre": pre, "unused_ids": unused,
                                "files": {k: p.name for k, p in files.items()},
                                "sizes": {p.name: p.stat().st_size for p in files.values()},
                                "llama_cpp_equals_transformers": f"{agree}/{len(TEXTS)} texts",
                                "llama_cpp_equals_transformers_more": f"{agree_more}/{len(more)} texts"}
            print(f"{case}: {', '.join(p.name for p in files.values())}; llama.cpp = transformers on "
                  f"{agree}/{len(TEXTS)} texts of the set, {agree_more}/{len(more)} random and Unicode 16 texts")
    write_meta(args, commit, "scripts/make_gguf_tokenizer_fixtures.py", "unknown -> the case's type", meta_cases,
               tokenizers=__import__("tokenizers").__version__,
               llama_cpp_tokenizer="Llama(path, vocab_only=True).tokenize(text, add_bos=..., special=True)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
