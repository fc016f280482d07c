"""The HTTP server (cdc.runtime.http) against the real source, broker and a SQLite state store.

What an operator relies on: /metrics is Prometheus text; /readyz is 503 while any role is unready
and says which and why; the admin API refuses without the right token, is off without a token,
refuses writes while read-only, and explains a bad request; the status page is served whole.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from cdc.domain.errors import ConfigError
from cdc.mapping import Mapper, load_mappings
from cdc.runtime.config import load_settings
from cdc.runtime.health import Health
from cdc.runtime.http import AdminApp, serve
from cdc.runtime.monitor import Monitor
from cdc.state.store import SqlStateStore

TOKEN = "s3cret-admin-token"


def request(port: int, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=orjson.dumps(body) if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def server_for(tmp_path, source_server, amqp_url):
    """server_for(**admin) -> (port, health): a server whose monitor sampled the real services once."""
    started = []

    def start(**admin):
        settings = load_settings(None, source={"host": source_server["host"], "port": source_server["port"],
                                               "user": source_server["user"], "password": source_server["password"]},
                                 broker={"url": amqp_url}, state={"url": f"sqlite:///{tmp_path}/state.db"},
                                 metrics={"port": 0}, admin=admin)
        state = SqlStateStore(settings.state.url)
        mapper = Mapper(load_mappings(Path(__file__).resolve().parents[2] / "mappings"))
        health = Health()
        monitor = Monitor(settings, state, mapper, sinks=[], watch_source=True)
        monitor.sample()
        server = serve(AdminApp(settings, health, monitor, state, mapper), "127.0.0.1", 0)
        started.append((server, state))
        return server.server_port, health

    yield start
    for server, state in started:
        server.shutdown()
        state.close()


def test_metrics_and_probes(server_for):
    port, health = server_for(token=TOKEN)
    status, body = request(port, "/metrics")
    assert status == 200 and b"# TYPE cdc_source_lag_bytes gauge" in body

    assert request(port, "/healthz") == (200, b'{"status":"alive"}')
    assert request(port, "/readyz")[0] == 503  # no role registered yet: not ready

    unready = {"ok": False}
    health.register("reader", lambda: (True, "active"))
    health.register("sink:crm", lambda: (unready["ok"], "consuming" if unready["ok"] else "not connected to the broker"))
    status, body = request(port, "/readyz")
    assert status == 503
    assert orjson.loads(body)["roles"]["sink:crm"] == {"ready": False, "detail": "not connected to the broker"}
    unready["ok"] = True
    assert request(port, "/readyz")[0] == 200

    health.stopping.set()
    assert request(port, "/healthz")[0] == 503
    assert request(port, "/readyz")[0] == 503


def test_admin_api_needs_the_token(server_for):
    port, _ = server_for(token=TOKEN)
    status, body = request(port, "/api/status")
    assert status == 401 and b"Authorization: Bearer" in body
    assert request(port, "/api/status", token="wrong")[0] == 401

    status, body = request(port, "/api/status", token=TOKEN)
    assert status == 200
    report = orjson.loads(body)
    assert report["source"]["head"]["pos"] > 0 and report["source"]["lag_bytes"] >= 0
    assert len(report["history"]) == 1 and report["read_only"] is True
    status, body = request(port, "/api/offsets", token=TOKEN)
    assert status == 200 and orjson.loads(body)["source"]["name"] == "legacy"
    assert request(port, "/api/nothing", token=TOKEN)[0] == 404


def test_admin_api_is_off_without_a_token(server_for):
    port, _ = server_for()
    status, body = request(port, "/api/status", token="anything")
    assert status == 403 and b"admin.token" in body


def test_writes_are_refused_while_read_only(server_for):
    port, _ = server_for(token=TOKEN)
    status, body = request(port, "/api/snapshots", token=TOKEN, body={"table": "legacy.members"})
    assert status == 403 and b"admin.read_only: false" in body


def test_position_requests_are_refused_while_read_only(server_for):
    port, _ = server_for(token=TOKEN)
    status, body = request(port, "/api/offsets", token=TOKEN, body={"latest": True})
    assert status == 403 and b"admin.read_only: false" in body
    status, body = request(port, "/api/offsets", body={"latest": True})
    assert status == 401


def test_a_bad_position_request_is_explained(server_for):
    port, _ = server_for(token=TOKEN, read_only=False)
    status, body = request(port, "/api/offsets", token=TOKEN, body={"timestamp": "-1h", "latest": True})
    assert status == 400 and b"exactly one of" in body
    status, body = request(port, "/api/offsets", token=TOKEN, body={"target": "sink:crm", "latest": True})
    assert status == 400 and b"cdc replay --sink" in body
    status, body = request(port, "/api/offsets", token=TOKEN, body={"position": "nonsense"})
    assert status == 400 and b"FILE:POS" in body
    # No reader holds the source's lease here: nobody would apply it.
    status, body = request(port, "/api/offsets", token=TOKEN, body={"latest": True})
    assert status == 409 and b"no running reader" in body
    status, body = request(port, "/api/offsets/requests/42", token=TOKEN)
    assert status == 404


def test_a_bad_snapshot_request_is_explained(server_for):
    port, _ = server_for(token=TOKEN, read_only=False)
    status, body = request(port, "/api/snapshots", token=TOKEN, body={"table": "legacy.no_such_table"})
    assert status == 400 and b"has no mapping" in body and b"legacy.members" in body
    status, body = request(port, "/api/snapshots", token=TOKEN, body={"where": "id < 5"})
    assert status == 400 and b"db.table" in body


def test_the_status_page_is_self_contained(server_for):
    port, _ = server_for(token=TOKEN)
    status, page = request(port, "/status")
    assert status == 200 and b"<svg" in page and b"api/status" in page
    assert b"http://" not in page and b"https://" not in page  # no CDN, no external asset


def test_a_busy_port_is_a_clear_error(server_for):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = load_settings(None)
        with pytest.raises(ConfigError, match="metrics.port"):
            serve(AdminApp(settings, Health(), Monitor(settings, None, None, [], False)), "127.0.0.1", port)


# --- the console's API: charts, dead letters, snapshot cancel, audit by token name -------------------------

@pytest.fixture
def console(tmp_path, source_server, amqp_url):
    """A server with two named tokens, writes allowed, one memory sink whose DLQ holds two letters."""
    import uuid

    import pika

    from cdc.broker.topology import sink_dlq

    sink = f"mem_{uuid.uuid4().hex[:8]}"
    settings = load_settings(None, source={"host": source_server["host"], "port": source_server["port"],
                                           "user": source_server["user"], "password": source_server["password"]},
                             broker={"url": amqp_url}, state={"url": f"sqlite:///{tmp_path}/state.db"}, metrics={"port": 0},
                             sinks={sink: {"type": "memory"}},
                             admin={"tokens": {"alice": "alice-token", "bob": "bob-token"}, "read_only": False,
                                    "sample_interval_s": 1})
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.queue_declare(sink_dlq(sink), durable=True)
        for n in range(2):
            channel.basic_publish("", sink_dlq(sink), b"not an event",
                                  pika.BasicProperties(headers={"x-cdc-reason": "malformed event (cannot decode)"}, message_id=f"m{n}"))
    state = SqlStateStore(settings.state.url)
    mapper = Mapper(load_mappings(Path(__file__).resolve().parents[2] / "mappings"))
    monitor = Monitor(settings, state, mapper, sinks=[sink], watch_source=True)
    monitor.sample()
    time.sleep(1.05)  # the next second: a point of its own in the 1 s ring
    monitor.sample()
    server = serve(AdminApp(settings, Health(), monitor, state, mapper), "127.0.0.1", 0)
    yield server.server_port, state, sink, monitor
    server.shutdown()
    state.close()
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        conn.channel().queue_delete(sink_dlq(sink))


def test_the_series_hold_lag_and_rates_per_sink(console):
    port, _, sink, _ = console
    status, body = request(port, "/api/series?window=5m", "alice-token")
    assert status == 200
    series = orjson.loads(body)
    assert len(series["t"]) == 2 and series["window"] == "5m"
    assert set(series["gauges"]) == {"lag:source", f"lag:{sink}"} and f"applied:{sink}" in series["rates"]
    assert request(port, "/api/series?window=2d", "alice-token")[0] == 400
    assert request(port, "/api/series")[0] == 401


def test_dead_letters_are_grouped_and_purged_in_the_tokens_name(console):
    port, state, sink, monitor = console
    status, body = request(port, "/api/dlq", "bob-token")
    assert status == 200
    [queue] = [q for q in orjson.loads(body)["queues"] if q["sink"] == sink]
    assert queue["depth"] == 2 and queue["reasons"] == [{"reason": "malformed event (cannot decode)", "count": 2}]
    assert [m["id"] for m in queue["messages"]] == ["m0", "m1"]

    # Without a token, and with a wrong one: refused, nothing purged, nothing audited.
    assert request(port, "/api/dlq/purge", body={"sink": sink})[0] == 401
    assert request(port, "/api/dlq/purge", "nobody", body={"sink": sink})[0] == 401
    status, body = request(port, "/api/dlq/replay", "alice-token", body={"reader": True})
    assert status == 400 and b"only be purged" in body
    assert request(port, "/api/dlq/purge", "alice-token", body={"sink": "nope"})[0] == 400
    assert state.audit_log() == []

    status, body = request(port, "/api/dlq/purge", "alice-token", body={"sink": sink, "ids": ["m1"]})
    assert (status, orjson.loads(body)) == (200, {"purged": 1})
    [row] = state.audit_log()
    assert row["who"].startswith("admin API token alice from 127.0.0.1") and row["target"] == f"dlq:{sink}"
    assert "1 dead letters purged (ids m1)" in row["reason"]
    status, body = request(port, "/api/audit", "bob-token")
    assert status == 200 and orjson.loads(body)["audit"][0]["who"].startswith("admin API token alice")
    monitor.sample()
    [queue] = [q for q in orjson.loads(request(port, "/api/dlq", "bob-token")[1])["queues"] if q["sink"] == sink]
    assert queue["depth"] == 1 and [m["id"] for m in queue["messages"]] == ["m0"]


def test_a_snapshot_is_cancelled_in_the_tokens_name(console):
    port, state, _, monitor = console
    snapshot_id = state.snapshot_create("legacy", "legacy", "members", None, 100)
    import datetime as dt

    state.snapshot_update(snapshot_id, status="running", rows_done=40,
                          started_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=4))  # 10 rows/s
    monitor.sample()
    [snap] = orjson.loads(request(port, "/api/status", "bob-token")[1])["snapshots"]
    assert snap["rows_done"] == 40 and snap["progress"] == 0.4 and 9 <= snap["rows_per_s"] <= 10.5 and 5 <= snap["eta_s"] <= 7
    assert request(port, f"/api/snapshots/{snapshot_id}/cancel")[0] == 401
    status, body = request(port, f"/api/snapshots/{snapshot_id}/cancel", "bob-token", body={})
    assert status == 202 and orjson.loads(body)["status"] == "cancel_requested"
    assert state.snapshot_list("legacy")[0]["status"] == "cancel_requested"
    [row] = state.audit_log()
    assert row["who"].startswith("admin API token bob") and row["target"] == "snapshot:legacy.members"
    assert request(port, f"/api/snapshots/{snapshot_id}/cancel", "bob-token", body={})[0] == 409
    assert request(port, "/api/snapshots/999/cancel", "bob-token", body={})[0] == 404


def test_console_writes_are_refused_while_read_only(server_for):
    port, _ = server_for(token=TOKEN)
    for path, body in (("/api/dlq/purge", {"reader": True}), ("/api/dlq/replay", {"sink": "crm"}), ("/api/snapshots/1/cancel", {})):
        status, answer = request(port, path, token=TOKEN, body=body)
        assert status == 403 and b"admin.read_only: false" in answer, path
        assert request(port, path, body=body)[0] == 401, path


def test_the_token_is_never_taken_from_the_url(server_for):
    port, _ = server_for(token=TOKEN)
    assert request(port, f"/api/status?token={TOKEN}")[0] == 401
    status, page = request(port, "/status")
    assert b"sessionStorage" in page and b"Authorization" in page and b"replaceState" in page
