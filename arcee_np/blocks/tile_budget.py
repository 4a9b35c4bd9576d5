"""How many numbers a tile of attention scores may hold on this machine: asked of the CPU's caches.

Tiled attention makes several passes over each tile of scores (the product that fills it, the row maximum,
the shift, the ``exp``, the product with the values); they are fastest when the tile stays in the core's L2
cache between them, so each pass reads the cache instead of memory. The budget is three quarters of one
core's L2 (each core runs its own query tile, blocks/tile_map.py), the rest left to the tiles of keys and
values. Linux states the cache sizes in ``/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}``
(glibc in ``os.sysconf``); when neither answers (another OS, a container that hides them), 1 MiB, the L2 of
a current x86 server core, is assumed.

The answer only chooses how the work is cut, never its result: tiled attention equals eager attention for
every tile size (tests/test_tiled_attention.py).
"""

import functools
import os

SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"
DEFAULT_CACHE_BYTES = {2: 1 << 20, 3: 16 << 20}  # one core's L2 and its share of L3, when the machine won't say
_SYSCONF = {2: "SC_LEVEL2_CACHE_SIZE", 3: "SC_LEVEL3_CACHE_SIZE"}
FLOAT_BYTES = 4  # scores are float32 (float64 in golden mode, whose tiles then take twice the bytes)


def parse_size(text):
    """A cache size as sysfs writes it (``"48K"``, ``"1024K"``, ``"32M"``, ``"512"``) in bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def sysfs_cache_bytes(level, root=SYSFS_CACHE):
    """One core's share of its data (or unified) cache at ``level`` from sysfs, or None when it is not
    stated. A cache shared by several CPUs (``shared_cpu_list``) is divided among them."""
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return None
    for entry in entries:
        folder = os.path.join(root, entry)
        try:
            with open(os.path.join(folder, "level")) as fh:
                found_level = int(fh.read())
            with open(os.path.join(folder, "type")) as fh:
                kind = fh.read().strip()
            with open(os.path.join(folder, "size")) as fh:
                size = parse_size(fh.read())
        except (OSError, ValueError):
            continue
        if found_level == level and kind in ("Data", "Unified") and size > 0:
            return size // _sharing_cpus(folder)
    return None


def _sharing_cpus(folder):
    """How many CPUs share the cache described in ``folder`` (1 when sysfs does not say)."""
    try:
        with open(os.path.join(folder, "shared_cpu_list")) as fh:
            text = fh.read().strip()
    except OSError:
        return 1
    count = 0
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return max(1, count)


def sysconf_cache_bytes(level):
    """The cache size glibc reports for ``level`` (whole cache, not per core), or None."""
    try:
        size = os.sysconf(_SYSCONF[level])
    except (ValueError, OSError, KeyError):
        return None
    return size if size > 0 else None


@functools.cache
def cache_bytes(level):
    """One core's bytes of cache at ``level`` (2 or 3): sysfs, else sysconf, else DEFAULT_CACHE_BYTES."""
    return sysfs_cache_bytes(level) or sysconf_cache_bytes(level) or DEFAULT_CACHE_BYTES[level]


def score_tile_elements(l2_bytes=None):
    """How many float32 scores a tile of tiled attention may hold: 3/4 of one core's L2 (``l2_bytes``,
    default: this machine's), at least 4096."""
    l2_bytes = cache_bytes(2) if l2_bytes is None else l2_bytes
    return max(4096, l2_bytes * 3 // 4 // FLOAT_BYTES)

