"""The mapping language: what a mapping file may say, validated with pydantic at load time."""

from __future__ import annotations

import re
import string
import zoneinfo
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from cdc.mapping.columns import ColumnHint, parse_column_type
from cdc.mapping.transforms import TRANSFORMS
from cdc.schema import EntitySchema, FieldType

EXTRA_FIELD = "extra"  # where unmapped columns go with ``unmapped_columns: pass_through``


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Computed(_Strict):
    """A field computed from other (already converted) fields of the entity; exactly one form."""

    template: str | None = Field(None, description="str.format over fields, e.g. '{first_name} {last_name}'.")
    concat: list[str] | None = Field(None, description="Fields joined by ``sep``, nulls and empty strings skipped.")
    sep: str = " "
    coalesce: list[str] | None = Field(None, description="The first of these fields that is not null.")

    @model_validator(mode="after")
    def _one_form(self) -> "Computed":
        forms = [f for f in ("template", "concat", "coalesce") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError(f"a computed field takes exactly one of template, concat, coalesce (got {forms or 'none'})")
        return self

    def inputs(self) -> list[str]:
        if self.template is not None:
            return [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return list(self.concat or self.coalesce or [])


class FieldSpec(_Strict):
    column: str | None = Field(None, description="Source column (omit for a computed field).")
    type: FieldType
    transforms: list[str] = Field(default_factory=list)
    labels: dict[str, str] | None = Field(None, description="Code -> label, for status codes.")
    unknown_label: Literal["keep", "null", "error"] = Field("keep", description="What a code missing from labels becomes.")
    format: str | None = Field(None, description="strptime format of a date kept as text.")
    column_type: str | None = Field(
        None, description="The source column's type where rows alone cannot tell: float, binary(N), bit(N), set, year, "
        "geometry, datetime (a DATETIME read as a UTC timestamp through source_timezone).",
    )
    computed: Computed | None = None
    pii: Literal["drop", "mask", "hash"] | None = Field(None, description="drop: not published; mask: z***; hash: salted HMAC-SHA256.")


    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, names: list[str]) -> list[str]:
        unknown = [t for t in names if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; known: {sorted(TRANSFORMS)}")
        return names

    @model_validator(mode="after")
    def _check(self) -> "FieldSpec":
        if (self.column is None) == (self.computed is None):
            raise ValueError("give either 'column' (a source column) or 'computed', not both or neither")
        if self.format and self.type not in (FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP):
            raise ValueError("'format' applies to date, datetime and timestamp fields only")
        if self.column_type is not None:
            parse_column_type(self.column_type)  # fails here, at load, on a type it cannot read
        return self

    @cached_property
    def hint(self) -> ColumnHint | None:
        # A plain attribute once read: a private attribute would go through pydantic's __getattr__ on
        # every row of the hot path (a third of the mapper's time).
        return parse_column_type(self.column_type) if self.column_type is not None else None


class Condition(_Strict):
    """A test on a source column (``column``) or a converted field (``field``); one operator."""

    column: str | None = None
    field: str | None = None
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    matches: str | None = Field(None, description="Regular expression, searched in the text of the value.")
    is_null: bool | None = None

    _regex: re.Pattern | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> "Condition":
        if (self.column is None) == (self.field is None):
            raise ValueError("a condition names either 'column' or 'field'")
        ops = [op for op in ("equals", "not_equals", "in_", "matches", "is_null") if op in self.model_fields_set]
        if len(ops) != 1:
            raise ValueError(f"a condition takes exactly one of equals, not_equals, in, matches, is_null (got {ops or 'none'})")
        if self.matches is not None:
            try:
                self._regex = re.compile(self.matches)
            except re.error as err:
                raise ValueError(f"'matches' is not a valid regular expression: {err}") from None
        return self


class Projection(_Strict):
    """What one kind of sink keeps of the entity: a target name and a subset of fields."""

    table: str | None = Field(None, description="CRM table name (default: the entity name).")
    key: str | None = Field(None, description="Cache key template, e.g. 'member:{member_id}'.")
    index: str | None = Field(None, description="Search index alias (default: <prefix>-<entity>).")
    fields: list[str] | None = Field(None, description="Fields the sink keeps (default: all; key fields always).")


class SourceTable(_Strict):
    db: str
    table: str


class EntityMapping(_Strict):
    entity: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: SourceTable
    key: list[str]
    fields: dict[str, FieldSpec]
    deleted_when: Condition | list[Condition] | None = Field(None, description="A matching row is a (soft-)deleted entity.")
    skip_when: list[Condition] = Field(default_factory=list, description="A matching row is not this entity (filtered).")
    source_timezone: str = Field("UTC", description="Zone of the source's DATETIME wall times (IANA name).")
    on_missing_column: Literal["dlq", "fail"] = Field(
        "dlq", description="A mapped column absent from a row (dropped or renamed at the source): dead-letter the row, or stop.")
    unmapped_columns: Literal["ignore", "pass_through"] = Field(
        "ignore", description=f"pass_through: columns no field maps go into the JSON field {EXTRA_FIELD!r}.")
    sinks: dict[Literal["crm", "cache", "search"], Projection] = Field(default_factory=dict)

    _pii_salt: bytes | None = PrivateAttr(None)

    @field_validator("source_timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris' or 'UTC')") from None
        return name

    @model_validator(mode="after")
    def _check(self) -> "EntityMapping":
        if not self.key:
            raise ValueError("key must name at least one field")
        names = set(self.fields)
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"key field(s) {missing} are not among the fields {sorted(names)}")
        for k in self.key:
            if self.fields[k].pii == "drop" or self.fields[k].computed is not None:
                raise ValueError(f"key field {k!r} cannot be dropped or computed")
            if self.fields[k].pii == "mask":
                raise ValueError(
                    f"entity {self.entity!r}: key field {k!r} has 'pii: mask', which would make distinct keys equal "
                    f"(a mask keeps only the first character) and mix their rows in every sink: use 'pii: hash' on "
                    f"it (a keyed hash, the same for the same value, published in the key too) or remove pii from "
                    f"the key field")
        for name, spec in self.fields.items():
            if spec.computed is not None:
                unknown = [f for f in spec.computed.inputs() if f not in names or self.fields[f].computed is not None]
                if unknown:
                    raise ValueError(f"fields.{name}.computed: {unknown} are not (non-computed) fields of the entity")
        for cond in self.conditions():
            if cond.field is not None and cond.field not in names:
                raise ValueError(f"condition on field {cond.field!r}: not a field of the entity (use 'column' for a source column)")
        if self.unmapped_columns == "pass_through" and EXTRA_FIELD in names:
            raise ValueError(f"unmapped_columns: pass_through needs the field name {EXTRA_FIELD!r}, which a field already uses")
        for sink, projection in self.sinks.items():
            unknown = [f for f in projection.fields or [] if f not in self.published_fields()]
            if unknown:
                raise ValueError(f"sinks.{sink}.fields: {unknown} are not published fields of the entity")
        return self

    # -- derived views --------------------------------------------------------------------------------

    def published_fields(self) -> dict[str, FieldType]:
        fields = {n: (FieldType.STRING if s.pii == "hash" else s.type) for n, s in self.fields.items() if s.pii != "drop"}
        if self.unmapped_columns == "pass_through":
            fields[EXTRA_FIELD] = FieldType.JSON
        return fields

    def schema(self) -> EntitySchema:
        return EntitySchema(name=self.entity, key=tuple(self.key), fields=self.published_fields())

    def columns(self) -> frozenset[str]:
        """Source columns the mapping reads (fields and conditions)."""
        return self._column_set

    @cached_property
    def _column_set(self) -> frozenset[str]:
        used = {s.column for s in self.fields.values() if s.column is not None}
        return frozenset(used | {c.column for c in self.conditions() if c.column is not None})

    def deleted_conditions(self) -> list[Condition]:
        if self.deleted_when is None:
            return []
        return self.deleted_when if isinstance(self.deleted_when, list) else [self.deleted_when]

    def conditions(self) -> list[Condition]:
        return self.skip_when + self.deleted_conditions()

    def uses_hash(self) -> list[str]:
        return [n for n, s in self.fields.items() if s.pii == "hash"]
