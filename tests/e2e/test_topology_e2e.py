"""The daemon against a sink queue declared with another delivery limit than its settings give."""

from __future__ import annotations

import pika
from e2e_support import Daemon

from cdc.broker.topology import declare_sink_queues


def test_a_changed_sink_setting_that_rabbitmq_cannot_apply_stops_the_daemon_with_the_way_out(world_factory):
    world = world_factory()
    sink = world["sink"]
    with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
        declare_sink_queues(conn.channel(), f"cdc.e2e.{world['uid']}", sink, ["*"], 3)  # the settings say 10
    daemon = Daemon(world)
    daemon.start()
    try:
        code = daemon.proc.wait(60)
        logs = daemon.logs()
        assert code == 1, logs
        assert f"broker queue 'cdc.sink.{sink}' exists with other arguments" in logs, logs
        assert f"sinks.{sink}.delivery_limit" in logs and f"rabbitmqctl delete_queue cdc.sink.{sink}" in logs
        assert "cannot declare broker topology: ChannelClosedByBroker" not in logs
    finally:
        daemon.stop_if_running()
