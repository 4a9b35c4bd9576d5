"""Independent tiles side by side on the CPU's cores: ``map_tiles(fn, tiles, xp)``.

NumPy runs a matrix product on every core (through its BLAS) but an elementwise pass (a maximum, a
subtraction, an ``exp``, the widening of a stored weight) on one. Tiled attention spends more than half of
its time in such passes, and a product with a weight widened per use a good part of its own; their tiles
(query tiles, tiles of weight rows) are independent of each other, so on NumPy they can run in threads,
one tile per BLAS thread, each thread's products limited to one BLAS thread (threads that each ask the
BLAS for every core slow each other down). NumPy releases the GIL inside its loops, so the threads really do run at
once. Each tile does the same arithmetic as in a plain loop; only the BLAS may split a product's work
differently with one thread than with several, so results agree with the plain loop to float32 rounding.

The number of threads is the BLAS's own (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` or the cores), so
a process limited to one thread runs the plain loop. CuPy and array_api_strict always get the plain loop:
a GPU runs one tile's passes on all its cores already.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

from array_api_compat import is_numpy_namespace
from threadpoolctl import ThreadpoolController

_controller = None  # the process's BLAS libraries, found on first use (a scan of the loaded libraries)
_pool = None
_pool_size = 0
_lock = threading.Lock()  # one map at a time: the BLAS thread limit is process-wide


def map_tiles(fn, tiles, xp):
    """``[fn(tile) for tile in tiles]``, computed in threads on NumPy (module docstring).

    fn: a function of one tile that touches no state shared with the other tiles (it may write its own
    part of an output array); tiles: the tiles' descriptions (e.g. their first query index); xp: the array
    namespace of the work. Returns the results in the order of ``tiles``.
    """
    tiles = list(tiles)
    if len(tiles) < 2 or not is_numpy_namespace(xp):
        return [fn(tile) for tile in tiles]
    with _lock:
        blas = _blas()
        workers = min(len(tiles), blas_threads(blas))
        if workers < 2:
            return [fn(tile) for tile in tiles]
        with blas.limit(limits=1):
            return list(_threads(workers).map(fn, tiles))


def blas_threads(blas=None):
    """How many threads the BLAS would use for one product (1 when no BLAS is found)."""
    blas = blas if blas is not None else _blas()
    return max([library.num_threads for library in blas.lib_controllers], default=1)


def _blas():
    """The controller of the BLAS libraries NumPy loaded."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.select(user_api="blas")


def _threads(workers):
    """A pool of ``workers`` threads, kept until another size is wanted."""
    global _pool, _pool_size
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="arcee_np-tiles"), workers
    return _pool
