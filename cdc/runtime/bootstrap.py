"""The composition root: the one place that builds the service's parts from configuration (the
daemon, the CLI commands and the admin API take them from here; unit tests pass fakes to the same
constructors, tests/unit/fakes.py). Nothing connects here. The library patches are installed apart,
at start-up (cdc.runtime.patches.install)."""

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


def build_binlog_reader(settings: Settings, mapper: Mapper | None = None, warn_grants: bool = False):
    """The binlog reader of the source; of the mapped tables where ``mapper`` is given (else it reads only
    the server's state: positions, binlog files, grants)."""
    from cdc.source.binlog_stream import BinlogReader

    return BinlogReader(settings.source, mapper.tables() if mapper is not None else None, warn_grants=warn_grants)


def build_snapshotter(settings: Settings, state: StateStore, mapper: Mapper, reader=None):
    """The snapshotter, over ``reader`` (a new binlog reader of the mapped tables by default)."""
    from cdc.snapshot.snapshotter import Snapshotter

    return Snapshotter(settings, state, mapper, reader if reader is not None else build_binlog_reader(settings, mapper))


def build_topology_declarer(settings: Settings) -> Callable[[], None]:
    """What the reader declares on the broker before each run's first publish (cdc.broker.topology)."""
    from cdc.broker.topology import declare_reader_topology
    from cdc.source.schema_history import declare_schema_queue

    broker = settings.broker

    def declare() -> None:
        sinks = [(name, sink.entities, sink.delivery_limit, sink.shards) for name, sink in settings.sinks.items()]
        declare_reader_topology(broker.url.get_secret_value(), broker.exchange, broker.event_log_max_age, sinks,
                                also=(declare_schema_queue,))

    return declare


def build_pipeline(settings: Settings, state: StateStore, mapper: Mapper, *,
                   publisher_factory: Callable[[Callable[[Any], None]], Any] | None = None,
                   checkpoint_interval_s: float = 0.2):
    """The reader pipeline and every part of it: the binlog reader (its grants checked with warnings), the
    snapshotter over it, the schema history, the broker topology, the RabbitMQ publisher."""
    from cdc.reader.pipeline import ReaderPipeline
    from cdc.source.schema_history import SchemaHistory

    reader = build_binlog_reader(settings, mapper, warn_grants=True)
    return ReaderPipeline(
        settings, state, mapper,
        publisher_factory if publisher_factory is not None else build_publisher_factory(settings),
        source=reader,
        snapshots=build_snapshotter(settings, state, mapper, reader),
        schema_history=SchemaHistory(state),
        declare_topology=build_topology_declarer(settings),
        checkpoint_interval_s=checkpoint_interval_s,
    )


def build_worker(name: str, settings: Settings, mapper: Mapper, stop):
    from cdc.runtime.metrics import WorkerMetrics
    from cdc.sinks.worker import SinkWorker

    sink = build_sink(name, settings, mapper)
    return SinkWorker(name, sink, settings.sinks[name], settings.broker.url.get_secret_value(), settings.broker.exchange, stop,
                      WorkerMetrics(), worker_index=settings.worker.index, workers=settings.worker.count)
