"""Snapshots: chunked, lock-free, resumable, interleaved with the binlog stream.

The reader thread runs them between source transactions, with binlog positions as watermarks
(the idea of Netflix's DBLog, without writing to the source):

1. ``submit``: the next chunk's key range ``(after, upto]`` (``upto``: the key ``chunk_size`` rows
   on, one index read) goes to a chunk reader (:mod:`cdc.snapshot_chunks`, ``snapshot.workers``
   processes), which SELECTs it, then reads the binlog head ``H``: everything the SELECT saw was
   committed at or before ``H``. From the moment of submitting, every key a transaction of the
   stream touches in that table is noted for the chunk: the log event carries that row's full
   image, and a newer one (or the row was written before the SELECT, and the stream has it).
2. The reader goes on streaming; the chunk's rows come back mapped and encoded.
3. Once the reader has passed ``H`` (or a heartbeat says it has everything), the chunk's rows less
   the noted keys are published as ``op: r`` events with version ``version(H)``: above every
   change before ``H``, below every change after it. Sinks keep the highest version, so a row can
   be neither lost nor overwritten by a stale read, and no table is ever locked.

Several chunks are out at once (one per worker, each its own key range) and are published in key
order. Progress (last key, rows) is saved per chunk once the broker confirmed the chunk's messages,
so a crash resumes from the last confirmed chunk, not from zero.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import datetime as dt
import decimal
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import pymysql

from cdc import metrics
from cdc.checkpoint import Checkpoint
from cdc.config import Settings
from cdc.envelope import binlog_file_seq, utc_now
from cdc.errors import ConfigError, TransientError
from cdc.mapping import Mapper
from cdc.nulled import report as report_nulled
from cdc.publisher import Publisher
from cdc.reader import BinlogReader, SourceTxn, Tick
from cdc.snapshot_chunks import ChunkRequest, ChunkResult, ChunkWorkers, WorkerSetup, pymysql_connect, quote
from cdc.state.store import StateStore

log = logging.getLogger("cdc.snapshot")

ACTIVE = ("requested", "running")


@dataclass
class OutChunk:
    """A chunk handed to a chunk reader, until its messages are published."""

    request: ChunkRequest
    ticket: int
    final: bool
    touched: set[tuple] = field(default_factory=set)  # keys the stream touched since it was handed out
    result: ChunkResult | None = None  # back from the chunk reader
    dropped: bool = False  # its snapshot was cancelled or failed: its result is thrown away


@dataclass(frozen=True)
class ChunkDone:
    """Publisher token: the chunk's messages are confirmed."""

    snapshot_id: int
    last_key: tuple | None
    rows: int
    final: bool


def key_columns(conn: pymysql.connections.Connection, db: str, table: str) -> list[str]:
    """The primary key, else the first unique key over NOT NULL columns; ConfigError if neither."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT s.index_name, s.column_name, c.is_nullable FROM information_schema.statistics s "
            "JOIN information_schema.columns c ON c.table_schema = s.table_schema AND c.table_name = s.table_name "
            "AND c.column_name = s.column_name WHERE s.table_schema = %s AND s.table_name = %s AND s.non_unique = 0 "
            "ORDER BY s.index_name = 'PRIMARY' DESC, s.index_name, s.seq_in_index", (db, table))
        indexes: dict[str, list[tuple[str, str]]] = {}
        for index, column, nullable in cur.fetchall():
            indexes.setdefault(index, []).append((column, nullable))
    for columns in indexes.values():
        if all(nullable == "NO" for _, nullable in columns):
            return [c for c, _ in columns]
    if not indexes:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                        (db, table))
            exists = cur.fetchone()[0]
        if not exists:
            raise ConfigError(f"table {db}.{table} is mapped but does not exist in the source: create it there, or "
                              "remove its mapping (or fix the mapping's source db/table)")
    raise ConfigError(
        f"table {db}.{table} has no primary key and no unique key over NOT NULL columns, so it cannot be "
        "snapshotted in chunks: add a primary key (or a unique NOT NULL key) to the table"
    )


def check_where(conn: pymysql.connections.Connection, db: str, table: str, where: str) -> None:
    """ConfigError naming the table, the condition and the server's reason if the source refuses ``where``
    (run once, reading no row, with no parameters)."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {quote(db)}.{quote(table)} WHERE ({where}) LIMIT 0")
            cur.fetchall()
    except pymysql.err.MySQLError as exc:
        if _lost(exc):
            raise
        reason = " ".join(str(exc.args[-1]).split())
        raise ConfigError(f"snapshot of {db}.{table}: the source refuses --where {where!r}: {reason}; fix the condition "
                          "(it goes after WHERE as it is, in the source's SQL, e.g. \"id BETWEEN 1 AND 500\")") from None


def _lost(exc: pymysql.err.MySQLError) -> bool:
    """A lost or refused connection (client errors 2000-2999, access denied), not a refused statement."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    return isinstance(exc, pymysql.err.InterfaceError) or 2000 <= code < 3000 or code in (1045, 1044)


def _source_error(exc: pymysql.err.MySQLError, what: str) -> Exception:
    """A driver error at request time: TransientError for a lost connection, else ConfigError (one line)."""
    reason = " ".join(str(exc.args[-1] if exc.args else exc).split())
    if _lost(exc):
        return TransientError(f"{what}: the source cannot be reached: {reason}")
    return ConfigError(f"{what}: the source refused the request: {reason}")


class Snapshotter:
    """Runs the source's snapshots from the reader thread (see the module docstring)."""

    def __init__(self, settings: Settings, state: StateStore, mapper: Mapper, reader: BinlogReader) -> None:
        self.settings = settings
        self.source = settings.source.name
        self.chunk_size = settings.snapshot.chunk_size
        self.state = state
        self.mapper = mapper
        self.reader = reader
        self.server_id = 0
        self.out: deque[OutChunk] = deque()  # chunks handed out, in key order: published in this order
        self.caught_up_to: Checkpoint | None = None
        self._conn: pymysql.connections.Connection | None = None
        self._workers: ChunkWorkers | None = None
        self._keys: dict[tuple[str, str], list[str]] = {}
        self._active: list[dict] = []
        self._refreshed = 0.0
        self._confirmed: list[ChunkDone] = []
        self._lock = threading.Lock()
        self._rows_done: dict[int, int] = {}  # confirmed rows per snapshot
        self._next_after: dict[int, tuple | None] = {}  # where the next chunk starts, per snapshot
        self._finished: set[int] = set()  # last chunk handed out; waiting for its confirmation

    # ----------------------------------------------------------------- requests
    def plan(self, db: str, table: str, where: str | None = None) -> tuple[str, str, str | None, int]:
        """Check that ``db.table`` can be snapshotted (mapped, exists, has a key, ``where`` is a condition the
        source accepts) and count its rows: ``(db, table, where, rows)`` for the state store. Nothing is
        saved: ConfigError names what is wrong and the fix; TransientError if the source cannot be reached."""
        if not self.mapper.for_table(db, table):
            mapped = ", ".join(f"{d}.{t}" for d, t in sorted(self.mapper.tables()))
            raise ConfigError(f"table {db}.{table} has no mapping, so a snapshot of it would produce nothing; mapped: {mapped}")
        conn = self._connection()
        try:
            key_columns(conn, db, table)
            if where is not None and not where.strip():
                where = None
            if where is not None:
                check_where(conn, db, table, where)
            with conn.cursor() as cur:  # no parameters: a `%` in the condition is not a format directive
                cur.execute(f"SELECT COUNT(*) FROM {quote(db)}.{quote(table)}" + (f" WHERE ({where})" if where else ""))
                total = int(cur.fetchone()[0])
        except pymysql.err.MySQLError as exc:
            raise _source_error(exc, f"snapshot of {db}.{table}") from None
        return db, table, where, total

    def request(self, db: str, table: str, where: str | None = None) -> int:
        return self.state.snapshot_create(self.source, *self.plan(db, table, where))

    def plan_all(self) -> list[tuple[str, str, str | None, int]]:
        """:meth:`plan` of every mapped table: the first table that cannot be snapshotted raises."""
        return [self.plan(db, table) for db, table in sorted(self.mapper.tables())]

    def request_all(self) -> list[int]:
        return [self.state.snapshot_create(self.source, *p) for p in self.plan_all()]

    # ----------------------------------------------------------------- the reader loop's hooks
    def on_txn(self, txn: SourceTxn, position: Checkpoint, publisher: Publisher) -> None:
        if self.out:
            tables = {(c.request.db, c.request.table): c.request.key_columns for c in self.out}
            touched: dict[tuple[str, str], set[tuple]] = {}
            for change in txn.changes:
                columns = tables.get((change.db, change.table))
                if columns is not None:
                    keys = touched.setdefault((change.db, change.table), set())
                    for image in (change.before, change.after):
                        if image is not None:
                            keys.add(tuple(image.get(c) for c in columns))
            for chunk in self.out:  # each key computed once per transaction, whatever the number of chunks out
                keys = touched.get((chunk.request.db, chunk.request.table))
                if keys:
                    chunk.touched |= keys
        self.pump(position, publisher)

    def on_tick(self, position: Checkpoint, publisher: Publisher, tick: Tick | None = None) -> None:
        """A heartbeat: the reader has received everything up to the heartbeat's own position. Not the
        head read now: the server may have written more since, which the stream has not received (a chunk
        with a watermark there would go out before changes older than its rows)."""
        if tick is not None and tick.position is not None and (self.out or self._has_work()):
            if self.caught_up_to is None or _at_or_after(tick.position, self.caught_up_to):
                self.caught_up_to = tick.position
        self.pump(position, publisher)

    def pump(self, position: Checkpoint, publisher: Publisher) -> None:
        """Hand out chunks to idle chunk readers; publish the first chunk once the stream passed its watermark."""
        self._refresh()
        while True:
            self._hand_out()
            if not self.out:
                return
            chunk = self.out[0]
            if chunk.result is None:
                self._collect(chunk)  # waits for the chunk reader
            assert chunk.result is not None
            if chunk.dropped or chunk.result.failed:
                self.out.popleft()
                continue
            assert chunk.result.high is not None
            if not self._passed(position, chunk.result.high):
                return
            self._emit(chunk, publisher)
            self.out.popleft()

    def waiting(self) -> ChunkResult | None:
        """The chunk read and waiting for the stream to pass its watermark, if any."""
        return self.out[0].result if self.out and not self.out[0].dropped else None

    def worker_pids(self) -> list[int]:
        """The chunk readers' processes (none while no snapshot runs, or with ``snapshot.workers: 0``)."""
        return self._workers.pids() if self._workers is not None else []

    def on_confirmed(self, token: ChunkDone) -> None:
        with self._lock:
            self._confirmed.append(token)

    def persist(self) -> None:
        """Save progress of confirmed chunks (called from the checkpointer thread)."""
        with self._lock:
            done, self._confirmed = self._confirmed, []
        for i, token in enumerate(done):
            fields: dict[str, Any] = dict(last_key=encode_resume_key(token.last_key) if token.last_key else None)
            rows_done = self._rows_done.get(token.snapshot_id, 0) + token.rows
            fields["rows_done"] = rows_done
            if token.final:
                fields.update(status="done", finished_at=utc_now())
            try:
                self.state.snapshot_update(token.snapshot_id, **fields)
            except Exception:
                with self._lock:  # not saved: kept, in order, for the next call (the state store may be restarting)
                    self._confirmed[:0] = done[i:]
                raise
            self._rows_done[token.snapshot_id] = rows_done
            if token.final:
                log.info("snapshot %s: done, %s rows", token.snapshot_id, rows_done)

    def close(self) -> None:
        """Forget what was read but not confirmed; the next chunk starts after the last confirmed one."""
        try:
            self.persist()
        except TransientError as exc:
            # The next start resumes after the last chunk saved: the chunks confirmed since are read and
            # published again (same rows, the sinks' version guard makes them harmless), never skipped.
            with self._lock:
                unsaved, self._confirmed = len(self._confirmed), []
            log.warning("snapshot: progress of %d confirmed chunks not saved (%s); they will be read again", unsaved, exc)
        self.out.clear()
        self._next_after.clear()
        self._finished.clear()
        self._rows_done.clear()
        self._refreshed = 0.0
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    # ----------------------------------------------------------------- internals
    def _has_work(self) -> bool:
        self._refresh()
        return bool(self._active)

    def _refresh(self) -> None:
        """Re-read requests and cancellations from the state store, at most once a second."""
        if time.monotonic() - self._refreshed > 1.0:
            self._active = self.state.snapshot_list(self.source, ACTIVE + ("cancel_requested",))
            for snap in [s for s in self._active if s["status"] == "cancel_requested"]:
                self.state.snapshot_update(snap["id"], status="cancelled", finished_at=utc_now())
                self._drop(snap["id"])
                log.info("snapshot %s of %s.%s cancelled", snap["id"], snap["db"], snap["tbl"])
            self._active = [s for s in self._active if s["status"] in ACTIVE and s["id"] not in self._finished]
            for snap in self._active:
                self._rows_done.setdefault(snap["id"], snap["rows_done"] or 0)
            self._refreshed = time.monotonic()

    def _drop(self, snapshot_id: int) -> None:
        for chunk in self.out:
            if chunk.request.snapshot_id == snapshot_id:
                chunk.dropped = True

    def _hand_out(self) -> None:
        """Give each idle chunk reader the next chunk, while at most one more than there are readers is out."""
        workers = self.settings.snapshot.workers
        while len(self.out) <= workers and self._has_work() and (self._workers is None or self._workers.idle()):
            snap = self._active[0]
            db, table = snap["db"], snap["tbl"]
            if snap["status"] == "requested":
                self.state.snapshot_update(snap["id"], status="running", started_at=utc_now())
                snap["status"] = "running"
                log.info("snapshot %s of %s.%s: starting (%s rows)", snap["id"], db, table, snap["rows_total"])
            conn = self._connection()
            columns = self._keys.get((db, table)) or key_columns(conn, db, table)
            self._keys[(db, table)] = columns
            if snap["id"] in self._next_after:
                after = self._next_after[snap["id"]]
            else:
                after = _stored_last_key(snap)
                if after is not None:
                    log.info("snapshot %s of %s.%s: resuming after key %s (%s rows done)", snap["id"], db, table, after,
                             snap["rows_done"])
            request = ChunkRequest(snap["id"], db, table, tuple(columns), after, None, snap["where_clause"])
            try:
                upto = self._chunk_end(conn, request)
            except pymysql.err.OperationalError as exc:
                self.close()
                raise TransientError(f"snapshot of {db}.{table}: {exc.args[-1]}") from None
            except pymysql.err.ProgrammingError as exc:
                self._fail(snap, str(exc.args[-1]))
                continue
            request = dataclasses.replace(request, upto=upto)
            try:
                ticket = self._pool().submit(request)
            except TransientError:  # a worker died: the retry starts afresh from the last confirmed chunk
                self.close()
                raise
            self.out.append(OutChunk(request, ticket, final=upto is None))
            self._next_after[snap["id"]] = upto
            if upto is None:
                self._active.pop(0)
                self._finished.add(snap["id"])

    def _chunk_end(self, conn: pymysql.connections.Connection, chunk: ChunkRequest) -> tuple | None:
        """The key ``chunk_size`` rows on in ``chunk`` (an open range): its end; None if fewer rows are left."""
        sql, params = chunk.end_sql(self.chunk_size)
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return tuple(row) if row is not None else None

    def _collect(self, chunk: OutChunk) -> None:
        assert self._workers is not None
        try:
            chunk.result = self._workers.result(chunk.ticket)
        except TransientError:
            self.close()
            raise
        request, result = chunk.request, chunk.result
        if result.failed and not chunk.dropped:
            self._fail(next((s for s in self._active if s["id"] == request.snapshot_id),
                            {"id": request.snapshot_id, "db": request.db, "tbl": request.table}), result.failed)
        elif result.high is not None:
            self.reader.head = (result.high.file, result.high.pos)

    def _fail(self, snap: dict, error: str) -> None:
        self.state.snapshot_update(snap["id"], status="failed", error=error, finished_at=utc_now())
        self._active = [s for s in self._active if s["id"] != snap["id"]]
        self._finished.add(snap["id"])
        self._drop(snap["id"])
        log.error("snapshot %s of %s.%s failed: %s", snap["id"], snap["db"], snap["tbl"], error)

    def _emit(self, chunk: OutChunk, publisher: Publisher) -> None:
        result = chunk.result
        assert result is not None
        drop = result.dropped(chunk.touched)
        for problem in result.problems:
            log.warning("snapshot %s: %s", chunk.request.snapshot_id, problem)
        if result.nulled:
            report_nulled(self.source, result.nulled, "snapshot")
        rows = len(result.keys) - len(drop)
        metrics.snapshot_rows.labels(self.source, f"{chunk.request.db}.{chunk.request.table}").inc(rows)
        publisher.publish(result.messages_without(drop), ChunkDone(chunk.request.snapshot_id, result.last_key(), rows, chunk.final))

    def _passed(self, position: Checkpoint, high: Checkpoint) -> bool:
        return any(pos is not None and _at_or_after(pos, high) for pos in (position, self.caught_up_to))

    def _connection(self) -> pymysql.connections.Connection:
        if self._conn is None or not self._conn.open:
            settings = self.reader.connection_settings()
            try:
                self._conn = pymysql_connect(settings)
            except pymysql.err.OperationalError as exc:
                raise TransientError(f"snapshot connection to {settings['host']}:{settings['port']}: {exc.args[-1]}") from None
        return self._conn

    def _pool(self) -> ChunkWorkers:
        if self._workers is None:
            server = self.reader.server or self.reader.preflight()
            broker = self.settings.broker
            setup = WorkerSetup(self.settings.source, self.mapper.mappings, server.flavor, self.server_id,
                                broker.batch_events, broker.max_message_bytes)
            self._workers = ChunkWorkers(setup, self.settings.snapshot.workers)
            if self._workers.pids():
                log.info("snapshot: chunks are read by %s worker processes (pids %s; snapshot.workers)",
                         len(self._workers.pids()), ", ".join(map(str, self._workers.pids())))
        return self._workers


def _at_or_after(a: Checkpoint, b: Checkpoint) -> bool:
    return (binlog_file_seq(a.file), a.pos) >= (binlog_file_seq(b.file), b.pos)


# ------------------------------------------------------------------------------------ resume keys
# A snapshot's progress is the last key of its last confirmed chunk, and the next chunk starts after it
# (``WHERE (key) > (last)``): stored as JSON, every value tagged with its type so that it reads back as the
# very value the driver gave (bytes of a BINARY key, a DECIMAL's digits, a date), never as its text, which
# the server would compare differently (``str(b'\xff')`` sorts before ``0x00``): keys would be skipped.
_KEY_FORMAT = 2


def encode_resume_key(key: tuple) -> str:
    """``key`` (the driver's values of the key columns) as stored in ``cdc_snapshots.last_key``."""
    return orjson.dumps({"v": _KEY_FORMAT, "key": [_tag(v) for v in key]}).decode()


def decode_resume_key(text: str) -> tuple:
    """The key :func:`encode_resume_key` stored, exactly; also the untagged lists earlier versions stored."""
    stored = orjson.loads(text)
    if isinstance(stored, dict) and stored.get("v") == _KEY_FORMAT:
        return tuple(_untag(v) for v in stored["key"])
    if isinstance(stored, list):  # before typed keys: orjson.dumps(list(key), default=str)
        return tuple(_legacy(v) for v in stored)
    raise ValueError(f"unreadable snapshot resume key {text[:200]!r}")


def _tag(value: Any) -> list:
    if value is None:
        return ["null", None]
    if isinstance(value, bool):
        return ["int", int(value)]
    if isinstance(value, int):
        return ["int", str(value)]  # as text: beyond 2^53 and 2^64 too
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", base64.b64encode(bytes(value)).decode()]
    if isinstance(value, decimal.Decimal):
        return ["decimal", str(value)]
    if isinstance(value, float):
        return ["float", value.hex()]
    if isinstance(value, dt.datetime):  # before date: a datetime is a date
        return ["datetime", value.isoformat()]
    if isinstance(value, dt.date):
        return ["date", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["timedelta", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, dt.time):
        return ["time", value.isoformat()]
    if isinstance(value, (set, frozenset)):  # a SET column
        return ["set", sorted(str(v) for v in value)]
    raise TypeError(f"a snapshot key value of type {type(value).__name__} cannot be stored: {value!r}")


def _untag(tagged: list) -> Any:
    kind, value = tagged
    if kind == "null":
        return None
    if kind == "int":
        return int(value)
    if kind == "str":
        return value
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    if kind == "float":
        return float.fromhex(value)
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "timedelta":
        return dt.timedelta(days=value[0], seconds=value[1], microseconds=value[2])
    if kind == "time":
        return dt.time.fromisoformat(value)
    if kind == "set":
        return set(value)
    raise ValueError(f"unknown snapshot resume key type {kind!r}")


def _legacy(value: Any) -> Any:
    """A value of an untagged key: JSON's own types as they were; ``str(bytes)`` (what they stored for
    a binary key, ``b'\x00...'``) read back as the bytes it spells, which is exact."""
    if isinstance(value, str) and len(value) >= 3 and value[0] == "b" and value[1] in "'\"" and value[-1] == value[1]:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(parsed, bytes):
            return parsed
    return value


def _stored_last_key(snap: dict) -> tuple | None:
    return decode_resume_key(snap["last_key"]) if snap.get("last_key") else None
