"""Sink scale-out: a consistent-hash exchange over N single-active-consumer quorum queues, K workers.

Hot keys updated many times must arrive in order at whichever worker owns their shard; when a
worker dies, the survivor takes its shards over and the final state is the newest version of
every key.
"""

from __future__ import annotations

import collections
import threading

import pika
import pytest

from cdc.broker.publisher import OutMessage, RabbitPublisher
from cdc.broker.topology import (
    HEADER_ENTITY,
    HEADER_KEY,
    HEADER_VERSION,
    declare_sink_queues,
    reader_dead_exchange,
    sink_dlq,
    sink_hash_exchange,
    sink_queue,
    sink_queues,
)
from cdc.sinks.memory import MemorySink, MemorySinkConfig
from cdc.sinks.worker import SinkWorker

SHARDS, KEYS, ROUNDS = 4, 24, 60


class RecordingSink(MemorySink):
    """Records the order in which each key's versions arrive; can be made to crash."""

    def __init__(self, name, config):
        super().__init__(name, config)
        self.arrivals: dict[str, list[int]] = collections.defaultdict(list)
        self.crash = False

    def apply(self, events):
        if self.crash:
            raise RuntimeError("simulated worker crash")
        for e in events:
            self.arrivals[e.key_str].append(e.version)
        return super().apply(events)


@pytest.fixture
def broker(amqp_url, unique_name):
    exchange, sink = f"cdc.test.{unique_name}", unique_name
    yield exchange, sink
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        ch = conn.channel()
        for q in sink_queues(sink, SHARDS) + [sink_dlq(sink)]:
            ch.queue_delete(q)
        ch.exchange_delete(sink_hash_exchange(sink))
        ch.exchange_delete(exchange)
        ch.exchange_delete(reader_dead_exchange(exchange))


def publish(amqp_url, exchange, event_factory, versions):
    done = threading.Event()
    publisher = RabbitPublisher(amqp_url, exchange, lambda token: token and done.set())
    publisher.start()
    messages = []
    for version in versions:
        key = version % KEYS
        event = event_factory("customer", key, version)
        messages.append(OutMessage(routing_key="customer.u", body=event.model_dump_json().encode(), message_id=event.id,
                                   headers={HEADER_VERSION: version, HEADER_KEY: str(key), HEADER_ENTITY: "customer"},
                                   timestamp_ms=event.ts_ms))
    publisher.publish(messages, "all")
    assert done.wait(30), "publisher confirms"
    publisher.close()


def first_deliveries_in_order(arrivals: list[int]) -> bool:
    seen: set[int] = set()
    fresh = []
    for v in arrivals:
        if v not in seen:
            fresh.append(v)
            seen.add(v)
    return fresh == sorted(fresh)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the simulated crash
def test_hot_keys_keep_their_order_across_workers_and_a_worker_death(broker, amqp_url, event_factory, wait_until):
    exchange, sink_name = broker
    config = MemorySinkConfig(batch_size=50, batch_wait_ms=20, prefetch=100, shards=SHARDS, delivery_limit=20)
    sinks = [RecordingSink(sink_name, config), RecordingSink(sink_name, config)]
    stops = [threading.Event(), threading.Event()]
    workers = [SinkWorker(sink_name, sinks[i], config, amqp_url, exchange, stops[i], worker_index=i, workers=2,
                          standby_delay_s=1.0) for i in range(2)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()

    def consumers_ready():
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            ch = conn.channel()
            try:  # a single-active-consumer queue counts its active consumer only
                active = all(ch.queue_declare(q, passive=True).method.consumer_count == 1 for q in sink_queues(sink_name, SHARDS))
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet
                return False
        return active and all(w._standby == [] for w in workers)  # noqa: SLF001 - standbys registered

    wait_until(consumers_ready, timeout=20, message="both workers on every shard (one active, one standby)")
    first_half = list(range(1000, 1000 + KEYS * ROUNDS // 2))
    publish(amqp_url, exchange, event_factory, first_half)
    wait_until(lambda: sum(len(v) for s in sinks for v in s.arrivals.values()) >= len(first_half), timeout=30,
               message="the first half applied")
    assert all(s.arrivals for s in sinks), "both workers took a share of the shards"
    for s in sinks:
        assert all(first_deliveries_in_order(v) for v in s.arrivals.values()), "per-key order at each worker"

    sinks[1].crash = True  # the next batch kills worker 1; its unacked messages go back to the queues
    second_half = list(range(first_half[-1] + 1, first_half[-1] + 1 + KEYS * ROUNDS // 2))
    publish(amqp_url, exchange, event_factory, second_half)
    threads[1].join(20)
    assert not threads[1].is_alive()

    def final_state_reached():
        newest = {str(k): max(v for v in second_half if v % KEYS == k) for k in range(KEYS)}
        applied = {k: max(s.rows.get(("customer", k), (0, None))[0] for s in sinks) for k in newest}
        return applied == newest

    wait_until(final_state_reached, timeout=60, message="the survivor to apply every key's newest version")
    # The survivor took over worker 1's shards: it now holds every key. (Messages worker 1 held unacked are
    # redelivered, possibly out of order; the version guard discards the stale ones, as the final state shows.)
    assert {k for k in sinks[0].arrivals} == {str(k) for k in range(KEYS)}
    stops[0].set()
    threads[0].join(10)


def test_changing_shards_moves_the_events_left_in_the_old_queues(broker, amqp_url, event_factory, wait_until):
    """Events routed to a sink's queues before its ``shards`` setting changed are applied after the
    change: the worker moves them into the new queues, and the old ones stop receiving and go."""
    exchange, sink_name = broker

    def run_worker(shards):
        config = MemorySinkConfig(batch_size=50, batch_wait_ms=20, prefetch=100, shards=shards, delivery_limit=20)
        sink, stop = RecordingSink(sink_name, config), threading.Event()
        thread = threading.Thread(target=SinkWorker(sink_name, sink, config, amqp_url, exchange, stop).run, daemon=True)
        thread.start()
        return sink, stop, thread

    def newest(versions):
        return {str(k): max(v for v in versions if v % KEYS == k) for k in range(KEYS)}

    def holds(sink, versions):
        return {k: sink.rows.get(("customer", k), (0, None))[0] for k in newest(versions)} == newest(versions)

    def exists(name, kind="queue"):
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            try:
                getattr(conn.channel(), f"{kind}_declare")(name, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker:
                return False

    try:
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:  # the layout of shards: 1, no worker yet
            declare_sink_queues(conn.channel(), exchange, sink_name, ["*"], 20)
        before = list(range(1000, 1000 + 3 * KEYS))
        publish(amqp_url, exchange, event_factory, before)

        sink, stop, thread = run_worker(SHARDS)  # shards: 1 -> 4
        after = list(range(before[-1] + 1, before[-1] + 1 + 2 * KEYS))
        publish(amqp_url, exchange, event_factory, after)
        wait_until(lambda: holds(sink, before + after), timeout=30, message="every key's newest version, old queue included")
        assert set(sink.arrivals) == set(newest(before)) and sum(map(len, sink.arrivals.values())) >= len(before + after)
        assert not exists(sink_queue(sink_name)), "the queue of shards: 1 is deleted once emptied"
        stop.set()
        thread.join(20)

        later = list(range(after[-1] + 1, after[-1] + 1 + KEYS))  # into the shards, while no worker runs
        publish(amqp_url, exchange, event_factory, later)
        sink, stop, thread = run_worker(1)  # shards: 4 -> 1
        wait_until(lambda: holds(sink, later), timeout=30, message="the events left in the shards")
        assert not any(exists(q) for q in sink_queues(sink_name, SHARDS))
        assert not exists(sink_hash_exchange(sink_name), "exchange")
        stop.set()
        thread.join(20)
    finally:
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            conn.channel().queue_delete(sink_queue(sink_name))
