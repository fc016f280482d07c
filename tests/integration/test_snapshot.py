"""The snapshotter against the real MariaDB: keys, watermarks, cancellation (publisher in memory)."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import time
import uuid

import orjson
import pymysql
import pytest

from cdc.config import load_settings
from cdc.envelope import make_version
from cdc.errors import ConfigError, TransientError
from cdc.mapping import EntityMapping, Mapper
from cdc.publisher import MemoryPublisher
from cdc.reader import BinlogReader, RowChange, SourceTxn
from cdc.snapshot import Snapshotter, key_columns
from cdc.snapshot_chunks import ChunkSelect
from cdc.state.store import MemoryStateStore

DB = "cdc_snapshot_test"


@pytest.fixture(scope="module")
def admin(source_server):
    conn = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
    yield conn
    conn.close()


@pytest.fixture
def table(admin):
    name = f"t_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {DB}.{name} (id INT PRIMARY KEY, label VARCHAR(20))")
        cur.executemany(f"INSERT INTO {DB}.{name} VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 26)])
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {DB}.{name}")


def make(source_server, table, chunk_size=10, workers=0):
    mapping = EntityMapping.model_validate({
        "entity": "thing", "source": {"db": DB, "table": table}, "key": ["id"],
        "fields": {"id": {"column": "id", "type": "integer"}, "label": {"column": "label", "type": "string"}}})
    mapper = Mapper([mapping])
    settings = load_settings(None, source={"port": source_server["port"], "password": source_server["password"],
                                           "databases": [DB], "replica_server_id": random.randint(10_000, 2**31)},
                             snapshot={"chunk_size": chunk_size, "workers": workers})
    state = MemoryStateStore()
    reader = BinlogReader(settings.source, mapper.tables())
    reader.preflight()
    snapshotter = Snapshotter(settings, state, mapper, reader)
    confirmed = []
    publisher = MemoryPublisher(lambda token: (confirmed.append(token), snapshotter.on_confirmed(token) if token else None))
    publisher.start()
    return snapshotter, state, publisher, reader


def bodies(publisher):
    return [orjson.loads(m.body) for m in publisher.messages]


def test_key_columns_prefer_the_primary_key_then_a_unique_not_null_key(admin, source_server):
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {DB}.pk2 (a INT, b VARCHAR(5), c INT, PRIMARY KEY (a, b), UNIQUE KEY u (c))")
        cur.execute(f"CREATE TABLE {DB}.uq (a INT NULL, c INT NOT NULL, UNIQUE KEY n (a), UNIQUE KEY u (c))")
        cur.execute(f"CREATE TABLE {DB}.nokey (a INT NULL, UNIQUE KEY n (a))")
    conn = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root")
    try:
        assert key_columns(conn, DB, "pk2") == ["a", "b"]
        assert key_columns(conn, DB, "uq") == ["c"]
        with pytest.raises(ConfigError, match=r"cdc_snapshot_test.nokey has no primary key.*add a primary key"):
            key_columns(conn, DB, "nokey")
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE {DB}.pk2, {DB}.uq, {DB}.nokey")


@pytest.mark.parametrize("workers", [0, 2])
def test_chunks_carry_the_watermark_version_and_drop_keys_the_stream_touched(source_server, table, workers):
    snapshotter, state, publisher, reader = make(source_server, table, workers=workers)
    try:
        snapshot_id = snapshotter.request(DB, table)
        position = reader.head_position()
        position = position.model_copy(update={"pos": position.pos - 1})  # the stream is behind the watermark
        snapshotter.pump(position, publisher)
        chunk = snapshotter.waiting()
        assert chunk is not None and chunk.keys == [(k,) for k in range(1, 11)] and not publisher.messages
        # A transaction the stream reads while the chunk is out touches key 3: the chunk must not carry it.
        txn = SourceTxn(id="t", gtid=None, changes=[RowChange(DB, table, "u", {"id": 3, "label": "v3"}, {"id": 3, "label": "x"},
                                                              chunk.high.file, chunk.high.pos - 1, 0, 0)],
                        end=chunk.high, ts=0)
        snapshotter.on_txn(txn, chunk.high, publisher)
        first = bodies(publisher)[:9]
        assert [b["key"]["id"] for b in first] == [1, 2, 4, 5, 6, 7, 8, 9, 10]
        assert {b["version"] for b in first} == {make_version(chunk.high.file, chunk.high.pos, 0)}
        assert all(b["op"] == "r" and b["source"]["snapshot"] for b in first)
        # Caught up: the following chunks go out at once, and the snapshot finishes.
        snapshotter.pump(snapshotter.reader.head_position(), publisher)
        snapshotter.persist()
        keys = [b["key"]["id"] for b in bodies(publisher)]
        assert sorted(keys) == [k for k in range(1, 26) if k != 3]
        record = state.snapshot_list()[0]
        assert record["id"] == snapshot_id and record["status"] == "done" and record["rows_done"] == 24
    finally:
        snapshotter.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_cancel_stops_a_snapshot_before_its_next_chunk(source_server, table, workers):
    snapshotter, state, publisher, reader = make(source_server, table, chunk_size=5, workers=workers)
    try:
        snapshot_id = snapshotter.request(DB, table)
        behind = reader.head_position().model_copy(update={"pos": 4})
        snapshotter.pump(behind, publisher)  # chunks out, the first waiting for the stream
        assert snapshotter.waiting() is not None
        state.snapshot_update(snapshot_id, status="cancel_requested")
        snapshotter._refreshed = 0  # noqa: SLF001 - the reader re-reads requests once a second; don't wait for it
        snapshotter.pump(reader.head_position(), publisher)
        assert state.snapshot_list()[0]["status"] == "cancelled"
        assert publisher.messages == [] and snapshotter.waiting() is None and not snapshotter.out
    finally:
        snapshotter.close()


def test_a_table_without_mapping_or_key_is_refused_clearly(source_server, table, admin):
    snapshotter, *_ = make(source_server, table)
    with pytest.raises(ConfigError, match="has no mapping"):
        snapshotter.request(DB, "unmapped_table")


@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_the_chunk_reader_raises_the_same_errors_through_either_driver(source_server, table, driver):
    """The snapshot tells a lost connection (retried) from a bad query (the snapshot fails) by PyMySQL's
    error classes; mysqlclient's errors arrive as those, with the server's number and message, and the
    password appears in none of them."""
    base = {"host": source_server["host"], "port": source_server["port"], "charset": "utf8mb4",
            "connect_timeout": 5, "read_timeout": 10, "write_timeout": 10}
    select = ChunkSelect({**base, "user": source_server["user"], "password": source_server["password"]}, driver)
    try:
        assert select.rows(f"SELECT * FROM {DB}.{table} WHERE id > %s ORDER BY id LIMIT 2", [3]) == [
            {"id": 4, "label": "v4"}, {"id": 5, "label": "v5"}]
        with pytest.raises(pymysql.err.OperationalError) as bad_column:
            select.rows(f"SELECT nope FROM {DB}.{table}", [])
        assert bad_column.value.args == (1054, "Unknown column 'nope' in 'SELECT'")
        with pytest.raises(pymysql.err.ProgrammingError) as bad_syntax:
            select.rows(f"SELECT FROM {DB}.{table}", [])
        assert bad_syntax.value.args[0] == 1064
    finally:
        select.close()
    refused = ChunkSelect({**base, "user": source_server["user"], "password": "not-the-password-4711"}, driver)
    with pytest.raises(pymysql.err.OperationalError) as denied:
        refused.rows("SELECT 1", [])
    assert denied.value.args[0] == 1045 and "4711" not in str(denied.value)


def test_a_worker_process_gives_what_the_reader_thread_gives(source_server, table):
    """Chunks read in a worker process (mapping rebuilt there from the pickled mappings, the PII salt
    included) are byte for byte those read in the reader thread, clock fields aside."""
    from cdc.reader import BinlogReader
    from cdc.snapshot_chunks import ChunkRequest, ChunkWorkers, WorkerSetup

    mapping = EntityMapping.model_validate({
        "entity": "thing", "source": {"db": DB, "table": table}, "key": ["id"],
        "fields": {"id": {"column": "id", "type": "integer"}, "label": {"column": "label", "type": "string", "pii": "hash"}}})
    mapping._pii_salt = b"a salt of our own"  # noqa: SLF001 - what load_mappings sets from mappings.pii_salt
    settings = load_settings(None, source={"port": source_server["port"], "password": source_server["password"]},
                             broker={"batch_events": 4})
    server = BinlogReader(settings.source).preflight()
    setup = WorkerSetup(settings.source, [mapping], server.flavor, server.server_id, 4, 1 << 20)
    request = ChunkRequest(1, DB, table, ("id",), (3,), (17,))
    results = []
    for count in (0, 1):
        workers = ChunkWorkers(setup, count)
        try:
            results.append(workers.result(workers.submit(request)))
        finally:
            workers.close()
    inline, worker = results
    assert worker.keys == inline.keys == [(k,) for k in range(4, 18)]
    assert worker.high == inline.high

    def events(result):
        out = []
        for m in result.messages_without(set()):
            for event in orjson.loads(m.body):
                del event["ts_ms"], event["source"]["ts_ms"]
                out.append(event)
        return out

    assert events(worker) == events(inline)
    assert events(worker)[0]["after"]["label"] not in (None, "v4") and len(events(worker)) == 14


def _kill(pid):
    """SIGKILL a worker and wait until it is gone (a zombie: its pipe is closed)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = next(line for line in open(f"/proc/{pid}/status") if line.startswith("State:"))
        if "Z" in state.split()[1]:
            return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} still running 10 s after SIGKILL")


def test_a_killed_worker_stops_the_snapshot_for_a_retry_that_resumes_it(source_server, table):
    snapshotter, state, publisher, reader = make(source_server, table, chunk_size=5, workers=2)
    try:
        snapshotter.request(DB, table)
        behind = reader.head_position().model_copy(update={"pos": 4})
        snapshotter.pump(behind, publisher)  # chunk 1 read, waiting for the stream; chunk 2 out at a worker
        first = snapshotter.waiting()
        snapshotter.pump(first.high, publisher)  # every chunk published: the stream passed them all
        snapshotter.persist()
        assert [b["key"]["id"] for b in bodies(publisher)] == list(range(1, 26))
        snapshotter.request(DB, table, where="id > 12")
        snapshotter._refreshed = 0  # noqa: SLF001 - the reader re-reads requests once a second; don't wait for it
        _kill(snapshotter.worker_pids()[0])  # idle, between snapshots
        with pytest.raises(TransientError, match=r"snapshot worker process 1 \(pid \d+\) ended \(exit code -9\).*"
                                                 r"last confirmed chunk"):
            snapshotter.pump(reader.head_position(), publisher)
        assert snapshotter.worker_pids() == [] and not snapshotter.out  # closed: the reader's retry starts afresh
        snapshotter.pump(reader.head_position(), publisher)  # the retry, with new workers
        snapshotter.persist()
        assert [b["key"]["id"] for b in bodies(publisher)][25:] == list(range(13, 26))
        assert [(r["status"], r["rows_done"]) for r in state.snapshot_list()] == [("done", 25), ("done", 13)]
    finally:
        snapshotter.close()


def test_a_worker_killed_in_the_middle_of_a_chunk_is_reported_not_waited_for(source_server, table):
    from cdc.snapshot_chunks import ChunkRequest, ChunkWorkers, WorkerSetup

    settings = load_settings(None, source={"port": source_server["port"], "password": source_server["password"]})
    mapping = EntityMapping.model_validate({"entity": "thing", "source": {"db": DB, "table": table}, "key": ["id"],
                                            "fields": {"id": {"column": "id", "type": "integer"}}})
    workers = ChunkWorkers(WorkerSetup(settings.source, [mapping], "mariadb", 1, 1, 1 << 20), 1)
    try:
        slow = ChunkRequest(1, DB, table, ("id",), (0,), (10,), where="SLEEP(0.3) = 0")  # ten rows: 3 s
        ticket = workers.submit(slow)
        time.sleep(0.5)  # the worker is inside the SELECT now (or still starting): either way it dies before answering
        started = time.monotonic()
        _kill(workers.pids()[0])
        with pytest.raises(TransientError, match=r"snapshot worker process 1 \(pid \d+\) ended \(exit code -9\)"):
            workers.result(ticket)
        assert time.monotonic() - started < 5
    finally:
        workers.close()


def test_a_mapped_table_missing_from_the_source_is_named_as_missing_not_as_keyless(source_server, admin):
    """Issue 19 (11): a mapping whose table does not exist (yet) says so, with the fix, at request time."""
    name = f"missing_{uuid.uuid4().hex[:6]}"
    snapshotter, state, *_ = make(source_server, name)
    try:
        with pytest.raises(ConfigError) as refused:
            snapshotter.request(DB, name)
        message = str(refused.value)
        assert f"table {DB}.{name} is mapped but does not exist in the source" in message
        assert "create it there, or remove its mapping" in message and "no primary key" not in message
        assert state.snapshot_list() == []
        with admin.cursor() as cur:
            cur.execute(f"CREATE TABLE {DB}.{name} (a INT NULL)")  # there now, but without a key: that is said
        with pytest.raises(ConfigError, match=rf"{DB}.{name} has no primary key.*add a primary key"):
            snapshotter.request(DB, name)
    finally:
        snapshotter.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {DB}.{name}")


class _Interrupted(Exception):
    pass


class _StopAfter:
    """Hands ``chunks`` chunks to the publisher, then fails as a killed reader would, mid-snapshot."""

    def __init__(self, publisher, chunks: int) -> None:
        self.publisher, self.left = publisher, chunks

    def publish(self, messages, token) -> None:
        if self.left == 0:
            raise _Interrupted
        self.left -= 1
        self.publisher.publish(messages, token)


BINARY_EDGES = [b"\x00" * 16, b"\xff" * 16, b"\x00" * 15 + b"\x01", b"\x7f" + b"\xff" * 15, b"\x80" + b"\x00" * 15,
                b"b'" + b"\x00" * 14, b"\\" * 16, b"'" * 16]


@pytest.mark.parametrize("shape", ["binary16", "composite"])
def test_an_interrupted_snapshot_of_binary_and_composite_keys_resumes_with_every_row(source_server, admin, shape):
    """Issue 19 (2): the resume key of a BINARY(16) key (bytes that sort oddly: 0x00, 0xff, high bytes) or of a
    composite key (int, string, bytes, date) reads back exactly, so the resumed snapshot misses no row."""
    seed = int(os.environ.get("CDC_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed} (CDC_TEST_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    name = f"k_{uuid.uuid4().hex[:8]}"
    if shape == "binary16":
        ddl = f"CREATE TABLE {DB}.{name} (id BINARY(16) PRIMARY KEY, label VARCHAR(20))"
        keys = set(BINARY_EDGES) | {bytes(rng.choice([0, 1, 0x7f, 0x80, 0xfe, 0xff, rng.randrange(256)]) for _ in range(16))
                                    for _ in range(80)}
        # Forty keys below b"b'" (0x62 0x27), where the interruption falls: the text of a binary key, b'\x..',
        # as the resume key (what was stored before) would skip every one of them after it.
        keys |= {bytes([rng.randrange(0x31)]) + bytes(rng.randrange(256) for _ in range(15)) for _ in range(40)}
        rows = [(k, f"v{i}") for i, k in enumerate(sorted(keys))]
        columns, fields = ["id"], {"id": {"column": "id", "type": "bytes", "column_type": "binary(16)"}}
    else:
        ddl = (f"CREATE TABLE {DB}.{name} (a INT, b VARCHAR(8), c VARBINARY(6), d DATE, label VARCHAR(20), "
               "PRIMARY KEY (a, b, c, d))")
        keys = {(rng.randint(-2, 2), rng.choice(["", "a", "A", "é", "a b", "%", "'"]),
                 bytes(rng.choice([0, 0x7f, 0x80, 0xff, 0x61]) for _ in range(rng.randint(0, 3))),
                 dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 3))) for _ in range(150)}
        rows = [(*k, f"v{i}") for i, k in enumerate(sorted(keys, key=repr))]
        columns = ["a", "b", "c", "d"]
        fields = {"a": {"column": "a", "type": "integer"}, "b": {"column": "b", "type": "string"},
                  "c": {"column": "c", "type": "bytes"}, "d": {"column": "d", "type": "date"}}
    with admin.cursor() as cur:
        cur.execute(ddl)
        cur.executemany(f"INSERT IGNORE INTO {DB}.{name} VALUES ({', '.join(['%s'] * len(rows[0]))})", rows)
        cur.execute(f"SELECT COUNT(*) FROM {DB}.{name}")
        total = cur.fetchone()[0]
    mapping = EntityMapping.model_validate({"entity": "thing", "source": {"db": DB, "table": name}, "key": columns,
                                            "fields": {**fields, "label": {"column": "label", "type": "string"}}})
    mapper = Mapper([mapping])
    settings = load_settings(None, source={"port": source_server["port"], "password": source_server["password"],
                                           "databases": [DB], "replica_server_id": random.randint(10_000, 2**31)},
                             snapshot={"chunk_size": 9, "workers": 0})
    state = MemoryStateStore()
    received: list[tuple] = []
    try:
        for run in range(2):
            reader = BinlogReader(settings.source, mapper.tables())
            reader.preflight()
            snapshotter = Snapshotter(settings, state, mapper, reader)
            publisher = MemoryPublisher(lambda token: snapshotter.on_confirmed(token) if token else None)
            publisher.start()
            if run == 0:
                snapshotter.request(DB, name)
            head = reader.head_position()
            far = head.model_copy(update={"file": head.file.rsplit(".", 1)[0] + ".999999"})  # past every watermark
            try:
                snapshotter.pump(far, _StopAfter(publisher, rng.randint(1, 3)) if run == 0 else publisher)
                assert run == 1, "the first run was to be interrupted"
            except _Interrupted:
                pass
            snapshotter.persist()
            snapshotter.close()
            received += [tuple(e["key"][c] for c in columns) for m in publisher.messages for e in bodies_of(m)]
            record = state.snapshot_list()[0]
            if run == 0:
                assert record["status"] == "running" and record["last_key"], record
        assert record["status"] == "done", record
        with admin.cursor() as cur:  # what the table holds (its collation folds "a" and "A" into one key)
            cur.execute(f"SELECT {', '.join(columns)} FROM {DB}.{name}")
            source_keys = {tuple(_canonical(v) for v in row) for row in cur.fetchall()}
        assert set(received) == source_keys and len(source_keys) == total
        assert record["rows_done"] >= total
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {DB}.{name}")


def bodies_of(message) -> list[dict]:
    decoded = orjson.loads(message.body)
    return decoded if isinstance(decoded, list) else [decoded]


def _canonical(value):
    """A key value as the events carry it (bytes: base64, dates: ISO)."""
    import base64

    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
