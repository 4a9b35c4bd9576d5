"""The tokenizer of a checkpoint folder: tokenizer.json through the ``tokenizers`` library, the special tokens
and bos/eos handling of tokenizer_config.json, and its chat template, as transformers (v5) uses them.

Beside the model stack: only the CLI and the pipeline use it (design.md). What transformers does, and this
module repeats:

* when tokenizer_config.json sets ``add_bos_token`` or ``add_eos_token`` (or tokenizer.json has no
  post-processor), the post-processor becomes ``[bos] $A [eos]`` per those flags; otherwise tokenizer.json's
  own post-processor adds the special tokens;
* special tokens named in tokenizer_config.json (``bos_token``, ``eos_token``, ``pad_token``, ``unk_token``)
  that tokenizer.json lacks are added as special tokens;
* the chat template (``chat_template`` in tokenizer_config.json, or a chat_template.jinja file) renders in a
  sandboxed jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``, the ``tojson`` filter (no HTML
  escaping), ``raise_exception`` and ``strftime_now``; the special tokens are template variables; the
  rendered text is tokenized without adding special tokens (the template writes them).

A llama.cpp GGUF file stands for its folder: the tokenizer.json beside it when there is one, else the
tokenizer the converter stored in the file (``gguf_tokenizer``). ``ArceeTokenizer.source`` says which.

``TextStreamer`` prints generated text as it comes (the ``streamer`` of ``generate``).
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from datetime import datetime

import numpy as np

from ..errors import InputError, InputTypeError, TokenizerError
from ..validation.arguments import check_flag
from ..validation.files import check_folder, read_json, read_text
from ..validation.tokenizer import (SPECIAL_TOKEN_NAMES, chat_template_errors, check_chat_template, check_conversation,
                                    check_text, check_token_ids, check_tokenizer_config, read_tokenizer_json)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict with ``content``."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class ArceeTokenizer:
    """Encode and decode text for a model; a small subset of transformers' PreTrainedTokenizerFast surface:
    ``encode``, ``decode``, ``batch_decode``, ``__call__`` (batches, padding), ``apply_chat_template``,
    the special tokens and their ids."""

    def __init__(self, tokenizer, config: dict | None = None, chat_template: str | dict | None = None,
                 config_source: str = "the tokenizer config", template_source: str | None = None,
                 source: str | None = None):
        """``config``: tokenizer_config.json's settings; ``chat_template``: a template that overrides the config's;
        ``config_source`` / ``template_source``: where they came from, for error messages; ``source``: what the
        tokenizer was read from (``arcee-np info`` shows it)."""
        from tokenizers import processors

        self._tokenizer = tokenizer
        self.source = source
        self.folder = None  # the folder of the tokenizer files it was read from (from_pretrained sets it)
        config = check_tokenizer_config({} if config is None else config, config_source)
        check_chat_template(chat_template, template_source or "the chat_template argument")
        self.init_config = config
        for name in SPECIAL_TOKEN_NAMES:
            setattr(self, name, _token_text(config.get(name)))
        missing = [t for t in self.special_tokens_map.values() if tokenizer.token_to_id(t) is None]
        if missing:
            from tokenizers import AddedToken

            tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        self.add_bos_token = bool(config.get("add_bos_token", False))
        self.add_eos_token = bool(config.get("add_eos_token", False))
        if "add_bos_token" in config or "add_eos_token" in config or tokenizer.post_processor is None:
            bos = self.bos_token if self.add_bos_token and self.bos_token is not None else None
            eos = self.eos_token if self.add_eos_token and self.eos_token is not None else None
            single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
            pair = single + " " + " ".join(([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
            specials = [(t, tokenizer.token_to_id(t)) for t in (bos, eos) if t]
            tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                     special_tokens=specials)
        self.padding_side = config.get("padding_side", "right")
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.model_max_length = config.get("model_max_length")
        self.chat_template = chat_template if chat_template is not None else config.get("chat_template")
        self.chat_template_source = template_source if chat_template is not None else config_source

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ArceeTokenizer":
        """Read tokenizer.json, tokenizer_config.json (optional) and chat_template.jinja (optional) from a folder.

        ``path`` may also be a llama.cpp GGUF file (or an open ``arcee_np.io.gguf.GGUFFile``): the tokenizer.json
        beside it wins when there is one, else the tokenizer stored in the file is rebuilt
        (``arcee_np.io.gguf_tokenizer``; a TokenizerError names a tokenizer model or pre-tokenizer type it
        cannot rebuild)."""
        from .gguf import GGUFFile, is_gguf

        file = path if isinstance(path, GGUFFile) else None
        if file is not None or is_gguf(path):
            gguf_path = file.path if file is not None else os.fspath(path)
            beside = os.path.dirname(os.path.abspath(gguf_path))
            if os.path.isfile(os.path.join(beside, TOKENIZER_FILE)):
                tokenizer = cls.from_pretrained(beside)
                tokenizer.source = f"{os.path.join(beside, TOKENIZER_FILE)} (beside the GGUF file)"
                return tokenizer
            from .gguf_tokenizer import read_gguf_tokenizer

            stored = read_gguf_tokenizer(gguf_path, None if file is None else file.fields)
            return cls(stored.tokenizer, stored.config, stored.chat_template, config_source=stored.source,
                       template_source=f"{gguf_path} (tokenizer.chat_template)",
                       source=f"the GGUF file's own tokenizer: {stored.source}")
        folder = check_folder(path, "tokenizer folder")
        tokenizer = read_tokenizer_json(os.path.join(folder, TOKENIZER_FILE))
        config_file = os.path.join(folder, TOKENIZER_CONFIG_FILE)
        config = read_json(config_file, TOKENIZER_CONFIG_FILE, TokenizerError) if os.path.exists(config_file) else {}
        template_file = os.path.join(folder, CHAT_TEMPLATE_FILE)
        template = read_text(template_file, CHAT_TEMPLATE_FILE, TokenizerError) if os.path.exists(template_file) \
            else None
        loaded = cls(tokenizer, config, template, config_source=config_file, template_source=template_file,
                     source=os.path.join(folder, TOKENIZER_FILE))
        loaded.folder = folder
        return loaded

    def saved_files(self) -> dict[str, str]:
        """``{"tokenizer.json": text, "tokenizer_config.json": text}``: the tokenizer, its special tokens,
        add_bos_token / add_eos_token and chat template, as transformers reads them."""
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **self.special_tokens_map,
                  "add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        return {TOKENIZER_FILE: self._tokenizer.to_str(pretty=True),
                TOKENIZER_CONFIG_FILE: json.dumps(config, indent=2, ensure_ascii=False) + "\n"}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``saved_files`` into ``folder`` (each file replaced whole): a GGUF file's tokenizer becomes a
        checkpoint's."""
        from .atomic import write_text_files

        write_text_files(folder, self.saved_files())

    # ------------------------------------------------------------------ special tokens
    @property
    def special_tokens_map(self) -> dict[str, str]:
        """``{"bos_token": ..., "eos_token": ...}`` for the special tokens that are set."""
        return {name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES if getattr(self, name) is not None}

    def _id(self, token):
        return None if token is None else self._tokenizer.token_to_id(token)

    bos_token_id = property(lambda self: self._id(self.bos_token), doc="The id of bos_token (None if unset).")
    eos_token_id = property(lambda self: self._id(self.eos_token), doc="The id of eos_token (None if unset).")
    pad_token_id = property(lambda self: self._id(self.pad_token), doc="The id of pad_token (None if unset).")
    unk_token_id = property(lambda self: self._id(self.unk_token), doc="The id of unk_token (None if unset).")

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens), as transformers reports it."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        """A token string (or a list of them) -> its id (None for an unknown token)."""
        if isinstance(tokens, str):
            return self._tokenizer.token_to_id(tokens)
        return [self._tokenizer.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """An id (or a list of them) -> its token string."""
        if isinstance(ids, (int, np.integer)):
            return self._tokenizer.id_to_token(int(ids))
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def token_texts(self) -> list:
        """The text each token id stands for, as transformers' StopStringCriteria reads the vocabulary: for a
        byte-level tokenizer the bytes of the token (so text can end inside a UTF-8 sequence), for a
        byte-fallback one the byte of each ``<0xNN>`` token and UTF-8 bytes of the others, else the decoded
        string (decoded after a fixed prefix, which is then removed, so leading-space markers count).
        Returns a list indexed by token id (str, or bytes in the byte modes), computed once per tokenizer."""
        if self.__dict__.get("_token_texts") is not None:
            return self.__dict__["_token_texts"]
        decoder = self._tokenizer.decoder
        state = decoder.__getstate__().decode() if decoder is not None else ""
        mode = "byte_fallback" if '"ByteFallback"' in state else "byte_level" if '"ByteLevel"' in state else None
        byte_of = {char: byte for byte, char in _bytes_to_unicode().items()}
        prefix = "abcdef"
        base = [self._tokenizer.id_to_token(i) for i in self._tokenizer.encode(prefix, add_special_tokens=False).ids]
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        texts = [b"" if mode else ""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            if mode == "byte_level" and all(char in byte_of for char in token):
                texts[index] = bytes(byte_of[char] for char in token)
            elif mode == "byte_fallback" and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                texts[index] = bytes([int(token[3:5], 16)])
            else:
                text = decoder.decode(base + [token]) if decoder is not None else "".join(base + [token])
                text = text[text.index(prefix) + len(prefix):]
                texts[index] = text.encode("utf-8") if mode else text
        self.__dict__["_token_texts"] = texts
        return texts

    # ------------------------------------------------------------------ encoding and decoding
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """``text`` -> token ids (with bos/eos as the tokenizer's config adds them)."""
        return self._tokenizer.encode(check_text(text), add_special_tokens=check_flag("add_special_tokens",
                                                                                      add_special_tokens)).ids

    def decode(self, token_ids, skip_special_tokens: bool = False) -> str:
        """Token ids (a list, a 1-D array or one int) -> text. Ids outside the vocabulary are refused."""
        text = self._tokenizer.decode(check_token_ids(token_ids, len(self)),
                                      skip_special_tokens=check_flag("skip_special_tokens", skip_special_tokens))
        if self.clean_up_tokenization_spaces and type(self._tokenizer.model).__name__ != "BPE":
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(before, after)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        """Each row of ``sequences`` ([B, T] or a list of lists) -> text."""
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in sequences]

    def __call__(self, text, add_special_tokens: bool = True, padding: bool | str = False,
                 padding_side: str | None = None, return_tensors: str | None = None) -> dict:
        """Encode one text or a list: ``{"input_ids": ..., "attention_mask": ...}``.

        padding: False, or True / "longest" (pad to the longest row with ``pad_token_id``); padding_side:
        "left" (what generation wants) or "right" (default: the config's ``padding_side``, else right).
        return_tensors: None (lists) or "np" (int64 arrays [B, T]; needs equal lengths or padding).
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text) if isinstance(text, (list, tuple)) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise InputTypeError(f"the tokenizer takes a string or a list of strings, got {type(text).__name__}.")
        if padding not in (False, True, "longest", "do_not_pad"):
            raise InputError(f"padding must be False, True or 'longest', got {padding!r}.")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {side!r}.")
        if return_tensors not in (None, "np"):
            raise InputError(f"return_tensors must be None or 'np' (arcee_np uses NumPy), got {return_tensors!r}.")
        rows = [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]
        masks = [[1] * len(r) for r in rows]
        if padding in (True, "longest") and len({len(r) for r in rows}) > 1:
            if self.pad_token_id is None:
                raise InputError("this tokenizer has no pad_token to pad with: set tokenizer.pad_token (for example "
                                 "to tokenizer.eos_token) or pass padding=False.")
            longest = max(len(r) for r in rows)
            for i, row in enumerate(rows):
                fill = longest - len(row)
                pads, zeros = [self.pad_token_id] * fill, [0] * fill
                rows[i], masks[i] = (pads + row, zeros + masks[i]) if side == "left" else (row + pads, masks[i] + zeros)
        if return_tensors is not None:
            if len({len(r) for r in rows}) > 1:
                raise InputError("rows of different lengths cannot form an array: pass padding=True.")
            rows, masks = np.asarray(rows, dtype=np.int64), np.asarray(masks, dtype=np.int64)
            return {"input_ids": rows, "attention_mask": masks}
        if single:
            return {"input_ids": rows[0], "attention_mask": masks[0]}
        return {"input_ids": rows, "attention_mask": masks}

    # ------------------------------------------------------------------ chat template
    def get_chat_template(self, chat_template: str | None = None) -> str:
        """The template to render: ``chat_template`` (a template, or the name of one of the tokenizer's
        templates), else the tokenizer's own (its "default" entry when it has several)."""
        return self._chat_template(chat_template)[0]

    def _chat_template(self, chat_template: str | None = None) -> tuple[str, str]:
        """(the template text, where it came from)."""
        named = self.chat_template
        if isinstance(named, list):  # [{"name": ..., "template": ...}, ...] as transformers saves several
            named = {entry["name"]: entry["template"] for entry in named}
        if chat_template is not None:
            check_chat_template(chat_template, "the chat_template argument")
            if isinstance(named, dict) and chat_template in named:
                return named[chat_template], f"{self.chat_template_source} ({chat_template!r})"
            return chat_template, "the chat_template argument"
        if isinstance(named, dict):
            if "default" not in named:
                raise InputError(f"this tokenizer has several chat templates ({', '.join(named)}) and none is named "
                                 f"'default': pass chat_template=<name>.")
            return named["default"], f"{self.chat_template_source} ('default')"
        if named is None:
            raise TokenizerError("this tokenizer has no chat_template (tokenizer_config.json 'chat_template' or "
                                 "chat_template.jinja): pass chat_template=... or encode plain text instead.")
        return named, self.chat_template_source

    def apply_chat_template(self, conversation, add_generation_prompt: bool = False, tokenize: bool = True,
                            return_dict: bool = True, chat_template: str | None = None,
                            continue_final_message: bool = False, **kwargs):
        """Render ``conversation`` (a list of ``{"role": ..., "content": ...}`` messages) with the chat
        template as transformers does; extra keyword arguments are template variables.

        Returns the text (``tokenize=False``), else ``{"input_ids", "attention_mask"}`` lists
        (``return_dict=True``, transformers v5's default) or the ids alone. A template that does not parse,
        calls ``raise_exception`` or fails while rendering is a TokenizerError naming where it came from.
        """
        check_conversation(conversation)
        for name, value in (("add_generation_prompt", add_generation_prompt), ("tokenize", tokenize),
                            ("return_dict", return_dict), ("continue_final_message", continue_final_message)):
            check_flag(name, value)
        if continue_final_message and add_generation_prompt:
            raise InputError("continue_final_message and add_generation_prompt do not go together: the first "
                             "continues the last message, the second starts a new assistant turn.")
        source, origin = self._chat_template(chat_template)
        messages = [dict(m) for m in conversation]
        tag = "CONTINUE_FINAL_MESSAGE_TAG "
        if continue_final_message:
            final = messages[-1].get("content")
            if not isinstance(final, str):
                raise InputError("continue_final_message needs the last message's content to be text.")
            messages[-1]["content"] = final + tag
        with chat_template_errors(origin):
            text = compile_chat_template(source).render(
                messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                **{**self.special_tokens_map, **kwargs})
        if continue_final_message:
            at = text.rfind(tag.strip())
            if at < 0:
                raise TokenizerError(f"the chat template from {origin} dropped the final message's text, so it "
                                     f"cannot be continued: pass continue_final_message=False.")
            text = text[:at] if text[at:at + len(tag)] == tag else text[:at].rstrip()
        if not tokenize:
            return text
        out = self(text, add_special_tokens=False)
        return out if return_dict else out["input_ids"]


def compile_chat_template(source: str):
    """A jinja2 template in the environment transformers renders chat templates with (its errors are
    jinja2's: callers wrap them with validation.tokenizer.chat_template_errors)."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


class TextStreamer:
    """Prints the text of ``generate`` as tokens arrive (transformers' TextStreamer, batch size 1).

    ``put`` gets the prompt first (printed unless ``skip_prompt``), then each new token. Text is held back
    until a space or a newline when it may still change (an incomplete word or byte sequence); ``end``
    prints the rest and a newline. ``file``: where to print (default stdout).
    """

    def __init__(self, tokenizer: ArceeTokenizer, skip_prompt: bool = False, file=None, **decode_kwargs):
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self.file = file
        self.token_cache: list[int] = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value) -> None:
        value = np.asarray(value)
        if value.ndim > 1 and value.shape[0] > 1:
            raise InputError("TextStreamer only supports batch size 1.")
        value = value.reshape(-1)
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self.token_cache.extend(int(v) for v in value)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):  # flush, keeping the last token as context for a leading space
            printable = text[self.print_len:]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif all(c.isspace() or unicodedata.category(c)[0] in "LMN" for c in text[self.print_len:]):
            printable = text[self.print_len:]  # letters, digits and spaces cannot change any more
            self.print_len += len(printable)
        else:  # symbols may start a multi-byte character or some markup: wait for the next space
            printable = text[self.print_len:text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self) -> None:
        printable = ""
        if self.token_cache:
            printable = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)[self.print_len:]
        self.token_cache, self.print_len, self.next_tokens_are_prompt = [], 0, True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        print(text, file=self.file or sys.stdout, flush=True, end="\n" if stream_end else "")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table of byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars
