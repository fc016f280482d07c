"""Snapshot chunks: one key range of a table read, mapped and encoded, in worker processes.

A snapshot's time goes almost all into Python work per row: converting the SELECT's result,
mapping it, building and encoding the events. One thread does that at about a core's worth, so
``snapshot.workers`` processes do it side by side, each for its own key range (a chunk), while the
reader thread (:class:`cdc.snapshot.Snapshotter`) keeps everything that needs the binlog stream: the
chunk boundaries, the keys the stream touched while a chunk was out, the watermarks and the order
of publishing. What crosses between them is small: a :class:`ChunkRequest` (a key range) one way,
a :class:`ChunkResult` (the chunk's messages, already encoded and batched as
``broker.batch_events`` asks, and each row's key) the other way.

``snapshot.workers: 0`` reads chunks in the reader thread itself, through the same code.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import multiprocessing
import signal
import traceback
from collections import Counter
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

from cdc.checkpoint import Checkpoint
from cdc.config import SourceConfig
from cdc.envelope import batch_body, encode, key_string, make_version, now_ms
from cdc.errors import CdcError, TerminalError, TransientError
from cdc.events import too_large
from cdc.mapping import EntityMapping, Mapper, MappingSchemaError, RowMappingError
from cdc.mapping.mapper import source_key
from cdc.publisher import OutMessage, batch_headers, batch_id, event_runs, join_events
from cdc.reader import binlog_head, connection_settings
from cdc.topology import event_headers

log = logging.getLogger("cdc.snapshot")


@dataclass(frozen=True)
class ChunkRequest:
    """Rows of ``db.table`` with key in (``after``, ``upto``]: ``after`` None from the start, ``upto``
    None to the end (the table's last chunk)."""

    snapshot_id: int
    db: str
    table: str
    key_columns: tuple[str, ...]
    after: tuple | None
    upto: tuple | None
    where: str | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """The chunk's SELECT."""
        return self._select("*", "")

    def end_sql(self, rows: int) -> tuple[str, list[Any]]:
        """The key ``rows`` rows after ``after`` within the range (an index read): where a chunk of that
        many rows ends; no row if fewer are left."""
        return self._select(", ".join(map(quote, self.key_columns)), f" LIMIT 1 OFFSET {rows - 1}")

    def _select(self, what: str, tail: str) -> tuple[str, list[Any]]:
        # Both drivers %-format a statement run with parameters (with none too): every `%` of a name or of
        # the operator's condition (LIKE '%@x.org') is doubled so that it reaches the server as written.
        keys = ", ".join(map(quote, self.key_columns)).replace("%", "%%")
        marks = ", ".join(["%s"] * len(self.key_columns))
        conditions, params = [], []
        if self.after is not None:
            conditions.append(f"({keys}) > ({marks})")
            params += list(self.after)
        if self.upto is not None:
            conditions.append(f"({keys}) <= ({marks})")
            params += list(self.upto)
        if self.where:
            conditions.append(f"({self.where.replace('%', '%%')})")
        table = f"{quote(self.db)}.{quote(self.table)}".replace("%", "%%")
        return (f"SELECT {what.replace('%', '%%')} FROM {table}"
                + (" WHERE " + " AND ".join(conditions) if conditions else "") + f" ORDER BY {keys}{tail}"), params


@dataclass
class ChunkResult:
    """A chunk's messages, as they go out when the stream touched none of its rows.

    ``messages`` are :class:`OutMessage` fields as tuples (a tenth of the cost of pickling the
    objects). ``rows[i]`` are the indexes (into ``keys``) of the rows message ``i`` holds, and for a
    batch ``ends[i]`` the end offset of each of its events in the body, so that the reader thread can
    take out the rows the stream touched (:meth:`messages_without`) without encoding anything again."""

    request: ChunkRequest
    high: Checkpoint | None  # the binlog head read right after the SELECT: the chunk's watermark
    keys: list[tuple]  # each row's key, in key order
    messages: list[tuple]
    rows: list[tuple[int, ...]]
    ends: list[tuple[int, ...] | None]
    problems: list[str]  # rows dead-lettered (not mapped, too large), for the reader's log
    failed: str | None = None  # the server refused the query (say, a bad WHERE): the snapshot fails
    # rows by (db, table, column) whose stored value became null (zero and invalid dates), for the reader's metrics
    nulled: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def last_key(self) -> tuple | None:
        """Where the next chunk starts: the range's end, or for the last chunk its last row."""
        if self.request.upto is not None:
            return self.request.upto
        return self.keys[-1] if self.keys else self.request.after

    def dropped(self, touched: set[tuple]) -> set[int]:
        """The rows (indexes) whose keys are in ``touched``."""
        if not touched:
            return set()
        index = {key: i for i, key in enumerate(self.keys)}
        return {index[k] for k in touched if k in index}

    def messages_without(self, drop: set[int]) -> list[OutMessage]:
        """The messages, without the rows in ``drop``: a batch holding some is joined again from the rest."""
        out: list[OutMessage] = []
        for fields, rows, ends in zip(self.messages, self.rows, self.ends):
            if not drop or drop.isdisjoint(rows):
                out.append(OutMessage(*fields))
            elif ends is not None:  # a batch holding dropped rows: the others, joined again
                body, start, kept = fields[1], 1, []
                for row, end in zip(rows, ends):
                    if row not in drop:
                        event = body[start:end]
                        kept.append(OutMessage.from_event(orjson.loads(event), body=event))
                    start = end + 1
                if kept:
                    out.append(join_events(kept))
        return out


@dataclass(frozen=True)
class WorkerSetup:
    """What a chunk reader needs, picklable for a worker process (the password travels through its pipe)."""

    source: SourceConfig
    mappings: list[EntityMapping]
    flavor: str
    server_id: int
    batch_events: int
    max_message_bytes: int


class ChunkReader:
    """Reads, maps and encodes chunks (in a worker process, or in the reader thread with no workers)."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.mapper = Mapper(setup.mappings)
        self.select = ChunkSelect(connection_settings(setup.source))

    def read(self, request: ChunkRequest) -> ChunkResult:
        sql, params = request.sql()
        try:
            rows = self.select.rows(sql, params)
            high = binlog_head(self.select.fetchone, self.setup.flavor)  # on the same connection, right after
        except pymysql.err.OperationalError as exc:
            self.close()
            raise TransientError(f"snapshot of {request.db}.{request.table}: {exc.args[-1]}") from None
        except pymysql.err.ProgrammingError as exc:
            return ChunkResult(request, None, [], [], [], [], [], failed=str(exc.args[-1]))
        return self._encode(request, rows, high)

    def close(self) -> None:
        self.select.close()

    def _encode(self, request: ChunkRequest, rows: list[dict[str, Any]], high: Checkpoint) -> ChunkResult:
        setup, db, table = self.setup, request.db, request.table
        source_name, limit = setup.source.name, setup.max_message_bytes
        version = make_version(high.file, high.pos, 0)
        txn_id = f"snapshot-{request.snapshot_id}@{high.file}:{high.pos}"
        now = now_ms()  # read and built: the source's ts_ms and the events'
        # The same for every row of the chunk (one read, one watermark): built once, as build_events
        # does for a transaction.
        source = {"name": source_name, "server_id": setup.server_id, "gtid": high.gtid, "file": high.file, "pos": high.pos,
                  "row": 0, "db": db, "table": table, "ts_ms": now, "snapshot": True}
        source_json = orjson.Fragment(encode(source))  # encoded once: the same bytes in every event
        id_prefix = f"{source_name}:{high.file}:{high.pos}:r:"
        mappings = self.mapper.for_table(db, table)
        mappings_null_dates = {m.entity: Mapper.may_null(m) for m in mappings}
        columns = request.key_columns
        keys = [tuple(row[c] for c in columns) for row in rows]
        # One entry per message as it would go out alone: (routing key (None: a dead letter, in ``dead``),
        # body, event id, entity, key text, the row it comes from).
        entries: list[tuple[str | None, bytes, str, str, str, int]] = []
        dead: dict[int, OutMessage] = {}
        problems: list[str] = []
        nulled: Counter[tuple[str, str, str]] = Counter()
        for i, row in enumerate(rows):
            nulled_here: set[str] = set()
            for mapping in mappings:
                entity = mapping.entity
                try:
                    mapped = Mapper.map_row(mapping, row)
                except MappingSchemaError:
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever the row holds, the row is dead-lettered
                    reason = str(exc) if isinstance(exc, RowMappingError) else (
                        f"table {db}.{table}, entity {entity}, key {source_key(mapping, row)}: the row cannot be mapped: "
                        f"{type(exc).__name__}: {exc}")
                    problems.append(f"row of {db}.{table} not mapped: {reason}")
                    dead[len(entries)] = self._dead(request, entity, row, reason, source_key(mapping, row),
                                                    getattr(exc, "column", None))
                    entries.append((None, b"", "", entity, "", i))
                    continue
                if mapped.values is not None and mappings_null_dates[entity]:
                    nulled_here.update(Mapper.nulled_columns(mapping, row, mapped.values))
                op = "r" if mapped.values is not None else "d"
                key = key_string(mapped.key)
                event_id = f"{id_prefix}{entity}:{key}"
                event = {
                    "v": 1, "id": event_id, "version": version, "op": op, "entity": entity, "key": mapped.key,
                    "before": None, "after": mapped.values, "source": source_json,
                    "txn": {"id": txn_id, "index": i, "last": False}, "ts_ms": now,
                }
                body = encode(event)
                if len(body) > limit:
                    reason, too_big = too_large(event | {"source": source}, len(body), limit)
                    problems.append(f"change event dead-lettered: {reason}")
                    dead[len(entries)] = self._dead(request, entity, too_big, reason)
                    entries.append((None, body, event_id, entity, key, i))
                else:
                    entries.append((f"{entity}.{op}", body, event_id, entity, key, i))
            for column in nulled_here:
                nulled[db, table, column] += 1
        messages: list[tuple] = []
        members: list[tuple[int, ...]] = []
        ends: list[tuple[int, ...] | None] = []
        runs = event_runs([e[0] for e in entries], [len(e[1]) for e in entries], setup.batch_events, limit)
        for run in runs:
            members.append(tuple(entries[j][5] for j in run))
            route, body, event_id, entity, key, _ = entries[run[0]]
            if len(run) == 1:
                if run[0] in dead:
                    m = dead[run[0]]
                    messages.append((m.routing_key, m.body, m.message_id, m.headers, m.timestamp_ms, 1))
                else:
                    messages.append((route, body, event_id, event_headers(entity, key, version), now, 1))
                ends.append(None)
                continue
            batch = [entries[j][1] for j in run]
            offsets, end = [], 0
            for one in batch:
                end += len(one) + 1
                offsets.append(end)
            ends.append(tuple(offsets))
            messages.append((route, batch_body(batch), batch_id(event_id, len(run)), batch_headers(version, entity, len(run)),
                             now, len(run)))
        return ChunkResult(request, high, keys, messages, members, ends, problems, nulled=nulled)

    def _dead(self, request: ChunkRequest, entity: str, row: dict, reason: str, key: dict | None = None,
              column: str | None = None) -> OutMessage:
        body = {"reason": reason, "entity": entity, "db": request.db, "table": request.table, "op": "r", "key": key,
                "column": column, "after": row, "snapshot": request.snapshot_id}
        return OutMessage.reader_dead_letter(entity, body, reason, f"{self.setup.source.name}:snapshot:"
                                             f"{request.snapshot_id}:{entity}:{hash(encode(body))}", now_ms(),
                                             key=key_string(key) if key else None)


class ChunkWorkers:
    """``count`` worker processes reading chunks, one chunk at a time each; ``count`` 0: the caller's thread.

    :meth:`submit` hands a chunk to an idle worker and returns a ticket; :meth:`result` waits for it.
    A worker that dies (killed, out of memory) raises TransientError: the reader restarts the
    snapshot from its last confirmed chunk."""

    def __init__(self, setup: WorkerSetup, count: int) -> None:
        self.count = count
        self._inline = ChunkReader(setup) if count == 0 else None
        self._done: dict[int, Any] = {}
        self._busy: set[int] = set()
        self._procs: list[Any] = []
        self._pipes: list[Any] = []
        context = multiprocessing.get_context("spawn")  # the reader has threads: never fork it
        for n in range(count):
            ours, theirs = context.Pipe()
            proc = context.Process(target=_serve, args=(theirs, setup), name=f"cdc-snapshot-worker-{n + 1}", daemon=True)
            proc.start()
            theirs.close()  # ours alone: recv() sees the end of the pipe when the worker dies
            self._procs.append(proc)
            self._pipes.append(ours)

    def idle(self) -> bool:
        return len(self._busy) < max(self.count, 1)

    def submit(self, request: ChunkRequest) -> int:
        ticket = next(n for n in range(max(self.count, 1)) if n not in self._busy)
        self._busy.add(ticket)
        if self._inline is not None:
            self._done[ticket] = _answer(self._inline, request)
            return ticket
        try:
            self._pipes[ticket].send(request)
        except (OSError, EOFError):
            raise self._died(ticket) from None
        return ticket

    def result(self, ticket: int) -> ChunkResult:
        if ticket in self._done:
            reply = self._done.pop(ticket)
        else:
            try:
                reply = self._pipes[ticket].recv()
            except (OSError, EOFError):
                raise self._died(ticket) from None
        self._busy.discard(ticket)
        if reply[0] == "error":
            if reply[2]:
                log.debug("snapshot worker %s: %s", ticket + 1, reply[2])
            raise reply[1]
        return reply[1]

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
        for pipe in self._pipes:
            pipe.close()  # a worker waiting for a chunk sees the end of its pipe and leaves
        for proc in self._procs:
            proc.join(2)
            if proc.is_alive():  # busy with a chunk: it is not needed any more
                proc.kill()
                proc.join(2)
        self._procs, self._pipes = [], []

    def _died(self, ticket: int) -> TransientError:
        proc = self._procs[ticket]
        proc.join(1)
        return TransientError(f"snapshot worker process {ticket + 1} (pid {proc.pid}) ended (exit code {proc.exitcode}); "
                              "the snapshot goes on from its last confirmed chunk")


def _serve(pipe: Any, setup: WorkerSetup) -> None:
    """A worker process: read chunks until the reader closes the pipe."""
    from cdc.malloc import tune_malloc

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the reader stops us
    tune_malloc()
    reader = ChunkReader(setup)
    gc.freeze()  # what was imported stays out of the collector's way
    try:
        while True:
            try:
                request = pipe.recv()
            except (EOFError, OSError):
                return
            reply = _answer(reader, request)
            try:
                pipe.send(reply)
            except (EOFError, OSError):
                return
    finally:
        reader.close()


def _answer(reader: ChunkReader, request: ChunkRequest) -> tuple:
    """("ok", result), or ("error", a picklable CdcError, the traceback of an unexpected one)."""
    try:
        return ("ok", reader.read(request))
    except CdcError as exc:
        return ("error", exc, "")
    except Exception as exc:  # noqa: BLE001 - the reader names it; the traceback goes to its debug log
        return ("error", TerminalError(f"snapshot of {request.db}.{request.table}: {type(exc).__name__}: {exc}"),
                traceback.format_exc())


# ------------------------------------------------------------------------------------ the chunk SELECT
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
        return self._run(sql, params, dicts=True)

    def fetchone(self, sql: str) -> tuple | None:
        """The first row of ``sql``, as a tuple (for :func:`cdc.reader.binlog_head`)."""
        rows = self._run(sql, [], dicts=False)
        return tuple(rows[0]) if rows else None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a dead connection is being dropped
                pass
            self._conn = None

    def _run(self, sql: str, params: list[Any], dicts: bool) -> Any:
        conn = self._connect()
        if self.driver == "pymysql":
            with conn.cursor(pymysql.cursors.DictCursor if dicts else pymysql.cursors.Cursor) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        try:
            with conn.cursor(MySQLdb.cursors.DictCursor if dicts else MySQLdb.cursors.Cursor) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        except MySQLdb.Error as exc:
            if isinstance(exc, (MySQLdb.OperationalError, MySQLdb.InterfaceError)):
                self.close()
            raise _as_pymysql(exc) from None

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        s = self.settings
        if self.driver == "pymysql":
            self._conn = pymysql_connect(s)
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


def pymysql_connect(settings: dict[str, Any]) -> pymysql.connections.Connection:
    """A PyMySQL connection for snapshots: autocommit, session time zone UTC, the snapshot's converters."""
    return pymysql.connect(**settings, autocommit=True, init_command=_SESSION, conv=SNAPSHOT_CONVERSIONS)


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


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

