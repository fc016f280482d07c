"""The CRM sink: canonical entities as typed tables in PostgreSQL (SQLAlchemy Core + psycopg 3).

One table per entity (``<schema_name>.<entity>``, or the name in ``tables``): the canonical fields
as typed columns, the entity key as primary key, and the bookkeeping columns ``_version``,
``_deleted`` (versioned tombstone), ``_source_ts`` and ``_updated_at``. The sink's offset lives in
``<schema_name>.cdc_sink_offsets`` and is written in the same transaction as the rows.

Every write is guarded by ``WHERE stored._version < EXCLUDED._version``: redelivery, replay and
reordering change nothing, and a delete leaves a tombstone that an older, late insert cannot
resurrect. A truncate (op ``t`` at version V: TRUNCATE or DROP TABLE at the source) deletes the entity's rows
with ``_version < V`` and raises the entity's floor in ``<schema_name>.cdc_truncates`` to V, in one
transaction with the offset; every write selects only rows above the floor, so a late, older write
(a redelivery, a replay, a dead letter replayed months later) cannot bring a removed row back. The
floor row is read ``FOR SHARE`` (``FOR UPDATE`` by a batch holding a truncate) before the writes:
a worker of another shard that truncates meanwhile waits for, or is waited for by, those writes.

A batch is applied in one transaction with one multi-row statement per entity and kind;
its rows travel as one JSON parameter (written by orjson, in C) that PostgreSQL types with
``json_to_recordset`` (psycopg would dump typed arrays value by value, in Python).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import decimal
import functools
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, field_validator

from cdc.domain.entity_schema import EntitySchema, FieldType
from cdc.domain.envelope import ChangeEvent, Op, key_string, now_ms
from cdc.domain.errors import ConfigError, TerminalError, TransientError
from cdc.domain.positions import SinkOffset
from cdc.domain.redact import redact_url
from cdc.runtime.tls import check_postgres_url
from cdc.sinks.base import Rejection, Sink, SinkConfig, SinkContext, newest_per_key, offset_of, register_sink, split_truncates
from cdc.sinks.errors import ErrorTable, Rule

log = logging.getLogger("cdc.sinks.crm")

OFFSETS_TABLE = "cdc_sink_offsets"
TRUNCATES_TABLE = "cdc_truncates"

# FieldType -> (column type in DDL and array casts, the same as format_type() reports it)
_PG_TYPES: dict[FieldType, tuple[str, str]] = {
    FieldType.STRING: ("text", "text"),
    FieldType.INTEGER: ("bigint", "bigint"),
    FieldType.BIGINT_UNSIGNED: ("numeric(20,0)", "numeric(20,0)"),
    FieldType.DECIMAL: ("numeric", "numeric"),
    FieldType.FLOAT: ("double precision", "double precision"),
    FieldType.BOOLEAN: ("boolean", "boolean"),
    FieldType.DATE: ("date", "date"),
    FieldType.DATETIME: ("timestamp", "timestamp without time zone"),
    FieldType.TIMESTAMP: ("timestamptz", "timestamp with time zone"),
    FieldType.TIME: ("text", "text"),  # MySQL TIME may exceed 24h or be negative
    FieldType.JSON: ("jsonb", "jsonb"),
    FieldType.BYTES: ("bytea", "bytea"),
}
_ROW_TYPE = {FieldType.JSON: "text"}  # a JSON field travels as text and is cast per row (orjson is faster)
_META_COLUMNS = {
    "_version": "bigint",
    "_deleted": "boolean",
    "_source_ts": "timestamp with time zone",
    "_updated_at": "timestamp with time zone",
}


class CrmSinkConfig(SinkConfig):
    type: Literal["crm"] = "crm"
    url: SecretStr = Field(
        description="postgresql://user:password@host:port/db; TLS with libpq's parameters, e.g. "
        "?sslmode=verify-full&sslrootcert=/ca.pem[&sslcert=...&sslkey=...]."
    )
    schema_name: str = "crm"
    tables: dict[str, str] = Field(default_factory=dict, description="Entity -> table name (default: the entity name).")
    apply_timeout_s: float = Field(
        60.0, gt=0, description="A batch still waiting for PostgreSQL after this long has its connection cut and is "
        "retried (a half-open connection would otherwise hang forever: libpq has no read timeout).",
    )

    @field_validator("url")
    @classmethod
    def _tls_in_url(cls, url: SecretStr) -> SecretStr:
        check_postgres_url(url.get_secret_value(), "crm sink url")
        return url


# --- value conversion: canonical JSON -> checked JSON values that the column type's input reads ----------


class BadValue(ValueError):
    pass


_TIME_RE = re.compile(r"^-?\d{2,}:[0-5]\d:[0-5]\d(\.\d{1,6})?$")
_I64 = (-(2**63), 2**63 - 1)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise BadValue(f"expected a string, got {type(v).__name__}")
    if "\x00" in v:
        raise BadValue("string contains a NUL character, which PostgreSQL text cannot store")
    return v


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadValue(f"expected an integer, got {type(v).__name__}")
    if not _I64[0] <= v <= _I64[1]:
        raise BadValue(f"integer {v} does not fit a signed 64-bit bigint")
    return v


def _unsigned(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadValue(f"expected an unsigned integer, got {type(v).__name__}")
    if not 0 <= v < 2**64:
        raise BadValue(f"{v} is not an unsigned 64-bit integer")
    return v


def _decimal(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise BadValue(f"expected a decimal string, got {type(v).__name__}")
    try:
        d = decimal.Decimal(v)
    except decimal.InvalidOperation:
        raise BadValue(f"{v!r} is not a decimal number") from None
    if not d.is_finite():
        raise BadValue(f"{v!r} is not a finite decimal number")
    return str(d)  # Decimal's own text (PostgreSQL reads its exponents); not v, which may hold '_' or spaces


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadValue(f"expected a number, got {type(v).__name__}")
    return float(v)


def _boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1) and isinstance(v, int):
        return bool(v)
    raise BadValue(f"expected a boolean, got {v!r}")


def _date(v: Any) -> dt.date:
    if not isinstance(v, str):
        raise BadValue(f"expected a date string YYYY-MM-DD, got {type(v).__name__}")
    try:
        return dt.date.fromisoformat(v)
    except ValueError as err:
        raise BadValue(f"{v!r} is not a date YYYY-MM-DD ({err})") from None


def _datetime(v: Any) -> dt.datetime:
    if not isinstance(v, str):
        raise BadValue(f"expected a datetime string, got {type(v).__name__}")
    try:
        value = dt.datetime.fromisoformat(v)
    except ValueError as err:
        raise BadValue(f"{v!r} is not a datetime YYYY-MM-DDTHH:MM:SS[.ffffff] ({err})") from None
    if value.tzinfo is not None:
        raise BadValue(f"{v!r} carries a zone; a datetime field is wall time (use a timestamp field for instants)")
    return value


def _timestamp(v: Any) -> dt.datetime:
    if not isinstance(v, str):
        raise BadValue(f"expected a UTC timestamp string, got {type(v).__name__}")
    try:
        value = dt.datetime.fromisoformat(v)
    except ValueError as err:
        raise BadValue(f"{v!r} is not a timestamp YYYY-MM-DDTHH:MM:SS[.ffffff]Z ({err})") from None
    # In UTC: orjson writes an offset to the minute, and an offset may have seconds.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _time(v: Any) -> str:
    if not isinstance(v, str) or not _TIME_RE.match(v):
        raise BadValue(f"{v!r} is not a time [-]HH:MM:SS[.ffffff]")
    return v


def _json(v: Any) -> str:
    try:
        text = orjson.dumps(v).decode()
    except TypeError as err:
        raise BadValue(f"not JSON-serialisable ({err})") from None
    if "\\u0000" in text:
        raise BadValue("JSON contains \\u0000, which PostgreSQL jsonb cannot store")
    return text


def _bytes(v: Any) -> str:
    if not isinstance(v, str):
        raise BadValue(f"expected base64 text, got {type(v).__name__}")
    try:
        return "\\x" + base64.b64decode(v, validate=True).hex()  # bytea's hex input
    except (binascii.Error, ValueError):
        raise BadValue(f"{v[:40]!r} is not valid base64") from None


_CONVERTERS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.STRING: _string,
    FieldType.INTEGER: _integer,
    FieldType.BIGINT_UNSIGNED: _unsigned,
    FieldType.DECIMAL: _decimal,
    FieldType.FLOAT: _float,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.TIMESTAMP: _timestamp,
    FieldType.TIME: _time,
    FieldType.JSON: _json,
    FieldType.BYTES: _bytes,
}


def _to_canonical(ftype: FieldType, v: Any) -> Any:
    """Column value -> the canonical JSON form events carry (for comparisons with the source)."""
    if v is None:
        return None
    if ftype in (FieldType.DECIMAL,):
        return format(v, "f")  # str() would give '1E-30' for numeric values with many leading zeros
    if ftype is FieldType.BIGINT_UNSIGNED:
        return int(v)
    if ftype in (FieldType.DATE, FieldType.DATETIME):
        return v.isoformat()
    if ftype is FieldType.TIMESTAMP:
        return v.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
    if ftype is FieldType.BYTES:
        return base64.b64encode(bytes(v)).decode("ascii")
    return v


# --- the table of one entity -------------------------------------------------------------------------


class _EntityTable:
    """SQL for one entity, built once at open()."""

    def __init__(self, schema: EntitySchema, qualified: str, quote: Callable[[str], str], table_name: str) -> None:
        missing = [k for k in schema.key if k not in schema.fields]
        if missing:
            raise ConfigError(f"entity {schema.name!r}: key fields {missing} are not among its fields")
        self.schema = schema
        self.qualified = qualified
        self.table_name = table_name
        self.key = list(schema.key)
        self.values = [f for f in schema.fields if f not in schema.key]
        self.columns = self.key + self.values
        # (alias in the JSON rows, field, converter): key fields first
        fields = [(f"c{i}", c, _CONVERTERS[schema.fields[c]]) for i, c in enumerate(self.columns)]
        self.key_fields, self.value_fields = fields[: len(self.key)], fields[len(self.key) :]
        q = {c: quote(c) for c in self.columns}
        col_list = ", ".join(q[c] for c in self.columns)
        typed = ", ".join(f"{a} {_ROW_TYPE.get(schema.fields[c], _PG_TYPES[schema.fields[c]][0])}" for a, c, _ in fields)
        selects = ", ".join(
            f"u.c{i}::jsonb" if schema.fields[c] is FieldType.JSON else f"u.c{i}" for i, c in enumerate(self.columns)
        )
        conflict = ", ".join(q[c] for c in self.key)
        guard = f"WHERE {qualified}._version < EXCLUDED._version"
        head = (
            f"INSERT INTO {qualified} ({col_list}, _version, _deleted, _source_ts, _updated_at) "
            f"SELECT {selects}, u.v, %s, to_timestamp(u.ts / 1000.0), now() "
            f"FROM json_to_recordset(%s::json) AS u({typed}, v bigint, ts bigint) WHERE u.v >= %s "
            f"ON CONFLICT ({conflict}) DO UPDATE SET "
        )
        upsert_set = ", ".join(f"{q[c]} = EXCLUDED.{q[c]}" for c in self.values)
        meta_set = "_version = EXCLUDED._version, _deleted = EXCLUDED._deleted, _source_ts = EXCLUDED._source_ts, _updated_at = now()"
        self.upsert_sql = head + (f"{upsert_set}, " if upsert_set else "") + meta_set + " " + guard
        # A tombstone keeps the columns it had (inserted from the before image if the row is new).
        self.delete_sql = head + meta_set + " " + guard
        self.select_sql = f"SELECT {col_list} FROM {qualified} WHERE NOT _deleted"
        self.truncate_sql = f"DELETE FROM {qualified} WHERE _version < %s"

    def convert(self, image: dict[str, Any] | None, key: dict[str, Any], strict: bool) -> dict[str, Any]:
        """One row's column values by alias, NULLs left out; raises BadValue naming the field
        (``strict=False``: bad non-key values -> NULL)."""
        image = image or {}
        row = {}
        for alias, column, conv in self.key_fields:
            raw = key.get(column, image.get(column))
            if raw is None:
                raise BadValue(f"field {column!r}: key value is missing")
            try:
                row[alias] = conv(raw)
            except BadValue as err:
                raise self._bad(column, err) from None
        for alias, column, conv in self.value_fields:
            raw = image.get(column)
            if raw is not None:
                try:
                    row[alias] = conv(raw)
                except BadValue as err:
                    if strict:
                        raise self._bad(column, err) from None
        return row

    def _bad(self, column: str, err: BadValue) -> BadValue:
        return BadValue(f"field {column!r} ({self.schema.fields[column].value}): {err}")

    @staticmethod
    def params(rows: list[dict[str, Any]], deleted: bool, floor: int) -> tuple[bool, str, int]:
        """The statement's parameters: rows from convert() with their ``v`` (version) and ``ts`` (source ms),
        and the entity's truncate floor (rows below it are not written)."""
        return deleted, orjson.dumps(rows).decode(), floor


# --- the sink -----------------------------------------------------------------------------------------


class CrmSink(Sink):
    def __init__(self, name: str, config: CrmSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self._engine: Any = None
        self._tables: dict[str, _EntityTable] = {}

    # lifecycle

    def open(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        if self._engine is None:
            url = make_url(self.config.url.get_secret_value()).set(drivername="postgresql+psycopg")
            self._safe_url = redact_url(url.render_as_string(hide_password=False))
            self._engine = create_engine(
                url,
                pool_pre_ping=False,  # a ping on a half-open connection would hang before the apply watchdog starts
                pool_size=2,
                connect_args={"connect_timeout": 10, "application_name": f"cdc-sink-{self.name}"[:63]},
            )
        quote = self._engine.dialect.identifier_preparer.quote
        schema = self.config.schema_name
        self._offsets = f"{_q(quote, schema)}.{OFFSETS_TABLE}"
        self._truncates = f"{_q(quote, schema)}.{TRUNCATES_TABLE}"
        tables = {}
        for entity in self._consumed_entities():
            table = self.config.tables.get(entity.name, entity.name)
            tables[entity.name] = _EntityTable(entity, f"{_q(quote, schema)}.{_q(quote, table)}", lambda c: _q(quote, c), table)
        with self._translate("creating the CRM schema"), self._engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cdc-crm-ddl:{schema}",))
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {_q(quote, schema)}")
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {self._offsets} (sink text PRIMARY KEY, version bigint, "
                "file text, pos bigint, ts_ms bigint, applied_ms bigint)"
            )
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {self._truncates} (table_name text PRIMARY KEY, version bigint NOT NULL, "
                "statement text, applied_at timestamptz)"
            )
            for entity_table in tables.values():
                self._ensure_table(conn, entity_table, quote)
                # The floor row exists from the start: writers lock it (FOR SHARE) against a concurrent truncate.
                conn.exec_driver_sql(f"INSERT INTO {self._truncates} (table_name, version) VALUES (%s, 0) "
                                     "ON CONFLICT DO NOTHING", (entity_table.table_name,))
        self._tables = tables
        log.info("CRM sink %s open on %s, schema %s, %d entities", self.name, self._safe_url, schema, len(tables))

    def _consumed_entities(self) -> list[EntitySchema]:
        known = self.context.entities
        if "*" in self.config.entities:
            return list(known.values())
        unknown = [e for e in self.config.entities if e not in known]
        if unknown:
            raise ConfigError(f"sink {self.name!r} consumes entities {unknown} that no mapping defines")
        return [known[e] for e in self.config.entities]

    def _ensure_table(self, conn: Any, t: _EntityTable, quote: Callable[[str], str]) -> None:
        fields = t.schema.fields
        coldefs = [f"{_q(quote, c)} {_PG_TYPES[fields[c]][0]}" + (" NOT NULL" if c in t.key else "") for c in t.columns]
        pk = ", ".join(_q(quote, c) for c in t.key)
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {t.qualified} ({', '.join(coldefs)}, _version bigint NOT NULL, "
            "_deleted boolean NOT NULL DEFAULT false, _source_ts timestamptz, _updated_at timestamptz DEFAULT now(), "
            f"PRIMARY KEY ({pk}))"
        )
        columns_sql = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                       "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped")
        actual = dict(conn.exec_driver_sql(columns_sql, (t.qualified,)).all())
        missing = [c for c in t.values if c not in actual]  # fields the entity gained since the table was created
        for c in missing:
            # Only when needed: ALTER TABLE takes an exclusive lock, which would block (or deadlock with)
            # a worker applying to the same table while another process opens the sink.
            conn.exec_driver_sql(f"ALTER TABLE {t.qualified} ADD COLUMN IF NOT EXISTS {_q(quote, c)} {_PG_TYPES[fields[c]][0]}")
        if missing:
            actual = dict(conn.exec_driver_sql(columns_sql, (t.qualified,)).all())
        expected = {c: _PG_TYPES[fields[c]][1] for c in t.columns} | _META_COLUMNS
        wrong = [f"{c} is {actual.get(c, 'missing')}, expected {want}" for c, want in expected.items() if actual.get(c) != want]
        pk_rows = conn.exec_driver_sql(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (t.qualified,),
        ).all()
        if {r[0] for r in pk_rows} != set(t.key):
            wrong.append(f"primary key is {sorted(r[0] for r in pk_rows)}, expected {list(t.key)}")
        if wrong:
            raise TerminalError(
                f"CRM table {t.qualified} for entity {t.schema.name!r} does not match the canonical schema: "
                f"{'; '.join(wrong)}. Fix or drop the table (it is rebuilt by a replay)."
            )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # applying

    def apply(self, events: Sequence[ChangeEvent]) -> list[Rejection]:
        if not events:
            return []
        if self._engine is None:
            raise TerminalError(f"CRM sink {self.name!r}: apply() before open()")
        truncates, _ = split_truncates(events)
        newest = newest_per_key(events)
        rejections: list[Rejection] = []
        for entity, event in list(truncates.items()):
            if entity not in self._tables:
                rejections.append(Rejection(event, f"entity {entity!r} is not consumed by CRM sink {self.name!r}"))
                del truncates[entity]
        # (entity, deleted?) -> (rows, events)
        groups: dict[tuple[str, bool], tuple[list, list]] = {}
        for event in newest:
            table = self._tables.get(event.entity)
            if table is None:
                rejections.append(Rejection(event, f"entity {event.entity!r} is not consumed by CRM sink {self.name!r}"))
                continue
            deleted = event.op is Op.DELETE
            try:
                row = table.convert(event.before if deleted else event.after, event.key, strict=not deleted)
            except BadValue as err:
                rejections.append(Rejection(event, f"{event.entity} key {event.key_str}: {err}"))
                continue
            row["v"], row["ts"] = event.version, event.source.ts_ms
            rows, evs = groups.setdefault((event.entity, deleted), ([], []))
            rows.append(row)
            evs.append(event)
        offset = offset_of(events, now_ms())
        with self._translate(f"applying a batch of {len(events)} events"), self._engine.begin() as conn:
            watchdog = threading.Timer(self.config.apply_timeout_s, _cut, args=(conn,))
            watchdog.daemon = True
            watchdog.start()
            try:
                floors = self._lock_floors(conn, {e for e, _ in groups} | set(truncates), exclusive=bool(truncates))
                for entity, event in truncates.items():
                    floors[entity] = self._truncate(conn, self._tables[entity], event, floors[entity])
                for (entity, deleted), (rows, evs) in groups.items():
                    rejections += self._write(conn, self._tables[entity], deleted, rows, evs, floors[entity])
                if offset is not None:
                    self._write_offset(conn, offset)
            finally:
                watchdog.cancel()
        return rejections

    def _lock_floors(self, conn: Any, entities: set[str], exclusive: bool) -> dict[str, int]:
        """The truncate floor of each entity, its row locked until the end of the transaction (in one
        order, so two workers cannot deadlock on them)."""
        if not entities:
            return {}
        names = {self._tables[e].table_name: e for e in entities}
        mode = "UPDATE" if exclusive else "SHARE"
        found = conn.exec_driver_sql(
            f"SELECT table_name, version FROM {self._truncates} WHERE table_name = ANY(%s) ORDER BY table_name FOR {mode}",
            (sorted(names),),
        ).all()
        floors = {names[name]: version for name, version in found}
        missing = [e for e in entities if e not in floors]
        if missing:  # the floor rows are created at open(): someone deleted them behind the sink's back
            raise TerminalError(f"CRM sink {self.name!r}: {self._truncates} lacks the rows of {sorted(missing)}; "
                                "restart the sink (open() recreates them)")
        return floors

    def _truncate(self, conn: Any, t: _EntityTable, event: ChangeEvent, floor: int) -> int:
        """Apply a truncate: rows below its version deleted, the floor raised. Returns the new floor."""
        if event.version <= floor:
            return floor  # applied already (a redelivery, another shard's worker) or older than one applied
        conn.exec_driver_sql(t.truncate_sql, (event.version,))
        conn.exec_driver_sql(
            f"UPDATE {self._truncates} SET version = %s, statement = %s, applied_at = now() WHERE table_name = %s",
            (event.version, event.source.statement, t.table_name),
        )
        return event.version

    def _write(self, conn: Any, t: _EntityTable, deleted: bool, rows, evs, floor: int) -> list[Rejection]:
        """One multi-row statement; if the database refuses a value, isolate the rows it refuses."""
        import sqlalchemy.exc as sa_exc

        sql = t.delete_sql if deleted else t.upsert_sql
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(sql, t.params(rows, deleted, floor))
            return []
        except (sa_exc.DataError, sa_exc.IntegrityError):
            pass
        rejections = []
        for row, event in zip(rows, evs):
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(sql, t.params([row], deleted, floor))
            except (sa_exc.DataError, sa_exc.IntegrityError) as err:
                reason = str(err.orig).splitlines()[0] if err.orig is not None else str(err)
                rejections.append(Rejection(event, f"{event.entity} key {event.key_str}: PostgreSQL refused the row: {reason}"))
        return rejections

    def _write_offset(self, conn: Any, offset: SinkOffset) -> None:
        conn.exec_driver_sql(
            f"INSERT INTO {self._offsets} AS o (sink, version, file, pos, ts_ms, applied_ms) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (sink) DO UPDATE SET version = EXCLUDED.version, file = EXCLUDED.file, pos = EXCLUDED.pos, "
            "ts_ms = EXCLUDED.ts_ms, applied_ms = EXCLUDED.applied_ms WHERE o.version < EXCLUDED.version",
            (self.name, offset.version, offset.file, offset.pos, offset.ts_ms, offset.applied_ms),
        )

    def reset(self) -> None:
        """Drop the entity tables and this sink's offset (they are recreated empty)."""
        with self._translate("resetting"), self._engine.begin() as conn:
            for t in self._tables.values():
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {t.qualified}")
                conn.exec_driver_sql(f"DELETE FROM {self._truncates} WHERE table_name = %s", (t.table_name,))
            conn.exec_driver_sql(f"DELETE FROM {self._offsets} WHERE sink = %s", (self.name,))
        self.open()

    # reading

    def read_offset(self) -> SinkOffset | None:
        with self._translate("reading the sink offset"), self._engine.connect() as conn:
            row = conn.exec_driver_sql(
                f"SELECT version, file, pos, ts_ms, applied_ms FROM {self._offsets} WHERE sink = %s", (self.name,)
            ).first()
        if row is None:
            return None
        return SinkOffset(version=row[0], file=row[1], pos=row[2], ts_ms=row[3], applied_ms=row[4] or 0)

    def fetch_rows(self, entity: str) -> dict[str, dict[str, Any]]:
        """Live (not deleted) rows of an entity, keyed by key string, values in canonical JSON form."""
        t = self._tables[entity]
        types = [t.schema.fields[c] for c in t.columns]
        with self._translate(f"reading {entity}"), self._engine.connect() as conn:
            result = conn.exec_driver_sql(t.select_sql).all()
        rows = {}
        for record in result:
            row = {c: _to_canonical(ft, v) for c, ft, v in zip(t.columns, types, record)}
            rows[key_string({k: row[k] for k in t.key})] = row
        return rows

    # errors

    def _translate(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return _errors().translate(f"CRM sink {self.name!r} ({getattr(self, '_safe_url', '?')}) {doing}")


def _cut(conn: Any) -> None:
    """Shut the socket of a connection stuck on a silent server, so the blocked call fails at once."""
    try:
        fd = conn.connection.dbapi_connection.fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        log.warning("CRM sink: PostgreSQL did not answer within apply_timeout_s; connection cut, the batch will be retried")
    except (OSError, AttributeError) as err:
        log.warning("CRM sink: could not cut a stuck connection: %s", err)


def _q(quote: Callable[[str], str], name: str) -> str:
    # Identifiers end up in SQL sent with %s parameters: a literal % must be doubled.
    return quote(name).replace("%", "%%")


_TRANSIENT_SQLSTATE = {"08", "40", "53", "57", "58"}  # connection, serialization/deadlock, resources, shutdown/cancel


@functools.cache
def _errors() -> ErrorTable:
    """Driver exceptions -> TransientError (retry later) or TerminalError (stop), at this adapter's edge."""
    import psycopg
    import sqlalchemy.exc as sa_exc

    def orig(exc: BaseException) -> BaseException:
        return getattr(exc, "orig", None) or exc

    def detail(exc: BaseException) -> str:
        o = orig(exc)
        return str(o).splitlines()[0] if str(o) else type(o).__name__

    def invalidated(exc: BaseException, _: dict[str, Any]) -> bool:
        return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated

    def connection_class(exc: BaseException, _: dict[str, Any]) -> bool:
        if isinstance(orig(exc), (psycopg.OperationalError, psycopg.InterfaceError)) or isinstance(
            exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError)
        ):
            sqlstate = getattr(orig(exc), "sqlstate", None) or ""
            return not sqlstate or sqlstate[:2] in _TRANSIENT_SQLSTATE
        return False

    def conflict(exc: BaseException, _: dict[str, Any]) -> bool:
        return isinstance(orig(exc), psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)

    return ErrorTable(
        catch=Exception,
        rules=[
            Rule(invalidated, TransientError, "{doing}: connection lost: {detail}"),
            Rule(connection_class, TransientError),
            Rule(conflict, TransientError),
            Rule(sa_exc.DBAPIError, TerminalError, "{doing}: {detail} (the CRM schema or grants need fixing)"),
        ],
        otherwise=None,  # not the driver's: propagates as it is
        detail=detail,
        chain=True,
    )


def _factory(name: str, config: SinkConfig, context: SinkContext) -> CrmSink:
    assert isinstance(config, CrmSinkConfig)
    return CrmSink(name, config, context)


register_sink("crm", CrmSinkConfig, _factory)
