"""What the benchmark scripts share: percentiles and the memory of a process."""

from __future__ import annotations

from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else float("nan")


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's memory from /proc: ``VmRSS`` (now) or ``VmHWM`` (peak RSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")
