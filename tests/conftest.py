"""Shared fixtures: small random Arcee models (norm weights and biases perturbed so they matter), tiny
attention tiles, and the hypothesis profiles of the fuzz tests: "plain" (a few seconds in all) by default,
"ci" (many more examples) when ARCEE_NP_FUZZ_PROFILE=ci (.ci/run sets it)."""

import contextlib
import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from arcee_np import ArceeConfig, ArceeForCausalLM
from arcee_np.oracle.tolerances import TOLERANCES, Tolerance

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]  # fixtures: tmp dirs
settings.register_profile("plain", max_examples=25, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("ci", max_examples=400, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("ARCEE_NP_FUZZ_PROFILE", "plain"))


def small_config(**overrides) -> ArceeConfig:
    """A tiny GQA config with YaRN, both kinds of bias and ids inside the vocabulary."""
    settings = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                    pad_token_id=0, attention_bias=True, mlp_bias=True,
                    rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})
    settings.update(overrides)
    return ArceeConfig(**settings)


def random_model(config=None, seed=0, cls=ArceeForCausalLM, **kwargs):
    """A model from_config with every norm weight and bias perturbed away from 1 / 0."""
    config = config or small_config()
    model = cls.from_config(config, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tensors = model.state_dict()
    for name, array in tensors.items():
        if name.endswith("norm.weight") or name.endswith(".bias"):
            tensors[name] = (array + rng.normal(0, 0.2, array.shape)).astype(np.float32)
    prefix = cls.prefix
    backbone = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    head = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    return cls(config, backbone, head, **kwargs)


@pytest.fixture
def model():
    return random_model()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@contextlib.contextmanager
def small_attention_tiles(queries: int = 3, keys: int = 5):
    """Run tiled attention with tiny tiles (``queries`` x ``keys``), so that the small test models' steps,
    which would fit one tile (and run eager), go through the online softmax over many tiles."""
    module = importlib.import_module("arcee_np.blocks.tiled_attention")
    saved = module.SCORE_TILE_ELEMENTS, module.QUERY_TILE, module.MIN_KEY_TILE
    module.SCORE_TILE_ELEMENTS, module.QUERY_TILE, module.MIN_KEY_TILE = 1, queries, keys
    try:
        yield
    finally:
        module.SCORE_TILE_ELEMENTS, module.QUERY_TILE, module.MIN_KEY_TILE = saved


def golden_tolerance(value) -> Tolerance:
    """The row of arcee_np's TOLERANCES that a golden fixture's tolerance is: a number (a max abs error, rtol 0)
    or ``[atol, rtol]``. A fixture whose numbers are in no row fails: the table is the one source."""
    atol, rtol = (value, 0.0) if np.isscalar(value) else value
    row = next((row for row in TOLERANCES.values() if (row.atol, row.rtol) == (atol, rtol)), None)
    assert row is not None, f"the fixture's tolerance {value} is no row of arcee_np.oracle.tolerances.TOLERANCES"
    return row

