"""The workload through all three sinks at once, with Redis and the search server down for a while.

Each sink must end equal to the source (CRM row by row, cache key by key, search document by
document), and an outage of one sink's store must stall that sink only.
"""

from __future__ import annotations

import threading
import time

import pika
import pytest
from e2e_support import Daemon, close_sinks, converge
from search_server import search_url  # noqa: F401 - the session fixture
from tcp_proxy import TcpProxy

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.sinks.base import SinkContext
from cdc.sinks.cache import CacheSink, CacheSinkConfig
from cdc.sinks.search import SearchSink, SearchSinkConfig
from cdc.state.store import SqlStateStore


@pytest.mark.parametrize("batch_events", [1, 25], ids=["one-event-a-message", "batch-messages"])
def test_three_sinks_converge_and_an_outage_stalls_only_its_sink(world_factory, redis_url, search_url, wait_until,  # noqa: F811
                                                                 batch_events):
    import redis as redis_lib
    from sqlalchemy.engine import make_url

    redis_port = redis_lib.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    search_port = make_url(search_url.replace("http://", "postgresql://")).port
    with TcpProxy(redis_port) as redis_proxy, TcpProxy(search_port) as search_proxy:
        uid_hint = redis_proxy.port
        world = world_factory(
            "snapshot: {mode: never}",
            extra_sinks=f"""  cache_{uid_hint}: {{type: cache, url: "redis://127.0.0.1:{redis_proxy.port}/13", key_prefix: e2e{uid_hint}, batch_size: 500}}
  search_{uid_hint}: {{type: search, url: "http://127.0.0.1:{search_proxy.port}", index_prefix: e2e-{uid_hint}, batch_size: 500, max_retries: 2}}
""", broker=f"batch_events: {batch_events}")
        mapper = Mapper(load_mappings(world["mappings"]))
        state = SqlStateStore(world["state_url"])
        daemon = Daemon(world)
        daemon.start()
        cache = CacheSink(f"cache_{uid_hint}", CacheSinkConfig(url=f"redis://127.0.0.1:{redis_port}/13", key_prefix=f"e2e{uid_hint}"),
                          SinkContext(entities=mapper.schemas()))
        search = SearchSink(f"search_{uid_hint}", SearchSinkConfig(url=search_url, index_prefix=f"e2e-{uid_hint}",
                                                                   state_url=world["state_url"]),
                            SinkContext(entities=mapper.schemas()))
        try:
            wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{daemon.logs()}")
            seed(world["params"], members=120, rng_seed=21)
            workload = Workload(world["params"], rate=300, max_ops=20_000, rng_seed=22)  # stopped after the outages
            runner = threading.Thread(target=workload.run)
            runner.start()

            crm_offset = _crm_offset(world)
            cache.open()
            search.open()
            for proxy, sink, ops in ((redis_proxy, cache, 300), (search_proxy, search, 800)):
                wait_until(lambda: workload.result.total_ops > ops, timeout=60, message="workload progress")
                proxy.down()
                down_at = time.monotonic()
                wait_until(lambda: time.monotonic() - down_at > 1, timeout=5, message="a batch in flight to fail")
                stalled, before = _version(sink), crm_offset()
                # While one store is down, the CRM keeps applying and that sink stands still.
                wait_until(lambda: crm_offset() > before and time.monotonic() - down_at > 3, timeout=30,
                           message=f"the CRM to progress during the outage\n{daemon.logs()}")
                assert _version(sink) == stalled, f"{sink.name} applied events while its store was down"
                proxy.up()
            workload.stop()
            runner.join(120)
            assert not runner.is_alive()

            source = converge(world, mapper, wait_until, daemon.logs, {"cache": cache, "search": search})
            assert len(source["member"]) > 100
            assert daemon.terminate() == 0
        finally:
            daemon.stop_if_running()
            close_sinks(cache, search)
            with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
                ch = conn.channel()
                for name in (f"cache_{uid_hint}", f"search_{uid_hint}"):
                    ch.queue_delete(f"cdc.sink.{name}")
                    ch.queue_delete(f"cdc.sink.{name}.dlq")


def _version(sink) -> int:
    offset = sink.read_offset()
    return offset.version if offset else 0


def _crm_offset(world):
    import psycopg

    def read() -> int:
        with psycopg.connect(world["pg_url"]) as conn:
            row = conn.execute(f'SELECT version FROM "{world["schema"]}".cdc_sink_offsets WHERE sink = %s', (world["sink"],)).fetchone()
        return row[0] if row else 0

    return read
