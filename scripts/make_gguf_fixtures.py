"""Write the GGUF fixtures under ``tests/golden_gguf/`` with llama.cpp's own converter and quantizer.

How to run (from the repository root; needs torch + transformers, pinned, and an installed llama.cpp)::

    pip install -e ".[golden]" llama-cpp-python==0.3.36
    python scripts/make_gguf_fixtures.py --converter PATH/TO/llama.cpp/convert_hf_to_gguf.py \\
        [--quantize api | --quantize PATH/TO/llama-quantize] [--llama-cpp-commit 0c1e57098]

The script uses llama.cpp and never builds it: the converter comes from a llama.cpp checkout (or the one
vendored in llama-cpp-python's source distribution), quantization from llama-cpp-python's
``llama_model_quantize`` (``--quantize api``, the default) or a ``llama-quantize`` binary, and llama.cpp's
own logits from llama-cpp-python. Nothing of llama.cpp is written into the repository except the GGUF files
it produces. The plain test run reads the fixtures and needs neither torch nor llama.cpp.

For every case it writes ``tests/golden_gguf/<case>/``:

    hf/                      the transformers checkpoint (config.json, model.safetensors, tokenizer files),
                             a tiny random ArceeForCausalLM with perturbed weights (as scripts/make_golden.py;
                             matrices N(0, 0.15 sqrt(32 / hidden)))
    <case>-<TYPE>.gguf       convert_hf_to_gguf.py --outtype f32 (or bf16), then llama_model_quantize
                             (``pure``: every matrix in TYPE; ``Q4_K_M``: llama.cpp's own mix of types)
    expected.safetensors     input_ids [1, T]; transformers' logits [1, T, V] on hf/: logits_float32 (float32
                             eager) and logits_float64 (float64 with its float32 casts lifted)
    llama_cpp.safetensors    llama.cpp's logits [T, V] per file, flash attention off, an F32 KV cache and no
                             repacked weight buffers (``<TYPE>``), and for the F32 file also with flash
                             attention on (``F32_flash``)

and ``tests/golden_gguf/meta.json`` with the versions used (torch, transformers, llama-cpp-python, the
llama.cpp commit, gguf-py) and each case's description and files.

The converter refuses a freshly trained BPE tokenizer whose pre-tokenizer hash it does not know; the
script runs it through a small wrapper that answers "gpt-2" for an unknown hash (scripts/llama_cpp_tools.py;
only the GGUF key ``tokenizer.ggml.pre`` depends on it; the fixtures are evaluated on token ids).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from transformers import ArceeConfig, ArceeForCausalLM

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from torch_reference import lifted_float32_casts, perturb_  # noqa: E402

from arcee_np.oracle.llama_cpp import llama_cpp_logits  # noqa: E402
from llama_cpp_tools import PURE, convert, fixture_arguments, quantize, tokenizer, write_meta  # noqa: E402

OUT = REPO / "tests" / "golden_gguf"
SEQUENCE_LENGTH = 32
VOCAB = 288  # 256 byte tokens, 3 special tokens, 29 merges

SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, head_dim=16, hidden_act="relu2", max_position_embeddings=2048,
             initializer_range=0.15, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
             tie_word_embeddings=False)
YARN = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256}

# name -> (description, config overrides, dtype saved, the converter's outtype, GGUF types written)
CASES = {
    "default_rope": (
        "plain RoPE, multi-head attention (4/4 heads of 16 over hidden 32: head_dim is not hidden / heads), "
        "untied head; float32 checkpoint in every 32-value type, and asked for Q4_K, Q5_K, Q6_K: rows of 32 or "
        "64 values are not whole 256-value blocks, so llama.cpp's quantizer falls back to Q5_0, Q5_1, Q8_0",
        dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        torch.float32, "F32", ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")),
    "yarn_gqa_tied": (
        "YaRN with only factor 8 and original_max_position_embeddings 256 (what llama.cpp carries), "
        "grouped-query attention 4/2, tied embeddings: a clean conversion",
        dict(num_key_value_heads=2, tie_word_embeddings=True,
             rope_parameters={**YARN, "rope_theta": 10000.0}),
        torch.bfloat16, "F32", ("F32",)),
    "yarn_explicit": (
        "YaRN with explicit attention_factor 1.0, beta_fast 16, beta_slow 2 and truncate False, GQA 4/2: "
        "settings llama.cpp's Arcee loader ignores",
        dict(num_key_value_heads=2, rope_parameters={**YARN, "rope_theta": 10000.0, "attention_factor": 1.0,
                                                     "beta_fast": 16.0, "beta_slow": 2.0, "truncate": False}),
        torch.bfloat16, "F32", ("F32",)),
    "yarn_mscale_mqa": (
        "YaRN with mscale 1.0 and mscale_all_dim 0.5 (the attention factor transformers derives from them), "
        "multi-query attention 4/1, tied embeddings",
        dict(num_key_value_heads=1, tie_word_embeddings=True,
             rope_parameters={**YARN, "rope_theta": 10000.0, "mscale": 1.0, "mscale_all_dim": 0.5}),
        torch.bfloat16, "F32", ("F32",)),
    "kquants": (
        "the K formats: hidden 256, intermediate 256, 2 heads of 128 (AFM's head_dim), 1 KV head, 1 layer, "
        "YaRN factor 8, tied; bfloat16 checkpoint (as AFM ships), converted to BF16 (not kept: the same values "
        "as hf/) and quantized pure Q4_K, Q5_K, Q6_K and with llama.cpp's Q4_K_M mix",
        dict(hidden_size=256, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2, head_dim=128,
             num_key_value_heads=1, tie_word_embeddings=True, rope_parameters={**YARN, "rope_theta": 10000.0}),
        torch.bfloat16, "BF16", ("Q4_K", "Q5_K", "Q6_K", "Q4_K_M")),
}

def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def build_checkpoint(name: str, overrides: dict, save_dtype, folder: Path) -> None:
    """A perturbed random ArceeForCausalLM saved with save_pretrained in ``save_dtype``, plus its tokenizer."""
    config = ArceeConfig(**{**SMALL, **overrides})
    torch.manual_seed(seed_of(name))
    model = ArceeForCausalLM(config)
    # matrices ~ N(0, 0.15) at hidden 32, scaled by sqrt(32 / hidden) so wider models keep activations (and
    # logits) of the same size
    std = 0.15 * (SMALL["hidden_size"] / config.hidden_size) ** 0.5
    perturb_(model, torch.Generator().manual_seed(seed_of(name)), std=std)
    model.to(save_dtype).save_pretrained(folder)
    tok = tokenizer(VOCAB)
    assert len(tok) == VOCAB, len(tok)
    tok.save_pretrained(folder)


@torch.no_grad()
def expected_logits(folder: Path, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers' logits on ``ids``: float32 eager, and float64 with its float32 casts lifted."""
    out = {}
    for dtype in (torch.float32, torch.float64):
        model = ArceeForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval()
        with lifted_float32_casts() if dtype == torch.float64 else contextlib.nullcontext():
            out[f"logits_{str(dtype).replace('torch.', '')}"] = model(input_ids=ids).logits.contiguous()
    return out


def main() -> None:
    args, commit = fixture_arguments(__doc__, OUT)
    torch.set_num_threads(1)
    meta_cases = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (description, overrides, save_dtype, outtype, types) in CASES.items():
            case = args.out / name
            hf = case / "hf"
            build_checkpoint(name, overrides, save_dtype, hf)
            generator = torch.Generator().manual_seed(seed_of(name) + 1)
            ids = torch.randint(3, VOCAB, (1, SEQUENCE_LENGTH), generator=generator)
            save_file({"input_ids": ids, **expected_logits(hf, ids)}, str(case / "expected.safetensors"))
            source = Path(scratch) / f"{name}-{outtype}.gguf"
            convert(args.converter, hf, outtype, source)
            files, logits = {}, {}
            for kind in types:
                out = case / f"{name}-{kind}.gguf"
                if kind == outtype:
                    shutil.copyfile(source, out)
                else:
                    quantize(args.quantize, source, out, kind)
                files[kind] = out.name
                logits[kind] = torch.from_numpy(llama_cpp_logits(out, ids[0]))
                if kind == "F32":
                    logits["F32_flash"] = torch.from_numpy(llama_cpp_logits(out, ids[0], flash_attention=True))
            save_file({k: v.contiguous() for k, v in logits.items()}, str(case / "llama_cpp.safetensors"))
            meta_cases[name] = {"description": description, "checkpoint_dtype": str(save_dtype).replace("torch.", ""),
                                "converter_outtype": outtype, "files": files, "pure": sorted(set(types) & PURE),
                                "sequence_length": SEQUENCE_LENGTH,
                                "expected": "logits_float32: transformers float32 eager; logits_float64: transformers "
                                            "float64 eager with its float32 casts lifted (tests/torch_reference.py)",
                                "llama_cpp_logits": "flash attention off, F32 KV cache, 1 thread, no repacked "
                                                    "weight buffers; F32_flash: flash attention on"}
            print(f"{name}: {', '.join(files.values())}")
    write_meta(args, commit, "scripts/make_gguf_fixtures.py", "unknown -> gpt-2", meta_cases)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
