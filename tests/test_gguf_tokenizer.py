"""The tokenizer a GGUF file stores, rebuilt by arcee_np, against the checkpoint's tokenizer.json (transformers)
and llama.cpp's own tokenizer, on the fixtures of scripts/make_gguf_tokenizer_fixtures.py: files made by
llama.cpp's converter (and quantizer) from byte-level BPE tokenizers of 300, 1000, 4000 and 4096 tokens
split as llama.cpp's ``gpt-2``, ``llama-bpe`` and ``default`` pre-tokenizers, each with a chat template.

``ids.json`` holds transformers' and llama.cpp's ids of every text of ``texts.json``, so the plain run
checks both without llama.cpp; with llama-cpp-python installed, llama.cpp is also asked live."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from arcee_np import TokenizerError
from arcee_np.io.gguf import GGUFFile
from arcee_np.io.gguf_tokenizer import PRE_TOKENIZERS, UNICODE_16_ADDED, build_tokenizer, read_gguf_tokenizer
from arcee_np.io.tokenizer import ArceeTokenizer

ROOT = Path(__file__).parent / "golden_gguf_tokenizer"
META = json.loads((ROOT / "meta.json").read_text())
TEXTS = json.loads((ROOT / "texts.json").read_text(encoding="utf-8"))
MORE = json.loads((ROOT / "texts_more.json").read_text(encoding="utf-8"))  # random strings, Unicode 16 scripts
FILES = [(case, kind, ROOT / case / name)
         for case, entry in META["cases"].items() for kind, name in entry["files"].items()]
FILE_IDS = [f"{case}-{kind}" for case, kind, _ in FILES]


def expected(case: str) -> dict:
    return json.loads((ROOT / case / "ids.json").read_text(encoding="utf-8"))


def mismatches(tokenizer: ArceeTokenizer, ids: dict, texts: dict = TEXTS) -> list:
    """The (text, add_special_tokens) pairs of ``texts`` where ``tokenizer`` gives other ids than ``ids``
    (``{text: {"special": ids, "plain": ids}}``)."""
    return [(name, key) for name, text in texts.items() for key, special in (("special", True), ("plain", False))
            if tokenizer.encode(text, add_special_tokens=special) != ids[name][key]]


def test_the_fixtures_cover_the_three_pre_tokenizers_and_the_text_set():
    assert {entry["pre"] for entry in META["cases"].values()} == {"gpt-2", "llama-bpe", "default"}
    assert {"Q4_K_M", "F32", "F16"} <= {kind for _, kind, _ in FILES}
    assert all(path.stat().st_size < 1_000_000 for _, _, path in FILES)
    assert {"prose", "verse", "python", "numbers", "spaces", "tabs", "punctuation", "accents", "greek", "cyrillic",
            "cjk", "arabic", "devanagari", "emoji", "special_strings"} <= set(TEXTS)


@pytest.mark.parametrize("case,kind,path", FILES, ids=FILE_IDS)
def test_ids_equal_transformers_and_llama_cpp_on_every_text(case, kind, path):
    tokenizer = ArceeTokenizer.from_pretrained(path)
    assert tokenizer.source.startswith("the GGUF file's own tokenizer")
    ids = expected(case)
    assert mismatches(tokenizer, ids["transformers"]) == []
    assert mismatches(tokenizer, ids["llama_cpp"]) == []


@pytest.mark.parametrize("case,kind,path", FILES, ids=FILE_IDS)
def test_ids_equal_llama_cpp_on_random_strings_and_unicode_16_scripts(case, kind, path):
    assert mismatches(ArceeTokenizer.from_pretrained(path), expected(case)["llama_cpp_more"], MORE) == []


def test_tokenizer_json_and_llama_cpp_differ_only_on_characters_unicode_16_added():
    """The tokenizers library's expressions know Unicode 16.0, llama.cpp's tables 15.1: where the checkpoint's
    tokenizer.json and llama.cpp disagree, the text holds a letter, digit or punctuation mark Unicode 16.0
    added (arcee_np follows llama.cpp there); they do disagree on some, so the difference is tested."""
    added = re.sub(r"\\x\{([0-9A-F]+)\}", lambda m: chr(int(m.group(1), 16)), "".join(UNICODE_16_ADDED.values()))
    new_characters = re.compile(f"[{added}]")
    disagree = [(case, name) for case in META["cases"] for name in MORE
                if expected(case)["transformers_more"][name] != expected(case)["llama_cpp_more"][name]]
    assert disagree and all(new_characters.search(MORE[name]) for _, name in disagree), disagree


@pytest.mark.parametrize("case", META["cases"])
def test_ids_equal_the_original_tokenizer_json(case):
    """The checkpoint's own tokenizer.json (read live by the tokenizers library) gives the same ids."""
    original = ArceeTokenizer.from_pretrained(ROOT / case / "hf")
    stored = ArceeTokenizer.from_pretrained(ROOT / case / META["cases"][case]["files"][next(iter(
        META["cases"][case]["files"]))])
    for text in TEXTS.values():
        for special in (True, False):
            assert stored.encode(text, add_special_tokens=special) == original.encode(text, add_special_tokens=special)


@pytest.mark.parametrize("case,kind,path", FILES, ids=FILE_IDS)
def test_ids_equal_llama_cpp_live(case, kind, path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install llama-cpp-python")
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    tokenizer = ArceeTokenizer.from_pretrained(path)
    live = {name: {"special": vocab.tokenize(text.encode(), add_bos=True, special=True),
                   "plain": vocab.tokenize(text.encode(), add_bos=False, special=True)} for name, text in TEXTS.items()}
    assert mismatches(tokenizer, live) == []


@pytest.mark.parametrize("case", META["cases"])
def test_decoding_gives_the_text_back(case):
    path = ROOT / case / next(iter(META["cases"][case]["files"].values()))
    tokenizer = ArceeTokenizer.from_pretrained(path)
    for text in TEXTS.values():
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
        with_special = tokenizer.encode(text)
        bos, eos = tokenizer.bos_token if tokenizer.add_bos_token else "", tokenizer.eos_token if \
            tokenizer.add_eos_token else ""
        assert tokenizer.decode(with_special) == bos + text + eos


@pytest.mark.parametrize("case", META["cases"])
def test_special_tokens_and_chat_template_match_the_checkpoint(case):
    original = ArceeTokenizer.from_pretrained(ROOT / case / "hf")
    stored = ArceeTokenizer.from_pretrained(ROOT / case / next(iter(META["cases"][case]["files"].values())))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(stored, name) == getattr(original, name), name
    assert len(stored) == len(original) + META["cases"][case]["unused_ids"]
    assert stored.get_chat_template() == original.get_chat_template()
    chat = expected(case)["chat"]
    ids = stored.apply_chat_template(chat["conversation"], add_generation_prompt=True, return_dict=False)
    assert ids == chat["transformers"]


def test_control_tokens_are_special_and_user_defined_ones_are_not():
    """llama3_1000: <|eot_id|> is a control token (dropped by skip_special_tokens), [ROMEO] a user-defined one
    (cut out of the text before the split, kept when decoding), the 24 padding ids are unused tokens."""
    tokenizer = ArceeTokenizer.from_pretrained(ROOT / "llama3_1000" / "llama3_1000-F32.gguf")
    ids = tokenizer.encode("Hi<|eot_id|>[ROMEO]x", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in ids and tokenizer.convert_tokens_to_ids("[ROMEO]") in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hi[ROMEO]x"
    assert tokenizer.convert_ids_to_tokens(1023) == "[PAD1023]"
    assert tokenizer.add_bos_token and not tokenizer.add_eos_token


@pytest.mark.parametrize("case", META["cases"])
def test_save_pretrained_writes_the_gguf_tokenizer_as_a_checkpoint_tokenizer(case, tmp_path):
    """tokenizer.json + tokenizer_config.json written from a GGUF file's tokenizer read back (by arcee_np, and
    by transformers when it is installed) to the same ids and chat ids."""
    stored = ArceeTokenizer.from_pretrained(ROOT / case / next(iter(META["cases"][case]["files"].values())))
    stored.save_pretrained(tmp_path)
    ids = expected(case)
    assert mismatches(ArceeTokenizer.from_pretrained(tmp_path), ids["transformers"]) == []
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert [(n, k) for n, t in TEXTS.items() for k, special in (("special", True), ("plain", False))
            if hf.encode(t, add_special_tokens=special) != ids["transformers"][n][k]] == []
    chat = hf.apply_chat_template(ids["chat"]["conversation"], add_generation_prompt=True, return_dict=False)
    assert list(chat) == ids["chat"]["transformers"]


@pytest.mark.parametrize("case", META["cases"])
def test_the_writer_stores_the_tokenizer_as_the_converter_does(case, tmp_path):
    """arcee_np's GGUF writer, given the checkpoint's tokenizer folder, writes every tokenizer key the converter
    wrote (tokens, types, merges, ids, flags, chat template) with the same values and GGUF types; the
    converter's ``add_sep_token`` (which byte-level BPE does not use) aside."""
    from arcee_np.config import ArceeConfig
    from arcee_np.io.gguf_writer import write_gguf

    hf = ROOT / case / "hf"
    path = tmp_path / "tokenizer-only.gguf"
    write_gguf(path, ArceeConfig.from_pretrained(hf), {}, tokenizer=hf)

    def keys(file):
        return {k: (f.contents(), [t.name for t in f.types]) for k, f in GGUFFile(file).fields.items()
                if k.startswith("tokenizer.") and k != "tokenizer.ggml.add_sep_token"}

    assert keys(path) == keys(ROOT / case / next(iter(META["cases"][case]["files"].values())))
    assert mismatches(ArceeTokenizer.from_pretrained(path), expected(case)["llama_cpp"]) == []


def _stored_parts(path):
    fields = GGUFFile(path).fields
    return [fields[f"tokenizer.ggml.{key}"].contents() for key in ("tokens", "token_type", "merges")]


def test_the_text_set_tells_the_split_rules_apart():
    """On every fixture the file's own rule gives llama.cpp's ids; each other rule, and llama-bpe's without
    ignore_merges, gives other ids on some text of some fixture: a wrong rule could not pass the tests above.
    (A rule differs only where the vocabulary has merges across the other rule's boundaries, which the
    300-token and the shipped vocabulary rarely have.)"""
    llama3 = PRE_TOKENIZERS["llama-bpe"]
    rules = {name: PRE_TOKENIZERS[name] for name in ("gpt-2", "llama-bpe", "default")}
    rules["llama-bpe, merges always"] = type(llama3)(llama3.llama_type, llama3.regexes, ignore_merges=False)
    caught = {}
    for case, entry in META["cases"].items():
        tokens, types, merges = _stored_parts(ROOT / case / next(iter(entry["files"].values())))
        ids = expected(case)["llama_cpp"]
        for name, pre in rules.items():
            tokenizer = build_tokenizer(tokens, types, merges, pre)
            differ = [text for text in TEXTS if tokenizer.encode(TEXTS[text], add_special_tokens=False).ids
                      != ids[text]["plain"]]
            if name == entry["pre"]:
                assert differ == [], (case, differ)
            elif differ:
                caught.setdefault(name, []).append(case)
    assert set(caught) == set(rules), caught


# ---------------------------------------------------------------------------------------------- refusals
def _rewrite(source: Path, target: Path, changes: dict) -> Path:
    """A copy of the tokenizer metadata of ``source`` with ``changes`` (key -> value, None: drop the key), as a
    GGUF file of metadata only."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, "arcee")
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key in changes:
            continue
        types = field.types
        writer.add_key_value(key, field.contents(), types[0], sub_type=types[-1] if len(types) > 1 else None)
    for key, value in changes.items():
        if value is not None:
            writer.add_key_value(key, value, gguf.GGUFValueType.STRING)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


GPT2_FILE = ROOT / "gpt2_300" / "gpt2_300-F32.gguf"


@pytest.mark.parametrize("key,value", [("tokenizer.ggml.model", "llama"), ("tokenizer.ggml.model", "bert"),
                                       ("tokenizer.ggml.model", "t5"), ("tokenizer.ggml.pre", "qwen2"),
                                       ("tokenizer.ggml.pre", "deepseek-llm"), ("tokenizer.ggml.pre", "afmoe")])
def test_an_unsupported_tokenizer_is_refused_by_name(tmp_path, key, value):
    path = _rewrite(GPT2_FILE, tmp_path / "model.gguf", {key: value})
    with pytest.raises(TokenizerError, match=rf"is '{value}' \({key}\).*tokenizer.json.*beside the file"):
        ArceeTokenizer.from_pretrained(path)
    shutil.copyfile(ROOT / "gpt2_300" / "hf" / "tokenizer.json", tmp_path / "tokenizer.json")
    beside = ArceeTokenizer.from_pretrained(path)  # a tokenizer.json beside the file is read instead
    assert beside.source.endswith("(beside the GGUF file)")
    assert beside.encode(TEXTS["prose"]) == expected("gpt2_300")["transformers"]["prose"]["special"]


def test_a_file_without_pre_tokenizer_is_read_as_llama_cpp_default(tmp_path):
    path = _rewrite(GPT2_FILE, tmp_path / "model.gguf", {"tokenizer.ggml.pre": None})
    assert read_gguf_tokenizer(path).pre == "default"


def test_without_add_bos_token_bos_is_added_as_llama_cpp_does_for_the_type(tmp_path):
    """No tokenizer.ggml.add_bos_token: llama.cpp adds bos for llama-bpe and not for gpt-2 or default."""
    llama3 = _rewrite(ROOT / "llama3_1000" / "llama3_1000-F32.gguf", tmp_path / "llama3.gguf",
                      {"tokenizer.ggml.add_bos_token": None})
    assert ArceeTokenizer.from_pretrained(llama3).encode("x")[0] == 0  # <|begin_of_text|>
    default = _rewrite(ROOT / "default_4000" / "default_4000-F16.gguf", tmp_path / "default.gguf",
                       {"tokenizer.ggml.add_bos_token": None, "tokenizer.ggml.add_eos_token": None})
    tokenizer = ArceeTokenizer.from_pretrained(default)
    assert tokenizer.encode("x") == tokenizer.encode("x", add_special_tokens=False)


def test_a_file_without_a_tokenizer_is_refused(tmp_path):
    path = _rewrite(GPT2_FILE, tmp_path / "model.gguf", {"tokenizer.ggml.model": None})
    with pytest.raises(TokenizerError, match="stores no tokenizer.*tokenizer.json"):
        ArceeTokenizer.from_pretrained(path)


def test_a_tokenizer_json_beside_the_file_wins(tmp_path):
    alone = tmp_path / "model.gguf"
    shutil.copyfile(ROOT / "shipped" / "shipped-Q4_K_M.gguf", alone)
    assert ArceeTokenizer.from_pretrained(alone).source.startswith("the GGUF file's own tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(ROOT / "shipped" / "hf" / name, tmp_path / name)
    beside = ArceeTokenizer.from_pretrained(alone)
    assert beside.source == f"{tmp_path / 'tokenizer.json'} (beside the GGUF file)"
    assert beside.chat_template is None  # hf/ keeps its template in chat_template.jinja, not copied here


def test_pipeline_runs_from_a_gguf_file_alone(tmp_path):
    from arcee_np.pipeline import pipeline

    alone = tmp_path / "model.gguf"
    shutil.copyfile(ROOT / "shipped" / "shipped-Q4_K_M.gguf", alone)
    generator = pipeline("text-generation", model=str(alone))
    out = generator("ROMEO:", max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"].startswith("ROMEO:")
    chat = generator([{"role": "user", "content": "Speak."}], max_new_tokens=2, do_sample=False)
    assert chat[0]["generated_text"][-1]["role"] == "assistant"
    assert np.all(np.asarray(generator.tokenizer.encode("ROMEO:")) < generator.model.config.vocab_size)


def test_finetune_runs_from_a_gguf_file_alone(tmp_path, capsys):
    """finetune encodes --data with the file's own tokenizer and writes it as the new checkpoint's
    tokenizer.json, which reads back to the same ids."""
    from arcee_np.cli import main

    alone = tmp_path / "model" / "model.gguf"
    alone.parent.mkdir()
    shutil.copyfile(ROOT / "llama3_1000" / "llama3_1000-F32.gguf", alone)
    data = tmp_path / "text.txt"
    data.write_text((TEXTS["verse"] + TEXTS["prose"]) * 8, encoding="utf-8")
    out = tmp_path / "tuned"
    code = main(["finetune", "--data", str(data), "--model", str(alone), "--steps", "2", "--out", str(out),
                 "--batch-size", "2", "--seq-len", "16"])
    assert code == 0, capsys.readouterr().err
    tuned = ArceeTokenizer.from_pretrained(out)
    assert tuned.source == str(out / "tokenizer.json")
    assert mismatches(tuned, expected("llama3_1000")["llama_cpp"]) == []
    assert tuned.get_chat_template() == ArceeTokenizer.from_pretrained(alone).get_chat_template()


def test_an_open_gguf_file_gives_its_tokenizer_without_reading_the_file_again():
    file = GGUFFile(ROOT / "shipped" / "shipped-Q4_K_M.gguf")
    tokenizer = ArceeTokenizer.from_pretrained(file)
    assert tokenizer.source.startswith("the GGUF file's own tokenizer")
    assert mismatches(tokenizer, expected("shipped")["llama_cpp"]) == []
