"""Prometheus metrics of the service, in one registry. Labels never carry secrets or keys."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

events_read = Counter("cdc_reader_events_total", "Row events read from the binlog and mapped", ["source", "entity", "op"], registry=REGISTRY)
events_published = Counter("cdc_reader_published_total", "Events the broker confirmed, by entity and op",
                           ["source", "entity", "op"], registry=REGISTRY)
events_confirmed = Counter("cdc_reader_confirmed_total", "Events confirmed by the broker", ["source"], registry=REGISTRY)
txns_read = Counter("cdc_reader_transactions_total", "Source transactions read", ["source"], registry=REGISTRY)
reader_dead = Counter("cdc_reader_dead_lettered_total", "Rows the mapper could not convert, dead-lettered", ["source", "entity"], registry=REGISTRY)
values_nulled = Counter("cdc_values_nulled_total", "Stored values turned into null by a documented rule (docs/types.md), by "
                        "source table and column", ["source", "table", "column", "reason"], registry=REGISTRY)
reader_restarts = Counter("cdc_reader_restarts_total", "Stream reopenings after transient errors", ["source", "reason"], registry=REGISTRY)
source_lag_seconds = Gauge("cdc_source_lag_seconds", "Now minus the commit time of the last confirmed transaction", ["source"], registry=REGISTRY)
checkpoint_age_seconds = Gauge("cdc_checkpoint_age_seconds", "Seconds since the checkpoint was last persisted", ["source"], registry=REGISTRY)
checkpoint_position = Gauge("cdc_checkpoint_position", "Binlog file sequence and position of the checkpoint", ["source", "part"], registry=REGISTRY)

snapshot_rows = Counter("cdc_snapshot_rows_total", "Rows published by snapshots", ["source", "table"], registry=REGISTRY)
snapshot_rows_remaining = Gauge("cdc_snapshot_rows_remaining", "Rows a running snapshot still has to publish (estimate)", ["source", "table"], registry=REGISTRY)

# Sampled every admin.sample_interval_s by cdc.runtime.monitor (from the source server, the state store and the broker).
source_lag_bytes = Gauge("cdc_source_lag_bytes", "Binlog bytes between the checkpoint and the server's binlog head", ["source"], registry=REGISTRY)
reader_active = Gauge("cdc_reader_active", "1 while this process holds the source's reader lease", ["source"], registry=REGISTRY)
queue_depth = Gauge("cdc_sink_queue_depth", "Messages ready in a sink's queue(s)", ["sink"], registry=REGISTRY)
dlq_depth = Gauge("cdc_sink_dlq_depth", "Messages in a sink's dead-letter queue", ["sink"], registry=REGISTRY)
reader_dlq_depth = Gauge("cdc_reader_dlq_depth", "Messages in the reader's dead-letter queue", registry=REGISTRY)

sink_applied = Counter("cdc_sink_events_applied_total", "Events applied by a sink", ["sink", "entity", "op"], registry=REGISTRY)
sink_dead = Counter("cdc_sink_dead_lettered_total", "Events a sink dead-lettered", ["sink", "reason", "entity"], registry=REGISTRY)
sink_batch_seconds = Histogram(
    "cdc_sink_batch_seconds", "Time to apply one batch", ["sink"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
sink_lag_seconds = Gauge("cdc_sink_lag_seconds", "Now minus the source commit time of the newest applied event", ["sink"], registry=REGISTRY)
sink_apply_latency = Histogram(
    "cdc_sink_apply_latency_seconds", "From the reader publishing an event to a sink applying it (oldest event of each batch)", ["sink"],
    registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
sink_retries = Counter("cdc_sink_retries_total", "Batch retries after transient failures of the target", ["sink"], registry=REGISTRY)
sink_reconnects = Counter("cdc_sink_reconnects_total", "Broker reconnections of a sink worker", ["sink"], registry=REGISTRY)


class WorkerMetrics:
    """Adapter handed to sink workers (see cdc.sinks.worker.WorkerMetrics)."""

    def events_applied(self, sink: str, entity: str, op: str, n: int) -> None:
        sink_applied.labels(sink, entity, op).inc(n)

    def events_dead_lettered(self, sink: str, reason_kind: str, n: int, entity: str = "") -> None:
        sink_dead.labels(sink, reason_kind, entity or "unknown").inc(n)

    def batch_seconds(self, sink: str, seconds: float) -> None:
        sink_batch_seconds.labels(sink).observe(seconds)

    def apply_latency(self, sink: str, seconds: float) -> None:
        sink_apply_latency.labels(sink).observe(max(0.0, seconds))

    def retried(self, sink: str) -> None:
        sink_retries.labels(sink).inc()

    def reconnected(self, sink: str) -> None:
        sink_reconnects.labels(sink).inc()


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
