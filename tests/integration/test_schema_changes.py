"""Schema changes mid-stream, with writes continuing around them, read from the real binlog MariaDB:
column names stay right for every row (they come from the binlog's own table metadata), a row
whose mapped column is gone is dead-lettered with the reason, and every DDL lands in the schema
history with a schema-change message."""

from __future__ import annotations

import random
import threading
import uuid

import pymysql
import pytest

from cdc.mapping import EntityMapping, Mapper
from cdc.runtime.config import SourceConfig
from cdc.source.binlog_stream import BinlogReader
from cdc.source.change_events import build_events
from cdc.source.schema_history import SchemaHistory
from cdc.state import open_state_store

pytestmark = pytest.mark.integration


def mapping(db: str, **over) -> EntityMapping:
    return EntityMapping.model_validate({
        "entity": "person", "source": {"db": db, "table": "people"}, "key": ["person_id"],
        "fields": {"person_id": {"column": "id", "type": "integer"}, "name": {"column": "name", "type": "string"},
                   "score": {"column": "score", "type": "integer"}},
    } | over)


@pytest.fixture
def run(source_server, tmp_path):
    """Executes statements (one transaction each) on a scratch database, then reads them back from the binlog."""
    db = f"cdc_ddl_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True,
                            database=None)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"USE {db}")
        cur.execute("CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(20), score INT)")
    reader = BinlogReader(SourceConfig(host=source_server["host"], port=source_server["port"], user=source_server["user"],
                                       password=source_server["password"], databases=[db], heartbeat_s=1, read_timeout_s=10,
                                       replica_server_id=random.randint(10_000, 2**31)))
    reader.preflight()

    def execute(*statements: str):
        start = reader.head_position()
        with admin.cursor() as cur:
            for s in statements:
                cur.execute(s)
        end = reader.head_position()
        txns = []
        for txn in reader.transactions(start, threading.Event()):
            txns.append(txn)
            if (txn.end.file, txn.end.pos) >= (end.file, end.pos):
                return txns
        return txns

    yield db, execute
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
    admin.close()


def test_rows_around_column_changes_keep_their_own_column_names(run):
    db, execute = run
    txns = execute(
        "INSERT INTO people VALUES (1, 'ann', 10)",
        "ALTER TABLE people ADD COLUMN email VARCHAR(40) AFTER id",
        "INSERT INTO people VALUES (2, 'b@x.org', 'bob', 20)",
        "ALTER TABLE people RENAME COLUMN score TO points",
        "INSERT INTO people VALUES (3, 'c@x.org', 'cy', 30)",
        "ALTER TABLE people MODIFY COLUMN points BIGINT UNSIGNED",
        "INSERT INTO people VALUES (4, 'd@x.org', 'di', 18446744073709551615)",
        "ALTER TABLE people DROP COLUMN email",
        "INSERT INTO people VALUES (5, 'ed', 50)",
    )
    rows = [c.after for t in txns for c in t.changes]
    assert rows == [
        {"id": 1, "name": "ann", "score": 10},
        {"id": 2, "email": "b@x.org", "name": "bob", "score": 20},
        {"id": 3, "email": "c@x.org", "name": "cy", "points": 30},
        {"id": 4, "email": "d@x.org", "name": "di", "points": 18446744073709551615},
        {"id": 5, "name": "ed", "points": 50},
    ]
    events, dead = [], []
    mapper = Mapper([mapping(db, unmapped_columns="pass_through")])
    for t in txns:
        e, d = build_events(t, mapper, "ddl", 1)
        events += e
        dead += d
    assert [e["key"]["person_id"] for e in events] == [1, 2]
    assert events[1]["after"]["extra"] == {"email": "b@x.org"}  # a new unmapped column, passed through
    assert [d.change.after["id"] for d in dead] == [3, 4, 5]  # 'score' was renamed away: dead-lettered, not nulled
    assert "column(s) ['score'] that the mapping reads are not in the source row" in dead[0].reason
    assert f"table {db}.people" in dead[0].reason and "'person_id': 3" in dead[0].reason


def test_table_ddl_is_recorded_in_the_schema_history_and_published(run, tmp_path):
    db, execute = run
    txns = execute(
        "INSERT INTO people VALUES (1, 'ann', 10)",
        "CREATE TABLE extra (id INT PRIMARY KEY)",
        "RENAME TABLE people TO persons",
        "INSERT INTO persons VALUES (2, 'bob', 20)",
        "TRUNCATE TABLE persons",
        f"DROP TABLE {db}.extra",
    )
    history = SchemaHistory(open_state_store(f"sqlite:///{tmp_path}/state.db"))
    messages = [m for t in txns if t.ddl for m in history.on_ddl("ddl", 1, t, t.ddl_db)]
    kinds = [(e["kind"], e["db"], e["tbl"], e["new_tbl"]) for e in history.entries("ddl")]
    assert kinds == [("create_table", db, "extra", None), ("rename_table", db, "people", "persons"),
                     ("truncate_table", db, "persons", None), ("drop_table", db, "extra", None)]
    assert [m.routing_key for m in messages] == [f"schema.{db}.extra", f"schema.{db}.people", f"schema.{db}.persons",
                                                 f"schema.{db}.extra"]
    for t in txns:  # re-reading the same binlog records nothing twice
        if t.ddl:
            history.on_ddl("ddl", 1, t, t.ddl_db)
    assert len(history.entries("ddl")) == 4
    rows = [(c.table, c.after) for t in txns for c in t.changes]
    assert rows == [("people", {"id": 1, "name": "ann", "score": 10}), ("persons", {"id": 2, "name": "bob", "score": 20})]
