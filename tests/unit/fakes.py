"""Fakes of the reader pipeline's parts, for unit tests without services.

- :class:`FakeBinlogSource`: the binlog stream (cdc.reader.pipeline.BinlogSource), yielding scripted
  :class:`SourceTxn` and :class:`Tick` objects;
- :class:`FakeSnapshots`: a snapshotter with nothing to snapshot;
- :class:`MemoryPublishers`: a publisher factory making cdc.broker.publisher.MemoryPublisher, which confirms
  at once (``auto_confirm``) or when the test says so: ``ack(tag)`` (out of order too), ``ack(tag, True)``,
  ``confirm_next(n)`` (part of a transaction, or several), ``nack(tag)``, ``fail(exc)``;
- :class:`RecordingStateStore`: cdc.state.store.MemoryStateStore remembering every checkpoint saved;
- :func:`make_pipeline`: a ReaderPipeline through its real constructor, from these parts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cdc.broker.publisher import MemoryPublisher
from cdc.domain.positions import Checkpoint
from cdc.mapping import EntityMapping, Mapper
from cdc.reader.pipeline import ReaderPipeline
from cdc.runtime.config import Settings, load_settings
from cdc.source.binlog_stream import RowChange, ServerInfo, SourceTxn, Tick
from cdc.source.schema_history import SchemaHistory
from cdc.state.store import MemoryStateStore

DB, TABLE, UNMAPPED = "shop", "items", "audit_trail"
SOURCE = "s"
HEAD = Checkpoint(file="bin.000001", pos=4)
SERVER = ServerInfo("10.11.0-MariaDB-fake", "mariadb", 1, True)

Script = Iterable[SourceTxn | Tick] | Callable[[Checkpoint, threading.Event], Iterator[SourceTxn | Tick]]


class FakeBinlogSource:
    """Yields ``script`` (an iterable, or a callable given the start and the stop event) from each
    ``transactions()``; remembers where each stream was opened."""

    def __init__(self, script: Script = (), *, head: Checkpoint = HEAD,
                 server: ServerInfo = SERVER) -> None:
        self.script = script
        self.head = head
        self.server = server
        self.opened: list[Checkpoint] = []
        self.interrupted = 0

    def preflight(self) -> ServerInfo:
        return self.server

    def start_position(self, checkpoint: Checkpoint | None, published: Checkpoint | None = None) -> Checkpoint:
        return checkpoint if checkpoint is not None else self.head

    def head_position(self) -> Checkpoint:
        return self.head

    def transactions(self, start: Checkpoint, stop: threading.Event, ticks: bool = False,
                     published: Checkpoint | None = None) -> Iterator[SourceTxn | Tick]:
        self.opened.append(start)
        items = self.script(start, stop) if callable(self.script) else iter(self.script)
        for item in items:
            if stop.is_set():
                return
            if isinstance(item, Tick) and not ticks:
                continue
            yield item

    def interrupt(self) -> None:
        self.interrupted += 1


class FakeSnapshots:
    """No table to snapshot; counts what the pipeline tells it."""

    def __init__(self) -> None:
        self.server_id = 0
        self.ticks = self.txns = self.closed = 0

    def plan_all(self) -> list:
        return []

    def pump(self, position: Checkpoint, publisher: Any) -> None:
        pass

    def on_tick(self, position: Checkpoint, publisher: Any, tick: Tick | None = None) -> None:
        self.ticks += 1

    def on_txn(self, txn: SourceTxn, position: Checkpoint, publisher: Any) -> None:
        self.txns += 1

    def on_confirmed(self, token: Any) -> None:
        pass

    def persist(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


class MemoryPublishers:
    """A publisher factory: one MemoryPublisher per run of the pipeline, kept in ``made``."""

    def __init__(self, auto_confirm: bool = True, **kwargs: Any) -> None:
        self.auto_confirm = auto_confirm
        self.kwargs = kwargs
        self.made: list[MemoryPublisher] = []

    def __call__(self, on_confirmed: Callable[[Any], None]) -> MemoryPublisher:
        publisher = MemoryPublisher(on_confirmed, auto_confirm=self.auto_confirm, **self.kwargs)
        self.made.append(publisher)
        return publisher

    @property
    def current(self) -> MemoryPublisher:
        return self.made[-1]


class RecordingStateStore(MemoryStateStore):
    """Every checkpoint saved, in order (``saved``); ``on_save(checkpoint)`` runs as it is saved."""

    def __init__(self, on_save: Callable[[Checkpoint], None] | None = None) -> None:
        super().__init__()
        self.saved: list[Checkpoint] = []
        self.on_save = on_save

    def save_checkpoint(self, source: str, checkpoint: Checkpoint) -> None:
        if self.on_save is not None:
            self.on_save(checkpoint)
        self.saved.append(checkpoint)
        super().save_checkpoint(source, checkpoint)


def mapping() -> EntityMapping:
    return EntityMapping.model_validate({
        "entity": "item", "source": {"db": DB, "table": TABLE}, "key": ["id"],
        "fields": {"id": {"column": "id", "type": "integer"}, "label": {"column": "label", "type": "string"}}})


def settings(**broker: Any) -> Settings:
    return load_settings(None, source={"name": SOURCE, "databases": [DB]}, snapshot={"mode": "never"},
                         broker={"confirm_timeout_s": 0.05, **broker}, metrics={"enabled": False})


def txn(seq: int, rows: int, table: str = TABLE, file: str = "bin.000001") -> SourceTxn:
    """Transaction ``seq`` (1, 2, ...): ``rows`` inserts into ``table``, ending at a position that grows with it."""
    pos = 1000 * seq
    changes = [RowChange(DB, table, "c", None, {"id": seq * 1000 + i, "label": f"r{i}"}, file, pos + 10, i, 1_700_000_000)
               for i in range(rows)]
    return SourceTxn(f"0-1-{seq}", f"0-1-{seq}", changes, Checkpoint(file=file, pos=pos + 500, gtid=f"0-1-{seq}"), 1_700_000_000)


def make_pipeline(*, source: FakeBinlogSource | None = None, state: MemoryStateStore | None = None,
                  publishers: MemoryPublishers | None = None, snapshots: FakeSnapshots | None = None,
                  config: Settings | None = None, mapper: Mapper | None = None, **kwargs: Any) -> ReaderPipeline:
    """A ReaderPipeline through its constructor, every part a fake (or the one given); nothing to declare."""
    state = state if state is not None else MemoryStateStore()
    return ReaderPipeline(
        config if config is not None else settings(), state, mapper if mapper is not None else Mapper([mapping()]),
        publishers if publishers is not None else MemoryPublishers(),
        source=source if source is not None else FakeBinlogSource(),
        snapshots=snapshots if snapshots is not None else FakeSnapshots(),
        schema_history=SchemaHistory(state),
        declare_topology=lambda: None,
        **kwargs,
    )
