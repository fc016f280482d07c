"""Per-sink projections declared in mapping files (``sinks: {crm: ..., cache: ..., search: ...}``),
turned into what each sink's own configuration and entity schemas say. The sink's configuration
wins where it says something explicitly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cdc.domain.entity_schema import EntitySchema
from cdc.mapping.model import EntityMapping


def for_sink(sink_type: str, config: Any, schemas: dict[str, EntitySchema], mappings: Iterable[EntityMapping]) -> tuple[Any, dict[str, EntitySchema]]:
    """``(config, schemas)`` of one sink with the mappings' projections for its type applied."""
    projections = {m.entity: m.sinks[sink_type] for m in mappings if sink_type in m.sinks and m.entity in schemas}
    if not projections:
        return config, schemas
    update: dict[str, Any] = {}
    if sink_type == "crm":
        update["tables"] = {e: p.table for e, p in projections.items() if p.table} | config.tables
        schemas = {e: _narrow(s, projections[e].fields if e in projections else None) for e, s in schemas.items()}
    elif sink_type == "cache":
        update["keys"] = {e: p.key for e, p in projections.items() if p.key} | config.keys
        update["fields"] = {e: _with_key(schemas[e], p.fields) for e, p in projections.items() if p.fields} | config.fields
    elif sink_type == "search":
        from cdc.sinks.search_mapping import IndexSpec

        indices = dict(config.indices)
        for entity, p in projections.items():
            if (p.fields or p.index) and entity not in indices:
                indices[entity] = IndexSpec(fields=_with_key(schemas[entity], p.fields) if p.fields else None, alias=p.index)
        update["indices"] = indices
    return config.model_copy(update=update), schemas


def _with_key(schema: EntitySchema, fields: list[str]) -> list[str]:
    return list(schema.key) + [f for f in fields if f not in schema.key]


def _narrow(schema: EntitySchema, fields: list[str] | None) -> EntitySchema:
    if fields is None:
        return schema
    keep = _with_key(schema, fields)
    return schema.model_copy(update={"fields": {f: schema.fields[f] for f in keep}})
