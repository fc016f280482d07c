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
    GET  /api/series?window=5m|1h|24h  the charts' samples: lag per sink, events/s read and applied   token
    GET  /api/dlq         per dead-letter queue: depth, reasons grouped, a few messages (reason, key)    token
    POST /api/dlq/replay  {"sink": NAME, "ids": [...]}: re-apply dead letters (all without ids)       token, admin.read_only: false
    POST /api/dlq/purge   {"sink": NAME} or {"reader": true}, optional "ids": delete dead letters     token, admin.read_only: false
    POST /api/snapshots/ID/cancel   stop a requested or running snapshot                            token, admin.read_only: false
    GET  /api/audit       the last audit records (every write above is one, in its token's name)     token

The stdlib's threading WSGI server with prometheus-client's WSGI app: a handful of requests a
minute from Prometheus, kubelet probes and people needs no framework or extra dependency.
The token is ``admin.token`` (``CDC_ADMIN__TOKEN``, named "admin"), one of ``admin.tokens`` (by name)
or the first line of ``admin.token_file``, sent as ``Authorization: Bearer <token>`` and never taken
from a URL; without one configured the admin API answers 403. Every write is recorded in the audit
log with the name of the token that made it. Request lines are never logged (they may carry a token
by mistake).
"""

from __future__ import annotations

import hmac
import logging
import socketserver
import threading
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs
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
        self.tokens = settings.admin.named_tokens()  # name -> secret, read once (admin.token_file at start-up)
        self._dlq_cache: tuple[float, dict] | None = None
        self._dlq_lock = threading.Lock()

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
        """None when the request carries a configured token (its name then in ``environ["cdc.token_name"]``)."""
        if not self.tokens:
            missing = self.settings.admin.token_file
            hint = (f"; admin.token_file {missing} held no token when the daemon started (for the demo: run "
                    "`cdc demo console -c deploy/demo.yaml`, then restart the daemon)" if missing is not None else "")
            return 403, {"error": f"the admin API is off: set admin.token (or CDC_ADMIN__TOKEN) to enable it{hint}"}
        sent = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = sent.partition(" ")
        matched = None
        for name, secret in self.tokens.items():  # compare with every token: the time taken tells nothing
            if hmac.compare_digest(value.strip().encode(), secret.encode()) and scheme.lower() == "bearer":
                matched = name
        if matched is None:
            return 401, {"error": "missing or wrong token: send 'Authorization: Bearer <admin.token>'"}
        environ["cdc.token_name"] = matched
        return None

    def _who(self, environ: dict) -> str:
        return f"admin API token {environ.get('cdc.token_name', '?')} from {environ.get('REMOTE_ADDR', '?')}"

    def _audit(self, environ: dict, target: str, reason: str, from_value: str | None = None, to_value: str | None = None) -> None:
        try:
            self.state.record_audit(self._who(environ), target, from_value, to_value, reason)
        except Exception:  # noqa: BLE001 - the write happened; say loudly that its record is missing
            log.exception("admin API: cannot record the audit row of %s (%s)", target, reason)

    def _writes_refused(self) -> tuple[int, dict] | None:
        if self.settings.admin.read_only:
            return 403, {"error": "the admin API is read-only: set admin.read_only: false to allow writes"}
        return None

    def _api(self, path: str, method: str, environ: dict, start_response) -> list[bytes]:
        if path == "/api/status" and method == "GET":
            return _json(start_response, 200, dict(self.status(), token_name=environ.get("cdc.token_name")))
        if path == "/api/series" and method == "GET":
            return self._series(environ, start_response)
        if path == "/api/dlq" and method == "GET":
            return _json(start_response, 200, self.dead_letters())
        if path in ("/api/dlq/replay", "/api/dlq/purge") and method == "POST":
            return self._dlq_write(path.rsplit("/", 1)[1], environ, start_response)
        if path.startswith("/api/snapshots/") and path.endswith("/cancel") and method == "POST":
            return self._cancel_snapshot(path.split("/")[3], environ, start_response)
        if path == "/api/audit" and method == "GET":
            return _json(start_response, 200, {"audit": [{str(k): v for k, v in dict(row).items()} for row in self.state.audit_log(20)]})
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
        if path in ("/api/status", "/api/offsets", "/api/snapshots", "/api/series", "/api/dlq", "/api/dlq/replay",
                    "/api/dlq/purge", "/api/audit"):
            return _json(start_response, 405, {"error": f"{method} is not allowed on {path}"})
        return _json(start_response, 404, {"error": f"no such endpoint {path}; endpoints: /api/status, /api/series, /api/dlq, /api/offsets, /api/snapshots, /api/audit"})

    def status(self) -> dict[str, Any]:
        readiness = self.health.readiness()
        tables = sorted(f"{db}.{tbl}" for db, tbl in self.mapper.tables()) if self.mapper is not None else []
        return dict(self.monitor.snapshot(), roles=readiness.roles, ready=readiness.ready, tables=tables,
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
        from cdc.runtime.bootstrap import build_snapshotter

        where = body.get("where")
        if where is not None and not isinstance(where, str):
            return _json(start_response, 400, {"error": "\"where\" must be a string: an SQL condition, e.g. \"id BETWEEN 1 AND 500\""})
        snapshotter = build_snapshotter(self.settings, self.state, self.mapper)
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
        self._audit(environ, f"snapshot:{db}.{table}", f"POST /api/snapshots: snapshot {snapshot_id} requested", None, body.get("where"))
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
            requester = (f"admin API token {environ.get('cdc.token_name', '?')} ({str(body.get('who') or 'anonymous')[:100]} "
                         f"from {environ.get('REMOTE_ADDR', '?')})")
            request_id = ops.request_source_move(self.settings, self.state, ops.Target(**picked), requester,
                                                 str(body.get("reason") or "POST /api/offsets"))
        except (ValueError, TypeError) as exc:
            return _json(start_response, 400, {"error": f"expected JSON {expected}: {exc}"})
        except CdcError as exc:
            from cdc.admin import NoReader

            return _json(start_response, 409 if isinstance(exc, NoReader) else 400, {"error": str(exc)})
        log.info("admin API: position request %s for source %s", request_id, self.settings.source.name)
        self._audit(environ, f"source:{self.settings.source.name}", f"POST /api/offsets: position request {request_id}",
                    None, orjson.dumps(picked).decode())
        return _json(start_response, 202, {"id": request_id, "status": "requested",
                                           "poll": f"/api/offsets/requests/{request_id}"})


    # --- the console: charts, dead letters, snapshot cancel ----------------------------------------------

    def _series(self, environ: dict, start_response) -> list[bytes]:
        from cdc.runtime.samples import WINDOWS

        query = parse_qs(environ.get("QUERY_STRING", ""))
        window = (query.get("window") or ["5m"])[0]
        if window not in WINDOWS:
            return _json(start_response, 400, {"error": f"window must be one of {', '.join(WINDOWS)}, not {window!r}"})
        try:
            points = min(1000, max(2, int((query.get("points") or ["240"])[0])))
        except ValueError:
            return _json(start_response, 400, {"error": "points must be a number"})
        return _json(start_response, 200, dict(self.monitor.samples.window(WINDOWS[window], time.time(), points), window=window))

    def dead_letters(self, peek: int = 200, shown: int = 5) -> dict[str, Any]:
        """Per DLQ: depth, the reasons of the first ``peek`` grouped, the first ``shown`` messages (cached 3 s)."""
        with self._dlq_lock:
            if self._dlq_cache is not None and time.monotonic() - self._dlq_cache[0] < 3:
                return self._dlq_cache[1]
            from cdc.admin.dlq import list_letters

            sample = self.monitor.snapshot()
            queues = [(None, sample["source"].get("dlq_depth"))] if "dlq_depth" in sample["source"] else []
            queues += [(name, s.get("dlq_depth")) for name, s in sample["sinks"].items()]
            out = []
            for sink, depth in queues:
                entry: dict[str, Any] = {"queue": "reader" if sink is None else sink, "sink": sink, "depth": depth,
                                         "reasons": [], "messages": [], "peeked": 0,
                                         "replay": sink is not None}
                if depth:
                    try:
                        letters = list_letters(self.settings.broker.url.get_secret_value(), sink, peek)
                        reasons: dict[str, int] = {}
                        for letter in letters:
                            reasons[(letter.reason or "no reason given")[:300]] = reasons.get((letter.reason or "no reason given")[:300], 0) + 1
                        entry["reasons"] = [{"reason": r, "count": n} for r, n in sorted(reasons.items(), key=lambda x: -x[1])]
                        entry["messages"] = [d.summary() for d in letters[:shown]]
                        entry["peeked"] = len(letters)
                    except Exception as exc:  # noqa: BLE001 - shown in the card
                        from cdc.runtime.monitor import _describe

                        entry["error"] = _describe(exc)
                out.append(entry)
            result = {"queues": out, "sampled_at": sample["sampled_at"]}
            self._dlq_cache = (time.monotonic(), result)
            return result

    def _dlq_write(self, action: str, environ: dict, start_response) -> list[bytes]:
        from cdc.admin import dlq as ops

        refusal = self._writes_refused()
        if refusal:
            return _json(start_response, *refusal)
        try:
            body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            if not isinstance(body, dict):
                raise TypeError("not a JSON object")
            sink = body.get("sink")
            ids = body.get("ids") or None
            if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
                raise TypeError("ids must be a list of message ids")
            if sink is None and not body.get("reader"):
                raise ValueError('name the queue: "sink": NAME, or "reader": true')
            if sink is not None and sink not in self.settings.sinks:
                raise ValueError(f"no sink {sink!r}; sinks: {', '.join(self.settings.sinks)}")
            if action == "replay" and sink is None:
                raise ValueError("the reader's dead letters are rows the mapping refused: fix the mapping, then "
                                 "snapshot the table or update the rows; they can only be purged here")
        except (ValueError, TypeError) as exc:
            return _json(start_response, 400, {"error": f'expected JSON {{"sink": NAME}} or {{"reader": true}}, optional "ids": {exc}'})
        url = self.settings.broker.url.get_secret_value()
        target = f"dlq:{sink or 'reader'}"
        try:
            if action == "purge":
                count = ops.purge(url, sink, ids)
                result: dict[str, object] = {"purged": count}
                self._audit(environ, target, f"POST /api/dlq/purge: {count} dead letters purged" + (f" (ids {', '.join(ids)[:500]})" if ids else ""))
            else:
                from cdc.runtime.bootstrap import build_sink

                assert sink is not None  # the reader's dead letters are refused above: they can only be purged
                sink_obj = build_sink(sink, self.settings, self.mapper)
                sink_obj.open()
                try:
                    replayed = ops.replay_letters(url, sink_obj, ids)
                finally:
                    sink_obj.close()
                result = {"applied": len(replayed.applied), "rejected_again": len(replayed.rejected_again), "left": replayed.left,
                          "rejections": [{"id": i, "reason": r} for i, r in replayed.rejected_again[:20]]}
                self._audit(environ, target, f"POST /api/dlq/replay: {len(replayed.applied)} applied, "
                                             f"{len(replayed.rejected_again)} refused again")
        except CdcError as exc:
            return _json(start_response, 400, {"error": str(exc)})
        with self._dlq_lock:
            self._dlq_cache = None
        log.info("admin API: dlq %s of %s by token %s: %s", action, sink or "reader", environ.get("cdc.token_name"), result)
        return _json(start_response, 200, result)

    def _cancel_snapshot(self, raw_id: str, environ: dict, start_response) -> list[bytes]:
        refusal = self._writes_refused()
        if refusal:
            return _json(start_response, *refusal)
        if not raw_id.isdigit():
            return _json(start_response, 404, {"error": f"no snapshot {raw_id}"})
        snapshot_id = int(raw_id)
        [snap] = [s for s in self.state.snapshot_list(self.settings.source.name) if s["id"] == snapshot_id] or [None]
        if snap is None:
            return _json(start_response, 404, {"error": f"no snapshot {snapshot_id} of source {self.settings.source.name}"})
        if snap["status"] not in ("requested", "running"):
            return _json(start_response, 409, {"error": f"snapshot {snapshot_id} is {snap['status']}: nothing to cancel"})
        self.state.snapshot_update(snapshot_id, status="cancel_requested")
        self._audit(environ, f"snapshot:{snap['db']}.{snap['tbl']}", f"POST /api/snapshots/{snapshot_id}/cancel", snap["status"], "cancel_requested")
        log.info("admin API: cancel of snapshot %s requested by token %s", snapshot_id, environ.get("cdc.token_name"))
        return _json(start_response, 202, {"id": snapshot_id, "status": "cancel_requested"})


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
