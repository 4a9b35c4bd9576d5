"""The tokenizer's files and calls: tokenizer.json, tokenizer_config.json, chat templates, text and ids.

``read_tokenizer_json`` turns every way tokenizer.json can be broken (missing, not UTF-8, not JSON, not
a tokenizer the ``tokenizers`` library reads) into a TokenizerError naming the file;
``check_tokenizer_config`` checks the fields of tokenizer_config.json arcee_np uses;
``chat_template_errors`` turns jinja2's errors (syntax, ``raise_exception``, anything a template does
wrong while rendering) into TokenizerErrors naming where the template came from; ``check_text``,
``check_token_ids`` and ``check_conversation`` check the arguments of encode, decode and
apply_chat_template.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import InputError, InputTypeError, TokenizerError
from .files import parse_json, read_text
from .values import is_real, require_flag, shown

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def read_tokenizer_json(file: str):
    """A ``tokenizers.Tokenizer`` from the file ``file`` (tokenizer.json)."""
    from tokenizers import Tokenizer

    text = read_text(file, "tokenizer.json", TokenizerError)
    data = parse_json(text, file, TokenizerError)
    if not isinstance(data, dict) or "model" not in data:
        raise TokenizerError(f"{file} is not a fast-tokenizer file: it must be a JSON object with a 'model' (what "
                             f"transformers' save_pretrained writes as tokenizer.json).")
    try:
        return Tokenizer.from_str(text)
    except BaseException as err:  # noqa: BLE001 - the tokenizers library raises bare Exceptions and Rust panics
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TokenizerError(f"{file} is not a tokenizer.json the tokenizers library can read ({reason}). "
                             f"Re-save the tokenizer with transformers.") from None


def check_tokenizer_config(config, source: str) -> dict:
    """tokenizer_config.json's settings (a dict) with the types arcee_np relies on; returns a copy."""
    if not isinstance(config, dict):
        raise TokenizerError(f"{source} must hold a JSON object of tokenizer settings, got {type(config).__name__} "
                             f"{shown(config)}; fix or delete it.")
    for name in SPECIAL_TOKEN_NAMES:
        value = config.get(name)
        text = value.get("content") if isinstance(value, dict) else value
        if value is not None and not isinstance(text, str):
            raise TokenizerError(f"{source}: {name} must be a token (a string, or an object with a string "
                                 f"'content'), got {shown(value)}.")
    for name in ("add_bos_token", "add_eos_token", "clean_up_tokenization_spaces"):
        if config.get(name) is not None:
            require_flag(f"{source}: {name}", config[name], TokenizerError)
    if config.get("padding_side") is not None and config["padding_side"] not in ("left", "right"):
        raise TokenizerError(f"{source}: padding_side must be 'left' or 'right', got {shown(config['padding_side'])}.")
    length = config.get("model_max_length")
    if length is not None and not (is_real(length) and length > 0):
        raise TokenizerError(f"{source}: model_max_length must be a number > 0, got {shown(length)}.")
    check_chat_template(config.get("chat_template"), source)
    return dict(config)


def check_chat_template(template, source: str) -> None:
    """A chat template: None, the template text, or several as ``[{"name": ..., "template": ...}, ...]`` or
    ``{name: template}``."""
    if template is None or isinstance(template, str):
        return
    if isinstance(template, dict):
        entries = list(template.items())
    elif isinstance(template, list):
        entries = [(e.get("name"), e.get("template")) if isinstance(e, dict) else (None, None) for e in template]
    else:
        entries = None
    if entries is None or not all(isinstance(n, str) and isinstance(t, str) for n, t in entries):
        raise TokenizerError(f"{source}: chat_template must be a template (a string) or a list of "
                             f"{{'name': ..., 'template': ...}} entries, got {shown(template)}.")


@contextmanager
def chat_template_errors(source: str):
    """Errors of compiling or rendering a chat template (from ``source``) as TokenizerErrors naming it."""
    import jinja2
    from jinja2.sandbox import SecurityError

    try:
        yield
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise TokenizerError(f"the chat template from {source} does not parse (template line {err.lineno}: "
                             f"{err.message}). Fix the template.") from None
    except SecurityError as err:
        raise TokenizerError(f"the chat template from {source} does something the sandbox it renders in forbids "
                             f"({err}). Fix the template.") from None
    except jinja2.exceptions.UndefinedError as err:
        raise TokenizerError(f"the chat template from {source} uses a name that is not defined ({err}). Fix the "
                             f"template, or pass the variable to apply_chat_template.") from None
    except jinja2.exceptions.TemplateError as err:  # raise_exception(...) in the template
        raise TokenizerError(f"the chat template from {source} refused the conversation: {err}") from None
    except Exception as err:  # noqa: BLE001 - whatever a template's code does wrong while it renders
        raise TokenizerError(f"the chat template from {source} failed while rendering the conversation "
                             f"({type(err).__name__}: {err}). Fix the template or the messages.") from None


def check_text(text, name: str = "text") -> str:
    """A string the tokenizer can encode (valid Unicode: no lone surrogates)."""
    if not isinstance(text, str):
        raise InputTypeError(f"encode takes a string as {name}, got {type(text).__name__} {shown(text)}; for several "
                             f"texts call the tokenizer on a list.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"{name} holds a lone surrogate {text[err.start]!r} at position {err.start}, which is not "
                         f"valid Unicode (text decoded with errors='surrogateescape'?); decode the bytes as UTF-8 "
                         f"first.") from None
    return text


def check_token_ids(token_ids, vocab_size: int, name: str = "token_ids") -> list[int]:
    """Token ids to decode (one int, a list, an array of any shape) as a flat list of ints in [0, vocab_size)."""
    if isinstance(token_ids, (int, np.integer)) and not isinstance(token_ids, (bool, np.bool_)):
        token_ids = [token_ids]
    if isinstance(token_ids, (str, bytes, dict)) or token_ids is None:
        raise InputTypeError(f"{name} must be integer token ids (an int, a list or an array), got {shown(token_ids)}.")
    try:
        ids = np.asarray(token_ids)
    except (ValueError, TypeError, OverflowError):
        raise InputTypeError(f"{name} must be a flat list (or rectangular array) of integer token ids, got "
                             f"{shown(token_ids)}.") from None
    if ids.size and ids.dtype.kind not in "iu":
        raise InputTypeError(f"{name} must be integer token ids, got dtype {ids.dtype} ({shown(token_ids)}).")
    flat = ids.reshape(-1).astype(np.int64) if ids.size else np.zeros(0, np.int64)
    bad = flat[(flat < 0) | (flat >= vocab_size)]
    if bad.size:
        raise InputError(f"{name} {bad[:5].tolist()} lie outside the vocabulary [0, {vocab_size}): they are not ids "
                         f"of this tokenizer.")
    return flat.tolist()


def check_conversation(conversation) -> None:
    """A chat: a non-empty list of ``{"role": str, "content": ...}`` messages."""
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise InputError(f"conversation must be a non-empty list of {{'role': ..., 'content': ...}} messages, got "
                         f"{shown(conversation)}.")
    for message in conversation:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputTypeError(f"each message must be a dict with a string 'role' and a 'content', got "
                                 f"{shown(message)}.")
