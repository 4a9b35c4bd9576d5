"""The tokenizer llama.cpp stores inside a GGUF file, rebuilt as a ``tokenizers`` tokenizer.

llama.cpp's converter (``convert_hf_to_gguf.py``) writes a byte-level BPE tokenizer (Arcee's, Llama 3's, GPT-2's)
into the file's metadata:

* ``tokenizer.ggml.model`` = ``"gpt2"`` (byte-level BPE) and ``tokenizer.ggml.pre``, the name of the
  pre-tokenizer: the converter recognises it by hashing the ids of a fixed text, and llama.cpp maps the name
  to its own regular expressions;
* ``tokenizer.ggml.tokens`` (every token's text, by id; byte-level text for ordinary tokens, ``Ġ`` for a
  space), ``tokenizer.ggml.token_type`` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)
  and ``tokenizer.ggml.merges`` (``"left right"``, by rank);
* the special token ids (``bos_token_id``, ``eos_token_id``, ``unknown_token_id``, ``padding_token_id``),
  ``add_bos_token`` / ``add_eos_token`` and ``tokenizer.chat_template`` (plus ``chat_template.<name>`` for
  named templates).

``read_gguf_tokenizer`` turns that into what llama.cpp tokenizes with (llama.cpp src/llama-vocab.cpp,
``llama_vocab::impl::load`` and ``llm_tokenizer_bpe``):

* the text is first cut at the control, unknown and user-defined tokens (added tokens of the ``tokenizers``
  library; control and unknown ones are special, so ``decode(skip_special_tokens=True)`` drops them);
* every other piece is split by the pre-tokenizer type's regular expressions, applied in turn, each keeping
  both its matches and the text between them (a ``Split`` with ``behavior="isolated"`` per expression; without
  the letters, digits and punctuation Unicode 16.0 added, which llama.cpp's tables do not know yet), then
  mapped to byte-level characters (``ByteLevel(use_regex=False)``);
* each word is merged by BPE with the file's merges; the ``llama-bpe`` family first looks the whole word
  up in the vocabulary (``ignore_merges``, as Llama 3's tokenizer.json also says);
* bos / eos are added as the file says, else as llama.cpp's default for the type (bos for ``llama-bpe``);
  without bos/eos ids llama.cpp's byte-level BPE uses id 11 for both, and so does this module;
* decoding maps the byte-level characters back to bytes and UTF-8 (``decoders.ByteLevel``).

A file with another tokenizer model (SentencePiece ``llama``, WordPiece ``bert``, ``t5`` ...) or another
pre-tokenizer type is refused by name: a tokenizer.json beside the file is then read instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import TokenizerError

# token types of tokenizer.ggml.token_type (gguf-py's TokenType, llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The split rules of llama.cpp src/llama-vocab.cpp (llm_tokenizer_bpe's constructor: regex_exprs per
# llama_vocab_pre_type), verbatim. unicode_regex_split (src/unicode.cpp) applies them in turn, each to the
# pieces the previous one left, keeping both the matches and the text between them.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_REGEXES = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]")

# The regular expressions of the tokenizers library (Oniguruma) know Unicode 16.0; llama.cpp's character tables
# (src/unicode-data.cpp) know Unicode 15.1. The letters, digits and punctuation that Unicode 16.0 added (general
# category L*, N*, P* in the Unicode Character Database 16.0, unassigned in 15.1) are taken out of \p{L}, \p{N} and
# \p{P}, so that they match what they match in llama.cpp (``as_llama_cpp_unicode``).
UNICODE_16_ADDED = {
    "L": (r"\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}\x{10D4A}-\x{10D65}"
          r"\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{11380}-\x{11389}\x{1138B}\x{1138E}\x{11390}-\x{113B5}\x{113B7}"
          r"\x{113D1}\x{113D3}\x{11BC0}-\x{11BE0}\x{13460}-\x{143FA}\x{16100}-\x{1611D}\x{16D40}-\x{16D6C}\x{18CFF}"
          r"\x{1E5D0}-\x{1E5ED}\x{1E5F0}"),
    "N": (r"\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{16130}-\x{16139}\x{16D70}-\x{16D79}"
          r"\x{1CCF0}-\x{1CCF9}\x{1E5F1}-\x{1E5FA}"),
    "P": (r"\x{1B4E}-\x{1B4F}\x{1B7F}\x{10D6E}\x{113D4}-\x{113D5}\x{113D7}-\x{113D8}\x{11BE1}\x{16D6D}-\x{16D6F}"
          r"\x{1E5FF}"),
}


def as_llama_cpp_unicode(regex: str) -> str:
    r"""``regex`` with every ``\p{L}``, ``\p{N}`` and ``\p{P}`` less the characters Unicode 16.0 added to that
    category (``[\p{L}&&[^...]]``, a class of its own or nested in the class it stood in)."""
    out, i = [], 0
    while i < len(regex):
        if regex.startswith(("\\p{L}", "\\p{N}", "\\p{P}"), i):
            out.append(f"[{regex[i:i + 5]}&&[^{UNICODE_16_ADDED[regex[i + 3]]}]]")
            i += 5
        else:  # any other character, an escaped one with its backslash
            step = 2 if regex[i] == "\\" else 1
            out.append(regex[i:i + step])
            i += step
    return "".join(out)


@dataclass(frozen=True)
class PreTokenizerType:
    """What llama.cpp does for one ``tokenizer.ggml.pre`` name (``llama_vocab::impl::load``): its regular
    expressions, whether a word found whole in the vocabulary skips the merges, and whether bos is added when
    the file has no ``add_bos_token``."""

    llama_type: str  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_*
    regexes: tuple[str, ...]
    ignore_merges: bool = False
    add_bos: bool = False


_LLAMA3 = PreTokenizerType("LLAMA3", (LLAMA3_REGEX,), ignore_merges=True, add_bos=True)
_GPT2 = PreTokenizerType("GPT2", (GPT2_REGEX,))
_DEFAULT = PreTokenizerType("DEFAULT", DEFAULT_REGEXES)

# tokenizer.ggml.pre -> its type: the names llama.cpp maps to these three types and nothing else
PRE_TOKENIZERS = {
    "default": _DEFAULT,
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano"), _LLAMA3),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "modern-bert"), _GPT2),
}
TOKENIZER_MODELS = ("gpt2",)  # byte-level BPE; the other models llama.cpp knows are refused
LLAMA_CPP_BPE_DEFAULT_SPECIAL_ID = 11  # llama.cpp's bos and eos for "gpt2" when the file names none

SPECIAL_ID_KEYS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
                   "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}


@dataclass
class GGUFTokenizer:
    """A GGUF file's tokenizer: ``tokenizer`` (a ``tokenizers.Tokenizer``), ``config`` (the special tokens,
    ``add_bos_token``, ``add_eos_token``, in tokenizer_config.json's form), ``chat_template`` (a template, a
    ``{name: template}`` dict, or None), ``model`` / ``pre`` (the file's tokenizer model and pre-tokenizer
    names) and ``source`` (what was read, for ``arcee-np info`` and error messages)."""

    tokenizer: object
    config: dict
    chat_template: str | dict | None
    model: str
    pre: str
    source: str


def unsupported_message(path: str, what: str) -> str:
    """The refusal for a tokenizer this module cannot rebuild: what it is, and the way around it."""
    folder = os.path.dirname(os.path.abspath(path))
    return (f"{path}: {what}; arcee_np rebuilds byte-level BPE tokenizers (tokenizer.ggml.model 'gpt2') with the "
            f"pre-tokenizer types 'llama-bpe', 'gpt-2' and 'default' (and the names llama.cpp splits alike, listed in "
            f"docs/gguf.md). Put the model's tokenizer.json (and tokenizer_config.json) beside the file, in "
            f"{folder}: arcee_np then reads that instead.")


def _values(fields, key: str, path: str, kind: type, required: bool = True):
    """The value of metadata ``key`` (a list for an array), checked to be ``kind`` (each element for arrays)."""
    field = fields.get(key)
    if field is None:
        if required:
            raise TokenizerError(f"{path} has no {key}: its tokenizer is incomplete. Re-convert the model with "
                                 f"llama.cpp's convert_hf_to_gguf.py, or put its tokenizer.json beside the file.")
        return None
    value = field.contents()
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in items):
        raise TokenizerError(f"{path}: {key} must hold {kind.__name__} values, got {type(items[0]).__name__}. "
                             f"Re-convert the model, or put its tokenizer.json beside the file.")
    return value


def check_supported(fields, path: str) -> tuple[str, str]:
    """(tokenizer model, pre-tokenizer name) of a file, refusing what this module cannot rebuild."""
    model = _values(fields, "tokenizer.ggml.model", path, str)
    if model not in TOKENIZER_MODELS:
        raise TokenizerError(unsupported_message(path, f"its tokenizer model is {model!r} (tokenizer.ggml.model)"))
    pre = _values(fields, "tokenizer.ggml.pre", path, str, required=False)
    pre = "default" if pre in (None, "") else pre  # llama.cpp's fallback for a file without the key
    if pre not in PRE_TOKENIZERS:
        raise TokenizerError(unsupported_message(path, f"its pre-tokenizer type is {pre!r} (tokenizer.ggml.pre)"))
    return model, pre


def build_tokenizer(tokens: list[str], token_types: list[int], merges: list[str], pre: PreTokenizerType):
    """A byte-level BPE ``tokenizers.Tokenizer`` over ``tokens`` (by id) and ``merges`` (by rank), split as
    ``pre`` says, with the control / unknown tokens as special added tokens and the user-defined ones as
    plain added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    pairs = []
    for rank, merge in enumerate(merges):
        cut = merge.find(" ", 1)  # as llama.cpp splits a merge: at the first space after the first character
        if cut < 0:
            raise TokenizerError(f"merge {rank} of tokenizer.ggml.merges, {merge!r}, is not two tokens separated by a "
                                 f"space.")
        pairs.append((merge[:cut], merge[cut + 1:]))
    vocab = {text: i for i, text in enumerate(tokens)}
    try:
        bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
    except Exception as err:  # the tokenizers library raises bare Exceptions for merges outside the vocabulary
        raise TokenizerError(f"the tokens and merges of this file do not form a BPE vocabulary ({err}).") from None
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(as_llama_cpp_unicode(regex)), behavior="isolated") for regex in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=kind != USER_DEFINED, normalized=False)
             for i, kind in enumerate(token_types) if kind in (CONTROL, UNKNOWN, USER_DEFINED)]
    tokenizer.add_tokens(added)
    return tokenizer


def read_gguf_tokenizer(path: str | os.PathLike, fields=None) -> GGUFTokenizer:
    """The tokenizer stored in the GGUF file ``path`` (``fields``: its gguf-py fields when already read).

    TokenizerError when the file has no tokenizer, or one of another model or pre-tokenizer type (named in the
    message, with the way out: a tokenizer.json beside the file).
    """
    path = os.fspath(path)
    if fields is None:
        from .gguf import GGUFFile

        fields = GGUFFile(path).fields
    if "tokenizer.ggml.model" not in fields:
        raise TokenizerError(f"{path} stores no tokenizer (no tokenizer.ggml.model: it was not written by llama.cpp's "
                             f"converter). Put the model's tokenizer.json (and tokenizer_config.json) beside the "
                             f"file, in {os.path.dirname(os.path.abspath(path))}.")
    model, pre_name = check_supported(fields, path)
    tokens = _values(fields, "tokenizer.ggml.tokens", path, str)
    token_types = _values(fields, "tokenizer.ggml.token_type", path, int, required=False) or [NORMAL] * len(tokens)
    merges = _values(fields, "tokenizer.ggml.merges", path, str)
    if len(token_types) < len(tokens):
        raise TokenizerError(f"{path}: tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} "
                             f"tokens. Re-convert the model, or put its tokenizer.json beside the file.")
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        twice = next(t for t in tokens if t in seen or seen.add(t))
        raise TokenizerError(f"{path}: the token {twice!r} appears twice in tokenizer.ggml.tokens (llama.cpp refuses "
                             f"such a file too). Re-convert the model, or put its tokenizer.json beside the file.")
    pre = PRE_TOKENIZERS[pre_name]
    try:
        tokenizer = build_tokenizer(tokens, token_types, merges, pre)
    except TokenizerError as err:
        raise TokenizerError(f"{path}: {err}") from None
    config = _special_tokens(fields, path, tokens)
    for name, default in (("add_bos_token", pre.add_bos), ("add_eos_token", False)):
        flag = _values(fields, f"tokenizer.ggml.{name}", path, bool, required=False)
        config[name] = default if flag is None else flag
    for name in ("add_bos_token", "add_eos_token"):
        if config[name] and config.get(name[4:]) is None:
            raise TokenizerError(f"{path}: tokenizer.ggml.{name} is true but the file names no "
                                 f"{name[4:7]} token id. Re-convert the model, or put its tokenizer.json beside "
                                 f"the file.")
    source = f"{path} (tokenizer.ggml.model {model!r}, pre-tokenizer {pre_name!r}, {len(tokens)} tokens)"
    return GGUFTokenizer(tokenizer, config, _chat_template(fields, path), model, pre_name, source)


def _special_tokens(fields, path: str, tokens: list[str]) -> dict:
    """``{"bos_token": text, ...}`` from the special token ids, as llama.cpp reads them: an id outside the
    vocabulary is ignored (llama.cpp warns and keeps its default), bos/eos default to id 11."""
    config = {}
    for name, key in SPECIAL_ID_KEYS.items():
        default = LLAMA_CPP_BPE_DEFAULT_SPECIAL_ID if name in ("bos_token", "eos_token") else None
        token_id = _values(fields, key, path, int, required=False)
        token_id = token_id if token_id is not None and 0 <= token_id < len(tokens) else default
        if token_id is not None and token_id < len(tokens):
            config[name] = tokens[token_id]
    return config


def _chat_template(fields, path: str):
    """``tokenizer.chat_template``, or ``{"default": ..., name: ...}`` when the file also has named templates
    (``tokenizer.chat_template.<name>``, listed in ``tokenizer.chat_templates``)."""
    template = _values(fields, "tokenizer.chat_template", path, str, required=False)
    names = _values(fields, "tokenizer.chat_templates", path, str, required=False) or []
    if not names:
        return template
    named = {} if template is None else {"default": template}
    for name in names:
        named[name] = _values(fields, f"tokenizer.chat_template.{name}", path, str)
    return named


# ---------------------------------------------------------------------------------------------- writing
def pre_tokenizer_name(tokenizer_json: dict) -> str | None:
    """The ``tokenizer.ggml.pre`` name of a tokenizer.json whose split is one of the three rules above (GPT-2's
    ``ByteLevel``; ``Split`` expressions then ``ByteLevel(use_regex=False)``), else None. The converter names a
    pre-tokenizer by hashing the ids of a fixed text instead, and knows only published tokenizers."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if not steps or steps[-1].get("type") != "ByteLevel" or steps[-1].get("use_regex", True):
        return None
    regexes = tuple(s.get("pattern", {}).get("Regex") if s.get("type") == "Split" and s.get("behavior") == "Isolated"
                    else None for s in steps[:-1])
    llama3_original = LLAMA3_REGEX.replace("(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
                                           "(?i:'s|'t|'re|'ve|'m|'ll|'d)")
    names = {(LLAMA3_REGEX,): "llama-bpe", (llama3_original,): "llama-bpe", (GPT2_REGEX,): "gpt-2",
             (GPT2_REGEX + r"|\s+",): "gpt-2", DEFAULT_REGEXES: "default"}
    return names.get(regexes)


def _looks_special(token: str) -> bool:
    """The converter's ``does_token_look_special``: added tokens it marks as control even when not special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def converter_tokenizer_keys(folder: str | os.PathLike, vocab_size: int, config_ids: dict,
                             pre: str | None = None) -> dict:
    """The tokenizer keys ``convert_hf_to_gguf.py`` writes for the byte-level BPE tokenizer of a checkpoint
    ``folder`` (its ``get_vocab_base`` and gguf-py's ``SpecialVocab``): ``vocab_size`` tokens, ids no token has
    as ``[PAD<id>]`` (unused); added tokens as control (special, or looking special) or user-defined; merges
    as ``"left right"``; the special token ids named in tokenizer_config.json, else config.json's
    (``config_ids``: ``{"bos": id, ...}``); add_bos / add_eos as the post-processor or the config says; the
    chat template. ``pre``: the pre-tokenizer name (default: ``pre_tokenizer_name`` of tokenizer.json).
    Returns ``{key: value}`` (lists for arrays)."""
    from ..validation.files import parse_json, read_json, read_text
    from ..validation.tokenizer import read_tokenizer_json

    folder = os.fspath(folder)
    file = os.path.join(folder, "tokenizer.json")
    data = parse_json(read_text(file, "tokenizer.json", TokenizerError), file, TokenizerError)
    tokenizer = read_tokenizer_json(file)
    config_file = os.path.join(folder, "tokenizer_config.json")
    config = read_json(config_file, "tokenizer_config.json", TokenizerError) if os.path.isfile(config_file) else {}
    if data.get("model", {}).get("type") != "BPE" or pre_tokenizer_name(data) is None and pre is None:
        raise TokenizerError(f"{file} is not a byte-level BPE tokenizer split by GPT-2's, Llama 3's or llama.cpp's "
                             f"default rule: pass pre= (the tokenizer.ggml.pre name llama.cpp should use).")
    vocab = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    if max(vocab) >= vocab_size:
        raise TokenizerError(f"{file} has token id {max(vocab)}, outside the model's vocab_size {vocab_size}.")
    added = tokenizer.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        token = vocab.get(i, f"[PAD{i}]")
        kind = UNUSED if i not in vocab else NORMAL
        if i in added:
            kind = CONTROL if added[i].special or _looks_special(token) else USER_DEFINED
            token = token if kind == CONTROL else token.replace("\u2581", " ")
        tokens.append(token)
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                                                     for part in m) for m in data["model"].get("merges", [])]
    keys = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre or pre_tokenizer_name(data),
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges}
    by_content = {entry["content"]: entry["id"] for entry in reversed(data.get("added_tokens", []))}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        named = config.get(f"{role}_token")
        named = named.get("content") if isinstance(named, dict) else named
        token_id = by_content.get(named) if isinstance(named, str) else None
        token_id = config_ids.get(role) if token_id is None else token_id
        if isinstance(token_id, int) and 0 <= token_id < vocab_size:
            keys[f"tokenizer.ggml.{key}"] = token_id
    keys.update(_add_special_flags(data, config, tokens, keys))
    template = config.get("chat_template")
    jinja = os.path.join(folder, "chat_template.jinja")
    if template is None and os.path.isfile(jinja):
        template = read_text(jinja, "chat_template.jinja", TokenizerError)
    if isinstance(template, str):
        keys["tokenizer.chat_template"] = template
    return keys


def _add_special_flags(data: dict, config: dict, tokens: list[str], keys: dict) -> dict:
    """``add_bos_token`` / ``add_eos_token`` as gguf-py's SpecialVocab reads them: a ByteLevel post-processor
    says neither; a TemplateProcessing whose single template starts with bos (ends with eos) says bos (eos);
    tokenizer_config.json's flags fill what the post-processor left unsaid."""
    flags: dict[str, bool] = {}
    bos, eos = (tokens[keys[k]] if k in keys else None for k in ("tokenizer.ggml.bos_token_id",
                                                                  "tokenizer.ggml.eos_token_id"))
    processor = data.get("post_processor") or {}
    for step in processor.get("processors", [processor]):
        if step.get("type") == "ByteLevel":
            flags.setdefault("bos", False)
            flags.setdefault("eos", False)
        elif step.get("type") == "TemplateProcessing" and len(step.get("single", [])) > 1:
            first = step["single"][0].get("SpecialToken", {}).get("id")
            last = step["single"][-1].get("SpecialToken", {}).get("id")
            if first:
                flags["bos"] = first == bos
            if last:
                flags["eos"] = last == eos
    for role in ("bos", "eos"):
        if isinstance(config.get(f"add_{role}_token"), bool):
            flags.setdefault(role, config[f"add_{role}_token"])
    return {f"tokenizer.ggml.add_{role}_token": value for role, value in flags.items()}
