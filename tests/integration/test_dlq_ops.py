"""`cdc dlq` logic against RabbitMQ: listing changes nothing, replay applies in version order after a
fix and dead-letters again what is still refused, purge deletes what it is told to."""

from __future__ import annotations

import pika
import pytest

from cdc.envelope import encode
from cdc.ops.broker import Broker
from cdc.ops.dlq import list_letters, purge, replay_letters
from cdc.sinks.base import Rejection
from cdc.sinks.memory import MemorySink
from cdc.sinks.worker import publish_to_dlq
from cdc.topology import declare_sink_queues, sink_dlq, sink_queue


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
