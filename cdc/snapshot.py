"""Snapshots: chunked, lock-free, resumable, interleaved with the binlog stream.

The reader thread runs them between source transactions, one chunk at a time, with binlog
positions as watermarks (the idea of Netflix's DBLog, without writing to the source):

1. ``open``: SELECT the next chunk by primary key (``WHERE key > last ORDER BY key LIMIT n``),
   then read the binlog head ``H``. Everything the SELECT saw was committed at or before ``H``.
2. While the chunk is open the reader goes on streaming; every key a transaction touches is
   dropped from the chunk: the log event carries that row's full image, and a newer one.
3. Once the reader has passed ``H`` (or a heartbeat says it has everything), the rest of the
   chunk is published as ``op: r`` events with version ``version(H)``: above every change
   before ``H``, below every change after it. Sinks keep the highest version, so a row can be
   neither lost nor overwritten by a stale read, and no table is ever locked.

Progress (last key, rows) is saved per chunk once the broker confirmed the chunk's messages, so
a crash resumes from the last confirmed chunk, not from zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import MySQLdb
import MySQLdb.converters
import MySQLdb.cursors
import orjson
import pymysql
from MySQLdb.constants import FIELD_TYPE as MYSQLCLIENT_FIELD_TYPE
from pymysql import converters
from pymysql.constants import FIELD_TYPE

from cdc import metrics
from cdc.checkpoint import Checkpoint
from cdc.config import Settings
from cdc.envelope import (
    binlog_file_seq,
    encode,
    key_string,
    make_version,
    now_ms,
    utc_now,
)
from cdc.errors import ConfigError, TransientError
from cdc.events import too_large
from cdc.mapping import Mapper
from cdc.publisher import OutMessage, Publisher, group_events
from cdc.reader import BinlogReader, SourceTxn
from cdc.state.store import StateStore
from cdc.topology import event_headers

log = logging.getLogger("cdc.snapshot")

ACTIVE = ("requested", "running")


@dataclass
class Chunk:
    snapshot_id: int
    db: str
    table: str
    key_columns: list[str]
    rows: dict[tuple, dict[str, Any]]
    last_key: tuple | None
    high: Checkpoint
    final: bool
    read_ms: int = field(default_factory=now_ms)


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
    raise ConfigError(
        f"table {db}.{table} has no primary key and no unique key over NOT NULL columns, so it cannot be "
        "snapshotted in chunks: add a primary key (or a unique NOT NULL key) to the table"
    )


class Snapshotter:
    """Runs the source's snapshots inside the reader thread (see the module docstring)."""

    def __init__(self, settings: Settings, state: StateStore, mapper: Mapper, reader: BinlogReader) -> None:
        self.settings = settings
        self.source = settings.source.name
        self.chunk_size = settings.snapshot.chunk_size
        self.state = state
        self.mapper = mapper
        self.reader = reader
        self.server_id = 0
        self.chunk: Chunk | None = None
        self.caught_up_to: Checkpoint | None = None
        self._conn: pymysql.connections.Connection | None = None
        self._chunk_select: ChunkSelect | None = None
        self._keys: dict[tuple[str, str], list[str]] = {}
        self._active: list[dict] = []
        self._refreshed = 0.0
        self._confirmed: list[ChunkDone] = []
        self._lock = threading.Lock()
        self._rows_done: dict[int, int] = {}  # confirmed rows per snapshot
        self._last_keys: dict[int, tuple | None] = {}  # last key read (published or not) per snapshot
        self._finished: set[int] = set()  # final chunk read; waiting for its confirmation

    # ----------------------------------------------------------------- requests
    def request(self, db: str, table: str, where: str | None = None) -> int:
        if not self.mapper.for_table(db, table):
            mapped = ", ".join(f"{d}.{t}" for d, t in sorted(self.mapper.tables()))
            raise ConfigError(f"table {db}.{table} has no mapping, so a snapshot of it would produce nothing; mapped: {mapped}")
        conn = self._connection()
        key_columns(conn, db, table)
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {_q(db)}.{_q(table)}" + (f" WHERE {where}" if where else ""))
            total = int(cur.fetchone()[0])
        return self.state.snapshot_create(self.source, db, table, where, total)

    def request_all(self) -> list[int]:
        return [self.request(db, table) for db, table in sorted(self.mapper.tables())]

    # ----------------------------------------------------------------- the reader loop's hooks
    def on_txn(self, txn: SourceTxn, position: Checkpoint, publisher: Publisher) -> None:
        chunk = self.chunk
        if chunk is not None:
            for change in txn.changes:
                if change.db == chunk.db and change.table == chunk.table:
                    for image in (change.before, change.after):
                        if image is not None:
                            chunk.rows.pop(tuple(image.get(c) for c in chunk.key_columns), None)
        self.pump(position, publisher)

    def on_tick(self, position: Checkpoint, publisher: Publisher) -> None:
        """A heartbeat: the reader has everything the server had; the head is a safe position."""
        if self.chunk is not None or self._has_work():
            self.caught_up_to = self.reader.head_position()
        self.pump(position, publisher)

    def pump(self, position: Checkpoint, publisher: Publisher) -> None:
        """Emit the open chunk once the stream passed its watermark, and open the next ones."""
        self._refresh()
        while True:
            if self.chunk is not None:
                if not self._passed(position, self.chunk.high):
                    return
                self._emit(self.chunk, publisher)
                self.chunk = None
            if not self._has_work():
                return
            self.chunk = self._open_next()
            if self.chunk is None:
                return

    def on_confirmed(self, token: ChunkDone) -> None:
        with self._lock:
            self._confirmed.append(token)

    def persist(self) -> None:
        """Save progress of confirmed chunks (called from the checkpointer thread)."""
        with self._lock:
            done, self._confirmed = self._confirmed, []
        for token in done:
            fields: dict[str, Any] = dict(last_key=orjson.dumps(list(token.last_key), default=str).decode() if token.last_key else None)
            self._rows_done[token.snapshot_id] = self._rows_done.get(token.snapshot_id, 0) + token.rows
            fields["rows_done"] = self._rows_done[token.snapshot_id]
            if token.final:
                fields.update(status="done", finished_at=utc_now())
                log.info("snapshot %s: done, %s rows", token.snapshot_id, fields["rows_done"])
            self.state.snapshot_update(token.snapshot_id, **fields)

    def close(self) -> None:
        """Forget what was read but not confirmed; the next chunk starts after the last confirmed one."""
        self.persist()
        self.chunk = None
        self._last_keys.clear()
        self._finished.clear()
        self._rows_done.clear()
        self._refreshed = 0.0
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._chunk_select is not None:
            self._chunk_select.close()
            self._chunk_select = None

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
                if self.chunk is not None and self.chunk.snapshot_id == snap["id"]:
                    self.chunk = None
                log.info("snapshot %s of %s.%s cancelled", snap["id"], snap["db"], snap["tbl"])
            self._active = [s for s in self._active if s["status"] in ACTIVE and s["id"] not in self._finished]
            for snap in self._active:
                self._rows_done.setdefault(snap["id"], snap["rows_done"] or 0)
            self._refreshed = time.monotonic()

    def _open_next(self) -> Chunk | None:
        snap = self._active[0]
        db, table = snap["db"], snap["tbl"]
        if snap["status"] == "requested":
            self.state.snapshot_update(snap["id"], status="running", started_at=utc_now())
            snap["status"] = "running"
            log.info("snapshot %s of %s.%s: starting (%s rows)", snap["id"], db, table, snap["rows_total"])
        conn = self._connection()
        columns = self._keys.get((db, table)) or key_columns(conn, db, table)
        self._keys[(db, table)] = columns
        if snap["id"] in self._last_keys:
            last = self._last_keys[snap["id"]]
        else:
            last = _stored_last_key(snap)
            if last is not None:
                log.info("snapshot %s of %s.%s: resuming after key %s (%s rows done)", snap["id"], db, table, last, snap["rows_done"])
        conditions, params = [], []
        if last is not None:
            conditions.append(f"({', '.join(map(_q, columns))}) > ({', '.join(['%s'] * len(columns))})")
            params += list(last)
        if snap["where_clause"]:
            conditions.append(f"({snap['where_clause']})")
        sql = (f"SELECT * FROM {_q(db)}.{_q(table)}" + (" WHERE " + " AND ".join(conditions) if conditions else "")
               + f" ORDER BY {', '.join(map(_q, columns))} LIMIT {self.chunk_size}")
        try:
            rows = self._select().rows(sql, params)
            high = self.reader.head_position(conn)
        except pymysql.err.OperationalError as exc:
            self.close()
            raise TransientError(f"snapshot of {db}.{table}: {exc.args[-1]}") from None
        except pymysql.err.ProgrammingError as exc:
            self.state.snapshot_update(snap["id"], status="failed", error=str(exc.args[-1]), finished_at=utc_now())
            self._active.pop(0)
            log.error("snapshot %s of %s.%s failed: %s", snap["id"], db, table, exc.args[-1])
            return None
        keyed = {tuple(r[c] for c in columns): r for r in rows}
        new_last = tuple(rows[-1][c] for c in columns) if rows else last
        self._last_keys[snap["id"]] = new_last
        final = len(rows) < self.chunk_size
        if final:
            self._active.pop(0)
            self._finished.add(snap["id"])
        return Chunk(snap["id"], db, table, columns, keyed, new_last, high, final)

    def _emit(self, chunk: Chunk, publisher: Publisher) -> None:
        messages = self._messages(chunk)
        metrics.snapshot_rows.labels(self.source, f"{chunk.db}.{chunk.table}").inc(len(chunk.rows))
        publisher.publish(messages, ChunkDone(chunk.snapshot_id, chunk.last_key, len(chunk.rows), chunk.final))

    def _messages(self, chunk: Chunk) -> list[OutMessage]:
        high = chunk.high
        version = make_version(high.file, high.pos, 0)
        out: list[OutMessage] = []
        txn_id = f"snapshot-{chunk.snapshot_id}@{high.file}:{high.pos}"
        mappings = self.mapper.for_table(chunk.db, chunk.table)
        limit = self.settings.broker.max_message_bytes
        # The same for every row of the chunk (one read, one watermark): built once, as build_events
        # does for a transaction.
        source = {"name": self.source, "server_id": self.server_id, "gtid": high.gtid, "file": high.file, "pos": high.pos,
                  "row": 0, "db": chunk.db, "table": chunk.table, "ts_ms": chunk.read_ms, "snapshot": True}
        emitted = now_ms()
        for row in chunk.rows.values():
            for mapping in mappings:
                try:
                    mapped = Mapper.map_row(mapping, row)
                except ValueError as exc:
                    log.warning("snapshot %s: row of %s.%s not mapped: %s", chunk.snapshot_id, chunk.db, chunk.table, exc)
                    out.append(self._dead(chunk, mapping.entity, row, str(exc)))
                    continue
                op = "r" if mapped.values is not None else "d"
                key = key_string(mapped.key)
                event = {
                    "v": 1, "id": f"{self.source}:{high.file}:{high.pos}:r:{mapping.entity}:{key}", "version": version,
                    "op": op, "entity": mapping.entity, "key": mapped.key, "before": None, "after": mapped.values,
                    "source": source, "txn": {"id": txn_id, "index": len(out), "last": False}, "ts_ms": emitted,
                }
                body = encode(event)
                if len(body) > limit:
                    reason, dead = too_large(event, len(body), limit)
                    log.error("snapshot %s: change event dead-lettered: %s", chunk.snapshot_id, reason)
                    out.append(self._dead(chunk, mapping.entity, dead, reason))
                    continue
                out.append(OutMessage(routing_key=f"{mapping.entity}.{op}", body=body, message_id=event["id"],
                                      headers=event_headers(mapping.entity, key, version),
                                      timestamp_ms=event["ts_ms"]))
        return group_events(out, self.settings.broker.batch_events, limit)

    def _dead(self, chunk: Chunk, entity: str, row: dict, reason: str) -> OutMessage:
        body = {"reason": reason, "entity": entity, "db": chunk.db, "table": chunk.table, "op": "r", "after": row,
                "snapshot": chunk.snapshot_id}
        return OutMessage.reader_dead_letter(entity, body, reason, f"{self.source}:snapshot:{chunk.snapshot_id}:{entity}:"
                                             f"{hash(encode(body))}", now_ms())

    def _passed(self, position: Checkpoint, high: Checkpoint) -> bool:
        for pos in (position, self.caught_up_to):
            if pos is not None and (binlog_file_seq(pos.file), pos.pos) >= (binlog_file_seq(high.file), high.pos):
                return True
        return False

    def _connection(self) -> pymysql.connections.Connection:
        if self._conn is None or not self._conn.open:
            settings = self.reader.connection_settings()
            try:
                self._conn = _pymysql_connect(settings)
            except pymysql.err.OperationalError as exc:
                raise TransientError(f"snapshot connection to {settings['host']}:{settings['port']}: {exc.args[-1]}") from None
        return self._conn

    def _select(self) -> "ChunkSelect":
        if self._chunk_select is None:
            self._chunk_select = ChunkSelect(self.reader.connection_settings())
        return self._chunk_select


class ChunkSelect:
    """The connection that reads chunks: most of a snapshot's rows pass through it.

    mysqlclient (libmariadb) parses a result in C, 5-6 µs a members row where PyMySQL takes 13-15 in
    Python: a fifth of a snapshot's time. Its values are PyMySQL's, the values the rest of cdc (and
    ``tests/integration/test_types_fidelity.py``, which compares the two drivers column type by column
    type) expects: the same converters for dates, times and decimals, text as str, binary as bytes.
    With ``source.tls`` on, the chunks are read through PyMySQL, which takes cdc's SSLContext as it is
    (mysqlclient takes only file names). Errors are PyMySQL's classes either way."""

    def __init__(self, settings: dict[str, Any], driver: str | None = None) -> None:
        self.settings = settings
        self.driver = driver or ("pymysql" if settings.get("ssl") else "mysqlclient")
        self._conn: Any = None

    def rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """The rows of ``sql`` as dicts of column -> PyMySQL's value."""
        conn = self._connect()
        if self.driver == "pymysql":
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        try:
            with conn.cursor(MySQLdb.cursors.DictCursor) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        except MySQLdb.Error as exc:
            if isinstance(exc, (MySQLdb.OperationalError, MySQLdb.InterfaceError)):
                self.close()
            raise _as_pymysql(exc) from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a dead connection is being dropped
                pass
            self._conn = None

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        s = self.settings
        if self.driver == "pymysql":
            self._conn = _pymysql_connect(s)
            return self._conn
        try:
            self._conn = MySQLdb.connect(
                host=s["host"], port=s["port"], user=s["user"], password=s["password"], charset=s["charset"],
                connect_timeout=s["connect_timeout"], read_timeout=s["read_timeout"], write_timeout=s["write_timeout"],
                autocommit=True, init_command=_SESSION, conv=MYSQLCLIENT_CONVERSIONS,
                # With source.tls off, what PyMySQL does by itself: TLS if the server offers it, no certificate
                # checked, plain text otherwise. libmariadb tries TLS only once some TLS option is set; the
                # cipher list is OpenSSL's default, so nothing is weakened.
                ssl={"cipher": "DEFAULT"})
        except MySQLdb.Error as exc:
            raise _as_pymysql(exc) from None
        return self._conn


def _pymysql_connect(settings: dict[str, Any]) -> pymysql.connections.Connection:
    """A PyMySQL connection for snapshots: autocommit, session time zone UTC, the snapshot's converters."""
    return pymysql.connect(**settings, autocommit=True, init_command=_SESSION, conv=SNAPSHOT_CONVERSIONS)


def _as_pymysql(exc: Exception) -> Exception:
    """A mysqlclient error as the PyMySQL error of the same DB-API class, with the same (errno, message)."""
    return getattr(pymysql.err, type(exc).__name__, pymysql.err.OperationalError)(*exc.args)


def _fast_datetime(text: str) -> Any:
    """PyMySQL's DATETIME/TIMESTAMP conversion, through the C parser for the server's usual shape
    ('YYYY-MM-DD HH:MM:SS[.f{1,6}]'); zero dates and anything else go to PyMySQL's own converter,
    so the values are the same (its regex parser was an eighth of a snapshot's time)."""
    if len(text) == 19 or (21 <= len(text) <= 26 and text[19] == "."):
        try:
            return _fromisoformat(text)
        except ValueError:
            if text[4] == "-" and text[10] == " ":
                return text  # a zero or invalid date: what PyMySQL gives too (its date fallback fails on the space)
    return converters.convert_datetime(text)


def _fast_date(text: str) -> Any:
    """PyMySQL's DATE conversion, the same way (see :func:`_fast_datetime`)."""
    if len(text) == 10:
        try:
            return _date_fromisoformat(text)
        except ValueError:
            pass
    return converters.convert_date(text)


_fromisoformat, _date_fromisoformat = dt.datetime.fromisoformat, dt.date.fromisoformat
SNAPSHOT_CONVERSIONS = {**converters.conversions, FIELD_TYPE.DATETIME: _fast_datetime, FIELD_TYPE.TIMESTAMP: _fast_datetime,
                        FIELD_TYPE.DATE: _fast_date}
# mysqlclient's converters, with PyMySQL's values where the two differ: zero and invalid dates are
# their text (mysqlclient: None), TIME is PyMySQL's timedelta.
MYSQLCLIENT_CONVERSIONS = {**MySQLdb.converters.conversions, MYSQLCLIENT_FIELD_TYPE.DATETIME: _fast_datetime,
                           MYSQLCLIENT_FIELD_TYPE.TIMESTAMP: _fast_datetime, MYSQLCLIENT_FIELD_TYPE.DATE: _fast_date,
                           MYSQLCLIENT_FIELD_TYPE.TIME: converters.convert_timedelta}
_SESSION = "SET SESSION time_zone='+00:00'"


def _stored_last_key(snap: dict) -> tuple | None:
    return tuple(orjson.loads(snap["last_key"])) if snap.get("last_key") else None


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
