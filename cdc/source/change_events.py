"""From a source transaction to canonical change events. Pure: no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from cdc.domain.envelope import make_id, make_version, now_ms, truncate_version
from cdc.mapping import MappedRow, Mapper, MappingSchemaError, RowMappingError
from cdc.mapping.mapper import source_key
from cdc.source.binlog_stream import RowChange, SourceTxn
from cdc.source.table_removal import emptied_tables


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A row the mapper could not convert, or a rows event the decoder could not read (``change.undecoded``):
    dead-lettered with its reason, never dropped."""

    change: RowChange
    entity: str
    reason: str
    column: str | None = None  # the column at fault, where known
    key: dict[str, Any] | None = None  # the row's key as the source holds it, where known


def too_large(event: dict[str, Any], size: int, limit: int) -> tuple[str, dict[str, Any]]:
    """The reason and dead-letter body for an event whose message would be ``size`` > ``limit`` bytes.

    The body names the row (entity, key, op, version, source position) and the encoded size of each
    field of each image, largest first, but holds no values: it must itself fit through the broker."""
    from cdc.domain.envelope import encode

    fields: dict[str, dict[str, int]] = {}
    for image in ("before", "after"):
        sizes = {name: len(encode({"v": value})) - 6 for name, value in (event.get(image) or {}).items()}
        fields[image] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
    largest = sorted(((n, s) for image in fields.values() for n, s in image.items()), key=lambda ns: -ns[1])[:3]
    src = event["source"]
    reason = (
        f"{event['entity']} key {event['key']}: the change event is {size:,} bytes, over broker.max_message_bytes "
        f"({limit:,}; RabbitMQ's own limit is its max_message_size, 128 MiB by default). Largest fields: "
        + ", ".join(f"{n} {s:,} bytes" for n, s in largest)
        + f" (binlog {src['file']}:{src['pos']}). Not published to any sink: raise both settings, or leave the field out "
        "of the mapping, then snapshot the row (`cdc snapshot start` with a where clause on its key)"
    )
    body = {
        "reason": reason, "entity": event["entity"], "key": event["key"], "op": event["op"], "version": event["version"],
        "id": event["id"], "db": src["db"], "table": src["table"], "file": src["file"], "pos": src["pos"], "row": src["row"],
        "bytes": size, "field_bytes": fields, "before": None, "after": None,
    }
    return reason, body


def build_events(
    txn: SourceTxn, mapper: Mapper, source: str, server_id: int, first_index: int = 0,
    nulled: Counter[tuple[str, str, str]] | None = None,
) -> tuple[list[dict[str, Any]], list[DeadRow]]:
    """The events of one transaction (or of one segment of it, numbered from ``first_index``),
    as plain dicts in the shape of :class:`cdc.domain.envelope.ChangeEvent`. A row that cannot be mapped, for
    whatever reason, and a rows event that could not be decoded are dead rows; the rest goes on.
    ``nulled`` counts, by (db, table, column), the rows whose stored value of a mapped column became
    null by the rules of docs/types.md (zero and invalid dates)."""
    events: list[dict[str, Any]] = []
    dead: list[DeadRow] = []
    emitted = now_ms()
    for change in txn.changes:
        mappings = mapper.for_table(change.db, change.table)
        if change.undecoded is not None:
            undecoded = change.undecoded
            for entity in [m.entity for m in mappings] or [f"{change.db}.{change.table}"]:
                dead.append(DeadRow(change, entity, undecoded.reason, undecoded.column))
            continue
        nulled_here: set[str] = set()
        for mapping in mappings:
            try:
                after = Mapper.map_row(mapping, change.after)
                before, mended = _map_before(mapping, change, after)
            except MappingSchemaError:
                raise  # on_missing_column: fail stops replication on purpose
            except Exception as exc:  # noqa: BLE001 - whatever the row holds, the row is dead-lettered, not the stream
                dead.append(_dead_row(change, mapping, exc))
                continue
            if nulled is not None:
                image = after if after is not None else before
                row = change.after if change.after is not None else change.before
                if image is not None and image.values is not None:
                    nulled_here.update(Mapper.nulled_columns(mapping, row, image.values))
                    if change.nulled:
                        nulled_here.update(c for c in change.nulled if c in mapping.columns())
            for op, b, a, key, suffix in _ops(before, after):
                if mended and op == "c":
                    op = "u"  # an update whose old image could not be mapped: the new one, without it
                source_info = {
                    "name": source, "server_id": server_id, "gtid": txn.gtid, "file": change.file,
                    "pos": change.pos, "row": change.row, "db": change.db, "table": change.table,
                    "ts_ms": change.ts * 1000, "snapshot": False,
                }
                events.append({
                    "v": 1,
                    "id": make_id(source, change.file, change.pos, change.row, mapping.entity) + suffix,
                    "version": make_version(change.file, change.pos, change.row),
                    "op": op,
                    "entity": mapping.entity,
                    "key": key,
                    "before": b,
                    "after": a,
                    "source": source_info,
                    "txn": None,
                    "ts_ms": emitted,
                })
        for column in nulled_here:
            nulled[change.db, change.table, column] += 1
    last = len(events) - 1
    for i, event in enumerate(events):
        event["txn"] = {"id": txn.id, "index": first_index + i, "last": i == last and not txn.partial}
    return events, dead


def _map_before(mapping: Any, change: RowChange, after: MappedRow | None) -> tuple[MappedRow | None, bool]:
    """(the mapped before image, whether it could not be mapped and is left out). An update that mends a
    row whose old image cannot be mapped (its bad value was dead-lettered when it was written) goes on
    with its new image alone, as long as the key is the same: the fix at the source reaches the sinks."""
    try:
        return Mapper.map_row(mapping, change.before), False
    except MappingSchemaError:
        raise
    except Exception:  # noqa: BLE001 - decided below
        if after is None or change.before is None or source_key(mapping, change.before) != source_key(mapping, change.after):
            raise
        return None, True


def _dead_row(change: RowChange, mapping: Any, exc: Exception) -> DeadRow:
    """A row ``mapping`` could not map: its reason, column and key (of the image that failed, where known)."""
    if isinstance(exc, RowMappingError):
        return DeadRow(change, mapping.entity, str(exc), exc.column, exc.key)
    row = change.after if change.after is not None else change.before
    try:
        key = source_key(mapping, row) if row is not None else None
    except Exception:  # noqa: BLE001 - the reason is what matters
        key = None
    reason = (f"table {change.db}.{change.table}, entity {mapping.entity}, key {key}: the row cannot be mapped: "
              f"{type(exc).__name__}: {exc}")
    return DeadRow(change, mapping.entity, reason, getattr(exc, "column", None), key)


def _ops(before: MappedRow | None, after: MappedRow | None):
    """(op, before values, after values, key, id suffix) for one row change seen through one mapping."""
    live_before = before is not None and before.values is not None
    live_after = after is not None and after.values is not None
    if after is not None and before is not None and after.key != before.key:
        # The primary key changed: the old entity is gone and a new one exists.
        if live_before:
            yield "d", before.values, None, before.key, ":old-key"
        if live_after:
            yield "c", None, after.values, after.key, ""
        return
    if live_after:
        yield ("u" if live_before else "c"), (before.values if live_before else None), after.values, after.key, ""
    elif live_before or (before is not None and after is None):
        yield "d", before.values, None, before.key, ""
    elif after is not None and before is None and not after.filtered:
        # Inserted already (soft-)deleted: a tombstone keeps a late older write from resurrecting it.
        yield "d", None, None, after.key, ""


def build_truncate_events(txn: SourceTxn, mapper: Mapper, source: str, server_id: int) -> list[dict[str, Any]]:
    """The truncate events (op ``t``) of a DDL transaction: one per entity mapped from a table that the
    statement empties (TRUNCATE TABLE, DROP TABLE, CREATE OR REPLACE TABLE), none for any other DDL.

    Version: :func:`cdc.domain.envelope.truncate_version` of the statement's end, above every earlier row
    of the table and below every later one. ``key``, ``before``, ``after`` are null; ``source``
    carries the statement."""
    if not txn.ddl or txn.partial:
        return []
    mapped = mapper.tables()
    folded = {(db.lower(), table.lower()): (db, table) for db, table in mapped}
    file, end_pos = txn.end.file, txn.end.pos
    version = truncate_version(file, end_pos)
    emitted = now_ms()
    events: list[dict[str, Any]] = []
    entities_done: set[str] = set()
    for emptied in emptied_tables(txn.ddl, txn.ddl_db):
        if emptied.db is None:
            continue
        name = (emptied.db, emptied.table)
        if name not in mapped:  # a server with lower_case_table_names names it in another case than the binlog rows
            name = folded.get((emptied.db.lower(), emptied.table.lower()))
            if name is None:
                continue
        for mapping in mapper.for_table(*name):
            if mapping.entity in entities_done:  # DROP TABLE a, b of two tables mapped to one entity: once
                continue
            entities_done.add(mapping.entity)
            events.append({
                "v": 1,
                "id": make_id(source, file, end_pos, 0, mapping.entity) + ":truncate",
                "version": version,
                "op": "t",
                "entity": mapping.entity,
                "key": None,
                "before": None,
                "after": None,
                "source": {
                    "name": source, "server_id": server_id, "gtid": txn.gtid, "file": file, "pos": end_pos, "row": 0,
                    "db": name[0], "table": name[1], "ts_ms": txn.ts * 1000, "snapshot": False, "statement": txn.ddl,
                },
                "txn": None,
                "ts_ms": emitted,
            })
    last = len(events) - 1
    for i, event in enumerate(events):
        event["txn"] = {"id": txn.id, "index": i, "last": i == last}
    return events
