"""`cdc dlq` logic against RabbitMQ: listing changes nothing, replay applies in version order after a
fix and dead-letters again what is still refused, purge deletes what it is told to."""

from __future__ import annotations

import pika
import pytest

from cdc.admin.broker import Broker
from cdc.admin.dlq import list_letters, purge, replay_letters
from cdc.broker.consume import publish_to_dlq
from cdc.broker.topology import HEADER_COUNT, declare_sink_queues, sink_dlq, sink_queue
from cdc.domain.envelope import batch_body, encode
from cdc.sinks.base import Rejection
from cdc.sinks.memory import MemorySink


class PickySink(MemorySink):
    """Refuses key 666 (the fault not yet fixed) and records the order it applied events in."""

    def __init__(self, name):
        super().__init__(name)
        self.order = []

    def apply(self, events):
        refused = [Rejection(e, "still bad") for e in events if e.key == {"id": 666}]
        self.order += [e.version for e in events if e.key != {"id": 666}]
        super().apply([e for e in events if e.key != {"id": 666}])
        return refused


@pytest.fixture
def dlq(amqp_url, unique_name):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = conn.channel()
    declare_sink_queues(channel, f"cdc.{unique_name}", unique_name, ["*"], 5)
    channel.confirm_delivery()
    yield unique_name, channel
    for queue in (sink_queue(unique_name), sink_dlq(unique_name)):
        channel.queue_delete(queue)
    channel.exchange_delete(f"cdc.{unique_name}")
    conn.close()


def test_list_replay_purge(dlq, amqp_url, event_factory):
    sink, channel = dlq
    late, early, bad = event_factory(key=1, version=3000), event_factory(key=2, version=1000), event_factory(key=666, version=2000)
    for event, reason in ((late, "target was down"), (early, "column missing"), (bad, "value too long")):
        publish_to_dlq(channel, sink, encode(event), {}, reason)
    publish_to_dlq(channel, sink, b"not json", {}, "malformed event (cannot decode)")

    letters = list_letters(amqp_url, sink)
    summary = [d.summary() for d in letters]
    assert [s["version"] for s in summary] == [None, 1000, 2000, 3000]
    assert summary[1]["reason"] == "column missing" and summary[1]["key"] == "2" and summary[1]["source_position"].startswith("mysql-bin")
    with Broker(amqp_url) as broker:
        assert broker.depth(sink_dlq(sink)) == 4  # listing consumed nothing

    target = PickySink(sink)
    result = replay_letters(amqp_url, target)
    assert target.order == [1000, 3000] and sorted(target.live_rows("customer")) == ["1", "2"]
    assert result.rejected_again == [(bad.id, "still bad")] and result.left == 1
    remaining = {d.id: d.reason for d in list_letters(amqp_url, sink)}
    assert remaining[bad.id].startswith("rejected again") and len(remaining) == 2

    assert purge(amqp_url, sink, [bad.id]) == 1
    assert purge(amqp_url, sink) == 1
    assert list_letters(amqp_url, sink) == []


def test_a_batch_message_dead_lettered_whole_is_listed_and_replayed_event_by_event(dlq, amqp_url, event_factory):
    # RabbitMQ's own delivery limit dead-letters a batch message (broker.batch_events > 1) as it is.
    sink, channel = dlq
    events = [event_factory(key=k, version=100 + k) for k in (1, 666, 3)]
    publish_to_dlq(channel, sink, batch_body([encode(e) for e in events]), {HEADER_COUNT: 3}, "the worker crashed on it")

    letters = list_letters(amqp_url, sink)
    assert [(d.event.key_str, d.reason) for d in letters] == [("1", "the worker crashed on it"),  # in version order
                                                              ("3", "the worker crashed on it"),
                                                              ("666", "the worker crashed on it")]
    assert all(HEADER_COUNT not in d.headers for d in letters)
    with Broker(amqp_url) as broker:
        assert broker.depth(sink_dlq(sink)) == 3  # split in place: one message per event, nothing lost

    target = PickySink(sink)
    result = replay_letters(amqp_url, target)
    assert target.order == [101, 103] and result.rejected_again == [(events[1].id, "still bad")]
    assert [d.event.key_str for d in list_letters(amqp_url, sink)] == ["666"]
