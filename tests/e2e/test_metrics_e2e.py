"""/metrics, /healthz, /readyz and the admin API of the real daemon process during a real run.

The outcome an operator cares about: the probes say ready once the reader streams and the sink
consumes; after writes to the source, the read / applied counters move by exactly the rows
written, the checkpoint position moves, lag and queue depth go back to zero, apply latency is
observed; a malformed message shows up as dead-lettered and in the DLQ depth; the admin API
answers only with the token and shows the same offsets.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import orjson
import pika
import pymysql
from e2e_support import Daemon, drop_world, make_world
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "e2e-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    status, body = get(port, "/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def insert_members(world, first_id: int, n: int) -> None:
    conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                           database=world["db"], autocommit=True)
    with conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO members (id, email, first_name, last_name, status) VALUES (%s, %s, 'Ada', 'Byron', 'A')",
            [(first_id + i, f"m{first_id + i}@example.org") for i in range(n)],
        )


def test_metrics_and_probes_move_during_a_real_run(tmp_path, source_server, pg_url, amqp_url, wait_until):
    port = free_port()
    world = make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml="snapshot: {mode: never}", http_port=port)
    sink = world["sink"]
    daemon = Daemon(world)
    daemon.start()
    try:
        wait_until(lambda: get(port, "/healthz")[0] == 200, timeout=30, message=f"/healthz\n{daemon.logs()}")
        wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=60, message=f"/readyz\n{daemon.logs()}")
        ready = orjson.loads(get(port, "/readyz")[1])
        assert set(ready["roles"]) == {"reader", f"sink:{sink}"}, ready
        assert ready["roles"]["reader"]["detail"].startswith("active")
        assert metric(port, "cdc_reader_active", source="e2e") == 1

        def position():
            return tuple(metric(port, "cdc_checkpoint_position", source="e2e", part=p) for p in ("file", "pos"))

        position_before = position()
        insert_members(world, 1, 40)

        wait_until(lambda: metric(port, "cdc_reader_events_total", source="e2e", entity="member", op="c") == 40,
                   timeout=30, message=f"40 member creates read\n{daemon.logs()}")
        wait_until(lambda: metric(port, "cdc_reader_published_total", source="e2e", entity="member", op="c") == 40,
                   timeout=30, message=f"40 member creates confirmed by the broker\n{daemon.logs()}")
        assert metric(port, "cdc_reader_confirmed_total", source="e2e") >= 40
        wait_until(lambda: metric(port, "cdc_sink_events_applied_total", sink=sink, entity="member", op="c") == 40,
                   timeout=30, message=f"40 member creates applied\n{daemon.logs()}")
        wait_until(lambda: position() > position_before, timeout=15, message="the checkpoint position to move")
        assert metric(port, "cdc_sink_apply_latency_seconds_count", sink=sink) >= 1
        assert metric(port, "cdc_sink_batch_seconds_count", sink=sink) >= 1
        wait_until(lambda: metric(port, "cdc_source_lag_bytes", source="e2e") == 0, timeout=15, message="lag bytes back to 0")
        wait_until(lambda: metric(port, "cdc_sink_queue_depth", sink=sink) == 0, timeout=15, message="queue drained")
        assert metric(port, "cdc_source_lag_seconds", source="e2e") < 5

        # A malformed message: dead-lettered with a reason, counted, and visible as DLQ depth.
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            conn.channel().basic_publish(f"cdc.e2e.{world['uid']}", "member.c", b"not an event")
        wait_until(lambda: metric(port, "cdc_sink_dead_lettered_total", sink=sink, reason="malformed", entity="unknown") == 1,
                   timeout=15, message="the malformed message dead-lettered")
        wait_until(lambda: metric(port, "cdc_sink_dlq_depth", sink=sink) == 1, timeout=15, message="DLQ depth 1")

        # The admin API: refused without the token, and agreeing with what the sink stored.
        assert get(port, "/api/status")[0] == 401
        assert get(port, "/api/status", token="wrong")[0] == 401
        status, body = get(port, "/api/offsets", token=TOKEN)
        assert status == 200
        offsets = orjson.loads(body)
        assert offsets["source"]["checkpoint"]["pos"] > 0
        assert offsets["sinks"][sink]["offset"]["version"] > 0
        status, body = get(port, "/api/status", token=TOKEN)
        report = orjson.loads(body)
        assert report["ready"] and report["sinks"][sink]["dlq_depth"] == 1 and report["history"]
        assert get(port, "/api/snapshots", token=TOKEN)[0] == 405  # GET; POST is refused while read-only

        assert daemon.terminate() == 0, daemon.logs()
        assert "e2e-token" not in daemon.logs()
    finally:
        daemon.stop_if_running()
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            conn.channel().queue_delete(f"cdc.sink.{sink}.dlq")
        drop_world(world)
