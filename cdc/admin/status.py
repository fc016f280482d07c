"""What `cdc status` reports: per source and per sink, position, lag and backlog.

Source: the checkpoint (GTID set and file:position), the binlog head, lag in bytes (binlog bytes
between the two) and in seconds (now minus the checkpoint's commit time, 0 when at the head).
Sinks: the sink's own offset, its queue depth and DLQ depth, the pending replay start, who runs
it, and lag: 0 when its queue is empty, else now minus the commit time of its newest applied event.
"""

from __future__ import annotations

import time
from typing import Any

from cdc.admin.offsets import describe_start, sink_leases
from cdc.broker.topology import event_log, sink_dlq, sink_queues
from cdc.domain.envelope import binlog_file_seq
from cdc.domain.errors import CdcError
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import Settings
from cdc.state.lease import Leases, reader_lease


def lag_bytes(checkpoint: Checkpoint, head: Checkpoint, files: list[tuple[str, int]]) -> int:
    """Binlog bytes from ``checkpoint`` to ``head`` (files in between counted whole)."""
    if checkpoint.file == head.file:
        return max(0, head.pos - checkpoint.pos)
    start, end = binlog_file_seq(checkpoint.file), binlog_file_seq(head.file)
    total = 0
    for name, size in files:
        seq = binlog_file_seq(name)
        if seq == start:
            total += max(0, size - checkpoint.pos)
        elif start < seq < end:
            total += size
    return total + head.pos


def source_status(settings: Settings, state, reader) -> dict[str, Any]:
    checkpoint = state.load_checkpoint(settings.source.name)
    holder = Leases(state).holder(reader_lease(settings.source.name))
    out: dict[str, Any] = {"name": settings.source.name, "checkpoint": checkpoint.model_dump() if checkpoint else None,
                           "reader": holder.owner if holder else None, "head": None, "lag_bytes": None, "lag_seconds": None}
    try:
        head = reader.head_position()
        files = reader.binlog_files()
    except CdcError as exc:
        out["error"] = str(exc)
        return out
    out["head"] = head.model_dump()
    if checkpoint is not None:
        out["lag_bytes"] = lag_bytes(checkpoint, head, files)
        at_head = out["lag_bytes"] == 0
        out["lag_seconds"] = 0.0 if at_head or not checkpoint.ts_ms else round(max(0.0, time.time() - checkpoint.ts_ms / 1000), 1)
    return out


def sink_status(settings: Settings, state, name: str, offset: Any, broker) -> dict[str, Any]:
    config = settings.sinks[name]
    leases = Leases(state)
    owners = [h.owner for h in (leases.holder(n) for n in sink_leases(settings, name)) if h]
    out: dict[str, Any] = {"offset": None, "error": None, "queue_depth": None, "dlq_depth": None, "lag_seconds": None,
                           "replay_from": describe_start(state.load_sink_rewind(name)), "workers": owners}
    if isinstance(offset, str):
        out["error"] = offset
    elif offset is not None:
        out["offset"] = offset.model_dump()
    if broker is not None:
        depths = [broker.depth(q) for q in sink_queues(name, config.shards)]
        out["queue_depth"] = None if all(d is None for d in depths) else sum(d or 0 for d in depths)
        out["dlq_depth"] = broker.depth(sink_dlq(name))
        if out["queue_depth"] == 0:
            out["lag_seconds"] = 0.0
        elif out["queue_depth"] and out["offset"]:
            out["lag_seconds"] = round(max(0.0, time.time() - out["offset"]["ts_ms"] / 1000), 1)
    return out


def event_log_status(settings: Settings, broker) -> dict[str, Any]:
    return {"queue": event_log(settings.broker.exchange), "retention": settings.broker.event_log_max_age,
            "exists": broker is not None and broker.depth(event_log(settings.broker.exchange)) is not None}
