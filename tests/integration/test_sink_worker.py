"""SinkWorker against a real RabbitMQ, with the in-memory sink and the CRM sink on PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import psycopg
import pytest
from pydantic import SecretStr
from sink_broker import Broker

from cdc.broker.topology import HEADER_COUNT, HEADER_ENTITY, HEADER_KEY, HEADER_REASON
from cdc.domain.entity_schema import EntitySchema
from cdc.domain.entity_schema import FieldType as F
from cdc.domain.envelope import Op, decode, encode
from cdc.domain.errors import TerminalError, TransientError
from cdc.sinks.base import SinkContext
from cdc.sinks.crm import CrmSink, CrmSinkConfig
from cdc.sinks.memory import MemorySink, MemorySinkConfig
from cdc.sinks.worker import SinkWorker

pytestmark = pytest.mark.integration

CUSTOMER = EntitySchema(name="customer", key=("id",), fields={"id": F.INTEGER, "name": F.STRING, "balance": F.DECIMAL})
FAST = dict(batch_size=20, batch_wait_ms=20, prefetch=200, delivery_limit=5)


class WorkerThread:
    def __init__(self, worker: SinkWorker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"worker-{worker.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as err:
            self.error = err

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> float:
        started = time.monotonic()
        self.worker.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker did not stop within {timeout}s"
        return time.monotonic() - started


class RecordingMetrics:
    def __init__(self) -> None:
        self.applied: Counter = Counter()
        self.dead: Counter = Counter()
        self.batches = 0

    def events_applied(self, sink, entity, op, n):
        self.applied[(entity, op)] += n

    def events_dead_lettered(self, sink, reason_kind, n, entity=""):
        self.dead[reason_kind] += n

    def batch_seconds(self, sink, seconds):
        self.batches += 1


@pytest.fixture
def harness(amqp_url, unique_name):
    """start(sink, config) -> (broker, worker thread); everything is stopped and deleted afterwards."""
    started: list[tuple[Broker, WorkerThread]] = []

    def start(sink, config, metrics=None, **worker_args):
        broker = Broker(amqp_url, f"{unique_name}.events", unique_name, config)
        worker = SinkWorker(unique_name, sink, config, amqp_url, broker.exchange, threading.Event(), metrics, **worker_args)
        thread = WorkerThread(worker)
        started.append((broker, thread))
        return broker, thread

    yield start
    for broker, thread in started:
        if thread.thread.is_alive():
            thread.stop()
        broker.close()


def customers(event_factory, n: int):
    events = [event_factory("customer", i, 100 + i, Op.CREATE, after={"id": i, "name": f"c{i}", "balance": "1.00"}) for i in range(n)]
    events += [event_factory("customer", i, 1000 + i, Op.UPDATE, after={"id": i, "name": f"u{i}", "balance": "2.50"}) for i in range(0, n, 2)]
    events += [event_factory("customer", i, 2000 + i, Op.DELETE) for i in range(0, n, 5)]
    expected = {str(i): {"id": i, "name": f"u{i}" if i % 2 == 0 else f"c{i}", "balance": "2.50" if i % 2 == 0 else "1.00"}
                for i in range(n) if i % 5}
    return events, expected


def test_memory_sink_applies_everything(harness, event_factory, wait_until):
    sink = MemorySink("mem", MemorySinkConfig(**FAST))
    metrics = RecordingMetrics()
    broker, worker = harness(sink, sink.config, metrics)
    events, expected = customers(event_factory, 100)
    broker.publish_events(events)
    worker.start()
    wait_until(lambda: sink.live_rows("customer") == expected, timeout=20, message="the memory sink to hold every row")
    wait_until(lambda: broker.depth() == 0, timeout=10, message="the queue to drain (all acked)")
    assert sink.read_offset().version == max(e.version for e in events)
    assert metrics.applied == Counter({("customer", "c"): 100, ("customer", "u"): 50, ("customer", "d"): 20})
    assert metrics.batches >= len(events) // FAST["batch_size"]
    assert worker.error is None


@pytest.mark.parametrize("batch_events", [1, 15], ids=["one-event-a-message", "batch-messages"])
def test_crm_sink_applies_everything_and_dead_letters_a_rejection_alone(harness, event_factory, wait_until, pg_url,
                                                                        unique_name, batch_events):
    config = CrmSinkConfig(url=SecretStr(pg_url), schema_name=unique_name, **FAST)
    sink = CrmSink(unique_name, config, SinkContext(entities={"customer": CUSTOMER}))
    metrics = RecordingMetrics()
    broker, worker = harness(sink, config, metrics)
    events, expected = customers(event_factory, 200)
    bad = event_factory("customer", 999, 5000, Op.CREATE, after={"id": 999, "name": "bad", "balance": "twelve"})
    messages = broker.publish_batches([*events[:50], bad, *events[50:]], batch_events)
    assert (messages < len(events) // 10) == (batch_events > 1)  # batches, or one message per event
    try:
        sink.open()  # to read from it here; the worker opens it again, which is harmless
        worker.start()
        wait_until(lambda: sink.fetch_rows("customer") == expected, timeout=30,
                   message="the CRM tables to hold every row")
        dead = wait_until(broker.dead_letters, timeout=10, message="the rejected event in the DLQ")
        assert len(dead) == 1, dead
        body, headers = dead[0]
        assert decode(body) == decode(encode(bad)) and (batch_events > 1 or body == encode(bad))  # that event alone
        assert "balance" in headers[HEADER_REASON] and "twelve" in headers[HEADER_REASON]
        assert headers[HEADER_ENTITY] == "customer" and headers[HEADER_KEY] == "999" and HEADER_COUNT not in headers
        wait_until(lambda: sink.read_offset() and sink.read_offset().version == 5000, timeout=10, message="the offset")
        wait_until(lambda: broker.depth() == 0, timeout=10, message="every message acked")
        assert metrics.applied == Counter({("customer", "c"): 200, ("customer", "u"): 100, ("customer", "d"): 40})
        assert metrics.dead == Counter({"rejected": 1})
        assert worker.error is None
    finally:
        if worker.thread.is_alive():
            worker.stop()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')


def test_a_malformed_event_in_a_batch_is_dead_lettered_alone_and_the_rest_applied(harness, event_factory, wait_until):
    sink = MemorySink("mem", MemorySinkConfig(**FAST))
    metrics = RecordingMetrics()
    broker, worker = harness(sink, sink.config, metrics)
    good = [event_factory("customer", i, 10 + i) for i in range(4)]
    broken = b'{"id": "x", "version": -1}'
    broker.publish(b"[" + b",".join([encode(good[0]), broken, encode(good[1])]) + b"]", headers={HEADER_COUNT: 3})
    broker.publish(b"[not json", headers={HEADER_COUNT: 2, "x-test": "broken-json"})
    broker.publish_batches(good[2:], batch_events=10)
    worker.start()
    wait_until(lambda: len(sink.live_rows("customer")) == 4, timeout=20, message="the four valid events")
    dead = []
    wait_until(lambda: dead.extend(broker.dead_letters()) or len(dead) == 2, timeout=10, message="two dead letters")
    by_body = {body: headers for body, headers in dead}
    assert set(by_body) == {b'{"id":"x","version":-1}', b"[not json"}
    assert "version" in by_body[b'{"id":"x","version":-1}'][HEADER_REASON]
    assert "malformed" in by_body[b"[not json"][HEADER_REASON]
    wait_until(lambda: broker.depth() == 0, timeout=10, message="every message acked")
    assert metrics.dead == Counter({"malformed": 2})


def test_malformed_messages_go_to_the_dlq_with_a_reason(harness, event_factory, wait_until):
    sink = MemorySink("mem", MemorySinkConfig(**FAST))
    metrics = RecordingMetrics()
    broker, worker = harness(sink, sink.config, metrics)
    good = [event_factory("customer", i, 10 + i) for i in range(10)]
    broker.publish_events(good[:5])
    broker.publish(b"{not json", headers={"x-test": "broken-json"})
    broker.publish(b'{"id": "x", "version": -1}', headers={"x-test": "invalid-event"})
    broker.publish_events(good[5:])
    worker.start()
    wait_until(lambda: len(sink.live_rows("customer")) == 10, timeout=20, message="the valid events")
    dead = []
    wait_until(lambda: dead.extend(broker.dead_letters()) or len(dead) == 2, timeout=10, message="two dead letters")
    by_test = {headers["x-test"]: (body, headers) for body, headers in dead}
    assert by_test["broken-json"][0] == b"{not json"
    assert "malformed" in by_test["broken-json"][1][HEADER_REASON]
    reason = by_test["invalid-event"][1][HEADER_REASON]
    assert "malformed" in reason and "version" in reason
    wait_until(lambda: broker.depth() == 0, timeout=10, message="every message acked")
    assert metrics.dead == Counter({"malformed": 2})


class FlakySink(MemorySink):
    def __init__(self, failures: int) -> None:
        super().__init__("flaky", MemorySinkConfig(**FAST, max_retries=5))
        self.failures = failures
        self.calls = 0

    def apply(self, events):
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("target briefly unavailable")
        return super().apply(events)


def test_transient_errors_are_retried(harness, event_factory, wait_until):
    sink = FlakySink(failures=2)
    broker, worker = harness(sink, sink.config, retry_initial_s=0.01, retry_max_s=0.05)
    events = [event_factory("customer", i, 10 + i) for i in range(30)]
    broker.publish_events(events)
    worker.start()
    wait_until(lambda: len(sink.live_rows("customer")) == 30, timeout=20, message="every event despite two failures")
    wait_until(lambda: broker.depth() == 0, timeout=10, message="every message acked")
    assert sink.calls >= 3 and broker.dead_letters() == []


def test_a_target_down_for_long_is_waited_for_not_dead_lettered(harness, event_factory, wait_until):
    # Many more failed attempts than the delivery limit: the messages are not at fault, so they stay.
    sink = FlakySink(failures=40)
    sink.config = MemorySinkConfig(**{**FAST, "delivery_limit": 2}, max_retries=1)
    broker, worker = harness(sink, sink.config, retry_initial_s=0.01, retry_max_s=0.02)
    broker.publish_events([event_factory("customer", i, 10 + i) for i in range(5)])
    worker.start()
    wait_until(lambda: len(sink.live_rows("customer")) == 5, timeout=20, message="every event once the target is back")
    assert sink.calls > 40 and broker.dead_letters() == []
    wait_until(lambda: broker.depth() == 0, timeout=10, message="every message acked")


def test_terminal_error_stops_the_worker(harness, event_factory, wait_until):
    class BrokenSink(MemorySink):
        def apply(self, events):
            raise TerminalError("table customer lost its primary key")

    sink = BrokenSink("broken", MemorySinkConfig(**FAST))
    broker, worker = harness(sink, sink.config)
    broker.publish_events([event_factory("customer", 1, 10)])
    worker.start()
    worker.thread.join(10)
    assert not worker.thread.is_alive()
    assert isinstance(worker.error, TerminalError)
    wait_until(lambda: broker.depth() == 1, timeout=10, message="the unacked message back in the queue")


def test_stop_ends_run_promptly(harness, wait_until):
    sink = MemorySink("mem", MemorySinkConfig(**{**FAST, "batch_wait_ms": 1000}))
    broker, worker = harness(sink, sink.config)
    worker.start()
    wait_until(lambda: broker.consumers() == 1, timeout=10, message="the worker to consume")
    assert worker.stop() < 1.5
    assert worker.error is None
    wait_until(lambda: broker.consumers() == 0, timeout=10, message="the consumer to go away")


def test_reconnects_after_the_connection_is_cut(harness, event_factory, wait_until):
    sink = MemorySink("mem", MemorySinkConfig(**FAST))
    broker, worker = harness(sink, sink.config, retry_initial_s=0.05, retry_max_s=0.2)
    broker.publish_events([event_factory("customer", i, 10 + i) for i in range(10)])
    worker.start()
    wait_until(lambda: len(sink.live_rows("customer")) == 10, timeout=20, message="the first events")
    # Cut the TCP connection under the worker, as a network failure would (pika keeps the socket here).
    worker.worker._connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)
    broker.publish_events([event_factory("customer", i, 100 + i) for i in range(10, 20)])
    wait_until(lambda: len(sink.live_rows("customer")) == 20, timeout=20, message="the events after reconnecting")
    wait_until(lambda: broker.consumers() == 1 and broker.depth() == 0, timeout=10, message="one consumer, queue drained")
    assert worker.error is None


def test_batches_stop_growing_at_batch_max_bytes(harness, event_factory, wait_until):
    # Large rows must not make one statement of gigabytes: a batch holds at most batch_max_bytes (at least one event).
    sink = MemorySink("mem", MemorySinkConfig(**{**FAST, "batch_size": 100, "batch_wait_ms": 200}, batch_max_bytes=4096))
    metrics = RecordingMetrics()
    broker, worker = harness(sink, sink.config, metrics)
    events = [event_factory("customer", i, 10 + i, after={"id": i, "name": "x" * 1500, "balance": "1"}) for i in range(20)]
    events.append(event_factory("customer", 99, 99, after={"id": 99, "name": "y" * 10_000, "balance": "1"}))  # alone over it
    broker.publish_events(events)
    worker.start()
    wait_until(lambda: len(sink.live_rows("customer")) == 21, timeout=20, message="every event")
    assert metrics.batches >= 21 * 1700 // 4096 and broker.dead_letters() == []
