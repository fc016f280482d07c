"""A binlog connection that hangs without closing is detected by the read timeout and recovered.

The reader talks to MariaDB through a local TCP proxy that is frozen mid-stream: bytes stop
flowing, nothing is closed. Rows written meanwhile must still arrive after recovery (at least once;
the sinks drop repeats by version).
"""

from __future__ import annotations

import random
import threading
import uuid

import pika
import pymysql
import pytest
from tcp_proxy import TcpProxy

from cdc.broker.topology import reader_dead_exchange
from cdc.mapping import EntityMapping, Mapper
from cdc.runtime.bootstrap import build_pipeline
from cdc.runtime.config import load_settings
from cdc.state.store import MemoryStateStore

DB = "cdc_faults_test"


@pytest.fixture
def scratch(source_server, amqp_url):
    uid = uuid.uuid4().hex[:8]
    table, exchange, queue = f"items_{uid}", f"cdc.faults.{uid}", f"cdc.faults.{uid}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        cur.execute(f"CREATE TABLE {DB}.{table} (id INT PRIMARY KEY, label VARCHAR(20))")
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(queue, exchange, "#")
    yield admin, table, exchange, queue
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {DB}.{table}")
    admin.close()
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(exchange)
        ch.exchange_delete(reader_dead_exchange(exchange))


def queued_ids(amqp_url, queue) -> set[int]:
    import orjson

    ids = set()
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        ch = conn.channel()
        while True:
            method, _, body = ch.basic_get(queue, auto_ack=False)
            if method is None:
                break
            ids.add(orjson.loads(body)["key"]["id"])
        ch.close()  # unacked: they stay in the queue for the next look
    return ids


def test_a_frozen_binlog_connection_times_out_and_the_reader_recovers(source_server, amqp_url, scratch, wait_until):
    admin, table, exchange, queue = scratch
    mapper = Mapper([EntityMapping.model_validate({
        "entity": "item", "source": {"db": DB, "table": table}, "key": ["id"],
        "fields": {"id": {"column": "id", "type": "integer"}, "label": {"column": "label", "type": "string"}}})])
    with TcpProxy(source_server["port"]) as proxy:
        settings = load_settings(None, source={"name": "faults", "port": proxy.port, "password": source_server["password"],
                                               "databases": [DB], "replica_server_id": random.randint(10_000, 2**31),
                                               "heartbeat_s": 0.5, "read_timeout_s": 2, "connect_timeout_s": 2},
                                 snapshot={"mode": "never"}, broker={"url": amqp_url, "exchange": exchange},
                                 metrics={"enabled": False})
        state = MemoryStateStore()
        pipeline = build_pipeline(settings, state, mapper)
        stop = threading.Event()
        thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(lambda: state.load_checkpoint("faults"), timeout=20, message="the first checkpoint")

            def insert(ids):
                with admin.cursor() as cur:
                    cur.executemany(f"INSERT INTO {DB}.{table} VALUES (%s, 'x')", [(i,) for i in ids])

            insert(range(1, 11))
            wait_until(lambda: queued_ids(amqp_url, queue) >= set(range(1, 11)), timeout=20, message="rows before the freeze")
            restarts_before = _restarts()
            proxy.freeze()
            insert(range(11, 21))  # written while the reader's connection hangs
            wait_until(lambda: _restarts() > restarts_before, timeout=20, message="the read timeout to notice the hang")
            proxy.thaw()
            wait_until(lambda: queued_ids(amqp_url, queue) >= set(range(1, 21)), timeout=40,
                       message="rows written during the hang, after recovery")
        finally:
            stop.set()
            pipeline.reader.interrupt()
            thread.join(20)


def _restarts() -> float:
    from cdc.runtime import metrics

    return sum(s.value for m in metrics.reader_restarts.collect() for s in m.samples if s.name.endswith("_total"))


def test_a_frozen_postgresql_connection_is_cut_and_the_batch_retried(pg_url, event_factory, unique_name):
    import time

    from sqlalchemy.engine import make_url

    from cdc.domain.entity_schema import EntitySchema, FieldType
    from cdc.domain.errors import TransientError
    from cdc.sinks.base import SinkContext
    from cdc.sinks.crm import CrmSink, CrmSinkConfig

    url = make_url(pg_url)
    with TcpProxy(url.port or 5432) as proxy:
        config = CrmSinkConfig(url=url.set(port=proxy.port).render_as_string(hide_password=False), schema_name=unique_name,
                               apply_timeout_s=2)
        schema = EntitySchema(name="customer", key=("id",), fields={"id": FieldType.INTEGER})
        sink = CrmSink("faults", config, SinkContext(entities={"customer": schema}))
        sink.open()
        try:
            sink.apply([event_factory("customer", 1, 10)])
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(TransientError):
                sink.apply([event_factory("customer", 2, 11)])
            assert time.monotonic() - started < 15, "the watchdog, not a TCP timeout, ended the wait"
            proxy.thaw()
            proxy.cut()  # drop the stale connections the freeze left behind
            assert sink.apply([event_factory("customer", 2, 11)]) == []
            assert set(sink.fetch_rows("customer")) == {"1", "2"}
        finally:
            proxy.thaw()
            sink.close()
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
