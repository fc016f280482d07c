"""Type fidelity, table-driven: every MySQL/MariaDB column type, inserted into the binlog MariaDB,
read from the binlog (python-mysql-replication) and by the snapshot's chunk SELECT (cdc.snapshot.chunks.ChunkSelect:
mysqlclient, and PyMySQL as with source TLS; both must give the same Python values), must give the
canonical value of docs/types.md in the event, and the same value read back from every sink (CRM,
cache, search).

Each case: column DDL, field spec, then (SQL literal, canonical value) for a typical row and an
edge row (extremes, zero dates, emoji). A third row is NULL in every column.
"""

from __future__ import annotations

import base64
import random
import struct
import threading
import uuid

import pymysql
import pymysql.cursors
import pytest
from pydantic import SecretStr
from search_server import search_url  # noqa: F401  (the session fixture)

from cdc.domain.envelope import decode, encode, key_string
from cdc.mapping import EntityMapping, Mapper
from cdc.runtime.config import SourceConfig
from cdc.sinks.base import SinkContext, get_sink_type
from cdc.snapshot.chunks import ChunkSelect
from cdc.source.binlog_stream import BinlogReader
from cdc.source.change_events import build_events

pytestmark = pytest.mark.integration

D65 = "12345678901234567890123456789012345.123456789012345678901234567891"
POINT_WKB = struct.pack("<I", 0) + b"\x01" + struct.pack("<Idd", 1, 1.5, -2.25)

# column, DDL, field spec, (literal, canonical) typical, (literal, canonical) edge
CASES = [
    ("ti", "TINYINT", {"type": "integer"}, ("-128", -128), ("127", 127)),
    ("tiu", "TINYINT UNSIGNED", {"type": "integer"}, ("255", 255), ("0", 0)),
    ("flag", "TINYINT(1)", {"type": "boolean"}, ("1", True), ("0", False)),
    ("si", "SMALLINT", {"type": "integer"}, ("-32768", -32768), ("32767", 32767)),
    ("siu", "SMALLINT UNSIGNED", {"type": "integer"}, ("65535", 65535), ("0", 0)),
    ("mi", "MEDIUMINT", {"type": "integer"}, ("-8388608", -8388608), ("8388607", 8388607)),
    ("miu", "MEDIUMINT UNSIGNED", {"type": "integer"}, ("16777215", 16777215), ("0", 0)),
    ("i", "INT", {"type": "integer"}, ("-2147483648", -2147483648), ("2147483647", 2147483647)),
    ("iu", "INT UNSIGNED", {"type": "integer"}, ("4294967295", 4294967295), ("0", 0)),
    ("bi", "BIGINT", {"type": "integer"}, ("-9223372036854775808", -9223372036854775808),
     ("9223372036854775807", 9223372036854775807)),
    ("biu", "BIGINT UNSIGNED", {"type": "bigint_unsigned"}, ("18446744073709551615", 18446744073709551615), ("0", 0)),
    ("dec2", "DECIMAL(10,2)", {"type": "decimal"}, ("-12.50", "-12.50"), ("0", "0.00")),
    ("d65", "DECIMAL(65,30)", {"type": "decimal"}, (D65, D65), ("-0.000000000000000000000000000001", "-0.000000000000000000000000000001")),
    ("f", "FLOAT", {"type": "float", "column_type": "float"}, ("3.4", 3.4), ("-1.17549e-38", -1.17549e-38)),
    ("dbl", "DOUBLE", {"type": "float"}, ("0.1", 0.1), ("-1.7976931348623157e308", -1.7976931348623157e308)),
    ("da", "DATE", {"type": "date"}, ("'2024-02-29'", "2024-02-29"), ("'0000-00-00'", None)),
    ("dt0", "DATETIME", {"type": "datetime"}, ("'2024-01-02 03:04:05'", "2024-01-02T03:04:05"),
     ("'0000-00-00 00:00:00'", None)),
    ("dt3", "DATETIME(3)", {"type": "datetime"}, ("'2024-01-02 03:04:05.120'", "2024-01-02T03:04:05.120000"),
     ("'9999-12-31 23:59:59.999'", "9999-12-31T23:59:59.999000")),
    ("dt6", "DATETIME(6)", {"type": "datetime"}, ("'2024-01-02 03:04:05.123456'", "2024-01-02T03:04:05.123456"),
     ("'1000-01-01 00:00:00.000000'", "1000-01-01T00:00:00")),
    ("dtz", "DATETIME", {"type": "timestamp", "column_type": "datetime"}, ("'2024-07-01 12:00:00'", "2024-07-01T10:00:00Z"),
     ("'2024-01-01 00:30:00'", "2023-12-31T23:30:00Z")),  # wall time in Europe/Paris (the mapping's source_timezone)
    ("ts0", "TIMESTAMP NULL", {"type": "timestamp"}, ("'2024-01-02 03:04:05'", "2024-01-02T03:04:05Z"),
     ("'0000-00-00 00:00:00'", None)),
    ("ts6", "TIMESTAMP(6) NULL", {"type": "timestamp"}, ("'2038-01-19 03:14:07.999999'", "2038-01-19T03:14:07.999999Z"),
     ("'1970-01-01 00:00:01.000001'", "1970-01-01T00:00:01.000001Z")),
    ("tm", "TIME", {"type": "time"}, ("'-838:59:59'", "-838:59:59"), ("'838:59:59'", "838:59:59")),
    ("tm6", "TIME(6)", {"type": "time"}, ("'25:00:00.5'", "25:00:00.500000"), ("'-00:00:01'", "-00:00:01")),
    ("yr", "YEAR", {"type": "integer", "column_type": "year"}, ("2155", 2155), ("0", None)),
    ("ch", "CHAR(5)", {"type": "string"}, ("'ab'", "ab"), ("''", "")),
    ("vc", "VARCHAR(40)", {"type": "string"}, ("'héllo 😀 世界'", "héllo 😀 世界"), ("'a\\\\b\\'c\"'", "a\\b'c\"")),
    ("l1", "VARCHAR(40) CHARACTER SET latin1", {"type": "string"}, ("'Zoë Müller €'", "Zoë Müller €"), ("'ÿ'", "ÿ")),
    ("tx", "TEXT", {"type": "string"}, ("'text 😀'", "text 😀"), ("REPEAT('é', 3000)", "é" * 3000)),
    ("l1tx", "TEXT CHARACTER SET latin1", {"type": "string"}, ("'François'", "François"), ("''", "")),
    ("bn", "BINARY(4)", {"type": "bytes", "column_type": "binary(4)"}, ("x'01020000'", "AQIAAA=="), ("x'00000000'", "AAAAAA==")),
    ("vb", "VARBINARY(10)", {"type": "bytes"}, ("x'00ff'", "AP8="), ("''", "")),
    ("bl", "BLOB", {"type": "bytes"}, ("x'deadbeef'", "3q2+7w=="), ("x'00'", "AA==")),
    ("en", "ENUM('conference','webinar')", {"type": "string"}, ("'webinar'", "webinar"), ("''", "")),
    ("st", "SET('x','y','z')", {"type": "json", "column_type": "set"}, ("'z,x'", ["x", "z"]), ("''", None)),
    ("b1", "BIT(1)", {"type": "boolean", "column_type": "bit(1)"}, ("b'1'", True), ("b'0'", False)),
    ("b9", "BIT(9)", {"type": "integer", "column_type": "bit(9)"}, ("b'100000001'", 257), ("b'0'", 0)),
    ("b64", "BIT(64)", {"type": "bigint_unsigned", "column_type": "bit(64)"}, ("x'ffffffffffffffff'", 2**64 - 1), ("b'1'", 1)),
    ("js", "JSON", {"type": "json"}, ("'{\"ключ\": [1, 2.5, {\"n\": null}], \"b\": true, \"😀\": \"é\"}'",
                                      {"ключ": [1, 2.5, {"n": None}], "b": True, "😀": "é"}), ("'[]'", [])),
    ("geo", "GEOMETRY", {"type": "json", "column_type": "geometry"}, ("ST_GeomFromText('POINT(1.5 -2.25)')",
     {"type": "Point", "coordinates": [1.5, -2.25], "srid": 0}),
     ("ST_GeomFromText('LINESTRING(0 0,1 1)')", {"type": "LineString", "coordinates": [[0.0, 0.0], [1.0, 1.0]], "srid": 0})),
    ("pt", "POINT", {"type": "bytes"}, ("ST_GeomFromText('POINT(1.5 -2.25)')", base64.b64encode(POINT_WKB).decode()),
     ("ST_GeomFromText('POINT(0 0)')", base64.b64encode(struct.pack("<I", 0) + b"\x01" + struct.pack("<Idd", 1, 0, 0)).decode())),
]
COLUMNS = [c[0] for c in CASES]
ROWS = {1: {c[0]: c[3][1] for c in CASES}, 2: {c[0]: c[4][1] for c in CASES}, 3: {c[0]: None for c in CASES}}


@pytest.fixture(scope="module")
def world(source_server):
    db = f"cdc_types_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True, charset="utf8mb4")
    cur = admin.cursor()
    cur.execute(f"CREATE DATABASE {db}")
    cur.execute("SET SESSION sql_mode = '', SESSION time_zone = '+00:00'")  # the legacy app's sessions: zero dates allowed
    columns = ", ".join(f"{name} {ddl}" for name, ddl, *_ in CASES)
    cur.execute(f"CREATE TABLE {db}.every_type (id INT PRIMARY KEY, {columns}) DEFAULT CHARSET=utf8mb4")
    mapping = EntityMapping.model_validate({
        "entity": "every_type", "source": {"db": db, "table": "every_type"}, "key": ["id"], "source_timezone": "Europe/Paris",
        "fields": {"id": {"column": "id", "type": "integer"}} | {name: {"column": name, **spec} for name, _, spec, *_ in CASES},
    })
    mapper = Mapper([mapping])
    reader = BinlogReader(SourceConfig(host=source_server["host"], port=source_server["port"], user=source_server["user"],
                                       password=source_server["password"], databases=[db], heartbeat_s=1, read_timeout_s=10,
                                       replica_server_id=random.randint(10_000, 2**31)), mapper.tables())
    reader.preflight()
    start = reader.head_position()
    cur.execute("BEGIN")
    for row_id, index in ((1, 3), (2, 4)):
        cur.execute(f"INSERT INTO {db}.every_type VALUES ({row_id}, {', '.join(case[index][0] for case in CASES)})")
    cur.execute(f"INSERT INTO {db}.every_type (id) VALUES (3)")
    cur.execute("COMMIT")
    end = reader.head_position()
    events = []
    for txn in reader.transactions(start, threading.Event()):
        built, dead = build_events(txn, mapper, "types", 1)
        assert not dead, [d.reason for d in dead]
        events += built
        if (txn.end.file, txn.end.pos) >= (end.file, end.pos):
            break
    # The snapshot's own chunk reader, with the reader's connection settings, through both of its drivers
    # (mysqlclient; PyMySQL where the source uses TLS).
    raw = {}
    for driver in ("mysqlclient", "pymysql"):
        select = ChunkSelect(reader.connection_settings(), driver)
        try:
            raw[driver] = select.rows(f"SELECT * FROM {db}.every_type ORDER BY id", [])
        finally:
            select.close()
    selected = {r["id"]: Mapper.map_row(mapping, r).values for r in raw["mysqlclient"]}
    yield {"events": {e["key"]["id"]: decode(encode(e)) for e in events}, "selected": selected, "mapper": mapper,
           "raw": raw}
    cur.execute(f"DROP DATABASE {db}")
    admin.close()


@pytest.mark.parametrize("column", COLUMNS)
def test_binlog_event_carries_the_canonical_value(world, column):
    got = {row_id: event.after[column] for row_id, event in world["events"].items()}
    assert got == {row_id: values[column] for row_id, values in ROWS.items()}


@pytest.mark.parametrize("column", COLUMNS)
def test_snapshot_select_gives_the_same_canonical_value(world, column):
    got = {row_id: values[column] for row_id, values in world["selected"].items()}
    assert got == {row_id: values[column] for row_id, values in ROWS.items()}


@pytest.mark.parametrize("column", COLUMNS)
def test_both_snapshot_drivers_read_the_same_python_values(world, column):
    def values(driver):
        return [(type(row[column]).__name__, repr(row[column])) for row in world["raw"][driver]]

    assert values("mysqlclient") == values("pymysql")


@pytest.fixture(scope="module", params=["crm", "cache", "search"])
def sink_rows(request, world, tmp_path_factory):
    """The rows each sink holds after applying the events, read back through its fetch_rows."""
    uid = uuid.uuid4().hex[:8]
    settings = {
        "crm": lambda: {"url": SecretStr(request.getfixturevalue("pg_url")), "schema_name": f"types_{uid}"},
        "cache": lambda: {"url": SecretStr(request.getfixturevalue("redis_url")), "key_prefix": f"it:types:{uid}"},
        "search": lambda: {"url": SecretStr(request.getfixturevalue("search_url")), "index_prefix": f"types-{uid}",
                           "state_url": f"sqlite:///{tmp_path_factory.mktemp('search')}/state.db"},
    }[request.param]()
    kind = get_sink_type(request.param)
    sink = kind.factory(f"types_{uid}", kind.config_model(**settings), SinkContext(entities=world["mapper"].schemas()))
    sink.open()
    try:
        rejected = sink.apply(list(world["events"].values()))
        assert not rejected, [r.reason for r in rejected]
        yield request.param, sink.fetch_rows("every_type")
    finally:
        sink.reset()
        sink.close()
        if request.param == "crm":
            import psycopg

            with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "types_{uid}" CASCADE')


@pytest.mark.parametrize("column", COLUMNS)
def test_every_sink_holds_the_canonical_value(sink_rows, column):
    name, rows = sink_rows
    got = {row_id: rows[key_string({"id": row_id})].get(column) for row_id in ROWS}
    assert got == {row_id: values[column] for row_id, values in ROWS.items()}, f"sink {name}"


# python-mysql-replication 1.0.x decodes a negative TIME with fractional seconds wrongly
# (-00:00:01.000001 arrives as -00:00:01.999999); cdc.source.row_decoder decodes it as the server does.
def test_negative_fractional_time_from_the_binlog(source_server):
    db = f"cdc_types_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    mapping = EntityMapping.model_validate({"entity": "t", "source": {"db": db, "table": "t"}, "key": ["id"],
                                            "fields": {"id": {"column": "id", "type": "integer"}, "tm": {"column": "tm", "type": "time"}}})
    reader = BinlogReader(SourceConfig(host=source_server["host"], port=source_server["port"], user=source_server["user"],
                                       password=source_server["password"], databases=[db], heartbeat_s=1,
                                       replica_server_id=random.randint(10_000, 2**31)), {(db, "t")})
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, tm TIME(6), t0 TIME, t1 TIME(1), t3 TIME(3))")
            start = reader.head_position()
            cur.execute(f"INSERT INTO {db}.t VALUES (1, '-00:00:01.000001', '-838:59:59', '-00:00:00.5', '-01:02:03.004'),"
                        f" (2, '838:59:59.999999', '00:00:00', '25:00:00.1', '-00:00:00.999')")
        txn = next(t for t in reader.transactions(start, threading.Event()) if t.changes)
        (event, _second), _ = build_events(txn, Mapper([mapping]), "types", 1)
        assert event["after"]["tm"] == "-00:00:01.000001"
        # Every fractional width, from the binlog, equals what a SELECT reads.
        with admin.cursor() as cur:
            cur.execute(f"SELECT id, tm, t0, t1, t3 FROM {db}.t ORDER BY id")
            selected = {row[0]: row[1:] for row in cur.fetchall()}
        for change in txn.changes:
            row = change.after
            assert (row["tm"], row["t0"], row["t1"], row["t3"]) == selected[row["id"]]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
