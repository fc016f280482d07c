"""Canonical entity schemas: what the mappings produce and what sinks build their stores from."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict


class FieldType(str, Enum):
    """Canonical field types and their JSON form in events.

    string: text; integer: 64-bit signed; bigint_unsigned: integer that may exceed 2^63 (JSON
    number); decimal: exact, a JSON string such as "12.50"; float; boolean; date: "YYYY-MM-DD";
    datetime: wall time "YYYY-MM-DDTHH:MM:SS[.ffffff]" in the source's zone; timestamp: UTC
    instant "YYYY-MM-DDTHH:MM:SS[.ffffff]Z"; time: "[-]HH:MM:SS[.ffffff]" (may exceed 24h);
    json: any JSON value; bytes: base64 text.
    """

    STRING = "string"
    INTEGER = "integer"
    BIGINT_UNSIGNED = "bigint_unsigned"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    TIMESTAMP = "timestamp"
    TIME = "time"
    JSON = "json"
    BYTES = "bytes"


class EntitySchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    key: tuple[str, ...]
    fields: dict[str, FieldType]
