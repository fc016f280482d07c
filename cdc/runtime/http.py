"""The daemon's one HTTP server, on ``metrics.host:metrics.port``.

    GET  /metrics         Prometheus exposition (prometheus-client)            open
    GET  /healthz         liveness: 200 while the process runs                 open
    GET  /readyz          readiness of each role, 200 or 503 (cdc.runtime.health)      open
    GET  /status          the status page (its data comes from /api/status)    open, holds no data
    GET  /api/status      source position and lag (last hour), sinks, snapshots  token
    GET  /api/offsets     the source checkpoint and every sink's offset        token
    POST /api/snapshots   {"table": "db.table", "where": "..."}: request one   token, admin.read_only: false
    POST /api/offsets     {"timestamp": T} (or gtid, position, earliest, latest; "reason", "who"):
                          ask the running reader to move the source checkpoint   token, admin.read_only: false
    GET  /api/offsets/requests/ID   that request: requested, applying, done (from, to) or failed (error)   token

The stdlib's threading WSGI server with prometheus-client's WSGI app: a handful of requests a
minute from Prometheus, kubelet probes and people needs no framework or extra dependency.
The token is ``admin.token`` (``CDC_ADMIN__TOKEN``), sent as ``Authorization: Bearer <token>``;
without one configured the admin API answers 403. Request lines are never logged (they may carry
a token by mistake).
"""

from __future__ import annotations

import hmac
import logging
import socketserver
import threading
from importlib import resources
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from cdc.domain.errors import CdcError, ConfigError, TransientError
from cdc.runtime import metrics
from cdc.runtime.config import Settings
from cdc.runtime.health import Health
from cdc.runtime.monitor import Monitor

log = logging.getLogger("cdc.http")

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 503: "Service Unavailable"}


class AdminApp:
    def __init__(self, settings: Settings, health: Health, monitor: Monitor, state=None, mapper=None, roles=()) -> None:
        self.settings = settings
        self.health = health
        self.monitor = monitor
        self.state = state
        self.mapper = mapper
        self.roles = list(roles)
        self.metrics_app = make_wsgi_app(metrics.REGISTRY)
        self.page = resources.files("cdc.runtime.status_page").joinpath("index.html").read_bytes()

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if path == "/healthz":
            alive = self.health.alive()
            return _json(start_response, 200 if alive else 503, {"status": "alive" if alive else "stopping"})
        if path == "/readyz":
            readiness = self.health.readiness()
            return _json(start_response, 200 if readiness.ready else 503, {"ready": readiness.ready, "roles": readiness.roles})
        if path in ("/", "/status"):
            return _respond(start_response, 200, self.page, "text/html; charset=utf-8")
        if path.startswith("/api/"):
            refusal = self._refuse(environ)
            if refusal:
                return _json(start_response, *refusal)
            return self._api(path, method, environ, start_response)
        return _json(start_response, 404, {"error": f"no such path {path}; see /status, /metrics, /healthz, /readyz, /api/status"})

    def _refuse(self, environ: dict) -> tuple[int, dict] | None:
        token = self.settings.admin.token
        if token is None or not token.get_secret_value():
            return 403, {"error": "the admin API is off: set admin.token (or CDC_ADMIN__TOKEN) to enable it"}
        sent = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode()):
            return 401, {"error": "missing or wrong token: send 'Authorization: Bearer <admin.token>'"}
        return None

    def _api(self, path: str, method: str, environ: dict, start_response) -> list[bytes]:
        if path == "/api/status" and method == "GET":
            return _json(start_response, 200, self.status())
        if path == "/api/offsets" and method == "GET":
            sample = self.monitor.snapshot()
            sinks = {name: {"offset": s.get("offset"), "error": s.get("error")} for name, s in sample["sinks"].items()}
            return _json(start_response, 200, {"sampled_at": sample["sampled_at"],
                                               "source": {"name": self.settings.source.name,
                                                          "checkpoint": sample["source"].get("checkpoint")},
                                               "sinks": sinks})
        if path == "/api/snapshots" and method == "POST":
            return self._request_snapshot(environ, start_response)
        if path == "/api/offsets" and method == "POST":
            return self._request_move(environ, start_response)
        if path.startswith("/api/offsets/requests/") and method == "GET":
            row = self.state.position_request_get(int(path.rsplit("/", 1)[1])) if path.rsplit("/", 1)[1].isdigit() else None
            if row is None:
                return _json(start_response, 404, {"error": f"no position request {path.rsplit('/', 1)[1]}"})
            return _json(start_response, 200, row)
        if path in ("/api/status", "/api/offsets", "/api/snapshots"):
            return _json(start_response, 405, {"error": f"{method} is not allowed on {path}"})
        return _json(start_response, 404, {"error": f"no such endpoint {path}; endpoints: /api/status, /api/offsets, /api/snapshots"})

    def status(self) -> dict[str, Any]:
        readiness = self.health.readiness()
        return dict(self.monitor.snapshot(), roles=readiness.roles, ready=readiness.ready,
                    read_only=self.settings.admin.read_only, sample_interval_s=self.settings.admin.sample_interval_s)

    def _request_snapshot(self, environ: dict, start_response) -> list[bytes]:
        if self.settings.admin.read_only:
            return _json(start_response, 403, {"error": "the admin API is read-only: set admin.read_only: false to allow writes"})
        try:
            body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            db, _, table = str(body["table"]).partition(".")
            if not table:
                raise ValueError("name the table as db.table")
        except (ValueError, KeyError, TypeError) as exc:
            return _json(start_response, 400, {"error": f"expected JSON {{\"table\": \"db.table\", \"where\": \"...\"}}: {exc}"})
        from cdc.snapshot.snapshotter import Snapshotter
        from cdc.source.binlog_stream import BinlogReader

        where = body.get("where")
        if where is not None and not isinstance(where, str):
            return _json(start_response, 400, {"error": "\"where\" must be a string: an SQL condition, e.g. \"id BETWEEN 1 AND 500\""})
        snapshotter = Snapshotter(self.settings, self.state, self.mapper, BinlogReader(self.settings.source, self.mapper.tables()))
        try:
            snapshot_id = snapshotter.request(db, table, where)
        except TransientError as exc:  # the source (or the state store) cannot be reached: try again later
            return _json(start_response, 503, {"error": str(exc)})
        except CdcError as exc:
            return _json(start_response, 400, {"error": str(exc)})
        finally:
            try:
                snapshotter.close()
            except Exception:  # noqa: BLE001 - closing a connection that failed must not turn the answer into a 500
                log.debug("admin API: closing the snapshot request's connection failed", exc_info=True)
        log.info("admin API: snapshot %s of %s.%s requested", snapshot_id, db, table)
        return _json(start_response, 202, {"id": snapshot_id, "table": f"{db}.{table}"})


    def _request_move(self, environ: dict, start_response) -> list[bytes]:
        """Queue a move of the source checkpoint for the running reader (see cdc.admin.offsets); 202 with its id."""
        from cdc.admin import offsets as ops

        if self.settings.admin.read_only:
            return _json(start_response, 403, {"error": "the admin API is read-only: set admin.read_only: false to allow writes"})
        expected = '{"timestamp": "..."} (or "gtid", "position": "FILE:POS", "earliest": true, "latest": true; "reason", "who")'
        try:
            body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            if not isinstance(body, dict):
                raise TypeError("not a JSON object")
            target = str(body.get("target", "source"))
            if target.startswith("sink"):
                return _json(start_response, 400, {"error": "only the source is moved through the daemon; a sink is re-applied "
                                                            "from the event log while its worker runs: `cdc replay --sink NAME --from T`"})
            picked = {k: body[k] for k in ("gtid", "position", "timestamp") if body.get(k) is not None}
            picked |= {k: True for k in ("earliest", "latest") if body.get(k) is True}
            requester = f"admin API ({str(body.get('who') or 'anonymous')[:100]} from {environ.get('REMOTE_ADDR', '?')})"
            request_id = ops.request_source_move(self.settings, self.state, ops.Target(**picked), requester,
                                                 str(body.get("reason") or "POST /api/offsets"))
        except (ValueError, TypeError) as exc:
            return _json(start_response, 400, {"error": f"expected JSON {expected}: {exc}"})
        except CdcError as exc:
            from cdc.admin import NoReader

            return _json(start_response, 409 if isinstance(exc, NoReader) else 400, {"error": str(exc)})
        log.info("admin API: position request %s for source %s", request_id, self.settings.source.name)
        return _json(start_response, 202, {"id": request_id, "status": "requested",
                                           "poll": f"/api/offsets/requests/{request_id}"})


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # request lines could carry a token
        pass


def serve(app: AdminApp, host: str, port: int) -> WSGIServer:
    """Start serving in a daemon thread; ``server.shutdown()`` stops it."""
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics and the admin API on {host}:{port} ({exc.strerror}); "
                          "choose another metrics.port (CDC_METRICS__PORT) or stop what uses it") from None
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("http: serving /metrics, /healthz, /readyz, /status and /api on %s:%s", host, server.server_port)
    return server


def _json(start_response, status: int, body: Any) -> list[bytes]:
    return _respond(start_response, status, orjson.dumps(body, default=str), "application/json")


def _respond(start_response, status: int, body: bytes, content_type: str) -> list[bytes]:
    start_response(f"{status} {_REASONS.get(status, '')}", [
        ("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
    ])
    return [body]
