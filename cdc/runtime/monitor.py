"""Samples what the metrics and the status page show but no role computes by itself.

Every ``admin.sample_interval_s``: the binlog head and the checkpoint (lag in bytes and seconds),
each sink's offset, queue and DLQ depth (passive queue declarations on the broker), and running
snapshots' progress (with rows/s and ETA). The source's position and lag are kept for the last hour
in memory, and every sample also goes into a ``cdc.runtime.samples.SampleRing`` (lag per sink, events read
and applied per sink; 24 hours in bounded memory) for the status page's charts (a restarted process
starts a new history). Rates come from this process's own counters: a process that runs no reader
has no "read" series.

A failed sample of one part is recorded as that part's ``error`` and retried next time; it never
stops the daemon.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from cdc.broker.topology import READER_DLQ, sink_dlq, sink_queues
from cdc.domain.positions import Checkpoint
from cdc.runtime import metrics
from cdc.runtime.config import Settings
from cdc.runtime.samples import SampleRing
from cdc.runtime.tls import amqp_parameters

log = logging.getLogger("cdc.monitor")

HISTORY_S = 3600


class Monitor:
    def __init__(self, settings: Settings, state, mapper, sinks: list[str], watch_source: bool) -> None:
        self.settings = settings
        self.state = state
        self.mapper = mapper
        self.sink_names = sinks
        self.watch_source = watch_source
        self.interval = settings.admin.sample_interval_s
        self.history: collections.deque[dict] = collections.deque(maxlen=int(HISTORY_S / self.interval) + 1)
        self.samples = SampleRing(self.interval)
        self.latest: dict[str, Any] = {"sampled_at": None, "source": {}, "sinks": {}, "snapshots": []}
        self._sinks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._behind_since: float | None = None

    def run(self, stop: threading.Event) -> None:
        from cdc.runtime.logs import bind_role

        bind_role("monitor", self.settings.source.name)
        # Passive declarations of queues that do not exist yet (before the reader declared them) are
        # expected here; pika would log each as a warning.
        logging.getLogger("pika.channel").addFilter(_not_a_missing_queue)
        while True:
            self.sample()
            if stop.wait(self.interval):
                break
        for sink in self._sinks.values():
            sink.close()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest, history=list(self.history))

    def sample(self) -> None:
        out: dict[str, Any] = {"sampled_at": time.time(), "source": {}, "sinks": {}, "snapshots": []}
        checkpoint = None
        if self.watch_source:
            out["source"], checkpoint = self._sample_source()
            out["snapshots"] = self._sample_snapshots()
        depths = self._sample_queues()
        for name in self.sink_names:
            out["sinks"][name] = self._sample_sink(name, depths.get(name, {}), checkpoint)
        if "reader_dlq" in depths:
            out["source"]["dlq_depth"] = depths["reader_dlq"]
        gauges, counters = _series(out, self.settings.source.name)
        self.samples.add(out["sampled_at"], gauges, counters)
        with self._lock:
            self.latest = out
            if self.watch_source and "lag_bytes" in out["source"]:
                src = out["source"]
                self.history.append({"t": out["sampled_at"], "lag_seconds": src["lag_seconds"], "lag_bytes": src["lag_bytes"],
                                     "position": src["checkpoint"]["pos"] if src.get("checkpoint") else None})

    # --- parts ------------------------------------------------------------------------------------

    def _sample_source(self) -> tuple[dict, Checkpoint | None]:
        from cdc.runtime.bootstrap import build_binlog_reader

        name = self.settings.source.name
        out: dict[str, Any] = {"name": name}
        checkpoint = None
        try:
            checkpoint = self.state.load_checkpoint(name)
            out["checkpoint"] = checkpoint.model_dump() if checkpoint else None
            files = build_binlog_reader(self.settings).binlog_files()
            head_file, head_pos = files[-1]
            out["head"] = {"file": head_file, "pos": head_pos}
            lag_bytes = _bytes_behind(files, checkpoint)
            now = time.time()
            if lag_bytes == 0:
                self._behind_since = None
            elif self._behind_since is None:
                self._behind_since = now
            # Bounded by how long the checkpoint has been behind: after an idle hour, the first new
            # write does not make the reader look an hour late.
            lag_seconds = 0.0
            if lag_bytes and checkpoint is not None:
                lag_seconds = max(0.0, min(now - checkpoint.ts_ms / 1000, now - self._behind_since + self.interval))
            out.update(lag_bytes=lag_bytes, lag_seconds=round(lag_seconds, 3))
            metrics.source_lag_bytes.labels(name).set(lag_bytes)
        except Exception as exc:  # noqa: BLE001 - reported on the page and retried next sample
            out["error"] = _describe(exc)
        return out, checkpoint

    def _sample_snapshots(self) -> list[dict]:
        source = self.settings.source.name
        try:
            every = self.state.snapshot_list(source)
        except Exception as exc:  # noqa: BLE001
            return [{"error": _describe(exc)}]
        # Unfinished ones, and those that finished in the last 10 minutes (so that a page sees how they ended).
        recent = time.time() - 600
        running = [s for s in every if s["status"] in ("requested", "running", "cancel_requested")
                   or (s.get("finished_at") is not None and _epoch(s["finished_at"]) >= recent)]
        out = []
        for snap in running:
            table = f"{snap['db']}.{snap['tbl']}"
            done, total = snap["rows_done"] or 0, snap["rows_total"]
            remaining = max(0, total - done) if total is not None else None
            if remaining is not None:
                metrics.snapshot_rows_remaining.labels(source, table).set(remaining)
            rate, eta = _rate_eta(snap)
            out.append({"id": snap["id"], "table": table, "status": snap["status"], "rows_done": done,
                        "rows_total": total, "progress": round(done / total, 4) if total else None,
                        "where": snap.get("where_clause"), "rows_per_s": rate,
                        "eta_s": eta if snap["status"] in ("requested", "running") else None, "error": snap.get("error")})
        return out

    def _sample_queues(self) -> dict[str, Any]:
        import pika

        depths: dict[str, Any] = {}
        try:
            with pika.BlockingConnection(amqp_parameters(self.settings.broker.url.get_secret_value())) as conn:
                for name in self.sink_names:
                    shards = self.settings.sinks[name].shards
                    ready = [_depth(conn, q) for q in sink_queues(name, shards)]
                    depths[name] = {"queue_depth": sum(d for d in ready if d is not None),
                                    "dlq_depth": _depth(conn, sink_dlq(name))}
                if self.watch_source:
                    depths["reader_dlq"] = _depth(conn, READER_DLQ)
        except Exception as exc:  # noqa: BLE001
            return {name: {"queue_error": _describe(exc)} for name in self.sink_names}
        for name in self.sink_names:
            metrics.queue_depth.labels(name).set(depths[name]["queue_depth"])
            metrics.dlq_depth.labels(name).set(depths[name]["dlq_depth"] or 0)
        if depths.get("reader_dlq") is not None:
            metrics.reader_dlq_depth.set(depths["reader_dlq"])
        return depths

    def _sample_sink(self, name: str, depths: dict, checkpoint: Checkpoint | None) -> dict:
        out: dict[str, Any] = dict(depths)
        try:
            offset = self._sink(name).read_offset()
        except Exception as exc:  # noqa: BLE001
            self._sinks.pop(name, None)
            out["error"] = _describe(exc)
            return out
        out["offset"] = offset.model_dump() if offset else None
        # Behind only while messages wait: an idle sink whose last event is old is not lagging.
        behind = offset is not None and bool(out.get("queue_depth"))
        lag = max(0.0, time.time() - offset.ts_ms / 1000) if behind else 0.0
        out["lag_seconds"] = round(lag, 3)
        metrics.sink_lag_seconds.labels(name).set(lag)
        return out

    def _sink(self, name: str):
        if name not in self._sinks:
            from cdc.runtime.bootstrap import build_sink

            sink = build_sink(name, self.settings, self.mapper)
            sink.open()
            self._sinks[name] = sink
        return self._sinks[name]


def _series(sample: dict, source: str) -> tuple[dict[str, float | None], dict[str, float]]:
    """The chart series of one sample: lag gauges; events read and applied (this process's counters)."""
    gauges: dict[str, float | None] = {"lag:source": sample["source"].get("lag_seconds")}
    for name, sink in sample["sinks"].items():
        gauges[f"lag:{name}"] = sink.get("lag_seconds")
    counters: dict[str, float] = {}
    for metric in metrics.events_read.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("source") == source:
                counters["read"] = counters.get("read", 0.0) + s.value
    for metric in metrics.sink_applied.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("sink") in sample["sinks"]:
                key = f"applied:{s.labels['sink']}"
                counters[key] = counters.get(key, 0.0) + s.value
    for name in sample["sinks"]:
        counters.setdefault(f"applied:{name}", 0.0)
    return gauges, counters


def _epoch(value) -> float:
    import datetime as dt

    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _rate_eta(snap: dict) -> tuple[float | None, float | None]:
    """Rows per second from its start to its last progress, and the seconds left at that rate (as `cdc snapshot status`)."""
    import datetime as dt

    def aware(value: dt.datetime) -> dt.datetime:
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    started, updated, done = snap.get("started_at"), snap.get("updated_at"), snap.get("rows_done") or 0
    if started is None or updated is None or not done:
        return None, None
    rate = done / max((aware(updated) - aware(started)).total_seconds(), 1e-3)
    left = max((snap.get("rows_total") or 0) - done, 0)
    return round(rate, 1), round(left / rate, 1)


def _bytes_behind(files: list[tuple[str, int]], checkpoint: Checkpoint | None) -> int:
    """Binlog bytes from the checkpoint to the head (SHOW BINARY LOGS gives each file's size)."""
    if checkpoint is None:
        return sum(size for _, size in files)
    behind = 0
    for file, size in files:
        if file == checkpoint.file:
            behind += max(0, size - checkpoint.pos)
        elif file > checkpoint.file:  # binlog file names sort by their zero-padded sequence number
            behind += size
    return behind


def _depth(conn, queue: str) -> int | None:
    """Messages ready in ``queue``; None if it does not exist (yet)."""
    import pika.exceptions

    channel = conn.channel()
    try:
        return channel.queue_declare(queue=queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return None
    finally:
        if channel.is_open:
            channel.close()


def _not_a_missing_queue(record: logging.LogRecord) -> bool:
    return "NOT_FOUND - no queue" not in record.getMessage()


def _describe(exc: Exception) -> str:
    from cdc.domain.redact import redact_text

    return redact_text(f"{exc.__class__.__name__}: {exc}")[:500]
