"""The one place that builds the service's parts from configuration. Nothing connects here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdc.mapping import Mapper, load_mappings
from cdc.mapping.projections import for_sink
from cdc.runtime.config import Settings
from cdc.sinks.base import Sink, SinkContext, get_sink_type
from cdc.state.store import StateStore, open_state_store


def build_mapper(settings: Settings) -> Mapper:
    salt = settings.mappings.pii_salt
    return Mapper(load_mappings(settings.mappings.dir, salt.get_secret_value() if salt else None))


def build_state(settings: Settings) -> StateStore:
    return open_state_store(settings.state.url)


def build_sink(name: str, settings: Settings, mapper: Mapper) -> Sink:
    config = settings.sinks[name]
    if "state_url" in type(config).model_fields and config.state_url is None:
        config = config.model_copy(update={"state_url": settings.state.url})  # sinks keeping offsets in the state store
    schemas = mapper.schemas()
    if "*" not in config.entities:
        schemas = {e: s for e, s in schemas.items() if e in config.entities}
    # The mappings' per-sink projections (which table, key, fields); the sink's own config wins.
    config, schemas = for_sink(config.type, config, schemas, mapper.mappings)
    return get_sink_type(config.type).factory(name, config, SinkContext(entities=schemas))


def build_publisher_factory(settings: Settings) -> Callable[[Callable[[Any], None]], Any]:
    from cdc.broker.publisher import RabbitPublisher

    broker = settings.broker

    def factory(on_confirmed: Callable[[Any], None]) -> RabbitPublisher:
        return RabbitPublisher(
            broker.url.get_secret_value(),
            broker.exchange,
            on_confirmed,
            max_in_flight=broker.max_in_flight,
            confirm_timeout_s=broker.confirm_timeout_s,
            connect_timeout_s=settings.source.connect_timeout_s,
        )

    return factory


def build_pipeline(settings: Settings, state: StateStore, mapper: Mapper):
    from cdc.reader.pipeline import ReaderPipeline

    return ReaderPipeline(settings, state, mapper, build_publisher_factory(settings))


def build_worker(name: str, settings: Settings, mapper: Mapper, stop):
    from cdc.runtime.metrics import WorkerMetrics
    from cdc.sinks.worker import SinkWorker

    sink = build_sink(name, settings, mapper)
    return SinkWorker(name, sink, settings.sinks[name], settings.broker.url.get_secret_value(), settings.broker.exchange, stop,
                      WorkerMetrics(), worker_index=settings.worker.index, workers=settings.worker.count)
