"""The reader role: binlog -> mapper -> publisher, checkpointing confirmed transaction boundaries.

Delivery is at-least-once: a transaction's end position becomes the checkpoint only once the
broker has confirmed every message of it and of every earlier transaction. On any transient
failure the stream and the publisher are rebuilt and reading resumes from the last confirmed
boundary; what was published but unconfirmed is published again, which the sinks' version
guard makes harmless.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson

from cdc.broker.publisher import OutMessage, Publisher, group_events
from cdc.broker.topology import OPS
from cdc.domain.boundary import HEARTBEAT_KEY, TXN_BEGIN_KEY, TXN_END_KEY, heartbeat_event, transaction_event
from cdc.domain.envelope import binlog_file_seq, encode, key_string, now_ms, utc_now
from cdc.domain.errors import CheckpointLost, StreamInterrupted, TransientError
from cdc.domain.positions import Checkpoint
from cdc.mapping import Mapper
from cdc.runtime import metrics
from cdc.runtime.config import Settings
from cdc.runtime.nulled import report as report_nulled
from cdc.snapshot.snapshotter import ChunkDone
from cdc.source.binlog_stream import ServerInfo, SourceTxn, Tick
from cdc.source.change_events import DeadRow, build_events, build_truncate_events, too_large
from cdc.source.schema_history import SchemaHistory
from cdc.state.store import StateStore

log = logging.getLogger("cdc.pipeline")

PublisherFactory = Callable[[Callable[[Any], None]], Publisher]


class BinlogSource(Protocol):
    """What the pipeline reads from (cdc.source.binlog_stream.BinlogReader; tests/unit/fakes.py)."""

    def preflight(self) -> ServerInfo: ...

    def start_position(self, checkpoint: Checkpoint | None, published: Checkpoint | None = None) -> Checkpoint: ...

    def head_position(self) -> Checkpoint: ...

    def transactions(self, start: Checkpoint, stop: threading.Event, ticks: bool = False,
                     published: Checkpoint | None = None) -> Iterator[SourceTxn | Tick]: ...

    def interrupt(self) -> None: ...


class Snapshots(Protocol):
    """The snapshots the pipeline runs beside the stream (cdc.snapshot.snapshotter.Snapshotter)."""

    server_id: int

    def plan_all(self) -> list: ...

    def pump(self, position: Checkpoint, publisher: Any) -> None: ...

    def on_tick(self, position: Checkpoint, publisher: Any, tick: Tick | None = None) -> None: ...

    def on_txn(self, txn: SourceTxn, position: Checkpoint, publisher: Any) -> None: ...

    def on_confirmed(self, token: ChunkDone) -> None: ...

    def persist(self) -> None: ...

    def close(self) -> None: ...


class ReaderPipeline:
    """The reader's loop over parts built elsewhere (cdc.runtime.bootstrap.build_pipeline; the unit tests
    pass fakes): ``source`` the binlog stream, ``snapshots`` the snapshotter beside it, ``publisher_factory``
    a new publisher per run given the confirm callback, ``declare_topology`` what must exist on the broker
    before the first publish, ``state`` the checkpoints, position requests and audit, ``mapper`` rows to
    change events; ``settings`` for the source's name and databases, ``snapshot.mode`` and the broker's
    limits (and the position requests' targets, cdc.admin.offsets.source_target)."""

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        mapper: Mapper,
        publisher_factory: PublisherFactory,
        *,
        source: BinlogSource,
        snapshots: Snapshots,
        schema_history: SchemaHistory,
        declare_topology: Callable[[], None],
        checkpoint_interval_s: float = 0.2,
        request_poll_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.source = settings.source.name
        self.state = state
        self.mapper = mapper
        self.publisher_factory = publisher_factory
        self.checkpoint_interval_s = checkpoint_interval_s
        self.reader = source
        self.snapshots = snapshots
        self.schema_history = schema_history
        self._declare_topology = declare_topology
        self.confirmed: Checkpoint | None = state.load_checkpoint(self.source)
        self.persisted: Checkpoint | None = self.confirmed
        # The end of the last transaction handed to the broker: the sinks may hold versions up to it, above the
        # checkpoint. Saved with each checkpoint, so that a server that numbers its binlog anew is caught
        # even where its positions pass the checkpoint's (reader.check_available, reader.transactions).
        self.published: Checkpoint | None = state.load_published(self.source)
        self.persisted_published: Checkpoint | None = self.published
        self.persisted_at = time.monotonic()
        self.read_position: Checkpoint | None = None
        self.events_read = 0
        self.events_confirmed = 0
        self._confirm_lock = threading.Lock()
        self._persist_lock = threading.Lock()  # one checkpoint write at a time (checkpointer thread, reader thread)
        self._txn_events = 0  # events already published of a transaction handed over in segments
        self._boundaries = _TxnBoundaries()  # events.transactions: the transaction being published
        self._server_id = 0
        self._heartbeat_due = 0.0  # monotonic time of the next heartbeat (events.heartbeats)
        self._last_commit_ts_ms: int | None = None
        self._in_flight: collections.deque[collections.Counter] = collections.deque()  # per publish(), by routing key
        self.guard: Callable[[], bool] | None = None  # False once this reader lost its lease
        self.owner = "reader"  # who applies position requests (the daemon sets its lease owner)
        self.request_poll_s = request_poll_s
        self._requests_checked = 0.0

    # ------------------------------------------------------------------ run loop
    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set. Raises only on terminal errors (bad setup, lost checkpoint)."""
        delay = 0.5
        checkpointer = threading.Thread(target=self._checkpoint_loop, args=(stop,), name="checkpointer", daemon=True)
        checkpointer.start()
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self._run_once(stop)
                except TransientError as exc:
                    if stop.is_set():
                        break  # the shutdown closed the stream
                    reason = "stream" if isinstance(exc, StreamInterrupted) else "transient"
                    metrics.reader_restarts.labels(self.source, reason).inc()
                    if time.monotonic() - started > 30:
                        delay = 0.5
                    log.warning("reader: %s; resuming from %s in %.1fs", exc, self._describe(self.confirmed), delay)
                    stop.wait(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            stop.set()
            checkpointer.join(timeout=5)
            self._persist_if_possible()

    def _run_once(self, stop: threading.Event) -> None:
        server = self.reader.preflight()
        self.snapshots.server_id = server.server_id
        self._server_id = server.server_id
        self._txn_events = 0
        self._boundaries = _TxnBoundaries()  # a transaction cut by a reconnect is read again from its start
        self._heartbeat_due = time.monotonic() + self.settings.events.heartbeats.interval_s
        self._release_orphaned_requests()
        try:
            start = self.reader.start_position(self.confirmed, self.published)
        except CheckpointLost as exc:
            if self.settings.snapshot.mode != "when_needed":
                raise
            start = self._recover_lost_checkpoint(exc)
        if self.confirmed is None:
            # Nothing is pending before the starting point: it is a valid checkpoint at once. The snapshots are
            # planned first (every table checked and counted) and saved with it in one transaction: a start that
            # fails before (a table without a key, a COUNT past read_timeout_s, a SIGKILL) leaves no checkpoint,
            # so the next start snapshots again instead of streaming on without the rows already there.
            planned = []
            if self.settings.snapshot.mode != "never" and not self.state.snapshot_list(self.source):
                planned = self.snapshots.plan_all()
            ids = self._save_first_checkpoint(start, planned)
            if planned:
                log.info("reader: no checkpoint yet; snapshotting every mapped table (snapshots %s)", ids)
        log.info("reader: source %s (%s, server_id %s) from %s", self.source, server.version, server.server_id, start.describe())
        self._declare_topology()
        self.publisher = self.publisher_factory(self._on_confirmed)  # self.publisher: readiness
        self.publisher.start()
        self._in_flight.clear()
        publisher = _Counting(self.publisher, self._in_flight)
        try:
            position = start
            request = None
            self.snapshots.pump(position, publisher)
            transactions = self.reader.transactions(start, stop, ticks=True, published=self.published)
            for txn in transactions:
                if isinstance(txn, Tick):
                    self.snapshots.on_tick(position, publisher, txn)
                    self._heartbeat(publisher, position, txn.position)
                else:
                    messages = self._messages(txn, server.server_id)
                    if txn.partial:  # a segment of a large transaction: no checkpoint inside it
                        publisher.publish(messages, None)
                    else:
                        publisher.publish(messages, txn.end)
                        self.read_position = position = txn.end
                        if self.published is None or _sorts_after(txn.end, self.published):  # not when read again
                            self.published = txn.end
                    self.snapshots.on_txn(txn, position, publisher)
                    if txn.partial:
                        continue
                    self._last_commit_ts_ms = txn.ts * 1000
                    self._heartbeat(publisher, position, None)
                request = self._pending_position_request()  # at a transaction boundary only
                if request is not None:
                    break
            transactions.close()
            if request is not None and not stop.is_set():
                self.apply_position_request(request)
                return  # run() reopens the stream from the (new) checkpoint
            if stop.is_set():
                if not self.publisher.flush(self.settings.broker.confirm_timeout_s):
                    log.warning("reader: shutting down with unconfirmed messages; they will be read again on restart")
        finally:
            self.publisher.close()
            self.snapshots.close()
            self._persist_if_possible()

    # ------------------------------------------------------------------ operator's position requests
    def _pending_position_request(self) -> dict | None:
        """The oldest position request for this source (cdc.admin.offsets), checked every ``request_poll_s``."""
        now = time.monotonic()
        if now - self._requests_checked < self.request_poll_s:
            return None
        self._requests_checked = now
        try:
            pending = self.state.position_request_list(f"source:{self.source}", ("requested",))
        except Exception:  # the state store is down for a moment: ask again later
            log.exception("reader: cannot read position requests; asking again later")
            return None
        return pending[0] if pending else None

    def _release_orphaned_requests(self) -> None:
        """A request left ``applying`` by a reader that died while applying it is taken up again."""
        try:
            for request in self.state.position_request_list(f"source:{self.source}", ("applying",)):
                self.state.position_request_transition(request["id"], "applying", "requested")
        except Exception:  # the state store is down for a moment: the next start tries again
            log.exception("reader: cannot release position requests left by a dead reader")

    def apply_position_request(self, request: dict) -> None:
        """Move the checkpoint as the operator asked: drain, checkpoint, resolve, save, audit, report.

        Called at a transaction boundary with the stream stopped; the caller reopens the stream from
        ``self.confirmed``. A target the server cannot serve fails the request (with the reason) and
        the reader goes on from where it was."""
        from cdc.admin import PositionError
        from cdc.admin import offsets as ops

        rid, target = request["id"], f"source:{self.source}"
        if self.guard is not None and not self.guard():
            return  # fenced: the reader that holds the lease will take it
        if not self.state.position_request_transition(rid, "requested", "applying", applied_by=self.owner):
            return  # cancelled by its requester meanwhile
        if not self.publisher.flush(self.settings.broker.confirm_timeout_s):
            self.state.position_request_transition(rid, "applying", "requested")
            raise TransientError("the broker did not confirm what was published before a position request; "
                                 "retrying the request after reconnecting")
        self.persist()
        with self._confirm_lock:
            before = self.confirmed
        was = before.describe() if before else None
        try:
            new = ops.source_target(self.settings, ops.target_from_spec(orjson.loads(request["spec"])))
        except Exception as exc:  # noqa: BLE001 - any failure is the request's, reported to its requester
            error = str(exc) or exc.__class__.__name__
            kind = "position" if isinstance(exc, PositionError) else "failed"
            self.state.position_request_transition(rid, "applying", "failed", error=error, error_kind=kind,
                                                   from_value=was, finished_at=utc_now())
            log.warning("reader: position request %s from %s refused: %s; streaming on from %s", rid, request["who"],
                        error, self._describe(before))
            return
        if self.guard is not None and not self.guard():
            self.state.position_request_transition(rid, "applying", "requested")
            return
        with self._persist_lock:  # the checkpointer thread must not write the old position over the new one
            with self._confirm_lock:
                self.confirmed = new
            # The operator chose where the sinks' history goes on (a rebuild after a renumbered binlog too).
            self.state.save_published(self.source, None)
            self.published = self.persisted_published = None
            self.state.save_checkpoint(self.source, new)
            self.persisted, self.persisted_at, self.read_position = new, time.monotonic(), None
        self.state.record_audit(request["who"], target, was, new.describe(),
                                (request["reason"] or "cdc offsets set") + f" (applied by the running reader {self.owner})")
        self.state.position_request_transition(rid, "applying", "done", from_value=was, to_value=new.describe(),
                                               finished_at=utc_now())
        log.info("reader: position moved by %s (request %s): from %s to %s; streaming from there", request["who"], rid,
                 self._describe(before), new.describe(), extra={"position": new.describe()})

    def _recover_lost_checkpoint(self, exc: CheckpointLost) -> Checkpoint:
        head = self.reader.head_position()
        log.warning("reader: %s -- snapshot.mode is when_needed: restarting the stream at %s and snapshotting every "
                    "mapped table", exc.problem, head.describe())
        old = self.confirmed
        planned = self.snapshots.plan_all()  # before anything is saved: a table that cannot be snapshotted stops here
        self.state.record_audit("reader (snapshot.mode=when_needed)", f"source:{self.source}", old.describe() if old else None,
                                head.describe(), "the checkpoint's binlog is gone from the server")
        self._save_first_checkpoint(head, planned, supersede="superseded by a when_needed snapshot")
        return head

    def _save_first_checkpoint(self, start: Checkpoint, planned: list, supersede: str | None = None) -> list[int]:
        """Make ``start`` the checkpoint, saved with the snapshot requests ``planned`` in one state-store
        transaction (see StateStore.save_checkpoint_with_snapshots)."""
        with self._persist_lock:  # the checkpointer thread saves nothing of it before it is all saved
            if self.guard is not None and not self.guard():
                raise TransientError("this reader lost its lease before its first checkpoint")
            if planned or supersede is not None:
                ids = self.state.save_checkpoint_with_snapshots(self.source, start, planned, supersede)
            else:
                ids = []
                self.state.save_checkpoint(self.source, start)
            with self._confirm_lock:
                self.confirmed = start
            self.persisted, self.persisted_at = start, time.monotonic()
        return ids

    # ------------------------------------------------------------------ mapping
    def _messages(self, txn: SourceTxn, server_id: int) -> list[OutMessage]:
        nulled: collections.Counter[tuple[str, str, str]] = collections.Counter()
        events, dead = build_events(txn, self.mapper, self.source, server_id, self._txn_events, nulled)
        if nulled:
            report_nulled(self.source, nulled)
        if txn.ddl:
            events += build_truncate_events(txn, self.mapper, self.source, server_id)
        self._txn_events = self._txn_events + len(events) if txn.partial else 0
        out = []
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        limit = self.settings.broker.max_message_bytes
        boundaries = self._boundaries if self.settings.events.transactions else None
        first_change: dict[str, Any] | None = None
        for e in events:
            if boundaries is not None:  # its order among the entity's published events (kept only if published)
                e["txn"]["entity_index"] = boundaries.entity_index[e["entity"]]
            try:
                body = encode(e)
            except (TypeError, ValueError) as exc:  # a mapped value JSON cannot hold (say, an integer over 64 bits)
                out.append(self._unencodable_message(e, exc))
                continue
            if len(body) > limit:
                out.append(self._too_large_message(e, len(body), limit))
                continue
            out.append(OutMessage.from_event(e, body))
            counts[e["entity"], e["op"]] += 1
            if boundaries is not None:
                boundaries.published(e)
                first_change = first_change or e
        framing = 0
        if boundaries is not None:
            framing = -len(out)
            out = self._framed(txn, server_id, out, first_change, boundaries)
            framing += len(out)  # BEGIN, END: not counted as events read
        for (entity, op), n in counts.items():
            metrics.events_read.labels(self.source, entity, op).inc(n)
        if txn.ddl and (txn.ddl_db in self.settings.source.databases or any(db in txn.ddl for db in self.settings.source.databases)):
            out += self.schema_history.on_ddl(self.source, server_id, txn, txn.ddl_db)
        for d in dead:
            out.append(self._dead_message(d))
        metrics.txns_read.labels(self.source).inc()
        self.events_read += len(out) - framing
        return group_events(out, self.settings.broker.batch_events, limit)

    def _framed(self, txn: SourceTxn, server_id: int, out: list[OutMessage], first_change: dict[str, Any] | None,
                boundaries: _TxnBoundaries) -> list[OutMessage]:
        """``out`` (the transaction's change events, or a segment's) with its BEGIN before the first change event
        published and its END after the last segment (events.transactions)."""
        emitted = now_ms()
        if first_change is not None and not boundaries.begun:
            boundaries.begun = True
            src = first_change["source"]
            begin = transaction_event("BEGIN", txn.id, self.source, server_id, txn.gtid,
                                      {"file": src["file"], "pos": src["pos"], "gtid": txn.gtid}, txn.ts * 1000, emitted)
            out.insert(0, OutMessage.boundary(TXN_BEGIN_KEY, begin, f"{self.source}:txn:{txn.id}:begin", emitted))
        if not txn.partial:
            if boundaries.begun:
                end_pos = {"file": txn.end.file, "pos": txn.end.pos, "gtid": txn.end.gtid}
                end = transaction_event("END", txn.id, self.source, server_id, txn.gtid, end_pos, txn.ts * 1000, emitted,
                                        dict(boundaries.counts))
                out.append(OutMessage.boundary(TXN_END_KEY, end, f"{self.source}:txn:{txn.id}:end", emitted))
            self._boundaries = _TxnBoundaries()
        return out

    def _heartbeat(self, publisher: Any, position: Checkpoint, received: Checkpoint | None) -> None:
        """Publish a heartbeat if one is due (events.heartbeats): on the confirmed path, with no checkpoint."""
        beats = self.settings.events.heartbeats
        if not beats.enabled:
            return
        now = time.monotonic()
        if now < self._heartbeat_due - min(0.5, beats.interval_s / 10):  # a stream heartbeat may come a little early
            return
        self._heartbeat_due = now + beats.interval_s
        at = received if received is not None and received.pos > 0 else position
        emitted = now_ms()
        body = heartbeat_event(self.source, self._server_id, {"file": at.file, "pos": at.pos, "gtid": position.gtid},
                               self._last_commit_ts_ms, emitted)
        publisher.publish([OutMessage.boundary(HEARTBEAT_KEY, body, body["id"], emitted)], None)

    def _dead_message(self, dead: DeadRow) -> OutMessage:
        c = dead.change
        what = "rows event" if c.undecoded is not None else "row"
        log.warning("reader: %s of %s.%s at %s:%s dead-lettered: %s", what, c.db, c.table, c.file, c.pos, dead.reason,
                    extra={"entity": dead.entity, "position": f"{c.file}:{c.pos}"})
        metrics.reader_dead.labels(self.source, dead.entity).inc()
        body = {"reason": dead.reason, "entity": dead.entity, "db": c.db, "table": c.table, "op": c.op,
                "file": c.file, "pos": c.pos, "row": c.row, "key": dead.key, "column": dead.column,
                "before": c.before, "after": c.after}
        if c.undecoded is not None:
            # The rows could not be read: the event's own bytes (base64), readable again once the decoder
            # knows the value, and with `mysqlbinlog --start-position` at file:pos.
            raw = c.undecoded.raw
            body |= {"row": None, "raw_event": raw}
            if len(raw) >= 19:  # the event's header: its size and where it ends (mysqlbinlog --start-position)
                size, end = int.from_bytes(raw[9:13], "little"), int.from_bytes(raw[13:17], "little")
                body |= {"event_start": end - size, "event_end": end}
        encoded = _dead_letter_body(body, self.settings.broker.max_message_bytes)
        key = key_string(dead.key) if dead.key else None
        return OutMessage.reader_dead_letter(dead.entity, encoded, dead.reason,
                                             f"{self.source}:{c.file}:{c.pos}:{c.row}:{dead.entity}:dead", c.ts * 1000,
                                             key=key)

    def _unencodable_message(self, event: dict[str, Any], exc: Exception) -> OutMessage:
        src = event["source"]
        reason = (f"{event['entity']} key {event['key']} (table {src['db']}.{src['table']}): the change event cannot be "
                  f"encoded as JSON: {type(exc).__name__}: {exc}")
        log.warning("reader: change event dead-lettered: %s", reason, extra={"entity": event["entity"]})
        metrics.reader_dead.labels(self.source, event["entity"]).inc()
        body = {"reason": reason, "entity": event["entity"], "key": event["key"], "op": event["op"], "db": src["db"],
                "table": src["table"], "file": src["file"], "pos": src["pos"], "row": src["row"],
                "before": event["before"], "after": event["after"]}
        return OutMessage.reader_dead_letter(event["entity"], _dead_letter_body(body, self.settings.broker.max_message_bytes),
                                             reason, f"{event['id']}:unencodable", event["ts_ms"])

    def _too_large_message(self, event: dict[str, Any], size: int, limit: int) -> OutMessage:
        reason, body = too_large(event, size, limit)
        log.error("reader: change event dead-lettered: %s", reason, extra={"entity": event["entity"]})
        metrics.reader_dead.labels(self.source, event["entity"]).inc()
        return OutMessage.reader_dead_letter(event["entity"], body, reason, f"{event['id']}:too-large", event["ts_ms"],
                                             key=key_string(event["key"]))

    # ------------------------------------------------------------------ checkpoints
    def _on_confirmed(self, token: Checkpoint | ChunkDone | None) -> None:
        # One call per publish() and in the same order: the oldest counts are this call's.
        counts = self._in_flight.popleft() if self._in_flight else collections.Counter()
        for routing_key, n in counts.items():
            entity, _, op = routing_key.partition(".")
            if op in OPS:
                metrics.events_published.labels(self.source, entity, op).inc(n)
        metrics.events_confirmed.labels(self.source).inc(sum(counts.values()))
        if token is None:
            return
        if isinstance(token, ChunkDone):
            self.snapshots.on_confirmed(token)
            return
        with self._confirm_lock:
            self.confirmed = token

    def persist(self) -> None:
        with self._persist_lock:
            self._persist()

    def _persist_if_possible(self) -> None:
        """On the way out of a run: a state store that does not answer must not hide why the run ended."""
        try:
            self.persist()
        except TransientError as exc:
            log.warning("reader: checkpoint not saved (%s); a restart resumes from %s, the transactions since "
                        "are read again", exc, self._describe(self.persisted))

    def _persist(self) -> None:
        if self.guard is not None and not self.guard():
            return  # fenced: another reader holds the source's lease
        with self._confirm_lock:
            confirmed = self.confirmed
        published = self.published
        if published is not None and published != self.persisted_published:
            self.state.save_published(self.source, published)  # first: it never lags the checkpoint
            self.persisted_published = published
        if confirmed is None or confirmed == self.persisted:
            return
        self.state.save_checkpoint(self.source, confirmed)
        self.persisted = confirmed
        self.persisted_at = time.monotonic()
        metrics.checkpoint_position.labels(self.source, "file").set(binlog_file_seq(confirmed.file))
        metrics.checkpoint_position.labels(self.source, "pos").set(confirmed.pos)
        caught_up = self.read_position is None or self.read_position == confirmed
        lag = 0.0 if caught_up or not confirmed.ts_ms else max(0.0, time.time() - confirmed.ts_ms / 1000)
        metrics.source_lag_seconds.labels(self.source).set(lag)

    def _checkpoint_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.checkpoint_interval_s):
            try:
                self.persist()
                self.snapshots.persist()
                metrics.checkpoint_age_seconds.labels(self.source).set(time.monotonic() - self.persisted_at)
            except Exception:  # noqa: BLE001 - a failed write is retried on the next tick
                log.exception("reader: cannot persist the checkpoint; retrying")

    @staticmethod
    def _describe(cp: Checkpoint | None) -> str:
        return cp.describe() if cp else "the configured start"



def _dead_letter_body(body: dict[str, Any], limit: int) -> dict[str, Any] | bytes:
    """``body`` for the reader's dead-letter queue, whatever its values: encoded as is where it can be, else
    with every value made printable (a JSON column's bytes keys, ...); without its values where it would
    be over ``limit`` (the reason, the table, the key and the position stay)."""
    try:
        encoded = encode(body)
    except (TypeError, ValueError):
        encoded = encode(_printable(body))
    if len(encoded) <= limit:
        return encoded
    body = {**body, "before": None, "after": None, "raw_event": None,
            "values_left_out": f"{len(encoded):,} bytes with them, over broker.max_message_bytes ({limit:,})"}
    return encode(_printable(body))


def _printable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key_text(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_printable(v) for v in value]
    try:
        encode({"v": value})
        return value
    except (TypeError, ValueError):
        return repr(value)


def _key_text(key: Any) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return key if isinstance(key, str) else str(key)


def _sorts_after(a: Checkpoint, b: Checkpoint) -> bool:
    return (binlog_file_seq(a.file), a.pos) > (binlog_file_seq(b.file), b.pos)


class _TxnBoundaries:
    """What the END of the transaction being published counts (events.transactions), across its segments."""

    __slots__ = ("begun", "counts", "entity_index")

    def __init__(self) -> None:
        self.begun = False
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (entity, db, table)
        self.entity_index: collections.Counter[str] = collections.Counter()

    def published(self, event: dict[str, Any]) -> None:
        src = event["source"]
        self.counts[event["entity"], src["db"], src["table"]] += 1
        self.entity_index[event["entity"]] += 1


class _Counting:
    """Hands messages to the publisher, remembering each call's counts for the confirmation."""

    def __init__(self, publisher: Publisher, in_flight: collections.deque) -> None:
        self._publisher = publisher
        self._in_flight = in_flight

    def publish(self, messages: list[OutMessage], token: Any) -> None:
        counts: collections.Counter[str] = collections.Counter()
        for m in messages:
            if m.mandatory:  # not transaction boundaries and heartbeats: they are no events
                counts[m.routing_key] += m.count  # a batch message holds several events
        self._in_flight.append(counts)
        self._publisher.publish(messages, token)
