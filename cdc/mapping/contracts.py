"""Published contracts: typed models and JSON Schemas of every event, generated from the mappings.

One source of truth: :func:`entity_model` builds a pydantic model per canonical entity from its
mapping, with the Python type a consumer wants (``Decimal``, ``date``, aware ``datetime``...) and,
through ``WithJsonSchema``, the exact JSON form the events carry (see :class:`cdc.domain.entity_schema.FieldType`).
The exported JSON Schemas are those models' schemas, so what consumers parse with and what we
publish cannot drift apart::

    models = EventModels.from_dir("mappings")  # or EventModels(load_mappings(...))
    event = models.parse(body)          # MemberEvent: event.after.balance is a Decimal

:func:`export` writes ``envelope.json``, ``entities/<entity>.json``, ``events/<entity>.json`` and
``transaction.json``, ``heartbeat.json`` (the optional boundary and heartbeat events) and
``asyncapi.yaml`` (AsyncAPI 2.6: exchange, routing keys, payloads); ``cdc schemas export`` calls it.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
    NaiveDatetime,
    WithJsonSchema,
    create_model,
)

from cdc.domain.boundary import HEARTBEAT_KEY, TXN_BEGIN_KEY, TXN_END_KEY, HeartbeatEvent, TransactionEvent
from cdc.domain.entity_schema import FieldType
from cdc.domain.envelope import KEY_TEXT, ChangeEvent, Op, key_string
from cdc.mapping import EntityMapping

SCHEMA_BASE = "https://schemas.cdc.example/v1/"  # $id prefix; the files are published under schemas/
_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
_WALL = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
_TIME = r"^-?[0-9]{2,3}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"

# Python type and JSON Schema of each canonical type (JSON forms documented on FieldType).
_TYPES: dict[FieldType, Any] = {
    FieldType.STRING: str,
    FieldType.INTEGER: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)],
    FieldType.BIGINT_UNSIGNED: Annotated[int, Field(ge=0, le=2**64 - 1)],
    FieldType.DECIMAL: Annotated[decimal.Decimal, WithJsonSchema({"type": "string", "pattern": _DECIMAL})],
    FieldType.FLOAT: float,
    FieldType.BOOLEAN: bool,
    FieldType.DATE: Annotated[dt.date, WithJsonSchema({"type": "string", "format": "date",
                                                       "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})],
    FieldType.DATETIME: Annotated[NaiveDatetime, WithJsonSchema({"type": "string", "pattern": _WALL + "$",
                                                                 "description": "Wall time in the source's zone."})],
    FieldType.TIMESTAMP: Annotated[AwareDatetime, WithJsonSchema({"type": "string", "format": "date-time",
                                                                  "pattern": _WALL + "Z$"})],
    FieldType.TIME: Annotated[str, Field(pattern=_TIME), WithJsonSchema({"type": "string", "pattern": _TIME})],
    FieldType.JSON: Annotated[Any, WithJsonSchema({})],
    FieldType.BYTES: Annotated[Base64Bytes, WithJsonSchema({"type": "string", "contentEncoding": "base64"})],
}


class _Row(BaseModel):
    # Tolerant reader: a consumer built against today's contract keeps working when a field is added.
    model_config = ConfigDict(extra="ignore", frozen=True)


def field_types(mapping: EntityMapping) -> dict[str, FieldType]:
    """The published fields and their types; a masked field is text whatever its source type."""
    types = mapping.published_fields()
    for name, spec in mapping.fields.items():
        if spec.pii == "mask":
            types[name] = FieldType.STRING
    return types


def _field(mapping: EntityMapping, name: str, ftype: FieldType, in_key: bool) -> tuple[Any, Any]:
    spec = mapping.fields.get(name)
    py: Any = _TYPES[ftype]
    description = f"{ftype.value}"
    if spec is not None and spec.column is not None:
        description += f", from {mapping.source.db}.{mapping.source.table}.{spec.column}"
    if spec is not None and spec.labels is not None and spec.unknown_label != "keep":
        py = Literal[tuple(dict.fromkeys(spec.labels.values()))]  # type: ignore[misc]
    if in_key:
        return py, Field(..., description=description)
    return py | None, Field(..., description=description + "; null when unknown")


def entity_model(mapping: EntityMapping) -> type[BaseModel]:
    """The row model of one entity (``after``/``before``): every published field, present, nullable except keys."""
    fields = {n: _field(mapping, n, t, n in mapping.key) for n, t in field_types(mapping).items()}
    return create_model(_class_name(mapping.entity), __base__=_Row, __doc__=f"Canonical {mapping.entity}.", **fields)


def key_model(mapping: EntityMapping) -> type[BaseModel]:
    types = field_types(mapping)
    fields = {n: _field(mapping, n, types[n], True) for n in mapping.key}
    return create_model(_class_name(mapping.entity) + "Key", __base__=_Row, **fields)


class TypedEvent(ChangeEvent):
    """The envelope whose key, before and after are models of one entity."""

    @property
    def key_str(self) -> str:
        key = self.key.model_dump(mode="json") if isinstance(self.key, BaseModel) else self.key
        return key_string(key)


def event_model(mapping: EntityMapping) -> type[TypedEvent]:
    """The envelope with ``entity``, ``key``, ``before`` and ``after`` typed for one entity."""
    row = entity_model(mapping)
    return create_model(
        _class_name(mapping.entity) + "Event",
        __base__=TypedEvent,
        __doc__=f"A change of one {mapping.entity}; routing key {mapping.entity}.<op>.",
        entity=(Literal[mapping.entity], Field(...)),  # type: ignore[valid-type]
        key=(key_model(mapping) | None, Field(..., description="The entity key; null on a truncate (op t). " + KEY_TEXT)),
        before=(row | None, Field(None, description="The row before the change (updates, deletes); null on a truncate.")),
        after=(row | None, Field(None, description="The row after the change; null on a delete and a truncate.")),
    )


def _class_name(entity: str) -> str:
    return "".join(part.capitalize() for part in entity.split("_"))


class EventModels:
    """Typed models of every entity's events; ``parse`` picks the model by the message's entity."""

    def __init__(self, mappings: Iterable[EntityMapping]) -> None:
        self.mappings = {m.entity: m for m in mappings}
        self.events = {e: event_model(m) for e, m in self.mappings.items()}

    @classmethod
    def from_dir(cls, directory: str | Path) -> EventModels:
        from cdc.mapping import load_mappings

        return cls(load_mappings(directory, pii_salt="-"))  # the salt only matters when mapping rows

    def parse(self, body: bytes) -> ChangeEvent:
        """The typed event (or a plain ChangeEvent for an entity without a model); raises ValidationError."""
        entity = orjson.loads(body).get("entity")
        model = self.events.get(entity, ChangeEvent)
        return model.model_validate_json(body)


# --- export --------------------------------------------------------------------------------------------


def envelope_schema() -> dict[str, Any]:
    return _with_id(ChangeEvent.model_json_schema(), "envelope.json")


def transaction_schema() -> dict[str, Any]:
    """The transaction boundary event (BEGIN / END), published with events.transactions: true."""
    return _with_id(_strict(TransactionEvent.model_json_schema()), "transaction.json")


def heartbeat_schema() -> dict[str, Any]:
    """The reader's heartbeat event, published with events.heartbeats.enabled."""
    return _with_id(_strict(HeartbeatEvent.model_json_schema()), "heartbeat.json")


def entity_schema(mapping: EntityMapping) -> dict[str, Any]:
    return _with_id(_strict(entity_model(mapping).model_json_schema()), f"entities/{mapping.entity}.json")


def event_schema(mapping: EntityMapping) -> dict[str, Any]:
    schema = _strict(event_model(mapping).model_json_schema())
    # A delete carries no after image; a truncate no key, before or after image; every other op has a key and an after image.
    null = {"type": "null"}
    schema["allOf"] = [
        {"if": {"properties": {"op": {"const": Op.TRUNCATE.value}}},
         "then": {"properties": {"key": null, "before": null, "after": null}},
         "else": {"properties": {"key": {"type": "object"}}}},
        {"if": {"properties": {"op": {"enum": [Op.DELETE.value, Op.TRUNCATE.value]}}},
         "then": {"properties": {"after": null}},
         "else": {"properties": {"after": {"type": "object"}}}},
    ]
    return _with_id(schema, f"events/{mapping.entity}.json")


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Our producer sends exactly the published fields: unknown ones fail validation of the contract
    (consumers' models still ignore them)."""
    for sub in [schema, *schema.get("$defs", {}).values()]:
        if sub.get("type") == "object" and "properties" in sub:
            sub.setdefault("additionalProperties", False)
    return schema


def _with_id(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_BASE + name, **schema}


def asyncapi(mappings: Iterable[EntityMapping], exchange: str = "cdc.events") -> dict[str, Any]:
    """AsyncAPI 2.6: one channel per entity (``<entity>.{op}`` on the topic exchange), payload = its event schema
    (or an array of them: a batch message)."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for m in sorted(mappings, key=lambda m: m.entity):
        name = _class_name(m.entity) + "Event"
        messages[name] = {
            "name": name,
            "title": f"{m.entity} changed",
            "contentType": "application/json",
            "schemaFormat": "application/schema+json;version=draft-2020-12",
            "payload": {"oneOf": [
                {"$ref": f"events/{m.entity}.json"},
                {"type": "array", "minItems": 2, "items": {"$ref": f"events/{m.entity}.json"},
                 "description": "With broker.batch_events > 1: consecutive events of one transaction with the same "
                                "routing key, in order (header x-cdc-count). cdc.domain.envelope.decode_many reads both."},
            ]},
            "headers": {"type": "object", "properties": {
                "x-cdc-version": {"type": "integer", "description": "The event's version (also in the body)."},
                "x-cdc-key": {"type": "string", "description": "The entity key as text; the consistent-hash header "
                                                               "(absent on a batch; empty on a truncate). One key field: "
                                                               "its value as text; several: their values as text in the "
                                                               "order of the field names, each with '\\' and '|' escaped "
                                                               "by a '\\', joined by '|' (cdc.domain.envelope.parse_key_string "
                                                               "inverts it)."},
                "x-cdc-count": {"type": "integer", "description": "On a batch: how many events it holds."},
                "x-cdc-entity": {"type": "string", "const": m.entity},
            }},
            "correlationId": {"location": "$message.header#/message_id", "description": "The event id."},
        }
        channels[f"{m.entity}.{{op}}"] = {
            "description": f"Changes of {m.entity} (source table {m.source.db}.{m.source.table}).",
            "parameters": {"op": {"$ref": "#/components/parameters/op"}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": exchange, "type": "topic", "durable": True,
                                                                   "autoDelete": False, "vhost": "/"}}},
            "subscribe": {"operationId": f"on_{m.entity}", "message": {"$ref": f"#/components/messages/{name}"},
                          "bindings": {"amqp": {"ack": True, "deliveryMode": 2}}},
        }
    amqp_channel = {"amqp": {"is": "routingKey", "exchange": {"name": exchange, "type": "topic", "durable": True,
                                                              "autoDelete": False, "vhost": "/"}}}
    for key, name, title, ref, what in (
        (TXN_BEGIN_KEY, "TransactionBegin", "a source transaction begins", "transaction.json",
         "Before the first change event of every source transaction that carries change events (events.transactions: "
         "true at the reader; off by default)."),
        (TXN_END_KEY, "TransactionEnd", "a source transaction ends", "transaction.json",
         "After the last change event of the transaction: event_count and data_collections give the change events "
         "published with its txn.id, in total and per entity and source table (events.transactions: true)."),
        (HEARTBEAT_KEY, "Heartbeat", "the reader is alive", "heartbeat.json",
         "Every events.heartbeats.interval_s, whether or not any table changes: the source position read and the time "
         "(events.heartbeats.enabled at the reader; off by default)."),
    ):
        messages[name] = {"name": name, "title": title, "contentType": "application/json",
                          "schemaFormat": "application/schema+json;version=draft-2020-12", "payload": {"$ref": ref},
                          "headers": {"type": "object", "properties": {"x-cdc-kind": {"type": "string"}}},
                          "correlationId": {"location": "$message.header#/message_id"}}
        channels[key] = {"description": what + " Three words: no <entity>.<op> binding gets it.",
                         "bindings": amqp_channel,
                         "subscribe": {"operationId": "on_" + key.replace(".", "_"),
                                       "message": {"$ref": f"#/components/messages/{name}"},
                                       "bindings": {"amqp": {"ack": True, "deliveryMode": 2}}}}
    return {
        "asyncapi": "2.6.0",
        "info": {"title": "CDC change events", "version": "1.0.0", "description": (
            "One message per row change of a canonical entity (or, with broker.batch_events > 1, a JSON array of "
            "consecutive ones with the same routing key). Delivery is at-least-once; each event carries "
            "`version`, strictly increasing per key along the source's history: keep the highest version seen per "
            "key and ignore older ones. `id` is deterministic, for dedupe. A truncate (op `t`, routing key "
            "`<entity>.t`, key null; TRUNCATE TABLE, DROP TABLE or CREATE OR REPLACE TABLE at the source) removes every "
            "row of the entity with a lower version: drop them, and ignore any event of the entity with a lower "
            "version that comes later. Optional, off by default: transaction boundaries (cdc.transaction.begin / .end) "
            "and heartbeats (cdc.heartbeat.reader). Subscribe with cdc.consumer.")},
        "defaultContentType": "application/json",
        "servers": {"broker": {"url": "amqp://localhost:5672/%2F", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "components": {
            "messages": messages,
            "parameters": {"op": {"description": "c create, u update, d delete, r read (snapshot), t truncate (every row "
                                                 "of the entity with a lower version is gone; key null)",
                                  "schema": {"type": "string", "enum": [o.value for o in Op]}}},
        },
    }


def render(mappings: Iterable[EntityMapping], exchange: str = "cdc.events") -> dict[str, str]:
    """Relative path -> file content of every published contract."""
    mappings = list(mappings)
    files = {"envelope.json": _json(envelope_schema()), "transaction.json": _json(transaction_schema()),
             "heartbeat.json": _json(heartbeat_schema())}
    for m in mappings:
        files[f"entities/{m.entity}.json"] = _json(entity_schema(m))
        files[f"events/{m.entity}.json"] = _json(event_schema(m))
    files["asyncapi.yaml"] = yaml.safe_dump(asyncapi(mappings, exchange), sort_keys=False, width=120)
    return files


def export(mappings: Iterable[EntityMapping], out: Path, exchange: str = "cdc.events") -> list[Path]:
    """Write every contract under ``out``; contracts of entities no longer mapped are removed."""
    files = render(mappings, exchange)
    for sub in ("entities", "events"):
        for path in (out / sub).glob("*.json"):
            if path.relative_to(out).as_posix() not in files:
                path.unlink()
    written = []
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale(mappings: Iterable[EntityMapping], out: Path, exchange: str = "cdc.events") -> list[str]:
    """Files under ``out`` that are missing, differ from what the mappings generate, or belong to no entity."""
    files = render(mappings, exchange)
    orphans = [p.relative_to(out).as_posix() for sub in ("entities", "events") for p in (out / sub).glob("*.json")
               if p.relative_to(out).as_posix() not in files]
    return [rel for rel, text in files.items() if not (out / rel).is_file() or (out / rel).read_text() != text] + orphans


def _json(schema: dict[str, Any]) -> str:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
