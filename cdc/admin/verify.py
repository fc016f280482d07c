"""Compare an entity in the source with a sink: counts, per-chunk checksums, then the differing keys.

The source table is read by primary key in chunks and mapped exactly as the reader maps it; the
sink's live rows come from its ``fetch_rows(entity)``. Only the fields a sink keeps are compared
(a cache or an index may project a subset). Keys are grouped in chunks of ``chunk_size`` in source
key order; a chunk whose checksum differs is then compared key by key.

``repair`` re-emits exactly the differing rows into that sink, as snapshot reads (``op: r``, or a
delete for a row the source does not have) at the version of the binlog head read *before* the
source was read: above every change the read saw, below every later change, which still wins.

A sink that is still catching up shows its in-flight rows as differences: run it when the sink has
caught up, or run it twice (real differences stay).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pymysql

from cdc.domain.envelope import ChangeEvent, key_string, make_version, now_ms
from cdc.domain.errors import ConfigError
from cdc.domain.positions import Checkpoint
from cdc.mapping import Mapper


@dataclass
class VerifyReport:
    entity: str
    sink: str
    source_rows: int = 0
    sink_rows: int = 0
    chunks: int = 0
    differing_chunks: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the source, not in the sink
    extra: list[str] = field(default_factory=list)  # in the sink, not live in the source
    different: list[str] = field(default_factory=list)  # in both, with other values
    repaired: int = 0
    repair_rejected: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.different)

    def as_dict(self, limit: int = 100) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("entity", "sink", "source_rows", "sink_rows", "chunks", "differing_chunks",
                                             "repaired", "repair_rejected")}
        out["differences"] = self.differences
        out.update({k: getattr(self, k)[:limit] for k in ("missing", "extra", "different")})
        return out


def source_rows(reader, mapper: Mapper, entity: str, batch: int = 5000) -> dict[str, dict[str, Any]]:
    """Live rows of ``entity`` in the source, mapped, keyed by key string (read by primary key in chunks)."""
    from cdc.snapshot.chunks import quote as _q
    from cdc.snapshot.snapshotter import key_columns

    mapping = _mapping(mapper, entity)
    db, table = mapping.source.db, mapping.source.table
    conn = pymysql.connect(**reader.connection_settings(), autocommit=True, init_command="SET SESSION time_zone='+00:00'")
    rows: dict[str, dict[str, Any]] = {}
    with conn:
        columns = key_columns(conn, db, table)
        last: tuple | None = None
        while True:
            where = f" WHERE ({', '.join(map(_q, columns))}) > ({', '.join(['%s'] * len(columns))})" if last else ""
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(f"SELECT * FROM {_q(db)}.{_q(table)}{where} ORDER BY {', '.join(map(_q, columns))} LIMIT {batch}",
                            list(last or ()))
                chunk = cur.fetchall()
            for row in chunk:
                mapped = Mapper.map_row(mapping, row)
                if mapped is not None and mapped.values is not None:
                    rows[key_string(mapped.key)] = mapped.values
            if len(chunk) < batch:
                return rows
            last = tuple(chunk[-1][c] for c in columns)


def compare(entity: str, sink: str, source: dict[str, dict], target: dict[str, dict], chunk_size: int = 1000) -> VerifyReport:
    report = VerifyReport(entity, sink, len(source), len(target))
    keys = sorted(source.keys() | target.keys(), key=_order)
    for index in range(0, len(keys), chunk_size):
        chunk = keys[index:index + chunk_size]
        report.chunks += 1
        if _checksum(chunk, source, target, "source") == _checksum(chunk, source, target, "sink"):
            continue
        report.differing_chunks.append(report.chunks - 1)
        for key in chunk:
            if key not in target:
                report.missing.append(key)
            elif key not in source:
                report.extra.append(key)
            elif _projected(source[key], target[key]) != _projected(target[key], target[key]):
                report.different.append(key)
    return report


def repair_events(report: VerifyReport, mapper: Mapper, source: dict[str, dict], target: dict[str, dict],
                  head: Checkpoint, source_name: str, server_id: int) -> list[ChangeEvent]:
    """One event per differing key, at the version of ``head`` (read before the source was)."""
    from cdc.domain.envelope import SourceInfo

    mapping = _mapping(mapper, report.entity)
    version = make_version(head.file, head.pos, 0)
    stamp = now_ms()
    info = SourceInfo(name=source_name, server_id=server_id, gtid=head.gtid, file=head.file, pos=head.pos, row=0,
                      db=mapping.source.db, table=mapping.source.table, ts_ms=stamp, snapshot=True)
    events = []
    for key in report.missing + report.different + report.extra:
        live = source.get(key)
        row = live if live is not None else target[key]
        key_values = {k: row.get(k) for k in mapping.key}
        events.append(ChangeEvent(
            id=f"{source_name}:{head.file}:{head.pos}:verify:{report.entity}:{key}", version=version,
            op="r" if live is not None else "d", entity=report.entity, key=key_values,
            before=None if live is not None else row, after=live, source=info, ts_ms=stamp))
    return events


def _mapping(mapper: Mapper, entity: str):
    for mapping in mapper.mappings:
        if mapping.entity == entity:
            return mapping
    raise ConfigError(f"unknown entity {entity!r}; mapped entities: {', '.join(sorted(m.entity for m in mapper.mappings))}")


def _projected(row: dict, shape: dict) -> bytes:
    """``row`` restricted to the fields the sink keeps (the keys of ``shape``), canonically encoded."""
    projected = {k: row.get(k) for k in sorted(shape)}
    try:
        return orjson.dumps(projected, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, inside a JSON value
        return orjson.dumps(_wide_ints_as_floats(projected), option=orjson.OPT_SORT_KEYS)


_INT_RANGE = (-(2 ** 63), 2 ** 64 - 1)  # what orjson encodes


def _wide_ints_as_floats(value: Any) -> Any:
    """JSON numbers compared by value where orjson cannot encode them: PostgreSQL's jsonb stores numbers as
    ``numeric`` and gives ``1e100`` back as a 101-digit integer, the same number as the source's float."""
    if isinstance(value, dict):
        return {k: _wide_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wide_ints_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        try:
            return float(value)
        except OverflowError:
            return str(value)
    return value


def _checksum(chunk: list[str], source: dict, target: dict, side: str) -> str:
    digest = hashlib.sha1()
    for key in chunk:
        shape = target.get(key) or source.get(key) or {}
        row = (source if side == "source" else target).get(key)
        digest.update(key.encode() + b"\0" + (_projected(row, shape) if row is not None else b"-") + b"\n")
    return digest.hexdigest()


def _order(key: str) -> tuple:
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)
