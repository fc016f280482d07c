"""The subscription library against the real RabbitMQ: typed events, filters, retries, DLQ, dedupe, replay, crash."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import pika
import pytest

from cdc.broker.publisher import OutMessage
from cdc.broker.topology import HEADER_COUNT, HEADER_KEY, HEADER_REASON
from cdc.consumer import Consumer, Reject, SqlIdempotencyStore, StartFrom, Subscription
from cdc.consumer.subscription import delete
from cdc.domain.envelope import encode
from cdc.mapping.contracts import EventModels, field_types

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MODELS = EventModels.from_dir(REPO / "mappings")


def typed(event_factory, entity: str, key: int, op: str = "c", version: int | None = None, ts_ms: int | None = None,
          **values):
    """An event of a real canonical entity: every published field present (null unless given)."""
    mapping = MODELS.mappings[entity]
    key_field = mapping.key[0]
    row = {name: None for name in field_types(mapping)} | {key_field: key} | values
    return event_factory(entity=entity, key={key_field: key}, op=op, version=version, ts_ms=ts_ms,
                         after=None if op == "d" else row, before=row if op == "d" else None)


def publish(amqp_url: str, exchange: str, *events, body: bytes | None = None, routing_key: str | None = None) -> None:
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        channel.confirm_delivery()
        for event in events:
            message = OutMessage.from_event(event)
            channel.basic_publish(exchange, message.routing_key, encode(event), pika.BasicProperties(
                delivery_mode=2, message_id=message.message_id, headers=message.headers))  # unroutable: filtered out
        if body is not None:
            channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def dead_letters(amqp_url: str, sub: Subscription) -> list[tuple[bytes, dict]]:
    out = []
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        while (got := channel.basic_get(sub.dlq, auto_ack=True))[0] is not None:
            out.append((got[2], got[1].headers or {}))
    return out


def depth(amqp_url: str, queue: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        return conn.channel().queue_declare(queue, passive=True).method.message_count


class Running:
    """A Consumer in a thread, stopped and its queues and exchange removed at the end."""

    def __init__(self, amqp_url, sub, handler, **kwargs):
        self.amqp_url, self.sub = amqp_url, sub
        self.consumer = Consumer(amqp_url, sub, handler, models=MODELS, **kwargs)
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.consumer

    def __exit__(self, *exc):
        self.consumer.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the consumer did not stop"


@pytest.fixture
def sub_factory(amqp_url, unique_name):
    made = []

    def make(**kwargs) -> Subscription:
        defaults = {"name": unique_name, "exchange": f"x.{unique_name}", "retry_initial_s": 0.05, "retry_max_s": 0.2}
        made.append(Subscription(**(defaults | kwargs)))
        return made[-1]

    yield make
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        for sub in made:
            delete(channel, sub)
            channel.queue_delete(f"{sub.exchange}.log")
            channel.exchange_delete(sub.exchange)


def declared(amqp_url, sub):
    from cdc.consumer import declare

    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        declare(conn.channel(), sub)


def test_typed_events_of_the_chosen_entities_and_ops_only(amqp_url, sub_factory, event_factory, wait_until):
    sub = sub_factory(entities=["member", "event_registration"], ops=["c", "u"])
    got = []
    declared(amqp_url, sub)  # a durable queue: events published before the consumer starts wait for it
    publish(amqp_url, sub.exchange,
            typed(event_factory, "member", 1, balance="12.50", joined_on="2020-02-29", created_at="2024-05-01T08:00:00Z"),
            typed(event_factory, "member", 1, op="d"),
            typed(event_factory, "event_registration", 5, op="u", status="confirmed"),
            typed(event_factory, "payment", 9))
    with Running(amqp_url, sub, got.append) as consumer:
        wait_until(lambda: consumer.counts["handled"] == 2, message="two events handled")
    member, registration = got
    assert type(member).__name__ == "MemberEvent" and member.after.balance.as_tuple().exponent == -2
    assert member.after.joined_on == dt.date(2020, 2, 29) and member.after.created_at.tzinfo is not None
    assert type(registration).__name__ == "EventRegistrationEvent" and registration.after.status == "confirmed"
    assert depth(amqp_url, sub.queue) == 0 and dead_letters(amqp_url, sub) == []


def test_a_failing_handler_is_retried_with_backoff_then_succeeds(amqp_url, sub_factory, event_factory, wait_until):
    sub = sub_factory(max_attempts=4)
    calls = []

    def flaky(event):
        calls.append(event.version)
        if len(calls) < 3:
            raise ConnectionError("downstream API unavailable")

    declared(amqp_url, sub)
    publish(amqp_url, sub.exchange, typed(event_factory, "member", 2))
    with Running(amqp_url, sub, flaky) as consumer:
        wait_until(lambda: consumer.counts["handled"] == 1, message="the event handled on the third attempt")
    assert len(calls) == 3 and consumer.counts["retried"] == 2
    assert dead_letters(amqp_url, sub) == []


def test_bounded_attempts_rejects_and_malformed_messages_go_to_the_dlq_with_the_reason(amqp_url, sub_factory, event_factory, wait_until):
    sub = sub_factory(max_attempts=3)
    declared(amqp_url, sub)
    always, refused, good = (typed(event_factory, "member", k) for k in (1, 2, 3))

    def handler(event):
        if event.key_str == "1":
            raise RuntimeError("template missing")
        if event.key_str == "2":
            raise Reject("member has no e-mail")

    publish(amqp_url, sub.exchange, always, refused, good)
    publish(amqp_url, sub.exchange, body=b'{"entity": "member", "op": "c"}', routing_key="member.c")
    with Running(amqp_url, sub, handler) as consumer:
        wait_until(lambda: consumer.counts["dead_lettered"] == 3 and consumer.counts["handled"] == 1, message="3 dead letters")
    reasons = sorted(headers[HEADER_REASON] for _, headers in dead_letters(amqp_url, sub))
    assert reasons[0].startswith("handler failed 3 times, last: RuntimeError: template missing")
    assert reasons[1].startswith("malformed event") and "id" in reasons[1]
    assert reasons[2] == "rejected by the handler: member has no e-mail"
    assert depth(amqp_url, sub.queue) == 0


def test_batch_messages_reach_the_handler_event_by_event_and_a_failing_one_is_dead_lettered_alone(
        amqp_url, sub_factory, event_factory, wait_until):
    from cdc.broker.publisher import group_events

    sub = sub_factory(max_attempts=2)
    declared(amqp_url, sub)
    events = [typed(event_factory, "member", k, version=100 + k) for k in range(1, 8)]
    messages = group_events([OutMessage.from_event(e) for e in events], 5, 1 << 20)
    assert [m.headers.get(HEADER_COUNT) for m in messages] == [5, 2]
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for m in messages:
            channel.basic_publish(sub.exchange, m.routing_key, m.body, pika.BasicProperties(
                delivery_mode=2, message_id=m.message_id, headers=m.headers), mandatory=True)
    got = []

    def handler(event):
        if event.key_str == "3":
            raise Reject("member has no e-mail")
        got.append(event.key_str)

    with Running(amqp_url, sub, handler) as consumer:
        wait_until(lambda: consumer.counts["handled"] == 6 and consumer.counts["dead_lettered"] == 1,
                   message="six events handled, one dead-lettered")
    assert got == ["1", "2", "4", "5", "6", "7"]  # in order
    (body, headers), = dead_letters(amqp_url, sub)
    assert MODELS.parse(body).key_str == "3" and headers[HEADER_KEY] == "3" and HEADER_COUNT not in headers
    assert headers[HEADER_REASON] == "rejected by the handler: member has no e-mail"
    assert depth(amqp_url, sub.queue) == 0


def test_versions_already_handled_are_skipped_across_restarts(amqp_url, sub_factory, event_factory, wait_until, tmp_path):
    sub = sub_factory()
    declared(amqp_url, sub)
    store = SqlIdempotencyStore(f"sqlite:///{tmp_path}/seen.db", namespace=sub.name)
    got = []
    newer, older = typed(event_factory, "member", 1, version=2000), typed(event_factory, "member", 1, version=1500)
    publish(amqp_url, sub.exchange, newer, newer, older)  # a redelivery and a stale reordering
    with Running(amqp_url, sub, got.append, idempotency=store) as consumer:
        wait_until(lambda: consumer.counts["skipped"] == 2, message="duplicates skipped")
    publish(amqp_url, sub.exchange, newer)  # after a restart, with a new process's memory
    with Running(amqp_url, sub, got.append, idempotency=SqlIdempotencyStore(store._engine.url.render_as_string(), sub.name)) as consumer:
        wait_until(lambda: consumer.counts["skipped"] == 1, message="the duplicate skipped after the restart")
    assert [e.version for e in got] == [2000]


def _declare_log(amqp_url, sub) -> None:
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.exchange_declare(exchange=sub.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(f"{sub.exchange}.log", durable=True, arguments={"x-queue-type": "stream"})
        for op in "cudr":
            channel.queue_bind(f"{sub.exchange}.log", sub.exchange, routing_key=f"*.{op}")


@pytest.mark.parametrize("start", ["offset", "timestamp"])
def test_a_new_subscriber_starts_from_a_point_in_the_log_then_follows_live(amqp_url, sub_factory, event_factory, wait_until, start):
    sub = sub_factory(entities=["member"])
    _declare_log(amqp_url, sub)
    history = [typed(event_factory, "member", k, ts_ms=1_700_000_000_000 + k * 60_000) for k in range(1, 6)]
    publish(amqp_url, sub.exchange, *history, typed(event_factory, "payment", 1))  # before the subscription exists
    point = (StartFrom(offset=2) if start == "offset"
             else StartFrom(timestamp=dt.datetime.fromtimestamp(1_700_000_000 + 3 * 60, dt.UTC)))
    got = []
    with Running(amqp_url, sub, got.append, start=point, catch_up_idle_s=0.5) as consumer:
        wait_until(lambda: consumer.counts["handled"] >= 3, message="history from the point replayed")
        live = typed(event_factory, "member", 9)
        publish(amqp_url, sub.exchange, live)
        wait_until(lambda: consumer.counts["handled"] >= 4, message="the live event after the replay")
    assert [e.key_str for e in got] == ["3", "4", "5", "9"], [(e.key_str, e.ts_ms) for e in got]
    assert consumer.last_stream_offset is not None


def test_a_crash_inside_the_handler_loses_nothing(amqp_url, sub_factory, event_factory, wait_until, tmp_path):
    sub = sub_factory()
    declared(amqp_url, sub)
    publish(amqp_url, sub.exchange, typed(event_factory, "member", 7))
    script = f"""
import os
from cdc.consumer import Consumer, Subscription
sub = Subscription.model_validate_json({sub.model_dump_json()!r})
Consumer({amqp_url!r}, sub, lambda event: os._exit(9)).run()
"""
    crashed = subprocess.run([sys.executable, "-c", script], timeout=60, env=dict(os.environ), check=False)
    assert crashed.returncode == 9
    got = []
    with Running(amqp_url, sub, got.append) as consumer:
        wait_until(lambda: consumer.counts["handled"] == 1, message="the event redelivered after the crash")
    assert got[0].key_str == "7"


def test_starting_from_a_log_that_does_not_exist_is_a_clear_error(amqp_url, sub_factory):
    from cdc.domain.errors import ConfigError

    sub = sub_factory()
    consumer = Consumer(amqp_url, sub, print, start=StartFrom(first=True))
    with pytest.raises(ConfigError, match=r"event log 'x\..*\.log' does not exist"):
        consumer.run()
