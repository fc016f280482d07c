"""Contract harness for the in-memory sink: the reference implementation, nothing to refuse."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.sinks.base import Sink, SinkContext, get_sink_type


class MemoryHarness:
    name = "memory"

    def __init__(self, context: SinkContext) -> None:
        self.context = context
        self.sink: Sink = self._build()

    def _build(self) -> Sink:
        sink_type = get_sink_type("memory")
        sink = sink_type.factory("contract-memory", sink_type.config_model(), self.context)
        sink.open()
        return sink

    def rows(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.sink.live_rows(entity)

    def reopen(self) -> None:
        # The "store" of the memory sink is its dicts: a new instance takes them over.
        old = self.sink
        old.close()
        self.sink = self._build()
        self.sink.rows, self.sink.offset, self.sink.truncated = old.rows, old.offset, old.truncated

    def bad_event(self, factory: Any) -> None:
        return None

    def cleanup(self) -> None:
        self.sink.close()


def make_harness(request: pytest.FixtureRequest) -> MemoryHarness:
    return MemoryHarness(request.getfixturevalue("contract_context"))
