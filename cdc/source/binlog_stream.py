"""The binlog reader: checks the source server, then yields whole source transactions.

It resumes only at transaction boundaries (a rows event whose TABLE_MAP was not seen would be
dropped silently by the binlog library), and it never lets the library reconnect by itself
in the middle of a transaction: a lost connection surfaces as :class:`StreamInterrupted` and
the stream is reopened from the last boundary.

Resume paths (both tested): by GTID (``resume_by: gtid``; MariaDB ``domain-server-seq`` list via
``@slave_connect_state``, MySQL GTID set), or by ``file:pos`` through the MySQL dump command,
which MariaDB accepts too. python-mysql-replication's MariaDB mode never sends a file/pos, so
the position path always uses the MySQL mode.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XAPrepareEvent,
    XidEvent,
)
from pymysqlreplication.row_event import NONE_SOURCE, DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.domain.envelope import binlog_file_seq
from cdc.domain.errors import CheckpointLost, PositionsWentBack, SourceSetupError, StreamInterrupted, TransientError
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import SourceConfig
from cdc.runtime.tls import client_context
from cdc.source import grants
from cdc.source import row_decoder as binlog_fixes

log = logging.getLogger("cdc.reader")


def install() -> None:
    """The row decoder's fixes of python-mysql-replication (cdc.source.row_decoder), and the library's
    logger quietened: it warns "Re-request the connection" when its socket closes, about a reconnect that
    _NoSilentReconnect refuses (the reader reopens the stream itself and logs that); in the daemon, the
    benchmarks and the tools alike, and at every shutdown, since interrupt() closes that socket.
    Called at start-up by cdc.runtime.patches.install(), never on import; idempotent."""
    binlog_fixes.apply()
    logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)

_MARIADB_GTID_STANDALONE = 0x01
_ERR_BINLOG_GONE = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG
_CONNECTION_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError)


@dataclass(slots=True)
class RowChange:
    db: str
    table: str
    op: str  # "c", "u" or "d"
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    file: str
    pos: int  # start of the rows event
    row: int  # index of the row in the event
    ts: int  # event timestamp, seconds
    # columns of the image (after, else before) the decoder turned into None though the source stored a
    # value (zero and invalid dates), each with the decoder's reason; None if there are none
    nulled: dict[str, str] | None = None
    # a rows event that could not be decoded: one RowChange for the whole event, no images, and why
    undecoded: UndecodedEvent | None = None


@dataclass(frozen=True, slots=True)
class UndecodedEvent:
    """Why a rows event could not be decoded, and its bytes: it is dead-lettered whole, the stream goes on."""

    reason: str
    column: str | None  # the column being decoded, where the decoder says
    raw: bytes  # the binlog event as the server sent it (header, rows and checksum)


@dataclass(slots=True)
class SourceTxn:
    """One committed source transaction, and the checkpoint just after it."""

    id: str
    gtid: str | None
    changes: list[RowChange]
    end: Checkpoint
    ts: int
    ddl: str | None = None
    ddl_db: str | None = None  # the session's default database of the DDL statement
    partial: bool = False  # a segment of a large transaction; ``end`` is then not a boundary


@dataclass(frozen=True, slots=True)
class Tick:
    """Yielded on a heartbeat between transactions: the reader has everything the server had, up to the
    heartbeat's own position (``position``: the binlog file it names and its ``log_pos``; None where the
    heartbeat carried none). A position read from the server afterwards may already be past what was
    received: only this one is known to be received."""

    position: Checkpoint | None = None


TICK = Tick()  # a heartbeat without a position


def _tick(event: HeartbeatLogEvent, file: str) -> Tick:
    """The heartbeat as a :class:`Tick` at its own position (its ``ident`` names the binlog file)."""
    name = (getattr(event, "ident", None) or "").rstrip("\x00") or file
    pos = getattr(getattr(event, "packet", None), "log_pos", 0) or 0
    return Tick(Checkpoint(file=name, pos=pos)) if name and pos > 0 else TICK


@dataclass(frozen=True)
class ServerInfo:
    version: str
    flavor: str  # "mariadb" or "mysql"
    server_id: int
    gtid_mode: bool
    warnings: tuple[str, ...] = ()  # e.g. the replication user holds privileges it does not need


@dataclass
class _GtidState:
    """The GTID position after the last complete transaction."""

    flavor: str
    domains: dict[str, str] = field(default_factory=dict)  # MariaDB: domain -> domain-server-seq
    mysql_set: Any = None

    @classmethod
    def parse(cls, flavor: str, text: str | None) -> _GtidState:
        state = cls(flavor)
        if not text:
            return state
        if flavor == "mariadb":
            for gtid in filter(None, (g.strip() for g in text.split(","))):
                state.domains[gtid.split("-", 1)[0]] = gtid
        else:
            from pymysqlreplication.gtid import GtidSet

            state.mysql_set = GtidSet(text)
        return state

    def add(self, gtid: str) -> None:
        if self.flavor == "mariadb":
            self.domains[gtid.split("-", 1)[0]] = gtid
        else:
            from pymysqlreplication.gtid import Gtid, GtidSet

            if self.mysql_set is None:
                self.mysql_set = GtidSet(None)
            one = Gtid(gtid)
            if one not in self.mysql_set:  # the library refuses to merge a GTID it holds
                self.mysql_set.merge_gtid(one)

    def contains(self, gtid: str) -> bool:
        """Whether the transaction ``gtid`` is inside this position (MariaDB: at or before its domain's sequence)."""
        if self.flavor == "mariadb":
            domain, _, seq = gtid.split("-")
            have = self.domains.get(domain)
            return have is not None and int(have.rsplit("-", 1)[1]) >= int(seq)
        from pymysqlreplication.gtid import Gtid

        return self.mysql_set is not None and Gtid(gtid) in self.mysql_set

    def in_hole(self, gtid: str) -> bool:
        """MySQL: ``gtid`` is not in the set, but below the highest transaction of its server uuid there."""
        if self.flavor == "mariadb" or self.mysql_set is None or self.contains(gtid):
            return False
        sid, _, gno = gtid.rpartition(":")
        return any(g.sid == sid.lower() and int(gno) < max(end for _, end in g.intervals) for g in self.mysql_set.gtids)

    def text(self) -> str | None:
        if self.flavor == "mariadb":
            return ",".join(self.domains[d] for d in sorted(self.domains, key=int)) or None
        return str(self.mysql_set) if self.mysql_set else None


class _NoSilentReconnect(BinLogStreamReader):
    """The library reconnects on its own from its last event position, which may be mid-transaction."""

    _cdc_connected = False

    def _BinLogStreamReader__connect_to_stream(self):  # noqa: N802 - overrides a name-mangled method
        if self._cdc_connected:
            raise StreamInterrupted("the binlog connection was lost")
        self._cdc_connected = True
        BinLogStreamReader._BinLogStreamReader__connect_to_stream(self)


def source_tls(config: SourceConfig) -> dict[str, Any]:
    """pymysql's ``ssl`` argument for ``source.tls`` (an SSLContext), or nothing when TLS is off."""
    if not config.tls.enabled:
        return {}
    return {"ssl": client_context(config.tls, "source.tls")}


def connection_settings(config: SourceConfig) -> dict[str, Any]:
    """PyMySQL's connection arguments for the source (TLS included), for the reader and its snapshot workers."""
    return dict(
        host=config.host,
        port=config.port,
        user=config.user,
        password=config.password.get_secret_value(),
        connect_timeout=int(config.connect_timeout_s),
        read_timeout=int(config.read_timeout_s),
        write_timeout=int(config.read_timeout_s),
        charset="utf8mb4",
        **source_tls(config),
    )


def binlog_head(fetchone: Callable[[str], tuple | None], flavor: str) -> Checkpoint:
    """The server's current binlog end, as a checkpoint. ``fetchone(sql)``: the first row of ``sql`` on
    an open autocommit connection, raising PyMySQL's errors (:func:`fetch_one` of a PyMySQL connection,
    or the snapshot's chunk reader right after its SELECT)."""
    try:
        row = fetchone("SHOW BINARY LOG STATUS")
    except pymysql.err.ProgrammingError:
        row = fetchone("SHOW MASTER STATUS")
    if row is None:
        raise SourceSetupError("the source has binary logging off: start it with --log-bin")
    file, pos = row[0], int(row[1])
    if flavor == "mariadb":
        gtid = (fetchone("SELECT @@gtid_binlog_pos") or (None,))[0] or None
    else:
        gtid = row[4] if len(row) > 4 and row[4] else None
    return Checkpoint(file=file, pos=pos, gtid=gtid)


def fetch_one(conn: pymysql.connections.Connection) -> Callable[[str], tuple | None]:
    """``sql`` -> its first row, on ``conn``."""
    def fetchone(sql: str) -> tuple | None:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()

    return fetchone


class BinlogReader:
    def __init__(self, config: SourceConfig, tables: set[tuple[str, str]] | None = None, *, warn_grants: bool = False) -> None:
        """``warn_grants``: log the preflight's warnings (excess privileges); the reader role does, once per
        reader; tools that only look at the server (offsets, verify, status) keep them in ``server.warnings``."""
        self.config = config
        self.tables = tables
        self.warn_grants = warn_grants
        self.server: ServerInfo | None = None
        self.last_event_at = 0.0  # monotonic time of the last event or heartbeat
        self.head: tuple[str, int] | None = None
        self._stream: BinLogStreamReader | None = None
        self._warned: set[str] = set()

    # ----------------------------------------------------------------- connections
    def connection_settings(self) -> dict[str, Any]:
        return connection_settings(self.config)

    def connect(self) -> pymysql.connections.Connection:
        try:
            return pymysql.connect(**self.connection_settings(), autocommit=True)
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code == 1045:
                raise SourceSetupError(
                    f"source {self.config.host}:{self.config.port} refused user {self.config.user!r} (access denied): "
                    "check source.user and source.password (CDC_SOURCE__PASSWORD)"
                ) from None
            raise TransientError(f"cannot connect to source {self.config.host}:{self.config.port}: {exc.args[-1]}") from None

    # ----------------------------------------------------------------- pre-flight
    def preflight(self) -> ServerInfo:
        """Check binlog settings and grants; raise SourceSetupError naming every setting to change."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION(), @@server_id")
            version, server_id = cur.fetchone()
            flavor = self.config.flavor
            if flavor == "auto":
                flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
            variables = _variables(cur)
            problems = _setting_problems(variables, flavor, server_id)
            grant_problems, warnings = _check_grants(cur, self.config, self.tables)
            problems += grant_problems
            gtid_mode = flavor == "mariadb" or variables.get("gtid_mode", "OFF").upper() == "ON"
        if problems:
            raise SourceSetupError(
                f"source {self.config.host}:{self.config.port} ({version}) is not set up for change data capture:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        for warning in warnings if self.warn_grants else ():
            if warning not in self._warned:  # once per reader, not on every reconnect
                self._warned.add(warning)
                log.warning("source %s:%s: %s", self.config.host, self.config.port, warning)
        self.server = ServerInfo(version=version, flavor=flavor, server_id=int(server_id), gtid_mode=gtid_mode,
                                 warnings=tuple(warnings))
        return self.server

    # ----------------------------------------------------------------- positions
    def binlog_files(self) -> list[tuple[str, int]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [(row[0], int(row[1])) for row in cur.fetchall()]

    def head_position(self) -> Checkpoint:
        """The server's current binlog end, as a checkpoint."""
        with self.connect() as conn:
            head = binlog_head(fetch_one(conn), self._flavor())
        self.head = (head.file, head.pos)
        return head

    def start_position(self, checkpoint: Checkpoint | None, published: Checkpoint | None = None) -> Checkpoint:
        """Where to stream from: the checkpoint (checked, with the highest position published before: see
        :meth:`check_available`), else ``start_at``."""
        if checkpoint is not None:
            self.check_available(checkpoint, published)
            return checkpoint
        if self.config.start_at == "earliest":
            first = self.binlog_files()[0][0]
            return Checkpoint(file=first, pos=4, gtid=self.gtid_at(first, 4))
        return self.head_position()

    def gtid_at(self, file: str, pos: int, events: Iterable[tuple] | None = None) -> str | None:
        """The GTID position of the boundary ``file:pos``: every transaction before it, as a checkpoint's ``gtid``
        (a checkpoint with a part of it would, resumed by GTID, read again or miss what the part leaves out).

        MariaDB: ``BINLOG_GTID_POS``. MySQL: the file's Previous_gtids (every GTID of the earlier files, those
        purged included) and the GTIDs of the file's transactions before ``pos``, from ``events`` (rows of
        ``SHOW BINLOG EVENTS IN file`` from its start) or listed here."""
        with self.connect() as conn, conn.cursor() as cur:
            if self._flavor() == "mariadb":
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
                return (cur.fetchone() or (None,))[0] or None
            if events is None:
                cur.execute(f"SHOW BINLOG EVENTS IN %s {'LIMIT 3' if pos <= 4 else ''}", (file,))
                events = cur.fetchall()
            return mysql_gtid_set_before(events, pos)

    def check_available(self, checkpoint: Checkpoint, published: Checkpoint | None = None) -> None:
        """CheckpointLost if the server no longer has the checkpoint's binlog; PositionsWentBack if its binlog
        ends before the checkpoint, or before ``published`` (the end of the last transaction published, which
        the sinks may hold: the server that wrote it had written that far)."""
        files = self.binlog_files()
        names = [f for f, _ in files]
        if checkpoint.file not in names and (not names or checkpoint.file < names[0]):
            raise CheckpointLost(
                f"the checkpoint {checkpoint.describe()} of source {self.config.name!r} is no longer on the server: "
                f"the oldest binlog still available is {names[0] if names else 'none'}. Rows changed in between cannot be "
                "read from the binlog."
            )
        last, end = files[-1] if files else (None, 0)  # the last binlog's size: where the server's binlog ends
        if last is not None and _sorts_before(last, end, checkpoint):
            # The server never wrote the checkpoint's position: its binlog is numbered anew.
            raise PositionsWentBack(
                f"the binlog of source {self.config.name!r} ends at {last}:{end}, before its checkpoint "
                f"{checkpoint.describe()}: this server numbers its binlog anew (a promoted replica, RESET MASTER, "
                "a changed log_bin name)."
            )
        if last is not None and published is not None and _sorts_before(last, end, published):
            raise PositionsWentBack(
                f"the binlog of source {self.config.name!r} ends at {last}:{end}, before {published.file}:"
                f"{published.pos}, up to which events were published (checkpoint {checkpoint.describe()}): this "
                "server numbers its binlog anew (a promoted replica, RESET MASTER, a changed log_bin name), or lost "
                "the end of its binlog in a crash (sync_binlog=0)."
            )

    def _flavor(self) -> str:
        if self.server is None:
            self.preflight()
        assert self.server is not None
        return self.server.flavor

    # ----------------------------------------------------------------- streaming
    def transactions(self, start: Checkpoint, stop: threading.Event, ticks: bool = False,
                     published: Checkpoint | None = None) -> Iterator[SourceTxn | Tick]:
        """Yield committed transactions after ``start`` until ``stop`` is set.

        With ``ticks``, also yield :data:`TICK` on each heartbeat that arrives between transactions:
        the server sends one only when it has sent everything it had.

        ``published``: the end of the last transaction published before (at or after ``start``; the
        state store's published mark). Resumed by GTID, the first transaction that is not in its GTID
        set (never published) must sort after it: the sinks hold versions up to there.

        Raises StreamInterrupted (reopen from the last yielded ``end``), CheckpointLost,
        TransientError, PositionsWentBack. A transaction being read when ``stop`` is set is abandoned,
        not yielded.
        """
        import time

        flavor = self._flavor()
        gtid_state = _GtidState.parse(flavor, start.gtid)
        by_gtid = self.config.resume_by == "gtid" and start.gtid is not None and self.server and self.server.gtid_mode
        stream = self._open_stream(start, by_gtid, flavor)
        self._stream = stream
        file, txn_first = start.file, None
        # Until the first transaction never published is checked against the highest position published.
        bound = published if published is not None and not _sorts_before(published.file, published.pos, start) else start
        seen = _GtidState.parse(flavor, bound.gtid) if bound is not start else None
        check_first = bool(by_gtid)
        changes: list[RowChange] = []
        gtid: str | None = None
        standalone = False  # the GTID's statement is a transaction of its own (no BEGIN follows)
        in_txn = False
        try:
            while not stop.is_set():
                try:
                    event = stream.fetchone()
                except StreamInterrupted:
                    raise
                except pymysql.err.OperationalError as exc:
                    raise _translate(exc, start, self.config.name) from None
                except _CONNECTION_ERRORS as exc:
                    raise StreamInterrupted(f"binlog connection lost: {exc}") from None
                if event is None:
                    raise StreamInterrupted("the server ended the binlog stream")
                self.last_event_at = time.monotonic()
                if isinstance(event, (RotateEvent, FormatDescriptionEvent)):
                    # Table ids are the server's in-memory numbers, given anew at each server start, and
                    # a file written after a restart follows one left by a crash or a shutdown without a
                    # closing rotate (the library forgets its table map only on a rotate with a
                    # timestamp): forgotten at every file, since every transaction maps its tables again.
                    stream.table_map = {}
                    if isinstance(event, RotateEvent):
                        if in_txn:
                            raise StreamInterrupted("binlog rotated inside a transaction; reopening from its start")
                        file = event.next_binlog
                    continue
                if isinstance(event, HeartbeatLogEvent):
                    if ticks and not in_txn:
                        yield _tick(event, file)
                    continue
                end_pos = event.packet.log_pos
                start_pos = end_pos - event.event_size
                if isinstance(event, (MariadbGtidEvent, GtidEvent)):
                    if check_first and gtid_state.in_hole(event.gtid):
                        # A MySQL checkpoint with holes (made at a position by an earlier version): the server
                        # sends what they lack first, older transactions than the checkpoint's on any server.
                        log.warning("reader: the checkpoint's GTID set %s lacks %s, which the server sends again",
                                    start.gtid, event.gtid)
                    elif check_first and not (seen is not None and seen.contains(event.gtid)):
                        if _sorts_before(file, start_pos, bound):
                            # A master sends only transactions after the GTID position, which on the server that
                            # wrote the checkpoint lie after it, and after every position already published.
                            raise PositionsWentBack(
                                f"resumed by GTID {start.gtid}, source {self.config.name!r} sends transaction "
                                f"{event.gtid} from {file}:{start_pos}, before "
                                + (f"the checkpoint {start.describe()}" if bound is start else
                                   f"{bound.file}:{bound.pos}, the end of what was published before (checkpoint "
                                   f"{start.describe()})")
                                + ": this server numbers its binlog differently from the one that wrote the "
                                "checkpoint (a promoted replica?)."
                            )
                        check_first = False
                    gtid = event.gtid
                    # MariaDB flags a statement that is its own transaction; MySQL writes BEGIN after the GTID of
                    # every transaction but those (DDL, GRANT, ANALYZE, XA COMMIT ...).
                    standalone = not isinstance(event, MariadbGtidEvent) or bool(event.flags & _MARIADB_GTID_STANDALONE)
                    in_txn, changes, txn_first = True, [], (file, start_pos)
                    continue
                if isinstance(event, QueryEvent):
                    query = event.query.strip()
                    upper = query[:12].upper()
                    if upper.startswith("BEGIN") or upper.startswith("XA START"):
                        if not in_txn:
                            in_txn, changes, gtid, txn_first = True, [], None, (file, start_pos)
                        standalone = False
                        continue
                    ends = upper.startswith("COMMIT") or upper.startswith("ROLLBACK")  # ROLLBACK: kept non-transactional rows
                    if ends or standalone or not in_txn:
                        control = ends or upper.startswith("XA ")
                        if upper.startswith("XA ROLLBACK"):
                            self._xa_rolled_back(query, file, start_pos)
                        ddl = None if control else query
                        txn = self._finish(gtid, gtid_state, changes, file, end_pos, event.timestamp, txn_first, ddl)
                        if ddl is not None:
                            txn.ddl_db = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
                        yield txn
                        in_txn, changes, gtid, standalone = False, [], None, False
                    continue
                if isinstance(event, (XidEvent, XAPrepareEvent)):
                    # An XA transaction's rows are in the binlog at its PREPARE, and are published then: XA COMMIT
                    # (or ROLLBACK) comes later, as a transaction of its own with its own GTID.
                    yield self._finish(gtid, gtid_state, changes, file, end_pos, event.timestamp, txn_first, None)
                    in_txn, changes, gtid, standalone = False, [], None, False
                    continue
                if isinstance(event, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                    if self.tables is not None and (event.schema, event.table) not in self.tables:
                        continue
                    if not in_txn:  # a non-transactional engine writes rows outside BEGIN/COMMIT
                        in_txn, changes, txn_first = True, [], (file, start_pos)
                    _collect(event, file, start_pos, changes)
                    if len(changes) > self.config.max_txn_rows:
                        # Memory stays bounded whatever the transaction's size: hand over a segment,
                        # keeping one row back so that the final segment is never empty.
                        keep = changes.pop()
                        yield SourceTxn(id=gtid or f"{txn_first[0]}:{txn_first[1]}", gtid=gtid, changes=changes,
                                        end=Checkpoint(file=file, pos=end_pos), ts=event.timestamp, partial=True)
                        changes = [keep]
        finally:
            self._stream = None
            stream.close()

    def _xa_rolled_back(self, query: str, file: str, pos: int) -> None:
        """The binlog has an XA ROLLBACK only for a prepared XA transaction, whose rows were published at its
        PREPARE: the sinks hold rows the source dropped. Not silent: the operator is told which and what to do."""
        log.error("reader: source %s rolled back the prepared XA transaction %s at %s:%s, whose rows were published "
                  "at its XA PREPARE: the sinks hold rows the source does not have. Check the tables it touched with "
                  "`cdc verify`, and re-snapshot them (`cdc snapshot start`) if they differ.", self.config.name,
                  query[len("XA ROLLBACK"):].strip(), file, pos)

    def _finish(self, gtid, gtid_state, changes, file, end_pos, ts, first, ddl) -> SourceTxn:
        if gtid:
            gtid_state.add(gtid)
        txn_id = gtid or (f"{first[0]}:{first[1]}" if first else f"{file}:{end_pos}")
        end = Checkpoint(file=file, pos=end_pos, gtid=gtid_state.text(), ts_ms=ts * 1000)
        return SourceTxn(id=txn_id, gtid=gtid, changes=changes, end=end, ts=ts, ddl=ddl)

    def _open_stream(self, start: Checkpoint, by_gtid: bool, flavor: str) -> BinLogStreamReader:
        only_schemas = sorted({db for db, _ in self.tables}) if self.tables else list(self.config.databases)
        only_tables = sorted({t for _, t in self.tables}) if self.tables else None
        kwargs: dict[str, Any] = dict(
            connection_settings=self.connection_settings(),
            server_id=self.config.replica_server_id,
            blocking=True,
            slave_heartbeat=self.config.heartbeat_s,
            only_events=[
                MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, XAPrepareEvent, RotateEvent,
                FormatDescriptionEvent, HeartbeatLogEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent,
            ],
            only_schemas=only_schemas,
            only_tables=only_tables,
            freeze_schema=True,
        )
        if binlog_fixes.decoder() != "C" and "decoder" not in self._warned:  # once per reader, not per reconnect
            self._warned.add("decoder")
            log.warning("the C row decoder cdc.source._rowdecode is not built, so rows are decoded in Python, at about "
                        "three quarters of the rate: install the package with `pip install -e .` (needs gcc and the "
                        "Python headers)")
        if by_gtid:
            kwargs.update(auto_position=start.gtid, is_mariadb=flavor == "mariadb")
            log.info("opening binlog stream by GTID %s", start.gtid)
        else:
            kwargs.update(resume_stream=True, log_file=start.file, log_pos=start.pos, is_mariadb=False)
            log.info("opening binlog stream at %s:%s", start.file, start.pos)
        try:
            return _NoSilentReconnect(**kwargs)
        except pymysql.err.OperationalError as exc:
            raise _translate(exc, start, self.config.name) from None

    def interrupt(self) -> None:
        """Close the stream's socket from another thread, so a blocked read returns at once."""
        stream = self._stream
        if stream is not None:
            try:
                stream._stream_connection._sock.shutdown(2)  # noqa: SLF001
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass


# The decoder's reasons for a None the source did not store as NULL (python-mysql-replication's
# NONE_SOURCE values, which cdc/source/row_decoder.py and cdc/source/_rowdecode.c give too): zero and invalid dates.
_NULLED_REASONS = frozenset({NONE_SOURCE.OUT_OF_DATE_RANGE, NONE_SOURCE.OUT_OF_DATETIME_RANGE,
                             NONE_SOURCE.OUT_OF_DATETIME2_RANGE})


def _collect(event, file: str, start_pos: int, out: list[RowChange]) -> None:
    """The event's rows as RowChanges in ``out``. An event whose rows cannot be decoded (a value no
    decoder foresaw) becomes one RowChange carrying :class:`UndecodedEvent`, for the reader's dead-letter
    queue: nothing in the data stops the stream."""
    schema, table, ts = event.schema, event.table, event.timestamp
    op = "c" if isinstance(event, WriteRowsEvent) else "u" if isinstance(event, UpdateRowsEvent) else "d"
    try:
        rows = event.rows
    except Exception as exc:  # noqa: BLE001 - any error of the data's, named in the dead letter
        out.append(RowChange(schema, table, op, None, None, file, start_pos, 0, ts, undecoded=_undecoded(event, exc)))
        return
    if op == "c":
        for i, row in enumerate(rows):
            out.append(RowChange(schema, table, "c", None, row["values"], file, start_pos, i, ts,
                                 _nulled(row.get("none_sources"))))
    elif op == "u":
        for i, row in enumerate(rows):
            out.append(RowChange(schema, table, "u", row["before_values"], row["after_values"], file, start_pos, i, ts,
                                 _nulled(row.get("after_none_sources"))))
    else:
        for i, row in enumerate(rows):
            out.append(RowChange(schema, table, "d", row["values"], None, file, start_pos, i, ts,
                                 _nulled(row.get("none_sources"))))


def _nulled(none_sources: dict[str, str] | None) -> dict[str, str] | None:
    if not none_sources:
        return None
    return {column: why for column, why in none_sources.items() if why in _NULLED_REASONS} or None


def _undecoded(event, exc: BaseException) -> UndecodedEvent:
    column = getattr(exc, "cdc_column", None)
    reason = (f"rows event of {event.schema}.{event.table} not decoded"
              + (f" (column {column})" if column else "") + f": {type(exc).__name__}: {exc}")
    try:
        raw = bytes(event.packet.packet._data[1:])  # noqa: SLF001 - after the OK byte: the event as written
    except Exception:  # noqa: BLE001 - the reason is kept whatever happens to the bytes
        raw = b""
    return UndecodedEvent(reason, column, raw)


def mysql_gtid_set_before(events: Iterable[tuple], pos: int) -> str | None:
    """The MySQL GTID set executed before ``pos``, from rows of ``SHOW BINLOG EVENTS IN <file>`` from the file's
    start ((Log_name, Pos, Event_type, Server_id, End_log_pos, Info)): its Previous_gtids, then each Gtid
    event (``SET @@SESSION.GTID_NEXT= 'uuid:n'``) that starts before ``pos``."""
    from pymysqlreplication.gtid import GtidSet

    state = _GtidState("mysql")
    for row in events:
        kind, info = row[2], (row[5] or "").strip()
        if kind == "Previous_gtids":  # the file's header, before its first transaction: counts at pos 4 too
            state.mysql_set = GtidSet(info.replace("\n", "")) if info else None
        elif kind != "Format_desc" and int(row[1]) >= pos:
            break
        elif kind == "Gtid" and "'" in info:
            state.add(info.split("'")[1])
    return state.text()


def _sorts_before(file: str, pos: int, checkpoint: Checkpoint) -> bool:
    """Whether ``file:pos`` sorts before ``checkpoint`` in version order (file sequence, then position)."""
    return (binlog_file_seq(file), pos) < (binlog_file_seq(checkpoint.file), checkpoint.pos)


def _translate(exc: pymysql.err.OperationalError, start: Checkpoint, source: str) -> Exception:
    code = exc.args[0] if exc.args else None
    message = exc.args[-1] if exc.args else str(exc)
    if code == _ERR_BINLOG_GONE:
        return CheckpointLost(
            f"the source cannot stream from checkpoint {start.describe()} of source {source!r}: {message} (the binlog "
            "was purged?)."
        )
    return StreamInterrupted(f"binlog stream error {code}: {message}")


def _variables(cur) -> dict[str, str]:
    names = (
        "log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata", "log_bin_compress",
        "binlog_transaction_compression", "gtid_mode", "enforce_gtid_consistency", "binlog_checksum",
    )
    cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ",".join(["%s"] * len(names)) + ")", names)
    return {name.lower(): str(value) for name, value in cur.fetchall()}


def _setting_problems(v: dict[str, str], flavor: str, server_id: int) -> list[str]:
    problems = []
    if v.get("log_bin", "OFF").upper() not in ("ON", "1"):
        problems.append("binary logging is off: start the server with --log-bin")
    if v.get("binlog_format", "").upper() != "ROW":
        problems.append(f"binlog_format is {v.get('binlog_format')}: set binlog_format=ROW")
    if v.get("binlog_row_image", "").upper() != "FULL":
        problems.append(f"binlog_row_image is {v.get('binlog_row_image')}: set binlog_row_image=FULL")
    if "binlog_row_metadata" not in v:
        problems.append("the server has no binlog_row_metadata (needs MySQL 8.0.1+ or MariaDB 10.5+)")
    elif v["binlog_row_metadata"].upper() != "FULL":
        problems.append(f"binlog_row_metadata is {v['binlog_row_metadata']}: set binlog_row_metadata=FULL")
    if v.get("log_bin_compress", "OFF").upper() in ("ON", "1"):
        problems.append("log_bin_compress is ON (compressed events cannot be read): set log_bin_compress=OFF")
    if v.get("binlog_transaction_compression", "OFF").upper() in ("ON", "1"):
        problems.append("binlog_transaction_compression is ON: set binlog_transaction_compression=OFF")
    if not server_id:
        problems.append("server_id is 0: give the server a non-zero server_id")
    return problems


def _check_grants(cur, config: SourceConfig, tables: set[tuple[str, str]] | None) -> tuple[list[str], list[str]]:
    """(problems that stop the reader, warnings): missing grants, and privileges beyond what it needs."""
    cur.execute("SHOW GRANTS")
    lines = [str(row[0]) for row in cur.fetchall()]
    parsed, unparsed = grants.parse_grants(lines)
    user = config.user
    account = next((g.account for g in parsed if g.account), f"'{user}'@'%'")
    problems, warnings = [], []
    missing = grants.missing_privileges(parsed, list(config.databases), tables)
    global_missing = [p for p, on in missing if on == "*.*"]
    if global_missing:
        names = ", ".join("REPLICATION CLIENT (BINLOG MONITOR on MariaDB)" if p == "REPLICATION CLIENT" else p for p in global_missing)
        problems.append(f"user {user!r} lacks {names}: GRANT {', '.join(global_missing)} ON *.* TO {account}")
    for privilege, on in missing:
        if on != "*.*":
            problems.append(f"user {user!r} lacks {privilege} on {on} (snapshots read the tables): "
                            f"GRANT {privilege} ON {on} TO {account}")
    excess = grants.excess_privileges(parsed)
    if excess:
        warnings.append(grants.excess_warning(user, excess))
    if unparsed:
        warnings.append(f"replication user {user!r}: could not parse SHOW GRANTS line(s) {unparsed}; check them by hand")
    return problems, warnings
