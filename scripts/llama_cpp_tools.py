"""llama.cpp's converter and quantizer driven from Python, shared by make_gguf_fixtures.py and bench_gguf.py.

Nothing here builds llama.cpp: ``convert`` runs a checkout's ``convert_hf_to_gguf.py`` (with a wrapper that
answers "gpt-2" for a pre-tokenizer hash it does not know: a freshly trained tokenizer's hash is nobody's,
and only the key ``tokenizer.ggml.pre`` depends on it), ``quantize`` calls llama-cpp-python's
``llama_model_quantize`` (``"api"``) or a ``llama-quantize`` binary.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# llama.cpp's file types (llama_ftype) for the quantizer; Q4_K, Q5_K: their _M mixes, made pure below
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18,
          "BF16": 32}
PURE = {"Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}  # every matrix in the one type
TOKENIZER_TEXT = ("From fairest creatures we desire increase, that thereby beauty's rose might never die, "
                  "but as the riper should by time decease, his tender heir might bear his memory. ") * 8

CONVERTER_WRAPPER = r"""
import os, runpy, sys
converter = sys.argv[1]
here = os.path.dirname(os.path.abspath(converter))
sys.path[:0] = [here, os.path.join(here, "gguf-py")]
sys.argv = [converter] + sys.argv[2:]
from conversion import base
known = base.TextModel.get_vocab_base_pre
def pre_tokenizer(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:  # a freshly trained tokenizer: its hash is nobody's
        return "gpt-2"
base.TextModel.get_vocab_base_pre = pre_tokenizer
runpy.run_path(converter, run_name="__main__")
"""


def tokenizer(vocab: int = 288):
    """A byte-level BPE of ``vocab`` tokens (256 bytes, <pad> <s> </s>, merges) trained on a fixed text
    (deterministic), as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TOKENIZER_TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def convert(converter: Path, folder: Path, outtype: str, out: Path) -> None:
    """``convert_hf_to_gguf.py folder --outtype outtype --outfile out`` (outtype: F32, F16, BF16, Q8_0)."""
    subprocess.run([sys.executable, "-c", CONVERTER_WRAPPER, str(converter), str(folder), "--outtype",
                    outtype.lower(), "--outfile", str(out)], check=True, stdout=subprocess.DEVNULL)


def quantize(quantizer: str, source: Path, out: Path, kind: str, threads: int = 1) -> None:
    """``kind`` from ``source`` with llama.cpp's quantizer (pure for a single type, llama.cpp's mix for Q4_K_M)."""
    if quantizer == "api":
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[kind]
        params.pure = kind in PURE
        params.nthread = threads
        if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
            raise RuntimeError(f"llama_model_quantize failed for {out}")
        return
    command = [quantizer] + (["--pure"] if kind in PURE else []) + [str(source), str(out), kind, str(threads)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def gguf_py_version(converter: Path) -> str:
    """The version of the gguf-py package next to a converter (its pyproject.toml)."""
    text = (converter.parent / "gguf-py" / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)
