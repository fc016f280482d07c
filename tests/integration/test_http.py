"""The HTTP server (cdc.runtime.http) against the real source, broker and a SQLite state store.

What an operator relies on: /metrics is Prometheus text; /readyz is 503 while any role is unready
and says which and why; the admin API refuses without the right token, is off without a token,
refuses writes while read-only, and explains a bad request; the status page is served whole.
"""

from __future__ import annotations

import socket
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
