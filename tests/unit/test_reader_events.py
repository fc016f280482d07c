"""The reader's transaction assembly on MySQL binlogs (MySQL 8 is not installable here): constructed event
sequences, made of python-mysql-replication's own event classes with the attributes its parser sets, are fed
through ``BinlogReader.transactions`` in place of the server's stream (the MariaDB paths run against the real
server in tests/integration). Each sequence is generated from a printed seed."""

from __future__ import annotations

import os
import random
import threading
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    QueryEvent,
    RotateEvent,
    XAPrepareEvent,
    XidEvent,
)
from pymysqlreplication.gtid import Gtid, GtidSet
from pymysqlreplication.row_event import WriteRowsEvent

from cdc.admin.binlog_time import BinlogSearch
from cdc.admin.positions import FilePos
from cdc.domain.errors import PositionsWentBack
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import SourceConfig
from cdc.source.binlog_stream import BinlogReader, ServerInfo, SourceTxn, mysql_gtid_set_before

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
DDL = ["ALTER TABLE items ADD COLUMN c{n} INT", "CREATE TABLE extra{n} (id INT PRIMARY KEY)", "DROP TABLE extra{n}",
       "TRUNCATE TABLE items", "RENAME TABLE items TO items_old{n}"]
ADMIN = ["GRANT SELECT ON shop.* TO 'u{n}'@'%'", "ANALYZE TABLE items", "OPTIMIZE TABLE items",
         "CREATE USER 'u{n}'@'%' IDENTIFIED BY 'x'", "FLUSH PRIVILEGES", "REVOKE SELECT ON shop.* FROM 'u{n}'@'%'"]


@pytest.fixture
def rng():
    seed = int(os.environ.get("CDC_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed} (CDC_TEST_SEED={seed} repeats this run)")
    return random.Random(seed)


def upto(n: int) -> str | None:
    """The GTID set of transactions 1..n of the constructed server, as the reader writes it."""
    return str(GtidSet(f"{UUID}:1-{n}")) if n else None


def _event(cls, size: int, log_pos: int, ts: int, **attrs):
    event = object.__new__(cls)  # the library's class, with the attributes its parser would have set
    event.packet, event.event_size, event.timestamp = SimpleNamespace(log_pos=log_pos), size, ts
    for name, value in attrs.items():
        setattr(event, name, value)
    return event


@dataclass
class Txn:
    """What a transaction of the constructed binlog is expected to yield."""

    gtid: str
    kind: str
    ids: list[int]
    ddl: str | None
    start: tuple[str, int]  # where its first event starts
    end: tuple[str, int] = ("", 0)  # just after its last event


@dataclass
class MySqlBinlog:
    """A MySQL binlog with GTIDs, event by event: what the server sends, its positions, and its
    ``SHOW BINLOG EVENTS`` rows. ``shift`` moves every position (another server's numbering)."""

    seq: int = 1
    shift: int = 0
    shrink: int = 0  # bytes fewer per event (another server's event sizes)
    ts: int = 1_700_000_000
    files: dict[str, list[tuple]] = field(default_factory=dict)  # file -> [(pos, event, row)]
    txns: list[Txn] = field(default_factory=list)
    gno: int = 0
    purged: int = 0  # GTIDs 1..purged are in files no longer on the server

    def __post_init__(self) -> None:
        self.file, self.pos = "", 0
        self._new_file()

    def _new_file(self) -> None:
        self.file = f"mysql-bin.{self.seq:06d}"
        self.seq += 1
        self.files[self.file] = []
        self.pos = 4
        self._put(FormatDescriptionEvent, 122, "Format_desc", "Server ver: 8.0.36, Binlog ver: 4")
        prev = f"{UUID}:1-{self.gno}" if self.gno else ""
        self._put(None, 31 + 40 * bool(prev), "Previous_gtids", prev)
        self.pos += self.shift

    def _put(self, cls, size: int, kind: str, info: str = "", **attrs):
        if kind not in ("Format_desc", "Previous_gtids"):
            size -= self.shrink
        start = self.pos
        self.pos += size
        event = _event(cls, size, self.pos, self.ts, **attrs) if cls else None
        self.files[self.file].append((start, event, (self.file, start, kind, 1, self.pos, info)))

    def gtid(self) -> str:
        self.gno += 1
        gtid = f"{UUID}:{self.gno}"
        self._put(GtidEvent, 65, "Gtid", f"SET @@SESSION.GTID_NEXT= '{gtid}'", sid=uuid.UUID(UUID).bytes,
                  gno=self.gno)
        return gtid

    def query(self, sql: str) -> None:
        self._put(QueryEvent, 60 + len(sql), "Query", sql, query=sql, schema=b"shop")

    def rows(self, ids: list[int]) -> None:
        self._put(None, 40, "Table_map", "table_id: 90 (shop.items)")
        event = {"_RowsEvent__rows": [{"values": {"id": i}} for i in ids], "schema": "shop", "table": "items"}
        self._put(WriteRowsEvent, 20 + 10 * len(ids), "Write_rows", "table_id: 90 flags: STMT_END_F", **event)

    def transaction(self, kind: str, rng: random.Random, n: int) -> Txn:
        self.ts += rng.randrange(3)
        start = (self.file, self.pos)
        gtid = self.gtid()
        ids = [n * 100 + i for i in range(rng.randrange(1, 4))] if kind in ("dml", "myisam", "xa", "xa1") else []
        ddl = None
        xid = f"X'{n:04x}',X'',1"
        if kind in ("dml", "myisam", "empty"):
            self.query("BEGIN")
            if ids:
                self.rows(ids)
            if kind == "dml":
                self._put(XidEvent, 31, "Xid", f"COMMIT /* xid={n} */", xid=n)
            else:
                self.query("COMMIT")
        elif kind in ("ddl", "admin"):
            ddl = rng.choice(DDL if kind == "ddl" else ADMIN).format(n=n)
            self.query(ddl)
        elif kind in ("xa", "xa1"):
            self.query(f"XA START {xid}")
            self.rows(ids)
            self.query(f"XA END {xid}")
            self._put(XAPrepareEvent, 40, "XA_prepare", f"XA {'COMMIT' if kind == 'xa1' else 'PREPARE'} {xid}",
                      one_phase=kind == "xa1")
        elif kind in ("xa-commit", "xa-rollback"):
            self.query(f"XA {'COMMIT' if kind == 'xa-commit' else 'ROLLBACK'} {xid}")
        txn = Txn(gtid, kind, ids, ddl, start, (self.file, self.pos))
        self.txns.append(txn)
        return txn

    def rotate(self) -> None:
        self._put(RotateEvent, 47, "Rotate", f"mysql-bin.{self.seq:06d};pos=4", next_binlog=f"mysql-bin.{self.seq:06d}",
                  position=4)
        self._new_file()

    def generate(self, rng: random.Random, count: int, rotate: bool = True) -> MySqlBinlog:
        kinds = ["dml"] * 6 + ["myisam", "empty", "ddl", "ddl", "admin", "admin", "xa", "xa1"]
        prepared = []
        for n in range(count):
            if prepared and rng.random() < 0.3:
                prepared.pop(0)
                self.transaction(rng.choice(["xa-commit", "xa-commit", "xa-rollback"]), rng, n)
            else:
                txn = self.transaction(rng.choice(kinds), rng, n)
                if txn.kind == "xa":
                    prepared.append(txn)
            if rotate and (rng.random() < 0.1 or (self.txns[-1].kind in ("ddl", "admin") and rng.random() < 0.3)):
                self.rotate()  # a rotation right after a DDL included
        return self

    def gtid_set(self, upto: int) -> str:
        """The set of the first ``upto`` transactions' GTIDs (those purged before this binlog included)."""
        return f"{UUID}:1-{upto}" if upto else ""

    def stream(self, start: Checkpoint, by_gtid: bool, stop: threading.Event):
        """What the server sends from ``start``: by GTID (MySQL's auto-position: every transaction not in the
        set, then on), or from file:pos."""
        out = [_event(RotateEvent, 47, 0, 0, next_binlog=start.file, position=start.pos),
               _event(FormatDescriptionEvent, 122, 0, self.ts)]
        skip = set()
        if by_gtid:
            have = GtidSet(start.gtid)
            first = next(t for t in self.txns if Gtid(t.gtid) not in have)
            start = Checkpoint(file=first.start[0], pos=first.start[1])
            out = [_event(RotateEvent, 47, 0, 0, next_binlog=start.file, position=start.pos), out[1]]
            skip = {t.start for t in self.txns if Gtid(t.gtid) in have}  # MySQL skips what the set holds
        for file, items in self.files.items():
            if (int(file[-6:]), 0) < (int(start.file[-6:]), 0):
                continue
            skipping = False
            for pos, event, _ in items:
                if isinstance(event, (GtidEvent, RotateEvent, FormatDescriptionEvent)):
                    skipping = (file, pos) in skip
                if event is None or skipping or (file == start.file and pos < start.pos):
                    continue
                if isinstance(event, FormatDescriptionEvent) and file == start.file:
                    continue
                if isinstance(event, FormatDescriptionEvent):
                    out.append(_event(RotateEvent, 47, 0, 0, next_binlog=file, position=4))  # the dump's fake rotate
                out.append(event)
        return FakeStream(out, stop)

    def show_binlog_events(self, file: str) -> list[tuple]:
        return [row for _, _, row in self.files[file]]

    def boundaries(self) -> list[tuple[str, int, int]]:
        """(file, pos, transactions before it) at each transaction's start."""
        return [(t.start[0], t.start[1], i) for i, t in enumerate(self.txns)]


class FakeStream:
    """Stands in for the library's BinLogStreamReader: ``fetchone``, ``close``, ``table_map``."""

    def __init__(self, events: list, stop: threading.Event) -> None:
        self.events, self.stop, self.table_map, self.closed = list(events), stop, {"stale": object()}, False

    def fetchone(self):
        if not self.events:
            self.stop.set()  # everything was sent: the test's reader stops at its next loop
            return _event(HeartbeatLogEvent, 0, 0, 0)
        return self.events.pop(0)

    def close(self) -> None:
        self.closed = True


def mysql_reader(binlog: MySqlBinlog, **config) -> BinlogReader:
    reader = BinlogReader(SourceConfig(name="legacy", **config))
    reader.server = ServerInfo(version="8.0.36", flavor="mysql", server_id=1, gtid_mode=True)
    reader.opened = []

    def open_stream(start, by_gtid, flavor):
        reader.opened.append((start, by_gtid))
        return binlog.stream(start, by_gtid, reader._stop)

    reader._open_stream = open_stream
    return reader


def read_all(reader: BinlogReader, start: Checkpoint, published: Checkpoint | None = None) -> list[SourceTxn]:
    reader._stop = threading.Event()
    extra = {"published": published} if published else {}
    return [t for t in reader.transactions(start, reader._stop, **extra) if isinstance(t, SourceTxn)]


# --------------------------------------------------------------------------- claim 4: transactions on MySQL


@pytest.mark.parametrize("resume_by", ["gtid", "position"])
def test_every_mysql_transaction_ends_ddl_admin_xa_and_empty_ones_included_and_checkpoints_have_no_holes(rng, resume_by):
    binlog = MySqlBinlog()
    binlog.generate(rng, 300)
    reader = mysql_reader(binlog, resume_by=resume_by)
    start = Checkpoint(file="mysql-bin.000001", pos=binlog.txns[0].start[1], gtid=None)
    txns = read_all(reader, start)

    assert [t.gtid for t in txns] == [t.gtid for t in binlog.txns], "a transaction's GTID never reached a checkpoint"
    for n, (got, want) in enumerate(zip(txns, binlog.txns), 1):
        assert got.end.gtid == upto(n), f"checkpoint after {want.kind} {want.gtid} has holes: {got.end.gtid}"
        assert (got.end.file, got.end.pos) == want.end
        assert [c.after["id"] for c in got.changes] == want.ids, want
        assert got.ddl == want.ddl, want  # DDL and admin statements reach the schema history; XA COMMIT does not
        if want.ddl:
            assert got.ddl_db == "shop"


def test_a_rotation_right_after_a_ddl_is_a_boundary_not_an_interrupted_transaction():
    binlog = MySqlBinlog()
    rng = random.Random(1)
    binlog.transaction("dml", rng, 1)
    ddl = binlog.transaction("ddl", rng, 2)
    binlog.rotate()
    after = binlog.transaction("dml", rng, 3)
    txns = read_all(mysql_reader(binlog), Checkpoint(file="mysql-bin.000001", pos=binlog.txns[0].start[1]))
    assert [t.gtid for t in txns] == [binlog.txns[0].gtid, ddl.gtid, after.gtid]
    assert txns[1].ddl == ddl.ddl and txns[2].end.file == "mysql-bin.000002"


def test_resuming_by_gtid_from_any_checkpoint_reads_the_rest_exactly_once(rng):
    binlog = MySqlBinlog()
    binlog.generate(rng, 120)
    reader = mysql_reader(binlog)
    first = read_all(reader, Checkpoint(file="mysql-bin.000001", pos=binlog.txns[0].start[1]))
    for cut in sorted(rng.sample(range(1, len(first) - 1), 5)):
        again = read_all(reader, first[cut - 1].end)
        assert reader.opened[-1][1], "resumed by GTID"
        assert [t.gtid for t in again] == [t.gtid for t in first[cut:]]
        assert [t.end for t in again] == [t.end for t in first[cut:]]


def test_a_checkpoint_with_holes_written_before_is_filled_not_taken_for_a_renumbered_server(rng, caplog):
    """An earlier version made MySQL checkpoints at a position with the GTIDs it had seen since: resumed by
    GTID the server sends the missing, older transactions first. Not a renumbered binlog; the holes close."""
    binlog = MySqlBinlog()
    binlog.generate(rng, 60)
    first = read_all(mysql_reader(binlog), Checkpoint(file="mysql-bin.000001", pos=binlog.txns[0].start[1]))
    cut, held = rng.randrange(5, 25), rng.randrange(30, 50)
    holed = first[held].end.model_copy(update={"gtid": f"{UUID}:{cut + 1}-{held + 1}"})  # lacks 1..cut
    again = read_all(mysql_reader(binlog), holed)
    assert [t.gtid for t in again] == [t.gtid for t in first[:cut]] + [t.gtid for t in first[held + 1:]]
    assert again[-1].end.gtid == upto(60) and "lacks" in caplog.text


def test_an_xa_rollback_after_its_prepare_is_reported_not_silent(caplog):
    binlog = MySqlBinlog()
    rng = random.Random(2)
    prepared = binlog.transaction("xa", rng, 7)
    binlog.transaction("xa-rollback", rng, 7)
    txns = read_all(mysql_reader(binlog), Checkpoint(file="mysql-bin.000001", pos=prepared.start[1]))
    assert [c.after["id"] for c in txns[0].changes] == prepared.ids and txns[1].changes == [] and txns[1].ddl is None
    assert "rolled back the prepared XA transaction X'0007'" in caplog.text and "cdc verify" in caplog.text


# --------------------------------------------------------------------------- claim 4: checkpoints made from a position


class FakeServer(BinlogReader):
    """A MySQL server answering the SQL the position tools send, from a constructed binlog."""

    def __init__(self, binlog: MySqlBinlog, **config) -> None:
        super().__init__(SourceConfig(name="legacy", **config))
        self.binlog = binlog
        self.server = ServerInfo(version="8.0.36", flavor="mysql", server_id=1, gtid_mode=True)

    def preflight(self) -> ServerInfo:
        return self.server

    def binlog_files(self):
        return [(f, items[-1][2][4]) for f, items in self.binlog.files.items()]

    def connect(self):
        server = self

        class Cursor:
            def execute(self, sql, args=()):
                assert sql.startswith("SHOW BINLOG EVENTS IN %s"), sql
                words = sql.split()
                rows = server.binlog.show_binlog_events(args[0])
                if "FROM" in words:
                    rows = [r for r in rows if r[1] >= int(words[words.index("FROM") + 1])]
                if "LIMIT" in words:
                    rows = rows[: int(words[words.index("LIMIT") + 1])]
                self.rows = rows

            def fetchall(self):
                return self.rows

            def fetchone(self):
                return self.rows[0] if self.rows else None

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return _Conn(Cursor)


class _Conn:
    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def cursor(self):
        return self._cursor()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_checkpoint_made_at_a_position_carries_every_gtid_before_it(rng):
    binlog = MySqlBinlog()
    binlog.gno = binlog.purged = 40  # GTIDs 1-40 are in files already purged
    binlog.files.clear()
    binlog.seq = 5
    binlog._new_file()
    binlog.generate(rng, 80)
    server = FakeServer(binlog)
    search = BinlogSearch(server)

    earliest = search.earliest()
    assert earliest.gtid == upto(40)
    server.config = server.config.model_copy(update={"start_at": "earliest"})
    assert server.start_position(None).gtid == upto(40), "start_at: earliest"
    for file, pos, before in rng.sample(binlog.boundaries(), 10):
        checkpoint = search.at(FilePos(file, pos))
        assert checkpoint.gtid == upto(40 + before), (file, pos)
        # Streamed from there (by GTID: MySQL sends what the set lacks), the checkpoints stay without holes.
        txns = read_all(mysql_reader(binlog), checkpoint)
        assert [t.gtid for t in txns] == [t.gtid for t in binlog.txns[before:]]
        assert [t.end.gtid for t in txns] == [upto(40 + n) for n in range(before + 1, len(binlog.txns) + 1)]


def test_the_gtid_set_before_a_position_reads_previous_gtids_and_the_files_gtid_events():
    rows = [("f.000003", 4, "Format_desc", 1, 126, ""),
            ("f.000003", 126, "Previous_gtids", 1, 197, f"{UUID}:1-7,\naaaaaaaa-71ca-11e1-9e33-c80aa9429562:1-2"),
            ("f.000003", 197, "Gtid", 1, 262, f"SET @@SESSION.GTID_NEXT= '{UUID}:8'"),
            ("f.000003", 262, "Query", 1, 330, "ALTER TABLE t ADD c INT"),
            ("f.000003", 330, "Gtid", 1, 395, f"SET @@SESSION.GTID_NEXT= '{UUID}:9'")]
    assert str(GtidSet(mysql_gtid_set_before(rows, 330))) == str(
        GtidSet(f"{UUID}:1-8,aaaaaaaa-71ca-11e1-9e33-c80aa9429562:1-2"))
    before_file = str(GtidSet(f"{UUID}:1-7,aaaaaaaa-71ca-11e1-9e33-c80aa9429562:1-2"))
    assert mysql_gtid_set_before(rows, 4) == mysql_gtid_set_before(rows, 197) == before_file  # the file's start
    no_gtids = [("f.000001", 4, "Format_desc", 1, 126, ""), ("f.000001", 126, "Previous_gtids", 1, 157, "")]
    assert mysql_gtid_set_before(no_gtids, 4) is None


# --------------------------------------------------------------------------- claim 5: positions that went back


def _failover(rng, shift: int = 0, at: int = 0) -> tuple[MySqlBinlog, MySqlBinlog]:
    """The same transactions on the old server and on one that numbers its binlog otherwise: ``shift`` bytes off,
    or (``at``) with smaller events, its positions equal to the old ones at transaction ``at`` then falling behind."""
    seed = rng.randrange(2**32)
    old = MySqlBinlog().generate(random.Random(seed), 60, rotate=False)
    if at:
        probe = MySqlBinlog(shrink=5).generate(random.Random(seed), 60, rotate=False)
        shift = old.txns[at].start[1] - probe.txns[at].start[1]
    return old, MySqlBinlog(shift=shift, shrink=5 if at else 0).generate(random.Random(seed), 60, rotate=False)


def test_a_mysql_gtid_resume_that_lands_before_the_checkpoint_is_refused(rng):
    old, lower = _failover(rng, shift=-60)
    first = read_all(mysql_reader(old), Checkpoint(file="mysql-bin.000001", pos=old.txns[0].start[1]))
    checkpoint = first[30].end
    with pytest.raises(PositionsWentBack) as err:
        read_all(mysql_reader(lower), checkpoint)
    assert f"resumed by GTID {checkpoint.gtid}" in str(err.value) and checkpoint.describe() in str(err.value)
    assert [t.gtid for t in read_all(mysql_reader(old), checkpoint)] == [t.gtid for t in first[31:]]


def test_a_gtid_resume_below_what_was_published_after_the_checkpoint_is_refused(rng):
    """The sinks hold the versions of what was published after the checkpoint, before the crash: a new server
    whose positions pass the checkpoint's but not those would have its next changes ignored by every sink."""
    old, renumbered = _failover(rng, at=21)
    first = read_all(mysql_reader(old), Checkpoint(file="mysql-bin.000001", pos=old.txns[0].start[1]))
    checkpoint, published = first[20].end, first[40].end
    lower_first = next(t for t in renumbered.txns if t.gtid == first[21].gtid)
    assert (lower_first.start[0], lower_first.start[1]) >= (checkpoint.file, checkpoint.pos), \
        "the renumbered server's positions pass the checkpoint: the checkpoint alone does not catch it"
    with pytest.raises(PositionsWentBack) as err:
        read_all(mysql_reader(renumbered), checkpoint, published)
    assert f"{published.file}:{published.pos}, the end of what was published before" in str(err.value)
    # The server that wrote them sends the rest, the transactions published before the crash included.
    again = read_all(mysql_reader(old), checkpoint, published)
    assert [t.gtid for t in again] == [t.gtid for t in first[21:]]


def test_a_binlog_that_ends_before_what_was_published_is_refused():
    reader = BinlogReader(SourceConfig(name="legacy"))
    reader.binlog_files = lambda: [("mysql-bin.000001", 900)]
    checkpoint, published = Checkpoint(file="mysql-bin.000001", pos=500), Checkpoint(file="mysql-bin.000001", pos=1200)
    reader.check_available(checkpoint)  # the checkpoint alone passes
    with pytest.raises(PositionsWentBack) as err:
        reader.check_available(checkpoint, published)
    assert "ends at mysql-bin.000001:900, before mysql-bin.000001:1200" in str(err.value)
    assert "cdc offsets reset --source --latest" in str(err.value)
    reader.check_available(checkpoint, Checkpoint(file="mysql-bin.000001", pos=900))


# --------------------------------------------------------------------------- claim 3: table ids of another server run


def test_the_table_map_is_forgotten_at_every_binlog_file():
    """After a restart the server gives table ids anew; the file it then writes follows one with no closing
    rotate (a crash), or only a Stop event: a map kept from the old file decodes rows as another table."""
    binlog = MySqlBinlog()
    rng = random.Random(3)
    binlog.transaction("dml", rng, 1)
    binlog.files[binlog.file].append((binlog.pos, None, (binlog.file, binlog.pos, "Stop", 1, binlog.pos + 20, "")))
    binlog._new_file()  # the server restarted: no rotate event closes the old file
    binlog.transaction("dml", rng, 2)
    reader = mysql_reader(binlog)
    reader._stop = threading.Event()
    maps = []
    for txn in reader.transactions(Checkpoint(file="mysql-bin.000001", pos=binlog.txns[0].start[1]), reader._stop):
        maps.append(dict(reader._stream.table_map) if reader._stream else None)
        reader._stream.table_map["id 90"] = f"table of {txn.end.file}"  # what the library caches while reading it
    assert maps[1] == {}, "the second file's transaction was read with the first file's table map"
