"""The worker's C allocator returns large freed blocks to the operating system at once.

glibc's malloc serves a block of at least its mmap threshold with its own mapping, unmapped
when freed; smaller blocks come from heaps that keep what is freed for reuse. The threshold
starts at 128 KiB and rises (up to 32 MiB) each time a mapped block is freed, so after the
first products of a model every per-parameter piece of a few MiB (a 768×768 float32 weight is
2.25 MiB) and every activation comes from the heaps; a Hessian-vector product frees hundreds
of them at different times, the heaps fragment, and the worker's resident memory climbs well
above what is alive (a 111M-parameter Llama: 4.60 GiB peak for one product, 3.18 GiB still
held after everything was freed). Fixing the threshold at `MMAP_THRESHOLD` keeps such blocks
mapped: the same product peaks at 3.85 GiB and drops to 1.31 GiB once freed
(docs/benchmarks.md), for one mapping and its page faults per block, small beside the
arithmetic on it. Other C libraries (musl, macOS) do nothing here.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: blocks of at least this many bytes get their own mapping, returned when freed
MMAP_THRESHOLD = 1 << 20

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def return_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (and trim the heap's top beyond it) for this process and
    the children it forks; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, 2 * threshold) == 1
