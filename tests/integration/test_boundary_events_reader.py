"""Transaction boundaries and heartbeats through the real reader pipeline (issue 23.3): the binlog
MariaDB, the real RabbitMQ publisher with confirms, a queue of this test's own bound to the new
routing keys, and the typed consumer library.

A multi-table transaction arrives as BEGIN, its change events, END (with the counts per entity and
table), in order; heartbeats keep arriving while the source is idle; with the settings at their
defaults nothing new is published."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pika
import pymysql
import pytest

from cdc.consumer import Consumer, HeartbeatEvent, Subscription, TransactionEvent
from cdc.consumer.subscription import delete
from cdc.domain.boundary import HEARTBEAT_KEY, TXN_BEGIN_KEY, TXN_END_KEY, decode_boundary, is_boundary
from cdc.domain.envelope import decode_many
from cdc.mapping import Mapper
from cdc.mapping.contracts import EventModels
from cdc.mapping.model import EntityMapping
from cdc.runtime.bootstrap import build_pipeline
from cdc.runtime.config import load_settings
from cdc.state.store import MemoryStateStore

pytestmark = pytest.mark.integration


@pytest.fixture
def db(source_server):
    name = f"cdc_txn_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        for table in ("members", "orders"):
            cur.execute(f"CREATE TABLE {name}.{table} (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
    yield name, conn
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {name}")
    conn.close()


def _mappings(db: str) -> list[EntityMapping]:
    return [EntityMapping.model_validate({
        "entity": entity, "source": {"db": db, "table": table}, "key": ["id"],
        "fields": {"id": {"column": "id", "type": "integer"}, "n": {"column": "n", "type": "integer"}}})
        for entity, table in (("txn_member", "members"), ("txn_order", "orders"))]


@pytest.fixture
def exchange(amqp_url):
    name = f"cdc.txntest.{uuid.uuid4().hex[:8]}"
    yield name
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.queue_delete(queue=f"{name}.log")
        channel.exchange_delete(exchange=name)
        channel.exchange_delete(exchange=f"{name}.dead")


class Watcher:
    """A queue of this test's own on the exchange, bound to everything (change events and the new keys)."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.conn.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare(queue="", exclusive=True).method.queue
        self.channel.queue_bind(queue=self.queue, exchange=exchange, routing_key="#")
        self.got: list[tuple[str, bytes]] = []

    def drain(self) -> list[tuple[str, bytes]]:
        while True:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.got
            self.got.append((method.routing_key, body))

    def close(self) -> None:
        self.conn.close()


def _start(settings, db: str):
    pipeline = build_pipeline(settings, MemoryStateStore(), Mapper(_mappings(db)))
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    thread.start()
    return pipeline, stop, thread


def _settings(source_server, amqp_url, db, exchange, **events):
    return load_settings(None, source={
        "host": source_server["host"], "port": source_server["port"], "user": source_server["user"],
        "password": source_server["password"], "name": f"txn-{db[-8:]}", "databases": [db], "heartbeat_s": 0.5,
        "read_timeout_s": 10, "replica_server_id": random.randint(10_000, 2**31)},
        broker={"url": amqp_url, "exchange": exchange}, snapshot={"mode": "never"}, metrics={"enabled": False},
        events=events)


def _write(conn, db: str, statements: list[str]) -> None:
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        for s in statements:
            cur.execute(s.format(db=db))
        cur.execute("COMMIT")


TXN = ["INSERT INTO {db}.members VALUES (1, 10), (2, 20)", "INSERT INTO {db}.orders VALUES (7, 1)",
       "UPDATE {db}.members SET n = 11 WHERE id = 1", "DELETE FROM {db}.orders WHERE id = 7",
       "INSERT INTO {db}.orders VALUES (8, 2), (9, 3)"]


def test_begin_changes_end_in_order_and_heartbeats_while_idle(source_server, amqp_url, db, exchange, wait_until):
    name, conn = db
    settings = _settings(source_server, amqp_url, name, exchange, transactions=True,
                         heartbeats={"enabled": True, "interval_s": 1.0})
    watcher = Watcher(amqp_url, exchange)
    seen: list = []
    sub = Subscription(name=f"txntest-{uuid.uuid4().hex[:8]}", exchange=exchange, entities=["txn_member", "txn_order"],
                       transactions=True, heartbeats=True)
    consumer = Consumer(amqp_url, sub, seen.append, models=EventModels(_mappings(name)))
    consumer_thread = threading.Thread(target=consumer.run, daemon=True)
    consumer_thread.start()
    pipeline, stop, thread = _start(settings, name)
    try:
        wait_until(lambda: getattr(pipeline, "publisher", None) is not None and pipeline.read_position is not None
                   or any(k == HEARTBEAT_KEY for k, _ in watcher.drain()), timeout=20, message="the reader streaming")
        _write(conn, name, TXN)
        _write(conn, name, ["INSERT INTO {db}.members VALUES (3, 30)"])
        wait_until(lambda: sum(k == TXN_END_KEY for k, _ in watcher.drain()) >= 2, timeout=20, message="two ENDs")
        idle_from = len(watcher.got)
        time.sleep(3.5)  # the source is idle: heartbeats keep coming
        got = watcher.drain()
        idle = [k for k, _ in got[idle_from:]]
        assert idle and set(idle) == {HEARTBEAT_KEY} and len(idle) >= 2, idle

        framed = [(k, b) for k, b in got if k != HEARTBEAT_KEY]
        keys = [k for k, _ in framed]
        assert keys == [TXN_BEGIN_KEY, "txn_member.c", "txn_member.c", "txn_order.c", "txn_member.u", "txn_order.d",
                        "txn_order.c", "txn_order.c", TXN_END_KEY, TXN_BEGIN_KEY, "txn_member.c", TXN_END_KEY], keys
        begin, end = decode_boundary(framed[0][1]), decode_boundary(framed[8][1])
        changes = [e for _, b in framed[1:8] for e in decode_many(b)]
        assert isinstance(begin, TransactionEvent) and isinstance(end, TransactionEvent)
        assert begin.status == "BEGIN" and end.status == "END" and begin.id == end.id and begin.gtid
        assert all(e.txn.id == end.id for e in changes) and [e.txn.index for e in changes] == list(range(7))
        assert [e.txn.entity_index for e in changes] == [0, 1, 0, 2, 1, 2, 3]
        assert end.event_count == 7
        assert {(c.entity, c.table): c.event_count for c in end.data_collections} == {("txn_member", "members"): 3,
                                                                                     ("txn_order", "orders"): 4}
        assert end.position.gtid and (end.position.file, end.position.pos) >= (begin.position.file, begin.position.pos)
        second = decode_boundary(framed[11][1])
        assert second.event_count == 1 and second.id != end.id

        beats = [decode_boundary(b) for k, b in got if k == HEARTBEAT_KEY]
        assert all(isinstance(h, HeartbeatEvent) and h.source == settings.source.name for h in beats)
        assert beats[-1].position.gtid and beats[-1].source_ts_ms and beats[-1].ts_ms > beats[0].ts_ms
        # The checkpoint moves to confirmed transaction boundaries: at least the last END's position (the shared
        # server's other transactions, of unmapped databases, take it further).
        end_at = (second.position.file, second.position.pos)
        wait_until(lambda: pipeline.confirmed is not None and (pipeline.confirmed.file, pipeline.confirmed.pos) >= end_at,
                   timeout=10, message="the checkpoint at the last END's position")

        # The consumer library got the same, typed, in order.
        wait_until(lambda: sum(isinstance(e, TransactionEvent) for e in seen) >= 4, timeout=15, message="typed boundaries")
        framed_seen = [e for e in seen if not isinstance(e, HeartbeatEvent)]
        kinds = [type(e).__name__ for e in framed_seen]
        assert kinds[:10] == ["TransactionEvent", "TxnMemberEvent", "TxnMemberEvent", "TxnOrderEvent", "TxnMemberEvent",
                              "TxnOrderEvent", "TxnOrderEvent", "TxnOrderEvent", "TransactionEvent", "TransactionEvent"]
        assert any(isinstance(e, HeartbeatEvent) for e in seen)
        assert framed_seen[1].after.n == 10 and framed_seen[0].id == end.id and framed_seen[8].event_count == 7
    finally:
        stop.set()
        pipeline.reader.interrupt()
        thread.join(15)
        consumer.stop()
        consumer_thread.join(10)
        watcher.close()
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as c:
            delete(c.channel(), sub)


def test_nothing_new_with_the_defaults(source_server, amqp_url, db, exchange, wait_until):
    name, conn = db
    settings = _settings(source_server, amqp_url, name, exchange)
    assert not settings.events.transactions and not settings.events.heartbeats.enabled
    watcher = Watcher(amqp_url, exchange)
    pipeline, stop, thread = _start(settings, name)
    try:
        wait_until(lambda: getattr(pipeline, "publisher", None) is not None, timeout=20, message="the reader streaming")
        time.sleep(1.0)
        _write(conn, name, TXN)
        wait_until(lambda: len(watcher.drain()) >= 7, timeout=20, message="the change events")
        time.sleep(2.5)  # idle, with the stream's heartbeat every 0.5 s
        got = watcher.drain()
        assert len(got) == 7 and not any(is_boundary(k) or k.startswith("cdc.") for k, _ in got)
        assert all(b"entity_index" not in body for _, body in got)
    finally:
        stop.set()
        pipeline.reader.interrupt()
        thread.join(15)
        watcher.close()
