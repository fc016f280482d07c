"""cdc.source.row_decoder decodes rows through a compiled plan per table map: it must give exactly what
python-mysql-replication's own column decoder gives (values and the reasons of None), for every
column type, NULLs, extremes and zero dates, in inserts, updates (both images) and deletes.

The same binlog range is read three times from the binlog MariaDB: with the library's decoder,
with ours in Python, and with ours through the C extension (cdc/source/_rowdecode.c) for the tables read
in place; the rows are compared event by event.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from decimal import Decimal

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    RowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)
from test_types_fidelity import CASES

from cdc.runtime.config import SourceConfig
from cdc.source import row_decoder as binlog_fixes
from cdc.source.binlog_stream import BinlogReader

pytestmark = pytest.mark.integration

EXTRA = [  # types the fidelity table does not have, and string lengths on both sides of 255
    ("vc300", "VARCHAR(300)", "REPEAT('ü', 290)"),
    ("c255", "CHAR(255) CHARACTER SET latin1", "'ÿ'"),
    ("tb", "TINYBLOB", "x'00ff10'"),
    ("mb", "MEDIUMBLOB", "REPEAT(x'ab', 70000)"),
    ("lt", "LONGTEXT", "REPEAT('😀', 20000)"),
    ("asci", "VARCHAR(10) CHARACTER SET ascii", "'plain'"),
    ("u16", "VARCHAR(10) CHARACTER SET utf16", "'ŝ 😀'"),
    ("dt1", "DATETIME(1)", "'2024-01-02 03:04:05.1'"),
    ("dt2", "DATETIME(2)", "'2024-01-02 03:04:05.99'"),
    ("dt4", "DATETIME(4)", "'1999-12-31 23:59:59.9999'"),
    ("dt5", "DATETIME(5)", "'2024-01-02 03:04:05.12345'"),
    ("ts3", "TIMESTAMP(3) NULL", "'2024-05-06 07:08:09.123'"),
    ("dzero", "DATE", "'2024-00-10'"),  # a zero part: None, as a zero date
    ("dtzero", "DATETIME(2)", "'2024-00-10 01:02:03.45'"),
    ("dtbad", "DATETIME(2)", "'2024-02-31 01:02:03.45'"),  # stored with ALLOW_INVALID_DATES: None
    ("dec0", "DECIMAL(5,0)", "-99999"),
    ("dec20", "DECIMAL(20,10)", "-1234567890.0123456789"),
    ("dec1", "DECIMAL(3,1)", "0.5"),
    # DECIMAL layouts: leftover groups of every size on both sides, full groups only, no integral part
    ("dec65", "DECIMAL(65,30)", "-99999999999999999999999999999999999.999999999999999999999999999999"),
    ("dec650", "DECIMAL(65,0)", "12345678901234567890123456789012345678901234567890123456789012345"),
    ("dec3030", "DECIMAL(30,30)", "-0.000000000000000000000000000001"),
    ("dec99", "DECIMAL(9,9)", "0.123456789"),
    ("dec180", "DECIMAL(18,0)", "-999999999999999999"),
    ("dec191", "DECIMAL(19,1)", "123456789012345678.9"),
    ("dec123", "DECIMAL(12,3)", "-123456789.120"),
    ("dec42", "DECIMAL(4,2)", "-0.50"),
    ("dec74", "DECIMAL(7,4)", "100.0001"),
    ("dec2018", "DECIMAL(20,18)", "-1.000000000000000001"),
]


# A table of the types decoded in place only: its rows are read straight from the packet's bytes.
IN_PLACE = [
    ("ti", "TINYINT", "-128"), ("tu", "TINYINT UNSIGNED", "255"), ("mi", "MEDIUMINT", "-8388608"),
    ("bu", "BIGINT UNSIGNED", "18446744073709551615"), ("vc", "VARCHAR(300)", "REPEAT('é', 280)"),
    ("ch", "CHAR(3) CHARACTER SET latin1", "'ÿa'"), ("bl", "BLOB", "x'00ff'"), ("d", "DATE", "'2024-02-29'"),
    ("dz", "DATE", "'0000-00-00'"), ("dt", "DATETIME(6)", "'2024-01-02 03:04:05.000006'"),
    ("ts", "TIMESTAMP(2) NULL", "'2024-05-06 07:08:09.12'"), ("de", "DECIMAL(20,10)", "-0.0000000001"),
    # the edges of each kind, which the C decoder must decode as the library does
    ("si", "SMALLINT", "-32768"), ("su", "SMALLINT UNSIGNED", "65535"), ("mu", "MEDIUMINT UNSIGNED", "16777215"),
    ("i", "INT", "-2147483648"), ("iu", "INT UNSIGNED", "4294967295"), ("bi", "BIGINT", "-9223372036854775808"),
    ("u16", "VARCHAR(10) CHARACTER SET utf16", "'ŝ 😀'"), ("swe", "VARCHAR(5) CHARACTER SET swe7", "'abc'"),
    ("lt", "LONGTEXT", "REPEAT('😀', 20000)"), ("mb", "MEDIUMBLOB", "REPEAT(x'ab', 70000)"),
    ("tt", "TINYTEXT CHARACTER SET latin1", "'€ÿ'"),
    ("dtbad", "DATETIME(2)", "'2024-02-31 01:02:03.45'"), ("dtzero", "DATETIME(3)", "'2024-00-10 01:02:03.456'"),
    ("dt0", "DATETIME", "'0000-00-00 00:00:00'"), ("dtmax", "DATETIME(5)", "'9999-12-31 23:59:59.99999'"),
    ("dt1", "DATETIME(1)", "'2024-01-02 03:04:05.1'"), ("dtmin", "DATETIME(4)", "'1000-01-01 00:00:00.0001'"),
    ("ts0", "TIMESTAMP NULL", "'1970-01-01 00:00:01'"), ("tsmax", "TIMESTAMP(6) NULL", "'2038-01-19 03:14:07.999999'"),
    ("ts3", "TIMESTAMP(3) NULL", "'2000-02-29 23:59:59.5'"), ("dmax", "DATE", "'9999-12-31'"),
    ("dzp", "DATE", "'2024-00-10'"), ("dzd", "DATE", "'2024-01-00'"),
    ("dec65", "DECIMAL(65,30)", "-99999999999999999999999999999999999.999999999999999999999999999999"),
    ("dec650", "DECIMAL(65,0)", "12345678901234567890123456789012345678901234567890123456789012345"),
    ("dec3030", "DECIMAL(30,30)", "-0.000000000000000000000000000001"), ("dec50", "DECIMAL(5,0)", "-99999"),
    ("dec191", "DECIMAL(19,1)", "123456789012345678.9"), ("dec42", "DECIMAL(4,2)", "-0.50"),
    ("dec74", "DECIMAL(7,4)", "100.0001"), ("dec2018", "DECIMAL(20,18)", "-1.000000000000000001"),
]


def _exact(row: dict) -> dict:
    """A row with every value as its repr: Decimal('0.50') and Decimal('0.5') are equal, but not the same value."""
    return {image: {k: repr(v) for k, v in values.items()} for image, values in row.items()}


@contextlib.contextmanager
def _library_decoding():
    """The library's own row loop and column decoder (with the TIME2 correction, which the library's
    dispatch reaches and every decoder here shares)."""
    saved = RowsEvent._read_column_data, RowsEvent._fetch_rows
    RowsEvent._read_column_data, RowsEvent._fetch_rows = binlog_fixes._library_read_column_data, binlog_fixes._library_fetch_rows
    try:
        yield
    finally:
        RowsEvent._read_column_data, RowsEvent._fetch_rows = saved


def _rows(source_server, db: str, start, end, decoder: str) -> list[tuple[str, list, str, bool | None]]:
    """The rows of the range through ``decoder``: "library" (python-mysql-replication as released),
    "python" (our plan, without the C extension) or "c" (our plan, tables read in place in C)."""
    saved_c = binlog_fixes._rowdecode
    binlog_fixes._rowdecode = saved_c if decoder == "c" else None
    stream = BinLogStreamReader(
        connection_settings={k: source_server[k] for k in ("host", "port", "user", "password")},
        server_id=random.randint(10_000, 2**31), resume_stream=True, log_file=start.file, log_pos=start.pos,
        blocking=False, only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent], only_schemas=[db])
    try:
        with _library_decoding() if decoder == "library" else contextlib.nullcontext():
            out = []
            for event in stream:
                rows = event.rows  # decoded here, with the table map's plan compiled first
                plan = event.table_map[event.table_id].__dict__.get("_cdc_plan")  # (steps, in place?, ...) once compiled
                out.append((type(event).__name__, rows, event.table, plan[1] if plan else None))
                if (stream.log_file, stream.log_pos) >= (end.file, end.pos):
                    break
            return out
    finally:
        stream.close()
        binlog_fixes._rowdecode = saved_c


def test_the_c_decoder_is_built():
    """`pip install` builds the extension; without it every row would take the slower Python plan."""
    assert binlog_fixes.decoder() == "C", "cdc/source/_rowdecode.c is not built: run `pip install -e .` again"


def test_compiled_decoder_gives_what_the_library_gives(source_server):
    assert binlog_fixes._rowdecode is not None, "cdc/source/_rowdecode.c is not built"
    db = f"cdc_decoder_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True,
                            charset="utf8mb4")
    cur = admin.cursor()
    reader = BinlogReader(SourceConfig(host=source_server["host"], port=source_server["port"], user=source_server["user"],
                                       password=source_server["password"], databases=[db]))
    try:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES', SESSION time_zone = '+00:00'")
        columns = [f"{name} {ddl}" for name, ddl, *_ in CASES] + [f"{name} {ddl}" for name, ddl, _ in EXTRA]
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, {', '.join(columns)}) DEFAULT CHARSET=utf8mb4")
        start = reader.head_position()
        typical = [case[3][0] for case in CASES] + [literal for *_, literal in EXTRA]
        edge = [case[4][0] for case in CASES] + ["''"] * len(EXTRA)
        cur.execute(f"INSERT INTO {db}.t VALUES (1, {', '.join(typical)}), (2, {', '.join(edge)})")
        cur.execute(f"INSERT INTO {db}.t (id) VALUES (3)")  # NULL in every column
        cur.execute(f"UPDATE {db}.t SET id = id + 10, vc = 'changed', ti = NULL")  # before and after images
        cur.execute(f"DELETE FROM {db}.t WHERE id IN (11, 13)")
        cur.execute(f"CREATE TABLE {db}.p (id INT PRIMARY KEY, {', '.join(f'{n} {ddl}' for n, ddl, _ in IN_PLACE)})")
        cur.execute(f"INSERT INTO {db}.p VALUES (1, {', '.join(v for *_, v in IN_PLACE)}), (2, {', '.join(['NULL'] * len(IN_PLACE))})")
        cur.execute(f"UPDATE {db}.p SET vc = 'x', de = 1.5, id = id + 10")
        cur.execute(f"DELETE FROM {db}.p WHERE id = 12")
        end = reader.head_position()

        library = _rows(source_server, db, start, end, "library")
        ours = _rows(source_server, db, start, end, "python")
        in_c = _rows(source_server, db, start, end, "c")
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
    counts: dict[tuple[str, str], int] = {}
    for kind, rows, table, _ in library:  # large rows come one to an event
        counts[table, kind] = counts.get((table, kind), 0) + len(rows)
    assert counts == {("t", "WriteRowsEvent"): 3, ("t", "UpdateRowsEvent"): 3, ("t", "DeleteRowsEvent"): 2,
                      ("p", "WriteRowsEvent"): 2, ("p", "UpdateRowsEvent"): 2, ("p", "DeleteRowsEvent"): 1}
    first = next(row for kind, rows, table, _ in library if (table, kind) == ("t", "WriteRowsEvent")
                 for row in rows if row["values"]["id"] == 1)
    assert first["values"]["dt5"].microsecond == 123450 and first["values"]["dec20"] == Decimal("-1234567890.0123456789")
    assert first["values"]["dtbad"] is None and first["none_sources"]["dtbad"] == "out of datetime2 range"
    # Table t has types the library decodes (read through its packet wrapper); p is read in place.
    assert {(table, in_place) for _, _, table, in_place in ours} == {("t", False), ("p", True)}
    for decoded in (ours, in_c):
        for (kind, expected, table, _), (_, got, _, _) in zip(library, decoded, strict=True):
            for want, have in zip(expected, got, strict=True):
                assert _exact(have) == _exact(want), (table, kind)
