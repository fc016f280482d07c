"""An in-memory sink: the reference implementation of the contract, for unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdc.domain.envelope import ChangeEvent, Op, now_ms
from cdc.domain.positions import SinkOffset
from cdc.sinks.base import Rejection, Sink, SinkConfig, offset_of, register_sink


class MemorySinkConfig(SinkConfig):
    type: str = "memory"


class MemorySink(Sink):
    def __init__(self, name: str, config: MemorySinkConfig | None = None) -> None:
        self.name = name
        self.config = config or MemorySinkConfig()
        # (entity, key string) -> (version, row or None for a tombstone)
        self.rows: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
        self.offset: SinkOffset | None = None
        self.truncated: dict[str, int] = {}  # entity -> version of the newest truncate applied

    def open(self) -> None:
        pass

    def apply(self, events: Sequence[ChangeEvent]) -> list[Rejection]:
        for event in events:
            if event.op is Op.TRUNCATE:
                if self.truncated.get(event.entity, 0) < event.version:
                    self.truncated[event.entity] = event.version
                    self.rows = {s: r for s, r in self.rows.items() if s[0] != event.entity or r[0] > event.version}
                continue
            if event.version < self.truncated.get(event.entity, 0):
                continue
            slot = (event.entity, event.key_str)
            stored = self.rows.get(slot)
            if stored is not None and stored[0] >= event.version:
                continue
            self.rows[slot] = (event.version, None if event.op is Op.DELETE else dict(event.after or {}))
        new = offset_of(events, now_ms())
        if new is not None and (self.offset is None or new.version > self.offset.version):
            self.offset = new
        return []

    def read_offset(self) -> SinkOffset | None:
        return self.offset

    def reset(self) -> None:
        self.rows.clear()
        self.truncated.clear()
        self.offset = None

    def live_rows(self, entity: str) -> dict[str, dict[str, Any]]:
        return {k: row for (e, k), (_, row) in self.rows.items() if e == entity and row is not None}


register_sink("memory", MemorySinkConfig, lambda name, cfg, _ctx: MemorySink(name, cfg))
