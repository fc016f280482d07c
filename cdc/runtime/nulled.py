"""Stored values that the canonical rules turn into null (docs/types.md: zero and invalid dates, YEAR 0):
documented, so not dead-lettered, but never silent. Each is counted in ``cdc_values_nulled_total``
and the first of each table and column is logged as a WARNING, from the stream and from snapshots."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from cdc.runtime import metrics

log = logging.getLogger("cdc.values")

ZERO_OR_INVALID_DATE = "zero_or_invalid_date"
_warned: set[tuple[str, str, str, str]] = set()
_lock = threading.Lock()


def report(source: str, counts: Counter[tuple[str, str, str]], how: str = "binlog") -> None:
    """``counts``: rows by (db, table, column) whose stored value became null; ``how``: what read them."""
    for (db, table, column), n in counts.items():
        name = f"{db}.{table}"
        metrics.values_nulled.labels(source, name, column, ZERO_OR_INVALID_DATE).inc(n)
        with _lock:
            first = (source, db, table, column) not in _warned
            _warned.add((source, db, table, column))
        if first:
            log.warning(
                "source %s: column %s of table %s holds zero or invalid dates (e.g. '0000-00-00', '2024-02-30', stored "
                "under a permissive sql_mode), replicated as null as docs/types.md says (first seen in the %s; every "
                "one is counted in cdc_values_nulled_total, this is logged once per column). To keep the dates, fix "
                "the rows at the source and snapshot them again (docs/runbook.md, 'Zero and invalid dates')",
                source, column, name, how, extra={"table": name, "column": column})
