"""Mappings against the source's live schema: missing tables and columns, unmapped columns, type
mismatches. Pure: the caller reads information_schema and passes its columns in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from cdc.domain.entity_schema import FieldType as T
from cdc.mapping.model import EntityMapping

_INTEGERS = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
             "geometrycollection"}
_ANY_TEXT = set(T)  # legacy text may hold numbers, dates (with format), JSON, codes

COMPATIBLE: dict[str, set[T]] = {
    **{t: {T.INTEGER, T.BIGINT_UNSIGNED, T.BOOLEAN, T.DECIMAL, T.FLOAT, T.STRING} for t in _INTEGERS},
    "decimal": {T.DECIMAL, T.STRING, T.FLOAT}, "float": {T.FLOAT, T.DECIMAL, T.STRING},
    "double": {T.FLOAT, T.DECIMAL, T.STRING}, "date": {T.DATE, T.DATETIME, T.STRING},
    "datetime": {T.DATETIME, T.TIMESTAMP, T.DATE, T.STRING}, "timestamp": {T.TIMESTAMP, T.DATETIME, T.DATE, T.STRING},
    "time": {T.TIME, T.STRING}, "year": {T.INTEGER, T.STRING},
    **{t: _ANY_TEXT for t in _TEXT}, **{t: {T.BYTES, T.STRING, T.JSON} for t in _BINARY},
    "enum": {T.STRING, T.BOOLEAN, T.INTEGER}, "set": {T.JSON, T.STRING},
    "bit": {T.INTEGER, T.BIGINT_UNSIGNED, T.BOOLEAN}, "json": {T.JSON, T.STRING},
    **{t: {T.BYTES, T.JSON} for t in _GEOMETRY},
}


@dataclass(frozen=True)
class SourceColumn:
    db: str
    table: str
    name: str
    data_type: str  # information_schema DATA_TYPE, e.g. 'int'
    column_type: str  # information_schema COLUMN_TYPE, e.g. 'int(10) unsigned'


@dataclass(frozen=True)
class Finding:
    kind: str  # missing_table | missing_column | type_mismatch | unmapped_column
    entity: str
    table: str
    column: str | None
    field: str | None
    message: str

    @property
    def is_error(self) -> bool:
        return self.kind != "unmapped_column"

    def as_dict(self) -> dict:
        return asdict(self) | {"error": self.is_error}


def check(mappings: Iterable[EntityMapping], columns: Iterable[SourceColumn]) -> list[Finding]:
    by_table: dict[tuple[str, str], dict[str, SourceColumn]] = {}
    for c in columns:
        by_table.setdefault((c.db, c.table), {})[c.name] = c
    findings: list[Finding] = []
    for m in mappings:
        where = f"{m.source.db}.{m.source.table}"
        live = by_table.get((m.source.db, m.source.table))
        if live is None:
            findings.append(Finding("missing_table", m.entity, where, None, None,
                                    f"entity {m.entity}: source table {where} does not exist"))
            continue
        for name, spec in m.fields.items():
            if spec.column is None:
                continue
            column = live.get(spec.column)
            if column is None:
                findings.append(Finding("missing_column", m.entity, where, spec.column, name,
                                        f"entity {m.entity}, field {name}: column {where}.{spec.column} does not exist"))
                continue
            problem = type_problem(spec, column)
            if problem:
                findings.append(Finding("type_mismatch", m.entity, where, spec.column, name,
                                        f"entity {m.entity}, field {name} ({spec.type.value}) <- {where}.{spec.column} "
                                        f"{column.column_type}: {problem}"))
        for cond in m.conditions():
            if cond.column is not None and cond.column not in live:
                findings.append(Finding("missing_column", m.entity, where, cond.column, None,
                                        f"entity {m.entity}: a condition reads column {where}.{cond.column}, which does not exist"))
        if m.unmapped_columns == "ignore":
            for name in sorted(set(live) - m.columns()):
                findings.append(Finding("unmapped_column", m.entity, where, name, None,
                                        f"entity {m.entity}: column {where}.{name} ({live[name].column_type}) is not mapped"))
    return findings


def type_problem(spec, column: SourceColumn) -> str | None:
    data_type = column.data_type.lower()
    allowed = COMPATIBLE.get(data_type)
    if allowed is None:
        return f"unknown source type {data_type}"
    if spec.type not in allowed and spec.labels is None:
        return f"a {data_type} column cannot become {spec.type.value} (possible: {', '.join(sorted(t.value for t in allowed))})"
    hint = spec.hint.base if spec.hint else None
    unsigned = "unsigned" in column.column_type.lower()
    if data_type == "bigint" and unsigned and spec.type is T.INTEGER:
        return "BIGINT UNSIGNED exceeds a signed 64-bit integer: use type bigint_unsigned"
    if data_type == "float" and spec.type is T.FLOAT and hint != "float":
        return "a FLOAT column needs column_type: float (its binlog value is widened to double precision)"
    if data_type == "binary" and spec.type is T.BYTES and hint != "binary":
        return f"a BINARY column needs column_type: {column.column_type} (the binlog drops its zero padding)"
    if data_type in ("bit", "set", "year") and hint != data_type:
        return f"a {data_type.upper()} column needs column_type: {data_type} (binlog and SELECT give different values)"
    if data_type in _GEOMETRY and spec.type is T.JSON and hint != "geometry":
        return "a geometry column read as GeoJSON needs column_type: geometry"
    if data_type == "datetime" and spec.type is T.TIMESTAMP and hint != "datetime":
        return ("a DATETIME is wall time: to publish it as a UTC timestamp add column_type: datetime and set the entity's "
                "source_timezone; or use type datetime")
    return None
