"""Declarative mappings from legacy tables to canonical entities, and the pure mapper.

A mapping file (YAML, in the mappings directory) describes one entity::

    entity: member
    source: {db: legacy, table: members}
    key: [member_id]
    fields:
      member_id: {column: id, type: integer}
      email: {column: email, type: string, transforms: [trim, lower]}
      status: {column: status, type: string, labels: {A: active, L: lapsed}}
      joined_on: {column: join_date, type: date}
      birth_date: {column: birth_date, type: date, format: "%d/%m/%Y"}
    deleted_when: {column: deleted, equals: 1}

Loading validates everything and names the file, the entity and the field at fault. Applying
is pure: row in, canonical values out, no I/O. Legacy quirks are fixed here once for every
consumer: zero dates become null, TINYINT flags booleans, status codes labels.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cdc.envelope import _format_timedelta
from cdc.errors import ConfigError
from cdc.schema import EntitySchema, FieldType

TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "trim": lambda v: v.strip() if isinstance(v, str) else v,
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "null_if_empty": lambda v: None if v == "" else v,
}


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    type: FieldType
    transforms: list[str] = Field(default_factory=list)
    labels: dict[str, str] | None = Field(None, description="Code -> label, for status codes.")
    format: str | None = Field(None, description="strptime format of a date kept as text.")

    @model_validator(mode="after")
    def _check(self) -> "FieldSpec":
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; known: {sorted(TRANSFORMS)}")
        if self.format and self.type not in (FieldType.DATE, FieldType.DATETIME):
            raise ValueError("'format' applies to date and datetime fields only")
        return self


class SourceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: str
    table: str


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    equals: Any


class EntityMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str
    source: SourceTable
    key: list[str]
    fields: dict[str, FieldSpec]
    deleted_when: Condition | None = Field(None, description="A row matching this is a (soft-)deleted entity.")

    @model_validator(mode="after")
    def _check(self) -> "EntityMapping":
        missing = [k for k in self.key if k not in self.fields]
        if missing:
            raise ValueError(f"key field(s) {missing} are not among the fields {sorted(self.fields)}")
        if not self.key:
            raise ValueError("key must name at least one field")
        return self

    def schema(self) -> EntitySchema:
        return EntitySchema(name=self.entity, key=tuple(self.key), fields={n: f.type for n, f in self.fields.items()})


def load_mappings(directory: str | Path) -> list[EntityMapping]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"mappings directory {directory} does not exist (setting mappings.dir)")
    mappings: list[EntityMapping] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"mapping {path}: not valid YAML: {exc}") from None
        try:
            mapping = EntityMapping.model_validate(raw)
        except ValidationError as exc:
            entity = raw.get("entity", "?") if isinstance(raw, dict) else "?"
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"mapping {path} (entity {entity}): {problems}") from None
        if mapping.entity in seen:
            raise ConfigError(f"mapping {path}: entity {mapping.entity!r} is already defined in {seen[mapping.entity]}")
        seen[mapping.entity] = path
        mappings.append(mapping)
    if not mappings:
        raise ConfigError(f"mappings directory {directory} holds no *.yaml mapping")
    return mappings


class MappingValueError(ValueError):
    """A value the mapping cannot convert; names the field."""


@dataclass(frozen=True)
class MappedRow:
    entity: str
    key: dict[str, Any]
    values: dict[str, Any] | None  # None: the row does not exist as this entity (deleted / filtered)


class Mapper:
    """Pure: maps a row image of a source table to canonical values of each entity it feeds."""

    def __init__(self, mappings: Iterable[EntityMapping]) -> None:
        self.mappings = list(mappings)
        self._by_table: dict[tuple[str, str], list[EntityMapping]] = {}
        for m in self.mappings:
            self._by_table.setdefault((m.source.db, m.source.table), []).append(m)

    def tables(self) -> set[tuple[str, str]]:
        return set(self._by_table)

    def schemas(self) -> dict[str, EntitySchema]:
        return {m.entity: m.schema() for m in self.mappings}

    def for_table(self, db: str, table: str) -> list[EntityMapping]:
        return self._by_table.get((db, table), [])

    @staticmethod
    def map_row(mapping: EntityMapping, row: dict[str, Any] | None) -> MappedRow | None:
        """Canonical values of ``row``; ``values=None`` where the row is a deleted entity; None if no row."""
        if row is None:
            return None
        values = {name: convert(spec, row.get(spec.column), name, mapping.entity) for name, spec in mapping.fields.items()}
        key = {k: values[k] for k in mapping.key}
        cond = mapping.deleted_when
        if cond is not None and _equal(row.get(cond.column), cond.equals):
            return MappedRow(mapping.entity, key, None)
        return MappedRow(mapping.entity, key, values)


def _equal(value: Any, expected: Any) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool):
        return bool(value) == bool(expected)
    return value == expected or str(value) == str(expected)


def convert(spec: FieldSpec, value: Any, field: str = "?", entity: str = "?") -> Any:
    """Convert one binlog value to its canonical JSON form (see :class:`cdc.schema.FieldType`)."""
    if isinstance(value, (bytes, bytearray)) and spec.type is not FieldType.BYTES:
        value = bytes(value).decode("utf-8", errors="strict") if spec.type is not FieldType.JSON else value
    for name in spec.transforms:
        value = TRANSFORMS[name](value)
    if value is None:
        return None
    if spec.labels is not None:
        return spec.labels.get(str(value), str(value))
    try:
        return _CONVERTERS[spec.type](value, spec)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise MappingValueError(f"entity {entity}, field {field} (column {spec.column}): cannot convert {value!r} to {spec.type.value}: {exc}") from None


def _to_date(value: Any, spec: FieldSpec) -> str | None:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    if not text or text.startswith("0000-00-00") or text in ("00/00/0000",):
        return None
    try:
        return dt.datetime.strptime(text, spec.format or "%Y-%m-%d").date().isoformat()
    except ValueError:
        return None  # an invalid legacy date is unknown, not an error


def _to_datetime(value: Any, spec: FieldSpec) -> str | None:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    text = str(value).strip()
    if not text or text.startswith("0000-00-00"):
        return None
    try:
        return dt.datetime.strptime(text, spec.format or "%Y-%m-%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _to_timestamp(value: Any, spec: FieldSpec) -> str | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        if value == dt.datetime(1970, 1, 1):
            return None  # the binlog library's rendering of a zero TIMESTAMP
        return value.isoformat() + "Z"
    return _to_datetime(value, spec)


def _to_json(value: Any, spec: FieldSpec) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        import orjson

        return orjson.loads(value)
    return _json_text(value)


def _json_text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {_json_text(k): _json_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_text(v) for v in value]
    return value


def _to_bool(value: Any, spec: FieldSpec) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "n", "no", "false", "f")
    return bool(value)


_CONVERTERS: dict[FieldType, Callable[[Any, FieldSpec], Any]] = {
    FieldType.STRING: lambda v, s: v if isinstance(v, str) else str(v),
    FieldType.INTEGER: lambda v, s: int(v),
    FieldType.BIGINT_UNSIGNED: lambda v, s: int(v),
    FieldType.DECIMAL: lambda v, s: str(decimal.Decimal(str(v))),
    FieldType.FLOAT: lambda v, s: float(v),
    FieldType.BOOLEAN: _to_bool,
    FieldType.DATE: _to_date,
    FieldType.DATETIME: _to_datetime,
    FieldType.TIMESTAMP: _to_timestamp,
    FieldType.TIME: lambda v, s: _format_timedelta(v) if isinstance(v, dt.timedelta) else str(v),
    FieldType.JSON: _to_json,
    FieldType.BYTES: lambda v, s: base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode("ascii"),
}
