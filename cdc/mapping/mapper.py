"""The pure mapper: a row image of a source table -> canonical values of each entity it feeds."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from cdc.errors import TerminalError
from cdc.mapping.compiled import compile_row
from cdc.mapping.model import EXTRA_FIELD, Condition, EntityMapping
from cdc.mapping.values import MappingValueError, compile_field
from cdc.schema import EntitySchema, FieldType


class RowMappingError(ValueError):
    """A row that cannot be mapped: names the table, the key, and the field's problem. Dead-lettered."""

    def __init__(self, message: str, column: str | None = None, key: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.column, self.key = column, key


class MappingSchemaError(TerminalError):
    """A mapped column is gone from the source table and the mapping says ``on_missing_column: fail``."""


class MappedRow(NamedTuple):
    """One row as one entity (a named tuple: the mapper makes one per row and entity, and a frozen
    dataclass cost a tenth of a snapshot row's mapping to build)."""

    entity: str
    key: dict[str, Any]
    values: dict[str, Any] | None  # None: the row does not exist as this entity (deleted / filtered)
    filtered: bool = False  # skipped by skip_when (not a deletion at the source)


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
    def may_null(mapping: EntityMapping) -> bool:
        """Whether :meth:`nulled_columns` can find any column of ``mapping``."""
        return bool(_plan(mapping).nullable)

    @staticmethod
    def nulled_columns(mapping: EntityMapping, row: dict[str, Any], values: dict[str, Any]) -> list[str]:
        """The columns of ``row`` holding a value that the mapping's date, datetime, timestamp or YEAR
        fields turned into null (a zero or invalid date: docs/types.md), ``values`` being the mapped row."""
        return [column for name, column in _plan(mapping).nullable
                if values.get(name) is None and row.get(column) is not None]

    @staticmethod
    def map_row(mapping: EntityMapping, row: dict[str, Any] | None) -> MappedRow | None:
        """Canonical values of ``row``; ``values=None`` where the row is a deleted or filtered entity;
        None if there is no row. Raises RowMappingError (dead-letter the row) or MappingSchemaError."""
        if row is None:
            return None
        plan = _plan(mapping)
        try:
            values = plan.convert_row(row, plan.zone)
        except Exception:  # noqa: BLE001 - the general path below raises the error with its full message
            values = _convert_generally(mapping, plan, row)
        key = {k: values[k] for k in plan.key}
        for k in plan.hashed_key:  # a 'pii: hash' key field: hashed in the key too, as in the row (claim 8 of issue 19)
            key[k] = _hashed(mapping, k, key[k])
        for holds in plan.deleted:
            if holds(row, values):
                return MappedRow(mapping.entity, key, None)
        for holds in plan.skip:
            if holds(row, values):
                return MappedRow(mapping.entity, key, None, True)
        for name, compute in plan.computed:
            values[name] = compute(values)
        for name, how in plan.pii:
            if name in key and how == "hash":
                values[name] = key[name]  # hashed above already
            else:
                _protect(mapping, name, how, values)
        if plan.pass_through:
            values[EXTRA_FIELD] = {c: _plain(v) for c, v in row.items() if c not in plan.needed} or None
        return MappedRow(mapping.entity, key, values)


def _convert_generally(mapping: EntityMapping, plan: "_Plan", row: dict[str, Any]) -> dict[str, Any]:
    """The row's converted fields, field by field through the general converters: the reference the
    compiled ``convert_row`` abbreviates, and the path that names a row's problem."""
    if not row.keys() >= plan.needed:
        _missing_columns(mapping, row, sorted(plan.needed - row.keys()))
    zone = plan.zone
    values: dict[str, Any] = {}
    try:
        for name, column, run in plan.converted:
            values[name] = run(row[column], zone)
    except MappingValueError as err:
        raise RowMappingError(f"{_where(mapping, row)}: {err}", err.column, source_key(mapping, row)) from None
    return values


def source_key(mapping: EntityMapping, row: dict[str, Any]) -> dict[str, Any]:
    """The row's key fields as the source holds them (before conversion): what a dead letter names."""
    return {k: row.get(mapping.fields[k].column) for k in mapping.key}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What ``map_row`` needs of a mapping, read once (mappings are immutable once loaded)."""

    needed: frozenset[str]
    zone: str
    converted: tuple[tuple[str, str, Any], ...]  # (field, column, compiled converter)
    convert_row: Callable[[dict, str], dict]  # all of converted in one function (cdc.mapping.compiled)
    key: tuple[str, ...]
    deleted: tuple[Callable[[dict, dict], bool], ...]  # compiled conditions: (row, values) -> bool
    skip: tuple[Callable[[dict, dict], bool], ...]
    computed: tuple[tuple[str, Callable[[dict], Any]], ...]  # (field, compiled: values -> value)
    pii: tuple[tuple[str, str], ...]
    hashed_key: tuple[str, ...]  # key fields with 'pii: hash' (mask is refused on key fields)
    pass_through: bool
    # (field, column) of the fields that turn some stored values into null: zero and invalid dates, YEAR 0
    nullable: tuple[tuple[str, str], ...] = ()


_PLANS: dict[int, tuple[EntityMapping, _Plan]] = {}


def _plan(mapping: EntityMapping) -> _Plan:
    cached = _PLANS.get(id(mapping))
    if cached is not None and cached[0] is mapping:
        return cached[1]
    fields = mapping.fields.items()
    converted = tuple((n, s.column, compile_field(s, n)) for n, s in fields if s.column is not None)
    plan = _Plan(
        needed=mapping.columns(), zone=mapping.source_timezone, converted=converted,
        convert_row=compile_row([(n, c, mapping.fields[n], run) for n, c, run in converted], mapping.columns()),
        key=tuple(mapping.key), deleted=tuple(map(_condition, mapping.deleted_conditions())),
        skip=tuple(map(_condition, mapping.skip_when)),
        computed=tuple((n, _computation(s.computed)) for n, s in fields if s.computed is not None),
        pii=tuple((n, s.pii) for n, s in fields if s.pii is not None),
        hashed_key=tuple(k for k in mapping.key if mapping.fields[k].pii == "hash"),
        pass_through=mapping.unmapped_columns == "pass_through",
        nullable=tuple((n, s.column) for n, s in fields if s.column is not None and _nulls_dates(s)))
    _PLANS[id(mapping)] = (mapping, plan)  # holding the mapping keeps its id from being reused
    return plan


_DATE_TYPES = frozenset({FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP})


def _nulls_dates(spec: Any) -> bool:
    """Whether the field's converter makes null of a stored zero or invalid date (and of nothing else
    a source stores: transforms that null values on purpose and labels are left out)."""
    if spec.labels is not None or {"null_if_empty", "null_if_zero"} & set(spec.transforms):
        return False
    return spec.type in _DATE_TYPES or (spec.hint is not None and spec.hint.base == "year")


def _where(mapping: EntityMapping, row: dict[str, Any]) -> str:
    return f"table {mapping.source.db}.{mapping.source.table}, entity {mapping.entity}, key {source_key(mapping, row)}"


def _missing_columns(mapping: EntityMapping, row: dict[str, Any], missing: list[str]) -> None:
    message = (
        f"{_where(mapping, row)}: column(s) {missing} that the mapping reads are not in the source row (dropped or "
        f"renamed at the source?); present: {sorted(row)}. Fix the mapping of entity {mapping.entity!r}, then replay "
        "the dead-lettered rows"
    )
    if mapping.on_missing_column == "fail":
        raise MappingSchemaError(message + " (on_missing_column: fail stops replication; 'dlq' dead-letters the rows instead)")
    raise RowMappingError(message, ", ".join(missing), source_key(mapping, row))


def _condition(cond: Condition) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    """The condition as a function of (source row, converted values), its model read once. The value
    it reads is ``(row, values)[side].get(name)``: a source column, or a converted field."""
    side, name = (0, cond.column) if cond.column is not None else (1, cond.field)
    fields = cond.model_fields_set
    if "equals" in fields:
        expected = cond.equals
        return lambda row, values: _equal((row, values)[side].get(name), expected)
    if "not_equals" in fields:
        expected = cond.not_equals
        return lambda row, values: not _equal((row, values)[side].get(name), expected)
    if "in_" in fields:
        options = list(cond.in_ or [])
        return lambda row, values: any(_equal((row, values)[side].get(name), option) for option in options)
    if "is_null" in fields:
        wanted = bool(cond.is_null)
        return lambda row, values: ((row, values)[side].get(name) is None) == wanted
    search = cond._regex.search  # noqa: SLF001

    def matches(row: dict[str, Any], values: dict[str, Any]) -> bool:
        value = (row, values)[side].get(name)
        return value is not None and search(value if value.__class__ is str else _plain_text(value)) is not None

    return matches


def _equal(value: Any, expected: Any) -> bool:
    if value.__class__ is expected.__class__ and value.__class__ in (int, str):
        return value == expected  # what the rest gives for these two (a str() of each is equal only if they are)
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is not None and bool(value) == bool(expected)
    return value == expected or (value is not None and str(value) == str(expected))


def _plain_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _computation(computed: Any) -> Callable[[dict[str, Any]], Any]:
    """The computed field as a function of the converted values, its model read once."""
    if computed.coalesce is not None:
        names = tuple(computed.coalesce)
        return lambda values: next((values[f] for f in names if values[f] is not None), None)
    if computed.concat is not None:
        names, sep = tuple(computed.concat), computed.sep

        def concat(values: dict[str, Any]) -> Any:
            return sep.join([str(values[f]) for f in names if values[f] not in (None, "")]) or None

        return concat
    template = computed.template
    return lambda values: template.format_map({k: "" if v is None else v for k, v in values.items()})


def _protect(mapping: EntityMapping, name: str, how: str, values: dict[str, Any]) -> None:
    value = values.get(name)
    if how == "drop":
        values.pop(name, None)
    elif value is None:
        return
    elif how == "mask":
        values[name] = _mask(value)
    else:
        values[name] = _hashed(mapping, name, value)


def _hashed(mapping: EntityMapping, name: str, value: Any) -> Any:
    """The published form of a 'pii: hash' field's value: HMAC-SHA256 of its text under the salt, in hex.
    Deterministic, so a hashed key field gives the same key on every change of the row."""
    if value is None:
        return None
    salt = mapping._pii_salt  # noqa: SLF001 - set by load_mappings
    if not salt:
        raise MappingSchemaError(f"entity {mapping.entity!r}, field {name!r} is hashed but no PII salt is set: "
                                 "set mappings.pii_salt (CDC_MAPPINGS__PII_SALT)")
    return hmac.new(salt, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


def _mask(value: Any) -> str:
    text = str(value)
    local, at, domain = text.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else f"{text[:1]}***"


def _plain(value: Any) -> Any:
    """A column no field maps, passed through as JSON: text, numbers, ISO dates, base64 bytes."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value
