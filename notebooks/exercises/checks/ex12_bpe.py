"""The check of exercise 26: byte-level BPE, the shipped tokenizer's merges applied to a word."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import arcee_np
from tokenizers import Tokenizer

from checking import Exercise, Failure, call, check


PASSAGE = ("ROMEO:\nBut, soft! what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
           "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n"
           "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day.")
EDGES = ("Ġaaaa", "Ġmmmmm", "Ġoooo", "Ġeee", "Ġlll", "Ġsss", "Ġttttt", "Ġnnnn", "Ġisss", "Ġthethe", "Ġinin",
         "Ġunthinkable", "Ġmisunderstanding", "Ġxyzzy", "Ġqq", "Ġ", "a", "Ġrrrrr", "ĠRomeoRomeo")


@lru_cache(maxsize=None)
def shipped_tokenizer() -> Tokenizer:
    """The shipped tokenizer.json as the tokenizers library loads it (its pre-tokenizer and its BPE model)."""
    return Tokenizer.from_file(str(Path(arcee_np.default_model_path()) / "tokenizer.json"))


@lru_cache(maxsize=None)
def ranks() -> dict:
    """{(left, right): rank} of the shipped tokenizer's merges (tokenizer.json, in their order)."""
    path = Path(arcee_np.default_model_path()) / "tokenizer.json"
    merges = json.loads(path.read_text(encoding="utf-8"))["model"]["merges"]
    return {tuple(m if isinstance(m, list) else m.split(" ")): rank for rank, m in enumerate(merges)}


def words() -> list[str]:
    """The passage as the tokenizer's pre-tokenizer splits it (byte-level characters: 'Ġ' is the space), then the
    words where a shortcut differs: letters repeated (overlapping pairs), words that merge late."""
    pieces = [w for w, _ in shipped_tokenizer().pre_tokenizer.pre_tokenize_str(PASSAGE)]
    return list(dict.fromkeys(pieces + list(EDGES)))


def shipped_bpe(word: str) -> list[str]:
    """The shipped tokenizer's BPE model on one pre-tokenized word."""
    return [token.value for token in shipped_tokenizer().model.tokenize(word)]


@check("bpe")
def check_bpe(bpe):
    table = ranks()
    hint = ("parts = list(word); while some adjacent pair has a rank: take the pair of LOWEST rank (the earliest "
            "merge), merge all of its occurrences left to right (aaa -> aa a), repeat; return parts")
    for word in words():
        checked = f"bpe({word!r}, ranks) with the shipped tokenizer's {len(table)} merges"
        got = call(bpe, "bpe", checked, word, table)
        want = shipped_bpe(word)
        if not isinstance(got, (list, tuple)) or not all(isinstance(t, str) for t in got):
            raise Failure(checked, f"`bpe` returned {type(got).__name__}; return a list of str tokens", hint=hint)
        if list(got) != want:
            looks = next((message for message, variant in _bpe_mistakes(word, table).items()
                          if variant == list(got) != want), None)
            raise Failure(checked, f"yours {list(got)} vs the shipped tokenizer's {want}", looks, hint)
    return [f"checked: bpe on the {len(words())} distinct words of a passage and of words with repeated letters, "
            f"against the shipped tokenizer's BPE model, token for token"]


def _merge_all(parts, pair, right_to_left=False):
    seq = parts[::-1] if right_to_left else parts
    a, b = pair[::-1] if right_to_left else pair
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out[::-1] if right_to_left else out


def _bpe_with(word, table, choose, right_to_left=False):
    parts = list(word)
    while True:
        pairs = [(a, b) for a, b in zip(parts, parts[1:], strict=False) if (a, b) in table]
        if not pairs:
            return parts
        parts = _merge_all(parts, choose(pairs), right_to_left)


def _bpe_mistakes(word, table):
    def lowest(pairs):
        return min(pairs, key=table.get)
    return {
        "you merged the leftmost pair that has a rank; merge the pair of lowest rank first, wherever it is":
            _bpe_with(word, table, lambda pairs: pairs[0]),
        "you merged the pair of highest rank first; the lowest rank (the earliest merge learned) goes first":
            _bpe_with(word, table, lambda pairs: max(pairs, key=table.get)),
        "you merged overlapping occurrences from the right (aaa -> a aa); merge left to right (aa a)":
            _bpe_with(word, table, lowest, right_to_left=True),
    }


EXERCISES = {"bpe": Exercise("ex12_bpe", ("bpe",), check_bpe)}
REFERENCE = {"bpe": lambda word, ranks: shipped_bpe(word)}
