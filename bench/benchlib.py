"""What the benchmark scripts share: percentiles, the memory of a process, the scratch CRM database."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/crm_test"


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


def reset_peak_rss() -> bool:
    """Start this process's peak RSS (VmHWM) again from its current RSS, so that a later VmHWM is the
    peak of what ran in between (Linux 4.0+: writing 5 to /proc/self/clear_refs). False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def ensure_pg_database(url: str) -> str:
    """Create the PostgreSQL database of ``url`` if it does not exist (the test suite's own helper), so
    a benchmark runs on a fresh machine; exits with a clear message when PostgreSQL cannot be reached."""
    import psycopg

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pg_database import ensure_database

    try:
        return ensure_database(url)
    except psycopg.OperationalError as exc:
        where = url.rsplit("@", 1)[-1]
        raise SystemExit(f"PostgreSQL at {where} is not reachable ({exc}); "
                         "start the services with `bash deploy/dev-services.sh up` or pass --pg") from None
