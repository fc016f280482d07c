"""Nothing in the data stops the stream (issue 19), end to end through the real daemon.

A legacy table gets generated rows written under the sql_modes old PHP applications run with
(ALLOW_INVALID_DATES: 2024-02-30; an empty sql_mode: zero dates and out-of-range values clipped), text
that is not UTF-8 in a binary column mapped to ``string``, BIGINT UNSIGNED values over 2^63-1 in an
``integer`` field and latin1 bytes Python's cp1252 lacks, interleaved with good rows, in single- and
multi-row events. The reader must never stop or restart; every good row, and every row after a bad one,
must reach the CRM; a bad value is in the CRM with its documented value (docs/types.md: null for a zero
or invalid date), or its row is in cdc.reader.dlq with table, key, column and reason; the nulled values
are counted by column and logged once per column. Then a snapshot of the same table into an emptied CRM
gives the same content as the stream did.
"""

from __future__ import annotations

import calendar
import collections
import datetime as dt
import os
import random
import socket

import pymysql
import pytest
from e2e_support import Daemon, crm_rows, drop_world, make_world, run_cli
from prometheus_client.parser import text_string_to_metric_families

from cdc.admin import dlq
from cdc.mapping import Mapper, load_mappings
from cdc.sinks.base import SinkContext
from cdc.sinks.crm import CrmSink, CrmSinkConfig
from cdc.state.store import SqlStateStore

pytestmark = pytest.mark.e2e
SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
ENTITIES = {"val": ("vals", "id")}
DDL = ("CREATE TABLE vals (id INT PRIMARY KEY, d DATE NULL, dt DATETIME(3) NULL, ts TIMESTAMP(2) NULL, y YEAR NULL, "
       "n TINYINT NULL, bin VARBINARY(16) NULL, big BIGINT UNSIGNED NULL, l VARCHAR(20) CHARACTER SET latin1 NULL) "
       "ENGINE=InnoDB")
MAPPING = """entity: val
source: {db: DB, table: vals}
key: [id]
fields:
  id: {column: id, type: integer}
  d: {column: d, type: date}
  dt: {column: dt, type: datetime}
  ts: {column: ts, type: timestamp}
  y: {column: y, type: integer, column_type: year}
  n: {column: n, type: integer}
  bin: {column: bin, type: string}
  big: {column: big, type: integer}
  l: {column: l, type: string}
"""
LATIN1 = "".join(chr(b) if b in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else bytes([b]).decode("cp1252") for b in range(256))
DATED = ("d", "dt", "ts", "y")  # the columns whose stored values the rules may make null


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(port: int, name: str, **labels: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class Rows:
    """Generated rows: the statement's sql_mode and values, and what the CRM must hold for each."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.expected: dict[int, dict] = {}  # id -> canonical row, for rows that must be in the CRM
        self.dead: dict[int, str] = {}  # id -> the column that sends its current version to the DLQ
        self.letters: set[tuple[int, str]] = set()  # (id, column) of every change that goes to the DLQ
        self.nulled: collections.Counter = collections.Counter()  # column -> changes whose stored value became null

    def good(self, i: int) -> tuple[str, dict, dict]:
        r = self.rnd
        day = dt.date(1000, 1, 1) + dt.timedelta(days=r.randint(0, 3_000_000))
        wall = dt.datetime(r.randint(1000, 9999), r.randint(1, 12), r.randint(1, 28), r.randint(0, 23), r.randint(0, 59),
                           r.randint(0, 59), r.randint(0, 999) * 1000)
        instant = dt.datetime(r.randint(1971, 2037), r.randint(1, 12), r.randint(1, 28), r.randint(0, 23), 0, 0,
                              r.randint(0, 99) * 10_000)
        text = "".join(r.choice("abc é€😀 ") for _ in range(r.randint(0, 4)))
        latin = bytes(r.randrange(1, 256) for _ in range(r.randint(0, 20)))
        sql = {"d": day.isoformat(), "dt": wall.isoformat(" "), "ts": instant.isoformat(" "), "y": r.randint(1901, 2155),
               "n": r.randint(-128, 127), "bin": text.encode()[:16], "big": r.randint(0, 2**63 - 1), "l": latin}
        canonical = {"id": i, "d": day.isoformat(), "dt": wall.isoformat(), "ts": instant.isoformat() + "Z", "y": sql["y"],
                     "n": sql["n"], "bin": sql["bin"].decode(), "big": sql["big"], "l": "".join(LATIN1[b] for b in latin)}
        return "STRICT_TRANS_TABLES", sql, canonical

    def make(self, i: int, dead_ok: bool = True) -> tuple[str, dict]:
        """(sql_mode, column -> value) of row ``i``, its expectations recorded; ``dead_ok``: it may be a row the
        mapping cannot convert."""
        mode, sql, canonical = self.good(i)
        kinds = ["good", "invalid", "zero", "clipped"] + (["not_utf8", "over_i64"] if dead_ok else [])
        kind = self.rnd.choices(kinds, [5, 2, 2, 2, 1, 1][:len(kinds)])[0]
        if kind == "invalid":  # a day the month lacks, as ALLOW_INVALID_DATES stores it
            mode = "ALLOW_INVALID_DATES"
            year, month = self.rnd.randint(1000, 9999), self.rnd.choice([2, 4, 6, 9, 11])
            day = self.rnd.randint(calendar.monthrange(year, month)[1] + 1, 31)
            sql |= {"d": f"{year:04d}-{month:02d}-{day:02d}", "dt": f"{year:04d}-{month:02d}-{day:02d} 12:30:00.250"}
            canonical |= {"d": None, "dt": None}
        elif kind == "zero":  # zero dates, as an empty sql_mode stores them
            mode = ""
            sql |= {"d": "0000-00-00", "dt": "0000-00-00 00:00:00", "ts": "0000-00-00 00:00:00", "y": 0}
            canonical |= {"d": None, "dt": None, "ts": None, "y": None}
        elif kind == "clipped":  # out of range: the server clips or zeroes them, with a warning
            mode = ""
            n = self.rnd.choice([self.rnd.randint(128, 10**6), -self.rnd.randint(129, 10**6)])
            sql |= {"n": n, "y": self.rnd.randint(1000, 1900), "d": f"2024-{self.rnd.randint(13, 99)}-01"}
            canonical |= {"n": 127 if n > 0 else -128, "y": None, "d": None}
        elif kind == "not_utf8":
            sql["bin"] = b"\xff" + self.rnd.randbytes(self.rnd.randint(0, 15))
        elif kind == "over_i64":
            sql["big"] = self.rnd.randint(2**63, 2**64 - 1)
        self.record(i, kind, canonical)
        return mode, sql

    def record(self, i: int, kind: str, canonical: dict) -> None:
        column = {"not_utf8": "bin", "over_i64": "big"}.get(kind)
        if column:
            self.dead[i] = column
            self.letters.add((i, column))
            return
        self.dead.pop(i, None)
        self.expected[i] = canonical
        self.nulled.update(c for c in DATED if canonical[c] is None)


def _insert(cur, mode: str, rows: list[tuple[int, dict]]) -> None:
    cur.execute("SET SESSION sql_mode = %s", (mode,))
    columns = list(rows[0][1])
    cur.execute(f"INSERT INTO vals (id, {', '.join(columns)}) VALUES "
                + ", ".join("(" + ", ".join(["%s"] * (len(columns) + 1)) + ")" for _ in rows),
                [v for i, sql in rows for v in (i, *sql.values())])


def _update(cur, mode: str, i: int, sql: dict) -> None:
    cur.execute("SET SESSION sql_mode = %s", (mode,))
    cur.execute(f"UPDATE vals SET {', '.join(f'{c} = %s' for c in sql)} WHERE id = %s", [*sql.values(), i])


def _crm(world, mapper) -> dict:
    return {k: v for k, v in crm_rows(world, mapper, ENTITIES)["val"].items()}


def _letters(world) -> list:
    return [d for d in dlq.list_letters(world["amqp_url"], None, limit=10_000) if (d.raw or {}).get("db") == world["db"]]


def test_no_value_stops_the_stream_and_a_snapshot_gives_what_the_stream_gave(tmp_path, source_server, pg_url, amqp_url,
                                                                              wait_until):
    print(f"seed {SEED} (CDC_TEST_SEED={SEED} to repeat)")
    rnd = random.Random(SEED)
    port = _free_port()
    world = make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml="snapshot: {mode: never}", http_port=port)
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", database=world["db"],
                            autocommit=True, charset="utf8mb4", init_command="SET time_zone = '+00:00'")
    with admin.cursor() as cur:
        cur.execute(DDL)
    (world["mappings"] / "zz_vals.yaml").write_text(MAPPING.replace("DB", world["db"]))
    mapper = Mapper(load_mappings(world["mappings"]))
    rows = Rows(rnd)
    daemon = Daemon(world)
    daemon.start()
    letters = []
    try:
        wait_until(lambda: SqlStateStore(world["state_url"]).load_checkpoint("e2e"), timeout=60,
                   message=f"the first checkpoint\n{daemon.logs()}")
        with admin.cursor() as cur:
            next_id = 1
            for _ in range(60):  # transactions of one to four statements
                cur.execute("BEGIN")
                for _ in range(rnd.randint(1, 4)):
                    if rnd.random() < 0.25:  # a multi-row event mixing good and bad rows (one sql_mode)
                        made = [(next_id + k, rows.make(next_id + k)) for k in range(rnd.randint(2, 6))]
                        for mode in {m for _, (m, _) in made}:
                            _insert(cur, mode, [(i, sql) for i, (m, sql) in made if m == mode])
                        next_id += len(made)
                    else:
                        mode, sql = rows.make(next_id)
                        _insert(cur, mode, [(next_id, sql)])
                        next_id += 1
                cur.execute("COMMIT")
            # Updates: rows the DLQ holds mended (or not), good rows given zero or invalid dates. A good row is not
            # spoilt with a value the mapping refuses: the CRM would keep its last good version, a snapshot not.
            for i in rnd.sample(sorted(rows.dead), len(rows.dead) // 2) + rnd.sample(sorted(rows.expected), 30):
                mode, sql = rows.make(i, dead_ok=i in rows.dead)
                _update(cur, mode, i, sql)
            mode, sql, canonical = rows.good(next_id)  # a last good row, after it all
            _insert(cur, mode, [(next_id, sql)])
            rows.record(next_id, "good", canonical)
            cur.execute("SET SESSION sql_mode = DEFAULT")
        expected = {str(i): row for i, row in rows.expected.items()}
        assert rows.letters and rows.nulled["d"] and len(expected) > 100, (rows.letters, rows.nulled)

        def crm_as_expected() -> bool:
            try:
                return _crm(world, mapper) == expected
            except Exception:  # noqa: BLE001 - the sink creates its tables
                return False

        last = {}
        try:
            wait_until(crm_as_expected, timeout=180, interval=1, message="the CRM to hold every good row")
        except AssertionError:
            crm = _crm(world, mapper)
            last = {k: (expected.get(k), crm.get(k)) for k in expected.keys() | crm.keys() if expected.get(k) != crm.get(k)}
            raise AssertionError(f"CRM differs: {list(last.items())[:3]}\n{daemon.logs()}") from None

        # Every bad row of the stream is in the reader's DLQ: table, key, column, reason.
        wait_until(lambda: {(d.raw["key"]["id"], d.raw["column"]) for d in _letters(world)} == rows.letters, timeout=60,
                   interval=1, message=f"the dead letters of {sorted(rows.letters)}")
        letters = _letters(world)
        for letter in letters:
            raw = letter.raw
            assert raw["table"] == "vals" and raw["entity"] == "val" and raw["file"] and raw["pos"]
            problem = "invalid UTF-8" if raw["column"] == "bin" else "signed 64-bit range"
            assert problem in letter.reason and f"key {{'id': {raw['key']['id']}}}" in letter.reason, letter.reason
        # The stream never stopped: no restart, no reader error, and the nulled values counted, logged once a column.
        assert daemon.proc.poll() is None
        assert _metric(port, "cdc_reader_restarts_total", source="e2e") == 0
        table = f"{world['db']}.vals"
        for column in DATED:
            assert _metric(port, "cdc_values_nulled_total", source="e2e", table=table, column=column) == rows.nulled[column]
        logs = daemon.logs(0)
        assert "Traceback" not in logs and "resuming from" not in logs, logs[-3000:]
        for column in DATED:
            warned = [line for line in logs.splitlines() if "holds zero or invalid dates" in line and f"column {column} " in line]
            assert len(warned) == (1 if rows.nulled[column] else 0), (column, warned)
        streamed = _crm(world, mapper)
        assert daemon.terminate() == 0, daemon.logs()

        # A snapshot of the table into the emptied CRM: the same content as the stream gave.
        crm = CrmSink(world["sink"], CrmSinkConfig(url=pg_url, schema_name=world["schema"]),
                      SinkContext(entities=mapper.schemas()))
        crm.open()
        crm.reset()
        crm.close()
        daemon.start()
        snap = run_cli(world, "snapshot", "start", table, "--watch")
        assert snap.returncode == 0, snap.stdout + snap.stderr + daemon.logs()
        wait_until(lambda: crm_as_expected() and _crm(world, mapper) == streamed, timeout=120, interval=1,
                   message=f"the snapshot to give the stream's content\n{daemon.logs()}")
        snapshot_letters = [d for d in _letters(world) if d.raw.get("snapshot")]
        assert {(d.raw["key"]["id"], d.raw["column"]) for d in snapshot_letters} == set(rows.dead.items())
        current = collections.Counter(c for row in rows.expected.values() for c in DATED if row[c] is None)
        for column in DATED:  # counted from the snapshot too, by the rows holding such a value now
            assert _metric(port, "cdc_values_nulled_total", source="e2e", table=table, column=column) == current[column]
        assert daemon.terminate() == 0, daemon.logs()
        letters = _letters(world)
        print(f"{len(expected)} rows in the CRM from the stream and from the snapshot, {len(rows.letters)} changes and "
              f"{len(rows.dead)} rows dead-lettered with their column, nulled by column {dict(rows.nulled)}")
    finally:
        daemon.stop_if_running()
        admin.close()
        if letters:
            dlq.purge(world["amqp_url"], None, ids=[d.id for d in letters])
        drop_world(world)
