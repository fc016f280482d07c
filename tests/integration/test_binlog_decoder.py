"""cdc.binlog_fixes decodes rows through a compiled plan per table map: it must give exactly what
python-mysql-replication's own column decoder gives (values and the reasons of None), for every
column type, NULLs, extremes and zero dates, in inserts, updates (both images) and deletes.

The same binlog range is read twice from the binlog MariaDB: once with the library's decoder,
once with ours, and the rows are compared event by event.
"""

from __future__ import annotations

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

from cdc import binlog_fixes
from cdc.config import SourceConfig
from cdc.reader import BinlogReader

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


def _exact(row: dict) -> dict:
    """A row with every value as its repr: Decimal('0.50') and Decimal('0.5') are equal, but not the same value."""
    return {image: {k: repr(v) for k, v in values.items()} for image, values in row.items()}


def _rows(source_server, db: str, start, end, decoder) -> list[tuple[str, list]]:
    saved = RowsEvent._read_column_data
    RowsEvent._read_column_data = decoder
    stream = BinLogStreamReader(
        connection_settings={k: source_server[k] for k in ("host", "port", "user", "password")},
        server_id=random.randint(10_000, 2**31), resume_stream=True, log_file=start.file, log_pos=start.pos,
        blocking=False, only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent], only_schemas=[db])
    try:
        out = []
        for event in stream:
            out.append((type(event).__name__, event.rows))
            if (stream.log_file, stream.log_pos) >= (end.file, end.pos):
                break
        return out
    finally:
        stream.close()
        RowsEvent._read_column_data = saved


def test_compiled_decoder_gives_what_the_library_gives(source_server):
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
        end = reader.head_position()

        library = _rows(source_server, db, start, end, binlog_fixes._library_read_column_data)
        ours = _rows(source_server, db, start, end, binlog_fixes._read_column_data)
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
    counts: dict[str, int] = {}
    for kind, rows in library:  # large rows come one to an event
        counts[kind] = counts.get(kind, 0) + len(rows)
    assert counts == {"WriteRowsEvent": 3, "UpdateRowsEvent": 3, "DeleteRowsEvent": 2}
    first = next(row for kind, rows in library if kind == "WriteRowsEvent" for row in rows if row["values"]["id"] == 1)
    assert first["values"]["dt5"].microsecond == 123450 and first["values"]["dec20"] == Decimal("-1234567890.0123456789")
    assert first["values"]["dtbad"] is None and first["none_sources"]["dtbad"] == "out of datetime2 range"
    for (kind, expected), (_, got) in zip(library, ours, strict=True):
        for want, have in zip(expected, got, strict=True):
            assert _exact(have) == _exact(want), kind
