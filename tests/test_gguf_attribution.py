"""gguf-check's attribution section: GGUF files of one checkpoint (llama.cpp's Q8_0 and its Q4_K request, which
falls back to Q5_0/Q5_1/Q8_0 on 32-wide rows; the kquants checkpoint's real Q4_K) attributed, set beside
their weights' SNR, and the HTML page with the check's tables."""

from pathlib import Path

import numpy as np
import pytest

from arcee_np.oracle.gguf_attribution import attribute_gguf, gguf_page, layer_lines, weight_snr_by_layer
from arcee_np.oracle.gguf_check import gguf_check

GGUF = Path(__file__).resolve().parent / "golden_gguf"


@pytest.mark.parametrize("case, kind", [("default_rope", "Q8_0"), ("default_rope", "Q4_K"), ("kquants", "Q4_K")])
def test_gguf_files_are_attributed_beside_their_weight_error(case, kind):
    path, reference = GGUF / case / f"{case}-{kind}.gguf", GGUF / case / "hf"
    ids = np.arange(5, 5 + 24)[None, :] % 200
    report = gguf_check(path, reference, ids, llama_cpp=False)
    result, reference_model, candidate = attribute_gguf(path, reference, ids)
    print(case, kind, result.summary())
    assert result.error > 0 and result.sites[-1].share == pytest.approx(1.0)
    layers = reference_model.config.num_hidden_layers
    snr = weight_snr_by_layer(report.tensors)
    assert sorted(snr) == list(range(layers)) and all(set(v) == {"attention", "mlp"} for v in snr.values())
    assert all(10 < db < 60 for v in snr.values() for db in v.values())
    lines = layer_lines(result, report.tensors)
    assert len(lines) == layers + 2 and "attn SNR dB" in lines[0] and "LM head" in lines[-1]
    assert sum(share for _, share in result.layer_increments()) == pytest.approx(1.0)


def test_the_gguf_page_holds_the_checks_tables(tmp_path):
    path, reference = GGUF / "kquants" / "kquants-Q4_K.gguf", GGUF / "kquants" / "hf"
    ids = np.arange(5, 5 + 16)[None, :]
    report = gguf_check(path, reference, ids, llama_cpp=False)
    result, reference_model, candidate = attribute_gguf(path, reference, ids)
    page = gguf_page(report, result, reference_model, candidate, ids)
    text = page.html
    for anchor in ("first-divergence", "attribution", "logit-lens", "gguf-check", "gguf-layers"):
        assert f'<section id="{anchor}">' in text
    assert "Q4_K" in text and "attn SNR dB" in text
    assert page.save(tmp_path / "gguf.html") < 5 * 2**20
