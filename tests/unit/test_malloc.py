"""cdc.runtime.malloc: the daemon keeps freed heap for reuse instead of giving it back to the kernel after
every chunk of events (the pages would be faulted in again by the next one), and leaves alone any
allocator setting the operator gave glibc through its own environment variables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's; other C libraries are left alone")

PROBE = r"""
import ctypes, json, orjson
from cdc.runtime.malloc import tune_malloc
applied = tune_malloc() if TUNE else {}

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
doc = {"after": {f"field_{i}": "x" * 20 for i in range(30)}}
for _ in range(3):  # chunks of events, serialised, kept until published, then freed together
    kept = [orjson.dumps(doc) for _ in range(20000)]
    del kept
print(json.dumps({"applied": applied, "kept_at_top": libc.mallinfo2().keepcost}))
"""


def _probe(tune: bool, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", PROBE.replace("TUNE", str(tune))], env=environ, check=True,
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.splitlines()[-1])


def test_freed_chunks_stay_in_the_heap_for_the_next_chunk() -> None:
    tuned, default = _probe(True), _probe(False)
    assert tuned["applied"] == {"MALLOC_TRIM_THRESHOLD_": 64 << 20, "MALLOC_TOP_PAD_": 16 << 20,
                                "MALLOC_MMAP_THRESHOLD_": 32 << 20}
    assert tuned["kept_at_top"] >= 16 << 20, tuned  # a chunk's worth of freed heap, ready for the next one
    assert default["kept_at_top"] < 1 << 20, default  # glibc's default: given back, faulted in again


def test_an_operators_own_glibc_setting_wins() -> None:
    got = _probe(True, MALLOC_TRIM_THRESHOLD_="131072")
    assert set(got["applied"]) == {"MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"}, got
