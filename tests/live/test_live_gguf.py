"""Live GGUF tests: random transformers checkpoints written as GGUF files, against transformers at run time.

Skipped unless torch and transformers import. Hypothesis draws the configs of the differential suite
(heads / KV heads / head_dim, biases, tied embeddings, activations, plain RoPE or YaRN with random explicit
parameters); each random model is saved with ``save_pretrained``, written as a GGUF the way llama.cpp's
converter does (``arcee_np.io.gguf_writer``, byte for byte the converter's output as tests/test_gguf.py
checks), and read back: with the checkpoint's config, the file's weights give transformers' float64 logits
(float32 casts lifted) to 1e-9; and gguf-check reports only settings the config really has and llama.cpp
really ignores.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_live_differential import SETTINGS, build_hf, configs, load_hf  # noqa: E402
from torch_reference import lifted_float32_casts  # noqa: E402

from arcee_np import ArceeConfig, ArceeForCausalLM  # noqa: E402
from arcee_np.io.gguf_writer import convert_checkpoint  # noqa: E402
from arcee_np.oracle.gguf_check import gguf_check  # noqa: E402

pytestmark = pytest.mark.live
IGNORED = {"attention_factor": ("attention_factor",), "beta_fast/beta_slow": ("beta_fast", "beta_slow"),
           "mscale/mscale_all_dim": ("mscale", "mscale_all_dim"), "truncate": ("truncate",)}


@SETTINGS
@given(cfg=configs(), seed=st.integers(0, 2**16), length=st.integers(1, 12))
def test_f32_gguf_gives_transformers_float64_logits(tmp_path_factory, cfg, seed, length):
    folder = tmp_path_factory.mktemp("hf")
    build_hf(cfg, seed).save_pretrained(folder)
    path = folder / "model-F32.gguf"
    convert_checkpoint(folder, path)
    ids = np.random.default_rng(seed).integers(0, cfg["vocab_size"], (1, length), dtype=np.int64)
    torch_model = load_hf(folder, torch.float64)
    with lifted_float32_casts(), torch.no_grad():
        expected = torch_model(input_ids=torch.from_numpy(ids)).logits.numpy()
    config = ArceeConfig.from_pretrained(folder)
    ours = ArceeForCausalLM.from_gguf(path, dtype="float64", config=config)(ids).logits
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)


@SETTINGS
@given(cfg=configs(), seed=st.integers(0, 2**16))
def test_gguf_check_reports_only_what_llama_cpp_ignores(tmp_path_factory, cfg, seed):
    folder = tmp_path_factory.mktemp("hf")
    build_hf(cfg, seed).save_pretrained(folder)
    path = folder / "model-Q8_0.gguf"
    convert_checkpoint(folder, path, "Q8_0")
    report = gguf_check(path, folder, length=8, llama_cpp=False)
    scaling = cfg["rope_parameters"]
    possible = {group for group, keys in IGNORED.items() if any(k in scaling for k in keys)}
    if cfg["hidden_act"] != "relu2":
        possible.add("hidden_act")
    found = {s.setting for s in report.settings if s.finding}
    assert found <= possible, (found, cfg)
    weights = [t for t in report.tensors if t.finding]
    assert not weights, [(t.name, t.problem) for t in weights]
    refused = [f for f in report.findings if "refuses the file" in f]
    assert bool(refused) == (cfg["attention_bias"] or cfg["mlp_bias"])
