"""llama.cpp's converter and quantizer driven from Python, shared by make_gguf_fixtures.py and bench_gguf.py.

Nothing here builds llama.cpp: ``convert`` runs a checkout's ``convert_hf_to_gguf.py`` (with a wrapper that
answers ``pre``, "gpt-2" unless told otherwise, for a pre-tokenizer hash it does not know: a freshly trained
tokenizer's hash is nobody's, and only the key ``tokenizer.ggml.pre`` depends on it; a known hash keeps the
converter's own answer), ``quantize`` calls llama-cpp-python's ``llama_model_quantize`` (``"api"``) or a
``llama-quantize`` binary, ``llama_cpp_token_ids`` tokenizes with llama.cpp's own tokenizer.

To produce a file of a given pre-tokenizer type on purpose, train the tokenizer with the split rule of that
type (llama.cpp's regular expressions for it, in src/llama-vocab.cpp) and convert with ``pre=`` its name:
``llama-bpe`` (Llama 3's expression, ``ignore_merges``), ``gpt-2`` (GPT-2's ``ByteLevel`` expression) or
``default`` (llama.cpp's four-expression cascade). scripts/make_gguf_tokenizer_fixtures.py does so.
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
converter, unknown_hash_answer = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(converter))
sys.path[:0] = [here, os.path.join(here, "gguf-py")]
sys.argv = [converter] + sys.argv[3:]
from conversion import base
known = base.TextModel.get_vocab_base_pre
def pre_tokenizer(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:  # a freshly trained tokenizer: its hash is nobody's
        return unknown_hash_answer
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


def convert(converter: Path, folder: Path, outtype: str, out: Path, pre: str = "gpt-2") -> None:
    """``convert_hf_to_gguf.py folder --outtype outtype --outfile out`` (outtype: F32, F16, BF16, Q8_0);
    ``pre``: the ``tokenizer.ggml.pre`` written when the converter does not know the tokenizer's hash."""
    subprocess.run([sys.executable, "-c", CONVERTER_WRAPPER, str(converter), pre, str(folder), "--outtype",
                    outtype.lower(), "--outfile", str(out)], check=True, stdout=subprocess.DEVNULL)


def llama_cpp_token_ids(path: Path, text: str, add_special: bool) -> list[int]:
    """llama.cpp's token ids for ``text`` with the tokenizer stored in the GGUF at ``path`` (special-token text
    parsed, as llama.cpp's tools do; ``add_special``: bos/eos as the file says)."""
    import llama_cpp

    vocab = _vocab_only.get(str(path))
    if vocab is None:
        vocab = _vocab_only[str(path)] = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    return vocab.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)


_vocab_only: dict = {}  # path -> llama_cpp.Llama loaded with vocab_only=True


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


def fixture_arguments(description: str, default_out: Path) -> tuple:
    """The command line the fixture scripts share (``--converter``, ``--quantize``, ``--llama-cpp-commit``,
    ``--out``), parsed: (arguments, the llama.cpp commit); the output folder made empty."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--converter", type=Path, required=True, help="convert_hf_to_gguf.py of a llama.cpp checkout")
    parser.add_argument("--quantize", default="api", help="'api' (llama-cpp-python) or the path of llama-quantize")
    parser.add_argument("--llama-cpp-commit", help="the checkout's commit (default: git rev-parse in its folder)")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    commit = args.llama_cpp_commit or subprocess.run(
        ["git", "-C", str(args.converter.parent), "rev-parse", "--short=9", "HEAD"], capture_output=True,
        text=True, check=True).stdout.strip()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    return args, commit


def write_meta(args, commit: str, generator: str, converter_note: str, cases: dict, **extra) -> None:
    """``meta.json`` of a fixture folder: the versions used (torch, transformers, llama-cpp-python, the llama.cpp
    commit, gguf-py, Python), the converter and quantizer, ``extra`` entries and the cases; prints the size."""
    import json
    import platform

    import torch
    import transformers

    from arcee_np.oracle.llama_cpp import llama_cpp_version

    meta = {
        "generator": generator, "torch": torch.__version__, "transformers": transformers.__version__,
        "llama_cpp_python": llama_cpp_version(), "llama_cpp_commit": commit,
        "gguf_py": gguf_py_version(args.converter), "python": platform.python_version(),
        "converter": f"convert_hf_to_gguf.py (pre-tokenizer hash wrapper: {converter_note})",
        "quantizer": "llama_model_quantize (llama-cpp-python)" if args.quantize == "api" else "llama-quantize",
        **extra, "cases": cases,
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")


def gguf_py_version(converter: Path) -> str:
    """The version of the gguf-py package next to a converter (its pyproject.toml)."""
    text = (converter.parent / "gguf-py" / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)
