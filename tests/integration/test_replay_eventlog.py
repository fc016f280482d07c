"""Replay from the event-log stream on RabbitMQ into a sink, in catch-up and in repair mode."""

from __future__ import annotations

import pika
import pytest

from cdc.admin.replay import replay
from cdc.broker.publisher import OutMessage, group_events
from cdc.broker.topology import HEADER_COUNT, declare_event_log, event_log
from cdc.domain.envelope import encode
from cdc.runtime.config import load_settings
from cdc.sinks.memory import MemorySink


@pytest.fixture
def log_world(amqp_url, unique_name):
    exchange = f"cdc.{unique_name}"
    settings = load_settings(None, broker={"url": amqp_url, "exchange": exchange},
                             sinks={"mem": {"type": "memory", "entities": ["customer"]}})
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = conn.channel()
    declare_event_log(channel, exchange, "1h")
    channel.confirm_delivery()

    def publish(*events):
        for e in events:
            channel.basic_publish(exchange, e.routing_key, encode(e), pika.BasicProperties(delivery_mode=2, timestamp=e.ts_ms // 1000))

    yield settings, publish
    channel.queue_delete(event_log(exchange))
    channel.exchange_delete(exchange)
    conn.close()


def test_catch_up_fills_a_sink_and_repair_rewrites_rows_damaged_behind_its_back(log_world, event_factory):
    settings, publish = log_world
    e = event_factory
    history = [e(key=1, after={"id": 1, "name": "a"}), e(key=2, after={"id": 2, "name": "b"}), e(entity="order", key=9),
               e(key=1, after={"id": 1, "name": "a2"}), e(key=3, op="d", before={"id": 3}), e(key=4, after={"id": 4})]
    publish(*history)
    sink = MemorySink("mem")

    result = replay(settings, sink, "first")
    assert result.read == 6 and result.skipped == 1 and result.applied == 5  # 'order' is not consumed by this sink
    assert sink.live_rows("customer") == {"1": {"id": 1, "name": "a2"}, "2": {"id": 2, "name": "b"}, "4": {"id": 4}}

    # Damage: a row overwritten behind the sink's back keeps its version, so a catch-up replay ignores it...
    sink.rows[("customer", "1")] = (sink.rows[("customer", "1")][0], {"id": 1, "name": "damaged"})
    del sink.rows[("customer", "2")]
    replay(settings, sink, "first")
    assert sink.live_rows("customer")["1"]["name"] == "damaged" and sink.live_rows("customer")["2"] == {"id": 2, "name": "b"}
    # ... and a repair replay lifts each key's newest event to the window's newest version.
    repaired = replay(settings, sink, "first", repair=True)
    assert repaired.mode == "repair" and sink.live_rows("customer")["1"] == {"id": 1, "name": "a2"}
    assert sink.rows[("customer", "1")][0] == repaired.max_version == history[-1].version

    # A later live change still wins over the lifted rows.
    newer = e(key=1, after={"id": 1, "name": "live"})
    sink.apply([newer])
    assert sink.live_rows("customer")["1"]["name"] == "live"


def test_from_an_offset_until_an_offset(log_world, event_factory):
    settings, publish = log_world
    events = [event_factory(key=i, after={"id": i}) for i in range(10)]
    publish(*events)
    sink = MemorySink("mem")
    result = replay(settings, sink, "offset:3", until="5")
    assert (result.first_offset, result.last_offset) == (3, 5)
    assert sorted(sink.live_rows("customer"), key=int) == ["3", "4", "5"]
    assert (result.first_offset, result.last_offset) == (3, 5)
    assert sorted(sink.live_rows("customer"), key=int) == ["3", "4", "5"]


def test_batch_messages_in_the_log_are_replayed_event_by_event(log_world, event_factory, amqp_url):
    settings, _ = log_world
    history = [event_factory(key=k, version=100 + k, after={"id": k, "name": f"n{k}"}) for k in range(1, 8)]
    history.append(event_factory(key=2, op="d", version=200, before={"id": 2}))
    messages = group_events([OutMessage.from_event(e) for e in history], 4, 1 << 20)
    assert [m.headers.get(HEADER_COUNT) for m in messages] == [4, 3, None]  # a run ends at the change of op
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for m in messages:
            channel.basic_publish(settings.broker.exchange, m.routing_key, m.body,
                                  pika.BasicProperties(delivery_mode=2, headers=m.headers, timestamp=m.timestamp_ms // 1000))
    sink = MemorySink("mem")
    result = replay(settings, sink, "first")
    assert result.read == 8 and result.applied == 8 and result.malformed == 0
    assert sink.live_rows("customer") == {str(k): {"id": k, "name": f"n{k}"} for k in (1, 3, 4, 5, 6, 7)}
