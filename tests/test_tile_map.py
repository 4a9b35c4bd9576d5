"""map_tiles: independent tiles in threads on NumPy, each with a one-thread BLAS; the plain loop elsewhere."""

import threading

import array_api_strict
import numpy as np
import pytest

from arcee_np.blocks.tile_map import blas_threads, map_tiles

needs_two_blas_threads = pytest.mark.skipif(blas_threads() < 2, reason="the BLAS runs one thread here")


def test_results_come_in_the_order_of_the_tiles():
    assert map_tiles(lambda t: t * t, range(7), np) == [0, 1, 4, 9, 16, 25, 36]


@needs_two_blas_threads
def test_numpy_tiles_run_in_threads_with_a_one_thread_blas():
    before = blas_threads()
    seen = []
    map_tiles(lambda t: seen.append((threading.current_thread().name, blas_threads())), range(6), np)
    assert all(name.startswith("arcee_np-tiles") for name, _ in seen)
    assert {threads for _, threads in seen} == {1}
    assert blas_threads() == before  # restored afterwards


def test_other_namespaces_and_single_tiles_run_in_the_calling_thread():
    me = threading.current_thread().name
    names = map_tiles(lambda t: threading.current_thread().name, range(4), array_api_strict)
    assert names == [me] * 4
    assert map_tiles(lambda t: threading.current_thread().name, [0], np) == [me]


@needs_two_blas_threads
def test_threaded_products_equal_float64_products_to_float32_rounding():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 300, 200), dtype=np.float32), rng.standard_normal((200, 500), dtype=np.float32)
    threaded = map_tiles(lambda i: a[i] @ b, range(8), np)
    for i, got in enumerate(threaded):
        expected = a[i].astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
