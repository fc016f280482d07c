"""Positions in the source's binlog: validate one, find one by time or by GTID.

A time is found by searching the binlog, not by guessing: ``SHOW BINLOG EVENTS`` lists where each
transaction starts (fast, server side), and python-mysql-replication reads the timestamp of the
transaction at a candidate position. A binary search over files, then over the transactions of
one file, needs a few dozen such reads whatever the binlog's size.

Every position returned is a transaction boundary (the start of a transaction, or a file's start
or end), which is the only place a reader may resume.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import pymysql

from cdc.admin import PositionError
from cdc.admin.positions import FilePos, parse_gtid_set
from cdc.domain.envelope import binlog_file_seq
from cdc.domain.positions import Checkpoint
from cdc.source.binlog_stream import BinlogReader, mysql_gtid_set_before

_TXN_START = {"Gtid", "Anonymous_Gtid"}
_BOUNDARY = _TXN_START | {"Format_desc", "Gtid_list", "Binlog_checkpoint", "Previous_gtids", "Rotate", "Stop"}
_ERR_WRONG_OFFSET = 1220


class BinlogSearch:
    def __init__(self, reader: BinlogReader) -> None:
        self.reader = reader
        self.flavor = reader.preflight().flavor
        self._starts: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- the ends
    def earliest(self) -> Checkpoint:
        first = self.files()[0][0]
        return Checkpoint(file=first, pos=4, gtid=self._gtid_at(first, 4))

    def latest(self) -> Checkpoint:
        return self.reader.head_position()

    def files(self) -> list[tuple[str, int]]:
        files = self.reader.binlog_files()
        if not files:
            raise PositionError("the source has no binary logs (binary logging is off?)")
        return files

    # ---------------------------------------------------------------- FILE:POS
    def at(self, where: FilePos) -> Checkpoint:
        """``where`` as a checkpoint, if the server has it and it is a transaction boundary."""
        files = dict(self.files())
        names = list(files)
        if where.file not in files:
            seq = binlog_file_seq(where.file)
            if seq < binlog_file_seq(names[0]):
                raise PositionError(f"binlog {where.file} is no longer on the server (purged); the oldest is {names[0]}. "
                                    "Use --earliest, or reset to --latest and take a snapshot")
            raise PositionError(f"binlog {where.file} is not on the server; it has {names[0]} .. {names[-1]}")
        if where.pos > files[where.file]:
            raise PositionError(f"{where} is past the end of {where.file} ({files[where.file]} bytes)")
        if where.pos < files[where.file]:
            kind, info = self._event_at(where)
            if kind not in _BOUNDARY and not (kind == "Query" and info.strip().upper() == "BEGIN"):
                before = max((p for p in self._txn_starts(where.file) if p < where.pos), default=4)
                raise PositionError(f"{where} is inside a transaction (the event there is {kind}); the nearest "
                                    f"transaction boundary before it is {where.file}:{before}")
        return Checkpoint(file=where.file, pos=where.pos, gtid=self._gtid_at(where.file, where.pos))

    def _event_at(self, where: FilePos) -> tuple[str, str]:
        try:
            row = self._query(f"SHOW BINLOG EVENTS IN %s FROM {int(where.pos)} LIMIT 1", (where.file,))
        except pymysql.err.MySQLError as exc:
            if exc.args and exc.args[0] == _ERR_WRONG_OFFSET:
                before = max((p for p in self._txn_starts(where.file) if p < where.pos), default=4)
                raise PositionError(f"{where} is not the start of an event in {where.file}; the nearest transaction "
                                    f"boundary before it is {where.file}:{before}") from None
            raise
        return (row[0][2], row[0][5] or "") if row else ("end", "")

    # ---------------------------------------------------------------- time
    def at_time(self, when: dt.datetime) -> Checkpoint:
        """The start of the first transaction committed at or after ``when``.

        PositionError if ``when`` is before the oldest transaction the server still has. A time after
        the last transaction gives the head (nothing happened since).
        """
        target = int(when.timestamp())
        files = [f for f, _ in self.files() if self._first_start(f) is not None]
        if not files:
            return self.latest()
        first_ts = self._ts_at(files[0], self._first_start(files[0]))
        if target < first_ts:
            raise PositionError(
                f"{when.isoformat()} is before the oldest change the server still has ({_iso(first_ts)}, in {files[0]}): "
                "changes before it were purged. Use --earliest, or --latest and a snapshot")
        # The last file whose first transaction is at or before the target holds the answer, or the next file's start.
        index = _last_true(len(files), lambda i: self._ts_at(files[i], self._first_start(files[i])) <= target)
        for file in files[index:]:
            starts = self._txn_starts(file)
            hit = _last_true(len(starts), lambda i: self._ts_at(file, starts[i]) < target) + 1
            if hit < len(starts):
                return Checkpoint(file=file, pos=starts[hit], gtid=self._gtid_at(file, starts[hit]), ts_ms=target * 1000)
        return self.latest()

    def _ts_at(self, file: str, pos: int) -> int:
        """Timestamp (s) of the transaction starting at ``file:pos``, read from the binlog itself."""
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent

        key = (file, pos)
        cache = self.__dict__.setdefault("_ts_cache", {})
        if key in cache:
            return cache[key]
        stream = BinLogStreamReader(
            connection_settings=self.reader.connection_settings(),
            server_id=random.randint(2**30, 2**31 - 1),  # never the daemon's id: the server would drop its stream
            blocking=False, resume_stream=True, log_file=file, log_pos=pos, is_mariadb=False,
            only_events=[MariadbGtidEvent, GtidEvent, QueryEvent],
        )
        try:
            for event in stream:
                cache[key] = int(event.timestamp)
                return cache[key]
        finally:
            stream.close()
        raise PositionError(f"no transaction at {file}:{pos}")

    # ---------------------------------------------------------------- GTID
    def at_gtid(self, text: str) -> Checkpoint:
        """The boundary just after the transactions of a GTID set (MariaDB ``domain-server-seq`` list)."""
        gtid = parse_gtid_set(text, self.flavor)
        if self.flavor != "mariadb":
            raise PositionError("finding the position of a MySQL GTID set is not supported yet: give --position FILE:POS "
                                "(`SHOW BINARY LOG STATUS` / `SHOW BINLOG EVENTS` show it)")
        head = self.latest()
        current = {g.split("-")[0]: g for g in (head.gtid or "").split(",") if g}
        files = [f for f, _ in self.files()]
        ends: list[FilePos] = []
        for item in gtid.split(","):
            domain, server, seq = item.split("-")
            if domain not in current:
                raise PositionError(f"GTID domain {domain} has no transactions on this server (it has: {head.gtid or 'none'})")
            if int(seq) > int(current[domain].split("-")[2]):
                raise PositionError(f"GTID {item} is not in the binlog yet: the server is at {current[domain]}")
            ends.append(self._gtid_end(files, item, domain))
        end = max(ends, key=FilePos.sort_key)
        return Checkpoint(file=end.file, pos=end.pos, gtid=gtid)

    def _gtid_end(self, files: list[str], item: str, domain: str) -> FilePos:
        seq = int(item.split("-")[2])
        oldest = _domain_seq(self._gtid_at(files[0], 4), domain)
        if oldest is not None and seq < oldest:
            raise PositionError(f"GTID {item} was purged: the oldest binlog {files[0]} starts after {domain}-*-{oldest}. "
                                "Use --earliest, or --latest and a snapshot")
        if oldest is not None and seq == oldest:
            return FilePos(files[0], 4)
        index = _last_true(len(files), lambda i: (_domain_seq(self._gtid_at(files[i], 4), domain) or 0) < seq)
        for file in files[index:]:
            rows = list(self._events(file))
            found = False
            for row in rows:
                if found and row[2] in _TXN_START:
                    return FilePos(file, int(row[1]))
                if row[2] == "Gtid" and (row[5] or "").split()[-1] == item:
                    found = True
            if found:
                return FilePos(file, int(rows[-1][4]))
        raise PositionError(f"GTID {item} is not in the binlog (another server id wrote that sequence number?)")

    # ---------------------------------------------------------------- helpers
    def _txn_starts(self, file: str) -> list[int]:
        if file not in self._starts:
            self._starts[file] = [int(r[1]) for r in self._events(file)
                                  if r[2] in _TXN_START or (r[2] == "Query" and r[5] == "BEGIN")]
        return self._starts[file]

    def _first_start(self, file: str) -> int | None:
        """Where the first transaction of ``file`` starts (None if it has none), without listing the whole file."""
        if file in self._starts:
            return self._starts[file][0] if self._starts[file] else None
        firsts = self.__dict__.setdefault("_first_starts", {})
        if file not in firsts:
            firsts[file] = next((int(r[1]) for r in self._events(file, page=200)
                                 if r[2] in _TXN_START or (r[2] == "Query" and r[5] == "BEGIN")), None)
        return firsts[file]

    def _events(self, file: str, page: int = 20_000):
        """Rows of ``SHOW BINLOG EVENTS IN file``, a page at a time. The server refuses to list an event larger
        than its ``max_allowed_packet`` (error 1220, e.g. a rows event of a huge transaction): such an event is
        stepped over with the replication protocol, which has no such limit. It never starts a transaction."""
        with self.reader.connect() as conn, conn.cursor() as cur:
            pos, size = 4, page
            while True:
                try:
                    cur.execute(f"SHOW BINLOG EVENTS IN %s FROM {int(pos)} LIMIT {int(size)}", (file,))
                    rows = cur.fetchall()
                except pymysql.err.MySQLError as exc:
                    if not (exc.args and exc.args[0] == _ERR_WRONG_OFFSET):
                        raise
                    if size > 1:
                        size = max(1, size // 8)  # narrow down to the one event the server cannot list
                        continue
                    pos, size = self._next_event(file, pos), page
                    continue
                yield from rows
                if len(rows) < size:
                    return
                pos, size = int(rows[-1][4]), page

    def _next_event(self, file: str, pos: int) -> int:
        """Where the event after the one at ``file:pos`` starts (read with the replication protocol)."""
        from pymysqlreplication import BinLogStreamReader

        stream = BinLogStreamReader(
            connection_settings=self.reader.connection_settings(),
            server_id=random.randint(2**30, 2**31 - 1), blocking=False, resume_stream=True, log_file=file, log_pos=pos,
            is_mariadb=False,
        )
        try:
            for event in stream:
                end = event.packet.log_pos
                if end and end > pos and stream.log_file == file:
                    return end - event.packet.event_size  # the first event listed after the skipped one(s) starts there
        finally:
            stream.close()
        raise PositionError(f"cannot read the binlog {file} past position {pos}")

    def _gtid_at(self, file: str, pos: int) -> str | None:
        """Every GTID before ``file:pos`` (:meth:`BinlogReader.gtid_at`): a checkpoint made here resumes by GTID
        without reading again, or skipping, what lies outside a part of it."""
        if self.flavor == "mariadb":
            return self._query("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))[0][0] or None
        return mysql_gtid_set_before(self._events(file, page=200 if pos <= 4 else 20_000), pos)

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        with self.reader.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())


def _last_true(n: int, pred: Callable[[int], bool]) -> int:
    """Largest i in [0, n) with pred(i) true, for pred true then false along i; -1 if none."""
    lo, hi = 0, n  # pred(lo-1) true (virtually), pred(hi) false (virtually)
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def _domain_seq(gtid: str | None, domain: str) -> int | None:
    for item in (gtid or "").split(","):
        if item.split("-")[0] == domain:
            return int(item.split("-")[2])
    return None


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
