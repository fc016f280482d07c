"""Mapping files generated from a source table's description (``cdc mappings init``). Pure: the caller
reads information_schema and passes :class:`TableInfo` in.

Every column becomes a field of the type docs/types.md gives it, with the ``column_type`` the two read
paths need; the primary key (or the narrowest unique index over NOT NULL columns) becomes the key; the
names become the canonical style (snake_case, singular entity). Where a choice was made (a TINYINT(1)
read as a boolean, a DATETIME read as wall time, a renamed column), the line carries a comment saying
so. A file carries the digest of what was generated, so that a later run can tell a hand-edited file
from an untouched one and never overwrite edits silently (:func:`merge`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import yaml

DIGEST_PREFIX = "# generated-digest: "
_SINK_ORDER = ["crm", "cache", "search"]
_UNCOUNTABLE = {"news", "series", "species", "status", "analysis", "bonus", "campus"}

_INTEGERS = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
_BLOBS = {"varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
             "geometrycollection", "geomcollection"}


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    data_type: str  # information_schema DATA_TYPE: 'int'
    column_type: str  # information_schema COLUMN_TYPE: 'int(10) unsigned'
    nullable: bool = True
    is_json: bool = False  # MariaDB's JSON is a LONGTEXT with a json_valid() check


@dataclass(frozen=True)
class TableInfo:
    db: str
    table: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...] = ()
    unique_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (index name, columns)


class NoUsableKey(ValueError):
    """The table has neither a primary key nor a unique index over NOT NULL columns."""


@dataclass
class Generated:
    entity: str
    filename: str
    text: str
    notes: list[str] = field(default_factory=list)  # columns left out, with the reason
    field_lines: dict[str, str] = field(default_factory=dict)  # field -> its line in ``text``


def snake_case(name: str) -> str:
    """'memberID' -> 'member_id', 'Date Joined' -> 'date_joined', '2fa' -> 'f_2fa'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # 'ü' -> 'u'
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    if not text:
        text = "field"
    return f"f_{text}" if text[0].isdigit() else text


def entity_name(table: str) -> str:
    """The singular snake_case name of a table: 'members' -> 'member', 'categories' -> 'category'."""
    name = snake_case(table)
    head, _, last = name.rpartition("_")
    if last in _UNCOUNTABLE:
        pass
    elif last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith(("sses", "xes", "ches", "shes")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 3:
        last = last[:-1]
    return f"{head}_{last}" if head else last


def choose_key(table: TableInfo) -> tuple[tuple[str, ...], str | None]:
    """The key columns and a note when it is not the primary key; NoUsableKey with the reason otherwise."""
    if table.primary_key:
        return table.primary_key, None
    nullable = {c.name for c in table.columns if c.nullable}
    usable = [(name, cols) for name, cols in table.unique_keys if not nullable & set(cols)]
    if usable:
        name, cols = min(usable, key=lambda nc: (len(nc[1]), nc[0]))
        return cols, f"no primary key: the key is the unique index {name} (NOT NULL columns)"
    where = f"{table.db}.{table.table}"
    refused = [f"unique index {name} has nullable column(s) {sorted(nullable & set(cols))}"
               for name, cols in table.unique_keys]
    raise NoUsableKey(
        f"{where} has no primary key" + (f" and no usable unique key ({'; '.join(refused)})" if refused else "")
        + f": add one (ALTER TABLE {where} ADD PRIMARY KEY (...)), then run `cdc mappings init` again"
    )


def field_spec(column: ColumnInfo) -> tuple[dict[str, Any] | None, str | None]:
    """(the field's spec without ``column``, a note on the choice made); (None, reason) for a column left out."""
    data_type, column_type = column.data_type.lower(), column.column_type.lower()
    if data_type in _INTEGERS:
        if data_type == "tinyint" and column_type.startswith("tinyint(1)"):
            return {"type": "boolean"}, "TINYINT(1) read as a boolean (type integer keeps the number)"
        if data_type == "bigint" and "unsigned" in column_type:
            return {"type": "bigint_unsigned"}, None
        return {"type": "integer"}, None
    if data_type in ("decimal", "numeric"):
        return {"type": "decimal"}, None
    if data_type == "float":
        return {"type": "float", "column_type": "float"}, None
    if data_type in ("double", "real"):
        return {"type": "float"}, None
    if data_type == "date":
        return {"type": "date"}, None
    if data_type == "datetime":
        return {"type": "datetime"}, ("DATETIME read as wall time (a UTC instant: type timestamp, column_type datetime, "
                                      "source_timezone)")
    if data_type == "timestamp":
        return {"type": "timestamp"}, None
    if data_type == "time":
        return {"type": "time"}, None
    if data_type == "year":
        return {"type": "integer", "column_type": "year"}, None
    if data_type in _TEXT:
        return ({"type": "json"}, "MariaDB JSON (a LONGTEXT checked by json_valid)") if column.is_json else ({"type": "string"}, None)
    if data_type == "binary":
        return {"type": "bytes", "column_type": column_type.split()[0]}, None
    if data_type in _BLOBS:
        return {"type": "bytes"}, None
    if data_type == "enum":
        return {"type": "string"}, None
    if data_type == "set":
        return {"type": "json", "column_type": "set"}, None
    if data_type == "bit":
        bits = int(re.search(r"\((\d+)\)", column_type).group(1)) if "(" in column_type else 1
        kind = "boolean" if bits == 1 else "integer" if bits <= 63 else "bigint_unsigned"
        return {"type": kind, "column_type": f"bit({bits})"}, None
    if data_type == "json":
        return {"type": "json"}, None
    if data_type in _GEOMETRY:
        return {"type": "json", "column_type": "geometry"}, "GeoJSON with its SRID; type bytes keeps MySQL's internal form"
    return None, f"column {column.name} ({column.column_type}) is left out: no canonical type for {data_type}"


def _line(key: str, value: Any) -> str:
    """``key: value`` on one line, collections in flow style, quoted where YAML needs it."""
    return f"{_flow(key)}: {_flow(value)}"


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=100_000)
    return text.removesuffix("\n...\n").strip()


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def generate(table: TableInfo, sinks: list[str], entity: str | None = None) -> Generated:
    """The mapping file of one table; NoUsableKey when it has no key to map by."""
    key_columns, key_note = choose_key(table)
    entity = entity or entity_name(table.table)
    names: dict[str, str] = {}  # column -> field
    field_lines: dict[str, str] = {}
    notes = []
    for column in table.columns:
        spec, note = field_spec(column)
        if spec is None:
            notes.append(note)
            continue
        name = snake_case(column.name)
        while name in names.values():
            name += "_"
        names[column.name] = name
        comments = [n for n in (note, None if name == column.name else f"column {column.name!r}") if n]
        line = "  " + _line(name, {"column": column.name, **spec})
        field_lines[name] = line + (f"  # {'; '.join(comments)}" if comments else "")
    missing = [c for c in key_columns if c not in names]
    if missing:
        raise NoUsableKey(f"{table.db}.{table.table}: key column(s) {missing} have no canonical type; map the table by hand")
    body = "\n".join([
        _line("entity", entity),
        _line("source", {"db": table.db, "table": table.table}),
        _line("key", [names[c] for c in key_columns]) + (f"  # {key_note}" if key_note else ""),
        "fields:",
        *field_lines.values(),
        *(["sinks:"] + ["  " + _line(s, {"table": entity} if s == "crm" else {}) for s in sorted(sinks, key=_SINK_ORDER.index)] if sinks else []),
    ]) + "\n"
    header = (f"# {table.db}.{table.table} -> {entity}\n"
              "# Generated by `cdc mappings init` from the source's information_schema. Edit freely: a later run\n"
              "# shows what the source changed and, with --update, adds new columns without touching your edits.\n"
              + "".join(f"# {n}\n" for n in notes)
              + f"{DIGEST_PREFIX}{digest(body)}\n")
    return Generated(entity, f"{entity}.yaml", header + body, notes, field_lines)


def split(text: str) -> tuple[str | None, str]:
    """(the digest recorded in a generated file, or None, the body after the header's comments)."""
    lines = text.splitlines(keepends=True)
    recorded, start = None, 0
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            start = i
            break
        if line.startswith(DIGEST_PREFIX):
            recorded = line[len(DIGEST_PREFIX):].strip()
    else:
        start = len(lines)
    return recorded, "".join(lines[start:])


def edited(text: str) -> bool:
    """Whether a mapping file was changed since ``cdc mappings init`` wrote it (or was written by hand)."""
    recorded, body = split(text)
    return recorded is None or recorded != digest(body)


def merge(existing: str, generated: Generated) -> tuple[str, list[str]]:
    """A hand-edited file with the fields of the source's new columns added (nothing else touched), and
    notes on what differs that only a person should change (dropped or retyped columns)."""
    current = yaml.safe_load(existing) or {}
    fields = current.get("fields") or {}
    mapped = {spec.get("column"): name for name, spec in fields.items() if isinstance(spec, dict)}
    new = yaml.safe_load(generated.text)
    additions, notes = [], []
    for name, spec in new["fields"].items():
        column = spec["column"]
        if column not in mapped:
            if name in fields:  # the name is taken by a field made by hand
                additions.append("  " + _line(name + "_", spec))
            else:
                additions.append(generated.field_lines[name])
        else:
            ours = fields[mapped[column]]
            if ours.get("type") != spec["type"] or ours.get("column_type") != spec.get("column_type"):
                notes.append(f"field {mapped[column]}: the source column {column} now reads as {spec} (kept as it is)")
    source_columns = {spec["column"] for spec in new["fields"].values()}
    for column, name in mapped.items():
        if column is not None and column not in source_columns:
            notes.append(f"field {name}: column {column} is gone from the source (kept: remove it by hand)")
    if not additions:
        return existing, notes
    out = existing.splitlines()
    at = _end_of_block(out, "fields:")
    if at is None:
        notes.append("no 'fields:' block found: new columns not added; add them by hand: " + "; ".join(additions))
        return existing, notes
    out[at:at] = additions
    return "\n".join(out) + "\n", notes


def _end_of_block(lines: list[str], header: str) -> int | None:
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == header)
    except StopIteration:
        return None
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end
