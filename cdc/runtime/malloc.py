"""glibc's allocator, set for a process that allocates and frees the same amounts all day.

Every event is serialised by orjson into a fresh buffer of about a kilobyte that glibc's ``malloc``
serves from the top of the heap; every chunk of a snapshot is thousands of them, freed together.
With glibc's defaults the heap's top shrinks and grows again all the time (``brk``: 15,600 calls
for 100,000 such events kept in chunks of 20,000, against 150 with the settings below), and
allocations above the mmap threshold get a fresh mapping each time. Measured on the development
machine, ``orjson.dumps`` of a small dict kept in a list went from 0.1 to 2.6 µs, and serialising
a snapshot's events, in the snapshot, from 3 to 8.5 µs each. Keeping up to 64 MiB of freed heap,
growing it 16 MiB at a time and serving blocks up to 32 MiB from the heap took a 1,000,000-row
snapshot from 26,500-29,000 to 34,600-39,200 rows/s with the same peak RSS
(``bench/bench_snapshot.py``); the reader, whose transactions are small, is unchanged.

An operator's own ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``MALLOC_MMAP_THRESHOLD_``
(glibc reads them at start-up) wins: cdc then leaves that setting alone. Other C libraries: nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("cdc.malloc")

# mallopt parameters (malloc.h) and cdc's values
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = (
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, 64 << 20),
    ("MALLOC_TOP_PAD_", M_TOP_PAD, 16 << 20),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, 32 << 20),
)


def tune_malloc() -> dict[str, int]:
    """Apply cdc's allocator settings to this process (glibc only); returns what was set, by glibc's
    environment variable name. Safe to call more than once and from any thread."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = {}
    for env, param, value in SETTINGS:
        if env in os.environ:
            continue  # the operator's choice
        if mallopt(param, value) == 1:
            applied[env] = value
        else:
            log.warning("glibc refused mallopt(%s, %s); the allocator keeps its default", env.rstrip("_"), value)
    return applied
