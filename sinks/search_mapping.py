"""What the search sink sends and reads back: index mappings, bulk documents, bulk item outcomes.

Choices where the target has no exact equivalent:

* ``bigint_unsigned`` -> ``unsigned_long`` (OpenSearch >= 2.8, Elasticsearch >= 7.10): exact over the
  whole 0..2^64-1 range, sortable and range-queryable. On an older cluster override the field with
  ``{"type": "keyword"}`` in ``indices.<entity>.mappings``.
* ``decimal`` -> ``keyword`` with a ``double`` sub-field ``<field>.num``: the keyword (and ``_source``)
  keeps the exact text ("12.50"), term queries match it exactly, range queries and aggregations use
  ``<field>.num`` (approximate beyond 15-17 significant digits). ``scaled_float`` would round every
  value to a fixed scale, so it is not the default.
* ``datetime`` (wall time in the source's zone, no offset) -> ``date``: the target reads it as UTC.
* ``time`` -> ``keyword`` (MySQL TIME may be negative or exceed 24 h).
* ``json`` -> ``object`` with ``enabled: false``: kept in ``_source`` for any JSON value (scalars and
  arrays too) but not searchable; map it explicitly (``flat_object``/``flattened``) to search it.
* ``bytes`` -> ``binary`` (base64, not searchable).

``dynamic: strict``: a value outside the mapping is refused (a rejection), never guessed.
"""

from __future__ import annotations

import base64
import decimal
from enum import Enum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from cdc.domain.entity_schema import EntitySchema, FieldType
from cdc.domain.envelope import ChangeEvent, Op
from cdc.domain.errors import ConfigError

VERSION_FIELD = "_cdc_version"
DELETED_FIELD = "_cdc_deleted"
DATE_FORMAT = "strict_date_optional_time||epoch_millis"

_TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
_DATE = {"type": "date", "format": DATE_FORMAT}

FIELD_MAPPINGS: dict[FieldType, dict[str, Any]] = {
    FieldType.STRING: _TEXT,
    FieldType.INTEGER: {"type": "long"},
    FieldType.BIGINT_UNSIGNED: {"type": "unsigned_long"},
    FieldType.DECIMAL: {"type": "keyword", "fields": {"num": {"type": "double"}}},
    FieldType.FLOAT: {"type": "double"},
    FieldType.BOOLEAN: {"type": "boolean"},
    FieldType.DATE: _DATE,
    FieldType.DATETIME: _DATE,
    FieldType.TIMESTAMP: _DATE,
    FieldType.TIME: {"type": "keyword"},
    FieldType.JSON: {"type": "object", "enabled": False},
    FieldType.BYTES: {"type": "binary"},
}
META_MAPPINGS = {VERSION_FIELD: {"type": "long"}, DELETED_FIELD: {"type": "boolean"}}


class IndexSpec(BaseModel):
    """How one entity is indexed."""

    model_config = ConfigDict(extra="forbid")

    alias: str | None = Field(None, description="The alias written through (default: <index_prefix>-<entity>); "
                              "the concrete index is <alias>-v1.")
    fields: list[str] | None = Field(None, description="Fields copied into the document (default: all of the entity's).")
    mappings: dict[str, Any] | None = Field(None, description="Explicit properties per field; they replace the derived ones.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Index settings for a newly created index.")


def projected_fields(schema: EntitySchema, spec: IndexSpec) -> list[str]:
    if spec.fields is None:
        return list(schema.fields)
    unknown = [f for f in spec.fields if f not in schema.fields]
    if unknown:
        raise ConfigError(f"search index of entity {schema.name!r}: fields {unknown} are not fields of the entity")
    return list(spec.fields)


def properties(schema: EntitySchema, spec: IndexSpec) -> dict[str, Any]:
    props = {f: FIELD_MAPPINGS[schema.fields[f]] for f in projected_fields(schema, spec)}
    props.update(spec.mappings or {})
    for name in META_MAPPINGS:
        if name in props:
            raise ConfigError(f"search index of entity {schema.name!r}: field {name!r} is reserved for the sink")
    return props | META_MAPPINGS


def index_body(schema: EntitySchema, spec: IndexSpec, alias: str) -> dict[str, Any]:
    """Body of the create-index request: settings, strict mapping and the write alias."""
    return {
        "settings": spec.settings,
        "mappings": {"dynamic": "strict", "properties": properties(schema, spec)},
        "aliases": {alias: {}},
    }


# --- the _bulk wire format: documents out, item outcomes back -----------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def bulk_payload(event: ChangeEvent, alias: str, fields: tuple[str, ...]) -> bytes:
    """The ``index`` action and document of one event (a tombstone for a delete), NDJSON."""
    action = {"index": {"_index": alias, "_id": event.key_str, "version": event.version, "version_type": "external"}}
    if event.op is Op.DELETE:
        doc = {f: event.key[f] for f in fields if f in event.key}
    else:
        after = event.after or {}
        doc = {f: after[f] for f in fields if f in after}
        doc.update((f, event.key[f]) for f in fields if f in event.key and f not in after)
    doc[VERSION_FIELD] = event.version
    doc[DELETED_FIELD] = event.op is Op.DELETE
    return orjson.dumps(action) + b"\n" + orjson.dumps(doc, default=_json_default) + b"\n"


class Outcome(Enum):
    APPLIED = "applied"
    STALE = "stale"  # 409: the target holds this version or a newer one
    RETRY = "retry"  # throttled or a failing shard: send the item again
    MISSING_INDEX = "missing_index"
    REJECTED = "rejected"


_RETRYABLE_TYPES = {"es_rejected_execution_exception", "rejected_execution_exception", "circuit_breaking_exception", "cluster_block_exception"}


def classify_item(item: dict[str, Any]) -> tuple[Outcome, str]:
    """Outcome of one ``_bulk`` response item, with the server's error text."""
    body = next(iter(item.values()))
    status = int(body.get("status", 0))
    error = body.get("error")
    if error is None and status < 300:
        return Outcome.APPLIED, ""
    etype = error.get("type", "") if isinstance(error, dict) else ""
    detail = _error_text(error) or f"status {status}"
    if status == 409 or etype == "version_conflict_engine_exception":
        return Outcome.STALE, detail
    if status == 429 or status >= 500 or etype in _RETRYABLE_TYPES:
        return Outcome.RETRY, detail
    if etype == "index_not_found_exception":
        return Outcome.MISSING_INDEX, detail
    return Outcome.REJECTED, detail


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error or "")
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    return f"{text} (caused by {_error_text(cause)})" if isinstance(cause, dict) else text
