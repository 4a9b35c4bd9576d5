"""The tokenizer: encode/decode, bos handling from tokenizer_config.json, batches with padding sides, the chat
template in transformers' jinja environment, and TextStreamer. (tests/live compares it with AutoTokenizer.)"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from arcee_np.io.tokenizer import ArceeTokenizer, TextStreamer

from tiny_lm import TEXT, write_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return ArceeTokenizer.from_pretrained(write_tokenizer(tmp_path_factory.mktemp("tok")))


def test_round_trip_and_special_tokens(tok):
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    for text in TEXT:
        ids = tok.encode(text)
        assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.decode(ids) == tok.bos_token + text
        assert tok.encode(text, add_special_tokens=False) == ids[1:]
    assert tok.decode(np.array(tok.encode("ROMEO:"))) == tok.decode(tok.encode("ROMEO:"))
    assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(["<|pad|>"])) == ["<|pad|>"]


@pytest.mark.parametrize("flags, first, last", [({"add_bos_token": False}, None, None),
                                                ({"add_bos_token": True, "add_eos_token": True}, 0, 1)])
def test_bos_and_eos_flags_rebuild_the_post_processor(tmp_path, flags, first, last):
    tok = ArceeTokenizer.from_pretrained(write_tokenizer(tmp_path, **flags))
    ids = tok.encode("ROMEO:")
    assert (ids[0] == 0) == (first == 0) and (ids[-1] == 1) == (last == 1)


def test_tokenizer_json_post_processor_kept_without_flags(tmp_path):
    folder = write_tokenizer(tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["add_bos_token"], config["add_eos_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert ArceeTokenizer.from_pretrained(folder).encode("hi")[0] == 0  # tokenizer.json's template adds bos


def test_batch_padding_sides(tok):
    left = tok(["ROMEO:", "JULIET: O Romeo"], padding=True, padding_side="left", return_tensors="np")
    right = tok(["ROMEO:", "JULIET: O Romeo"], padding=True, return_tensors="np")
    assert left["input_ids"].shape == right["input_ids"].shape
    assert left["input_ids"][0, 0] == tok.pad_token_id and left["attention_mask"][0, 0] == 0
    assert right["input_ids"][0, -1] == tok.pad_token_id and right["attention_mask"][0, -1] == 0
    np.testing.assert_array_equal(left["input_ids"][0][left["attention_mask"][0] == 1],
                                  right["input_ids"][0][right["attention_mask"][0] == 1])
    assert tok("ROMEO:")["input_ids"] == tok.encode("ROMEO:")
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a longer text"], return_tensors="np")


def test_chat_template(tok):
    messages = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|begin_of_text|><|system|>\nBe brief.<|end_of_text|>\n<|user|>\nHi<|end_of_text|>\n"
                    "<|assistant|>\n")
    assert tok.apply_chat_template(messages, tokenize=False) == text[:-len("<|assistant|>\n")]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids == tok.encode(text, add_special_tokens=False) and ids.count(tok.bos_token_id) == 1
    assert tok.apply_chat_template(messages)["attention_mask"] == [1] * len(tok.apply_chat_template(messages,
                                                                                                     return_dict=False))
    prefill = tok.apply_chat_template(messages + [{"role": "assistant", "content": "Hello"}],
                                      continue_final_message=True, tokenize=False)
    assert prefill.endswith("<|assistant|>\nHello")


def test_chat_template_errors(tmp_path, tok):
    with pytest.raises(Exception, match="unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])
    plain = ArceeTokenizer.from_pretrained(write_tokenizer(tmp_path, chat_template=False))
    with pytest.raises(ValueError, match="no chat_template"):
        plain.apply_chat_template([{"role": "user", "content": "x"}])
    assert plain.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ messages[0].content }}",
                                     tokenize=False) == "x"
    with pytest.raises(ValueError, match="does not parse"):
        plain.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{% if %}")


def test_chat_template_environment(tok):
    source = ("{{ messages | tojson }}|{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
              "{{ m.content }}{% endfor %}|{{ strftime_now('%Y') | length }}")
    out = tok.apply_chat_template([{"role": "user", "content": "<b>é</b>"}, {"role": "user", "content": "2"}],
                                  chat_template=source, tokenize=False)
    assert out == '[{"role": "user", "content": "<b>é</b>"}, {"role": "user", "content": "2"}]|<b>é</b>|4'


def test_chat_template_file_is_read(tmp_path):
    folder = write_tokenizer(tmp_path, chat_template=False)
    (folder / "chat_template.jinja").write_text("[{{ messages[0]['content'] }}]")
    assert ArceeTokenizer.from_pretrained(folder).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False) == "[hi]"


def test_missing_or_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        ArceeTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json is not valid JSON"):
        ArceeTokenizer.from_pretrained(tmp_path)


def test_text_streamer_prints_what_decode_gives(tok):
    text = "ROMEO: Héllo wörld — ünïcode ✓ 你好\nJULIET: O Romeo!"
    ids = tok.encode(text)
    out = io.StringIO()
    streamer = TextStreamer(tok, file=out, skip_special_tokens=True)
    streamer.put(np.array([ids[:3]]))
    for token in ids[3:]:
        streamer.put(np.array([token]))
        assert "\ufffd" not in out.getvalue()  # never a half-decoded character
    streamer.end()
    assert out.getvalue() == text + "\n"
    skipped = io.StringIO()
    streamer = TextStreamer(tok, skip_prompt=True, file=skipped, skip_special_tokens=True)
    streamer.put(np.array([ids[:3]]))
    for token in ids[3:]:
        streamer.put(np.array([token]))
    streamer.end()
    assert tok.decode(ids[:3], skip_special_tokens=True) + skipped.getvalue() == text + "\n"
    with pytest.raises(ValueError, match="batch size 1"):
        TextStreamer(tok).put(np.zeros((2, 3), dtype=np.int64))
