"""Declarative mappings from legacy tables to canonical entities, and the pure mapper.

A mapping file (YAML, in the mappings directory) describes one entity (examples: the
files in ``mappings/``; canonical values per type: docs/types.md)::

    entity: member
    source: {db: legacy, table: members}
    key: [member_id]
    fields:
      member_id: {column: id, type: integer}
      email: {column: email, type: string, transforms: [trim, lower], pii: mask}
      status: {column: status, type: string, labels: {A: active, L: lapsed}}
      birth_date: {column: birth_date, type: date, format: "%d/%m/%Y"}
      full_name: {type: string, computed: {concat: [first_name, last_name]}}
    deleted_when: {column: deleted, equals: 1}
    skip_when: [{field: email, matches: "@test\\\\.example$"}]
    sinks: {crm: {table: members}, cache: {key: "member:{member_id}", fields: [email, status]}}

Loading validates everything and names the file, the entity and the field at fault
(:mod:`cdc.mapping.loader`). Applying is pure: row in, canonical values out, no I/O
(:mod:`cdc.mapping.mapper`, values per type in :mod:`cdc.mapping.values`).
"""

from cdc.mapping.loader import load_mappings
from cdc.mapping.mapper import MappedRow, Mapper, MappingSchemaError, RowMappingError
from cdc.mapping.model import Computed, Condition, EntityMapping, FieldSpec, Projection, SourceTable
from cdc.mapping.transforms import TRANSFORMS
from cdc.mapping.values import MappingValueError, convert

__all__ = [
    "TRANSFORMS", "Computed", "Condition", "EntityMapping", "FieldSpec", "MappedRow", "Mapper", "MappingSchemaError",
    "MappingValueError", "Projection", "RowMappingError", "SourceTable", "convert", "load_mappings",
]
