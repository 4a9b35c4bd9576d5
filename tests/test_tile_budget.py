"""Tile sizes from the CPU's caches (blocks/tile_budget.py): read from a sysfs-shaped folder, divided among
the CPUs that share a cache, a safe default when the machine says nothing, and tiled attention equal to eager
whatever the cache size. No test reads this machine's own caches."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from arcee_np.blocks import StepMask, attention, causal_padding_mask, tiled_attention
from arcee_np.blocks.tiled_attention import fits_one_tile, tile_sizes

budget_module = importlib.import_module("arcee_np.blocks.tile_budget")


def write_cache(root, index, level, kind, size, shared="0"):
    folder = root / f"index{index}"
    folder.mkdir(parents=True)
    for name, text in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (folder / name).write_text(text + "\n")


@pytest.mark.parametrize("text, size", [("48K", 48 << 10), ("1024K", 1 << 20), ("32M", 32 << 20), ("512", 512),
                                        (" 2048K\n", 2 << 20)])
def test_parse_size_reads_sysfs_spellings(text, size):
    assert budget_module.parse_size(text) == size


def test_sysfs_gives_the_data_cache_of_a_level_per_core(tmp_path):
    """The L1 instruction cache is skipped; a cache shared by CPUs 0-3 and 8 is divided by 5."""
    write_cache(tmp_path, 0, 1, "Data", "48K")
    write_cache(tmp_path, 1, 1, "Instruction", "32K")
    write_cache(tmp_path, 2, 2, "Unified", "2048K")
    write_cache(tmp_path, 3, 3, "Unified", "40M", shared="0-3,8")
    assert budget_module.sysfs_cache_bytes(1, str(tmp_path)) == 48 << 10
    assert budget_module.sysfs_cache_bytes(2, str(tmp_path)) == 2 << 20
    assert budget_module.sysfs_cache_bytes(3, str(tmp_path)) == (40 << 20) // 5


def test_sysfs_that_says_nothing_gives_none(tmp_path):
    assert budget_module.sysfs_cache_bytes(2, str(tmp_path / "absent")) is None
    write_cache(tmp_path, 0, 2, "Unified", "not a size")
    assert budget_module.sysfs_cache_bytes(2, str(tmp_path)) is None


def test_a_machine_that_says_nothing_gets_the_default(monkeypatch, tmp_path):
    monkeypatch.setattr(budget_module, "SYSFS_CACHE", str(tmp_path / "absent"))
    monkeypatch.setattr(budget_module, "sysfs_cache_bytes", lambda level: None)
    monkeypatch.setattr(budget_module, "sysconf_cache_bytes", lambda level: None)
    budget_module.cache_bytes.cache_clear()
    try:
        assert budget_module.cache_bytes(2) == budget_module.DEFAULT_CACHE_BYTES[2]
    finally:
        budget_module.cache_bytes.cache_clear()


@pytest.mark.parametrize("l2, elements", [(1 << 20, 196608), (2 << 20, 393216), (512 << 10, 98304), (1024, 4096)])
def test_score_tiles_take_three_quarters_of_l2(l2, elements):
    assert budget_module.score_tile_elements(l2) == elements


@pytest.mark.parametrize("l2", [4 << 10, 64 << 10, 512 << 10, 1 << 20, 2 << 20, 32 << 20])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_attention_equals_eager_for_any_cache_size(l2, dtype):
    """The tiles a machine with this L2 would use, on a GQA problem with padding and a cache: eager's result
    to float32 rounding (float64: 1e-12)."""
    rng = np.random.default_rng(7)
    batch, heads, kv, length, past, head_dim = 2, 6, 2, 150, 40, 16
    q = rng.normal(size=(batch, heads, length, head_dim)).astype(dtype)
    k, v = (rng.normal(size=(batch, kv, past + length, head_dim)).astype(dtype) for _ in range(2))
    key_mask = np.ones((batch, past + length), dtype=np.int64)
    key_mask[1, :13] = 0
    budget = budget_module.score_tile_elements(l2)
    query_tile, key_tile = tile_sizes(batch, heads, length, past + length, budget)
    expected, _ = attention(q, k, v, causal_padding_mask(key_mask, length, dtype), head_dim**-0.5)
    step = StepMask(key_mask, None, None, past, length, dtype)
    got, _ = tiled_attention(q, k, v, step, head_dim**-0.5, query_tile=query_tile, key_tile=key_tile)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)


def test_tile_sizes_follow_the_budget():
    """The 125M model's prefill (12 heads): 64 queries and as many keys as the budget holds, at least 64."""
    assert tile_sizes(1, 12, 16384, 16384, budget=196608) == (64, 256)
    assert tile_sizes(1, 12, 16384, 16384, budget=393216) == (64, 512)
    assert tile_sizes(1, 12, 16384, 16384, budget=4096) == (64, 64)
    assert tile_sizes(1, 12, 20, 30, budget=196608) == (20, 30)
    assert fits_one_tile(1, 12, 1, 16384, budget=196608) and not fits_one_tile(1, 12, 1, 16385, budget=196608)
