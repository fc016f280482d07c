"""SIGKILL of the reader and of the sink workers, ten times each, under a continuous workload.

Reader and sinks run as separate processes (`cdc run --role reader`, `--role sinks`), killed at
moments chosen by progress, never by sleeping. At the end the CRM and the cache equal the source,
and every CRM row carries the binlog's last version of its key: zero rows lost, zero stale writes.
"""

from __future__ import annotations

import random
import threading

import pika
from e2e_support import Daemon, binlog_last_versions, converge, crm_versions

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.sinks.base import SinkContext
from cdc.sinks.cache import CacheSink, CacheSinkConfig
from cdc.state.store import SqlStateStore

KILLS = 10


def test_ten_sigkills_of_reader_and_of_sinks_lose_nothing(world_factory, redis_url, wait_until):
    prefix = f"kill{random.randint(0, 10**9)}"
    world = world_factory("snapshot: {mode: never}", extra_sinks=f"  cache_{prefix}: {{type: cache, url: \"{redis_url}\", "
                                                             f"key_prefix: {prefix}, batch_size: 200}}\n")
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    reader, sinks = Daemon(world, ["reader"]), Daemon(world, ["sinks"])
    cache = CacheSink(f"cache_{prefix}", CacheSinkConfig(url=redis_url, key_prefix=prefix), SinkContext(entities=mapper.schemas()))
    reader.start()
    sinks.start()
    try:
        start = wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{reader.logs()}")
        seed(world["params"], members=100, rng_seed=31)
        workload = Workload(world["params"], rate=250, max_ops=50_000, rng_seed=32)  # stopped after the kills
        runner = threading.Thread(target=workload.run)
        runner.start()
        crm_version = _crm_version(world)
        rng = random.Random(33)
        for i in range(KILLS):
            before = state.load_checkpoint("e2e")
            wait_until(lambda: state.load_checkpoint("e2e") != before, timeout=60, message=f"reader progress\n{reader.logs()}")
            reader.kill()
            reader.start()
            applied = crm_version()
            wait_until(lambda: crm_version() > applied, timeout=60, message=f"sink progress (kill {i})\n{sinks.logs()}")
            if rng.random() < 0.5:
                wait_until(lambda: crm_version() > applied + 1, timeout=60, message="a little more sink progress")
            sinks.kill()
            sinks.start()
        workload.stop()
        runner.join(60)
        assert workload.result.errors == 0

        cache.open()
        converge(world, mapper, wait_until, lambda: reader.logs() + sinks.logs(), {"cache": cache})
        last = binlog_last_versions(world, mapper, start)
        assert crm_versions(world) == last, "a CRM row does not carry its key's last binlog version"
        assert reader.starts == sinks.starts == KILLS + 1
        assert reader.terminate() == 0 and sinks.terminate() == 0
    finally:
        reader.stop_if_running()
        sinks.stop_if_running()
        try:
            cache.reset()
            cache.close()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
        with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
            ch = conn.channel()
            ch.queue_delete(f"cdc.sink.cache_{prefix}")
            ch.queue_delete(f"cdc.sink.cache_{prefix}.dlq")


def _crm_version(world):
    import psycopg

    def read() -> int:
        with psycopg.connect(world["pg_url"]) as conn:
            try:
                row = conn.execute(f'SELECT version FROM "{world["schema"]}".cdc_sink_offsets WHERE sink = %s',
                                   (world["sink"],)).fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
        return row[0] if row else 0

    return read
