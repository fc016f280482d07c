"""The sink port.

A sink applies batches of change events to one target. Its contract:

* ``open()`` connects and creates what the sink needs (tables, indices, scripts). No I/O happens
  at construction.
* ``apply(events)`` applies a batch **idempotently**: for every key it keeps the highest
  ``version`` it has seen and ignores older ones, so redelivery, replay and reordering are
  harmless, and a delete leaves a versioned tombstone so a late, older insert cannot resurrect
  the row. Within a batch the same key may appear several times. A truncate (``op`` ``t``, key
  null) at version V removes every row of its entity with a version below V and leaves a marker
  (a per-entity floor that never expires): a write below V arriving later, however late, is
  ignored; a write above V applies. Truncates and row writes commute, so a sink may apply a
  batch's truncates first (:func:`split_truncates`). The sink records its offset
  (the newest event of the batch, see :class:`cdc.domain.positions.SinkOffset`) atomically with the
  writes where the target allows, otherwise right after they succeed.
  It returns the events the target refused for good (a :class:`Rejection` each, with the
  reason); the caller dead-letters those and acknowledges the rest. It raises
  :class:`cdc.domain.errors.TransientError` when the whole batch should be retried later (target down,
  timeout, throttled) and :class:`cdc.domain.errors.TerminalError` when retrying cannot help.
* ``read_offset()`` returns the stored offset, or ``None``.
* ``close()`` releases connections; safe to call twice.
* ``reset()`` (optional) deletes everything the sink wrote, its offset included.

A sink module registers itself with :func:`register_sink` (name, config model, factory); the
configuration chooses sinks by that name. Drivers are imported inside the module that needs them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module

from pydantic import BaseModel, ConfigDict, Field

from cdc.domain.entity_schema import EntitySchema
from cdc.domain.envelope import ChangeEvent, Op
from cdc.domain.errors import ConfigError
from cdc.domain.positions import SinkOffset


class SinkConfig(BaseModel):
    """Settings every sink shares; a sink's own config model extends this one."""

    model_config = ConfigDict(extra="forbid")

    type: str
    entities: list[str] = Field(default_factory=lambda: ["*"], description="Entities to consume ('*' for all).")
    batch_size: int = Field(1000, ge=1, le=50_000)
    batch_wait_ms: int = Field(50, ge=0, le=60_000, description="Longest wait to fill a batch.")
    batch_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="A batch stops growing at this many message bytes (at least one message): "
        "large rows must not make one statement or request of gigabytes (PostgreSQL refuses values over 1 GB).",
    )
    prefetch: int = Field(5000, ge=1, le=65_535)
    delivery_limit: int = Field(10, ge=1, description="Deliveries of one message (crashes included) before it is dead-lettered.")
    shards: int = Field(
        1, ge=1, le=256, description="Queues the sink's events are spread over by key (consistent hash); several "
        "workers share them, one active consumer per queue, so per-key order holds.",
    )
    max_retries: int = Field(8, ge=0, description="Retries of a batch on transient errors before they are logged as errors (retrying goes on).")


@dataclass(frozen=True)
class Rejection:
    event: ChangeEvent
    reason: str


class Sink(abc.ABC):
    name: str

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def apply(self, events: Sequence[ChangeEvent]) -> list[Rejection]: ...

    @abc.abstractmethod
    def read_offset(self) -> SinkOffset | None: ...

    def close(self) -> None:
        pass

    def reset(self) -> None:
        """Delete everything this sink wrote, its offset included (demo resets, rebuilds from empty)."""
        raise NotImplementedError(f"sink {self.name!r} cannot be reset")


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need besides its own config: the canonical schemas of the entities."""

    entities: dict[str, EntitySchema] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkType:
    name: str
    config_model: type[SinkConfig]
    factory: Callable[[str, SinkConfig, SinkContext], Sink]


_REGISTRY: dict[str, SinkType] = {}
# Built-in sink modules, imported on first use so that no driver loads before it is needed.
_BUILTIN = {"crm": "cdc.sinks.crm", "memory": "cdc.sinks.memory", "cache": "cdc.sinks.cache", "search": "cdc.sinks.search",
            "webhook": "cdc.sinks.webhook"}


def register_sink(name: str, config_model: type[SinkConfig], factory: Callable[[str, SinkConfig, SinkContext], Sink]) -> None:
    _REGISTRY[name] = SinkType(name, config_model, factory)


def get_sink_type(name: str) -> SinkType:
    if name not in _REGISTRY and name in _BUILTIN:
        import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(set(_REGISTRY) | set(_BUILTIN)))
        raise ConfigError(f"unknown sink type {name!r}; known types: {known}") from None


def sink_types() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def split_truncates(events: Sequence[ChangeEvent]) -> tuple[dict[str, ChangeEvent], list[ChangeEvent]]:
    """(the newest truncate of each entity in the batch, the row events). Applying the truncates first
    and then the rows gives the same result as any order: a row below its entity's truncate is
    removed or ignored either way, a row above it is kept either way."""
    truncates: dict[str, ChangeEvent] = {}
    rows: list[ChangeEvent] = []
    for event in events:
        if event.op is Op.TRUNCATE:
            kept = truncates.get(event.entity)
            if kept is None or kept.version < event.version:
                truncates[event.entity] = event
        else:
            rows.append(event)
    return truncates, rows


def newest_per_key(events: Sequence[ChangeEvent]) -> list[ChangeEvent]:
    """The newest row event of each (entity, key) in a batch: a batch must not touch one key twice.
    Truncates are left out (see :func:`split_truncates`)."""
    newest: dict[tuple[str, str], ChangeEvent] = {}
    for event in events:
        if event.op is Op.TRUNCATE:
            continue
        slot = (event.entity, event.key_str)
        kept = newest.get(slot)
        if kept is None or kept.version < event.version:
            newest[slot] = event
    return list(newest.values())


def offset_of(events: Sequence[ChangeEvent], applied_ms: int) -> SinkOffset | None:
    """The offset a batch moves a sink to: its newest event by version."""
    if not events:
        return None
    newest = max(events, key=lambda e: e.version)
    s = newest.source
    return SinkOffset(version=newest.version, file=s.file, pos=s.pos, ts_ms=s.ts_ms, applied_ms=applied_ms)
