"""Schema history: every DDL statement the reader passes, kept in the state store and published.

Column names of row events come from the binlog itself (``binlog_row_metadata=FULL``: each
TABLE_MAP event carries them), never from the current information_schema, so rows written before
and after an ALTER TABLE keep their own column names. This module records what changed and when:
one row per DDL statement (source, position, GTID, statement, the tables it touches) in the state
store's ``cdc_schema_history`` table, and one schema-change message per statement on the events
exchange with routing key ``schema.<db>.<table>`` (queue ``cdc.schema.changes``), which a change
event binding (``<entity>.<op>``, two words) never matches.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cdc.broker.topology import declare_queue
from cdc.domain.envelope import encode, now_ms
from cdc.state.store import create_tables

SCHEMA_QUEUE = "cdc.schema.changes"
SCHEMA_PREFIX = "schema"

_metadata = sa.MetaData()
history_table = sa.Table(
    "cdc_schema_history", _metadata,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("file", sa.String(200), primary_key=True),
    sa.Column("pos", sa.BigInteger, primary_key=True),
    sa.Column("gtid", sa.String(200)),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("db", sa.String(200)),
    sa.Column("tbl", sa.String(200)),
    sa.Column("new_tbl", sa.String(200)),
    sa.Column("ddl", sa.Text, nullable=False),
    sa.Column("ts_ms", sa.BigInteger),
)

_IDENT = r"`?([\w$]+)`?(?:\s*\.\s*`?([\w$]+)`?)?"
_KINDS = [  # (kind, pattern); group 1/2 = [db.]table, group 3/4 = the new name of a rename
    ("rename_table", re.compile(rf"^\s*RENAME\s+TABLES?\s+{_IDENT}\s+TO\s+{_IDENT}", re.I)),
    ("alter_table", re.compile(rf"^\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+(?:IF\s+EXISTS\s+)?{_IDENT}", re.I)),
    ("create_table", re.compile(rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_IDENT}", re.I)),
    ("drop_table", re.compile(rf"^\s*DROP\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?{_IDENT}", re.I)),
    ("truncate_table", re.compile(rf"^\s*TRUNCATE\s+(?:TABLE\s+)?{_IDENT}", re.I)),
]


@dataclass(frozen=True)
class SchemaChange:
    kind: str  # alter_table | create_table | drop_table | rename_table | truncate_table | other
    db: str | None
    table: str | None
    new_table: str | None
    ddl: str


def parse_ddl(ddl: str, default_db: str | None = None) -> SchemaChange:
    text = re.sub(r"/\*.*?\*/", " ", ddl, flags=re.S)
    for kind, pattern in _KINDS:
        m = pattern.match(text)
        if m:
            db, table = (m.group(1), m.group(2)) if m.group(2) else (default_db, m.group(1))
            new = (m.group(4) or m.group(3)) if kind == "rename_table" else None
            return SchemaChange(kind, db, table, new, ddl)
    return SchemaChange("other", default_db, None, None, ddl)


class SchemaHistory:
    """Records DDL in the state store (its SQL engine; in memory for a memory store) and builds the
    schema-change messages the reader publishes with the DDL's transaction."""

    def __init__(self, state: Any, exchange_prefix: str = SCHEMA_PREFIX) -> None:
        self._engine = getattr(state, "_engine", None)
        # The store's retry of a lost connection (PostgreSQL restarting): then TransientError, never the driver's.
        self._retrying = getattr(state, "retrying", lambda _what, fn, *args: fn(*args))
        self._memory: list[dict] = []
        self._lock = threading.Lock()
        self.prefix = exchange_prefix
        if self._engine is not None:
            self._retrying("create the schema history table", create_tables, _metadata, self._engine)

    def record(self, source: str, change: SchemaChange, file: str, pos: int, gtid: str | None, ts_ms: int) -> dict:
        row = dict(source=source, file=file, pos=pos, gtid=gtid, kind=change.kind, db=change.db, tbl=change.table,
                   new_tbl=change.new_table, ddl=change.ddl, ts_ms=ts_ms)
        if self._engine is None:
            with self._lock:
                if not any((r["source"], r["file"], r["pos"]) == (source, file, pos) for r in self._memory):
                    self._memory.append(row)
            return row
        self._retrying("record a DDL statement", self._insert_once, row)
        return row

    def _insert_once(self, row: dict) -> None:
        key = sa.and_(history_table.c.source == row["source"], history_table.c.file == row["file"],
                      history_table.c.pos == row["pos"])
        with self._engine.begin() as conn:  # re-reading the binlog after a restart (or a retry) records nothing twice
            if conn.execute(sa.select(history_table.c.pos).where(key)).first() is None:
                conn.execute(history_table.insert().values(**row))

    def entries(self, source: str, db: str | None = None, table: str | None = None) -> list[dict]:
        if self._engine is None:
            rows = [dict(r) for r in self._memory if r["source"] == source]
        else:
            rows = self._retrying("read the schema history", self._select, source)
        rows = [r for r in rows if (db is None or r["db"] == db) and (table is None or table in (r["tbl"], r["new_tbl"]))]
        return sorted(rows, key=lambda r: (r["file"], r["pos"]))

    def _select(self, source: str) -> list[dict]:
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(history_table).where(history_table.c.source == source))]

    def on_ddl(self, source: str, server_id: int, txn: Any, default_db: str | None = None) -> list[Any]:
        """Record the DDL of ``txn`` and return its schema-change message (an OutMessage) to publish."""
        from cdc.broker.publisher import OutMessage

        change = parse_ddl(txn.ddl, default_db)
        file, pos = txn.end.file, txn.end.pos
        row = self.record(source, change, file, pos, txn.gtid, txn.ts * 1000)
        body = {"type": "schema_change", "source": {"name": source, "server_id": server_id, "gtid": txn.gtid,
                                                    "file": file, "pos": pos, "ts_ms": row["ts_ms"]},
                "kind": change.kind, "db": change.db, "table": change.table, "new_table": change.new_table,
                "ddl": change.ddl, "ts_ms": now_ms()}
        routing = ".".join([self.prefix, change.db or "_", change.table or "_"])
        return [OutMessage(routing_key=routing, body=encode(body), message_id=f"{source}:{file}:{pos}:schema",
                           headers={"x-cdc-schema-change": change.kind}, timestamp_ms=row["ts_ms"])]


def declare_schema_queue(channel: Any, exchange: str) -> None:
    """The queue of schema-change messages (consumers and operators read it; nothing is dropped)."""
    declare_queue(channel, SCHEMA_QUEUE, {"x-queue-type": "quorum"})
    channel.queue_bind(queue=SCHEMA_QUEUE, exchange=exchange, routing_key=f"{SCHEMA_PREFIX}.#")
