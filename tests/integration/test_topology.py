"""Declaring the broker topology against RabbitMQ when a queue already exists with other arguments:
RabbitMQ never changes them (406 PRECONDITION_FAILED), so a changed setting must stop with the queue,
the setting and the way out, not retry forever behind "ChannelClosedByBroker"."""

from __future__ import annotations

import pika
import pytest

from cdc.broker.topology import (
    declare_event_log,
    declare_sink_queues,
    event_log,
    sink_dlq,
    sink_hash_exchange,
    sink_queue,
    sink_queues,
)
from cdc.domain.errors import QueueArgumentsChanged, TerminalError


@pytest.fixture
def broker(amqp_url, unique_name):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield conn, unique_name
    channel = conn.channel()
    for queue in (sink_queue(unique_name), sink_dlq(unique_name), *sink_queues(unique_name, 2), event_log(f"cdc.{unique_name}")):
        channel.queue_delete(queue)
    channel.exchange_delete(sink_hash_exchange(unique_name))
    channel.exchange_delete(f"cdc.{unique_name}")
    conn.close()


def test_a_changed_delivery_limit_names_the_queue_the_setting_and_the_way_out(broker):
    conn, name = broker
    declare_sink_queues(conn.channel(), f"cdc.{name}", name, ["*"], 5)
    declare_sink_queues(conn.channel(), f"cdc.{name}", name, ["*"], 5)  # the same arguments: idempotent
    with pytest.raises(QueueArgumentsChanged) as err:
        declare_sink_queues(conn.channel(), f"cdc.{name}", name, ["*"], 7)
    message = str(err.value)
    assert isinstance(err.value, TerminalError)
    assert f"'cdc.sink.{name}'" in message and "x-delivery-limit" in message and f"sinks.{name}.delivery_limit" in message
    assert f"rabbitmqctl delete_queue cdc.sink.{name}" in message and f"cdc replay --sink {name}" in message


def test_a_sharded_queue_and_the_event_log_name_their_settings_too(broker):
    conn, name = broker
    exchange = f"cdc.{name}"
    declare_sink_queues(conn.channel(), exchange, name, ["*"], 5, shards=2)
    with pytest.raises(QueueArgumentsChanged, match=rf"'cdc\.sink\.{name}\.0'.*sinks\.{name}\.delivery_limit"):
        declare_sink_queues(conn.channel(), exchange, name, ["*"], 9, shards=2)
    declare_event_log(conn.channel(), exchange, "1h")
    with pytest.raises(QueueArgumentsChanged) as err:
        declare_event_log(conn.channel(), exchange, "2h")
    assert "x-max-age" in str(err.value) and "broker.event_log_max_age" in str(err.value) and "max-age" in str(err.value)
