"""The webhook sink under the real SinkWorker and RabbitMQ, POSTing to real local HTTP servers that
verify signatures and inject failures (500s, timeouts, refusals)."""

from __future__ import annotations

import http.server
import threading
import time

import pika
import pytest

from cdc.broker.publisher import OutMessage
from cdc.broker.topology import HEADER_REASON, declare_sink_queues, sink_dlq, sink_queue
from cdc.domain.envelope import encode
from cdc.sinks.webhook import (
    SIGNATURE_HEADER,
    WebhookSink,
    WebhookSinkConfig,
    sign,
    verify_signature,
)
from cdc.sinks.worker import SinkWorker

pytestmark = pytest.mark.integration
SECRET = "s3cret-for-tests"


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1: verifies every signature, records what it accepted, in order.

    ``script`` answers the first requests in order ("500", "hang", "503"...); ``refuse_keys``
    answers 422 for those keys; ``down`` answers 503 to everything.
    """

    daemon_threads = True

    def __init__(self, script=(), refuse_keys=(), hang_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script, self.refuse_keys, self.hang_s, self.down = list(script), set(refuse_keys), hang_s, False
        self.accepted: list[tuple[str, int]] = []  # (key, version)
        self.requests = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def answer(self, body: bytes, headers) -> int:
        with self.lock:
            self.requests += 1
            if not verify_signature(SECRET, body, headers.get(SIGNATURE_HEADER)):
                self.bad_signatures += 1
                return 401
            step = self.script.pop(0) if self.script else None
        if step == "hang":
            time.sleep(self.hang_s)
            return 503
        if step is not None:
            return int(step)
        if self.down:
            return 503
        if headers["X-CDC-Key"] in self.refuse_keys:
            return 422
        with self.lock:
            self.accepted.append((headers["X-CDC-Key"], int(headers["X-CDC-Version"])))
        return 204


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.server.answer(body, self.headers)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receivers():
    made = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.shutdown()
        receiver.server_close()


@pytest.fixture
def run_sink(amqp_url, unique_name):
    """Start a webhook sink under the real SinkWorker on a unique exchange; returns (publish, stop)."""
    started = []

    def start(endpoints, **overrides):
        config = WebhookSinkConfig(endpoints=endpoints, batch_size=50, batch_wait_ms=100, timeout_s=0.5, max_attempts=3,
                                   retry_initial_s=0.05, retry_max_s=0.2, **overrides)
        stop = threading.Event()
        worker = SinkWorker(unique_name, WebhookSink(unique_name, config), config, amqp_url, f"x.{unique_name}", stop,
                            retry_initial_s=0.1, retry_max_s=0.5)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((stop, thread))
        return worker

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(15)
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.queue_delete(sink_queue(unique_name))
        channel.queue_delete(sink_dlq(unique_name))
        channel.exchange_delete(f"x.{unique_name}")


def publish(amqp_url: str, worker: SinkWorker, events) -> None:
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        # Declared as the worker does (idempotent): the events wait in the queue whenever the worker connects.
        declare_sink_queues(channel, worker.exchange, worker.name, ["*"], worker.config.delivery_limit)
        exchange = worker.exchange
        for event in events:
            message = OutMessage.from_event(event)
            channel.basic_publish(exchange, message.routing_key, encode(event), pika.BasicProperties(
                delivery_mode=2, message_id=message.message_id, headers=message.headers), mandatory=True)


def dead_letters(amqp_url: str, sink: str) -> list[tuple[bytes, dict]]:
    out = []
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        channel = conn.channel()
        while (got := channel.basic_get(sink_dlq(sink), auto_ack=True))[0] is not None:
            out.append((got[2], got[1].headers or {}))
    return out


def endpoint(name: str, receiver: Receiver, **extra) -> dict:
    return {name: {"url": receiver.url, "secret": SECRET, **extra}}


def interleaved(event_factory, keys: int, per_key: int):
    return [event_factory(entity="member", key={"member_id": k}) for _ in range(per_key) for k in range(1, keys + 1)]


def per_key(accepted):
    out: dict[str, list[int]] = {}
    for key, version in accepted:
        out.setdefault(key, []).append(version)
    return out


def test_signed_events_arrive_in_per_key_order_through_500s_and_timeouts(amqp_url, run_sink, receivers, event_factory, wait_until):
    receiver = receivers(script=["500", "hang", "500", "hang", "429"], hang_s=0.8)
    worker = run_sink(endpoint("crm", receiver), concurrency=4)
    events = interleaved(event_factory, keys=5, per_key=6)
    publish(amqp_url, worker, events)
    wait_until(lambda: len(receiver.accepted) == len(events), timeout=30, message="every event accepted")
    expected = per_key((e.key_str, e.version) for e in events)
    assert per_key(receiver.accepted) == expected  # each key's versions in order, none lost
    assert receiver.bad_signatures == 0 and receiver.requests > len(events)  # the failures were retried
    assert dead_letters(amqp_url, worker.name) == []


def test_a_failing_endpoint_is_dead_lettered_per_endpoint_while_the_healthy_one_goes_on(
        amqp_url, run_sink, receivers, event_factory, wait_until):
    healthy, broken = receivers(), receivers(refuse_keys={"2"})
    down = receivers()
    down.down = True
    worker = run_sink(endpoint("healthy", healthy) | endpoint("partner", broken) | endpoint("members_only", down, entities=["member"]))
    events = interleaved(event_factory, keys=3, per_key=2)
    publish(amqp_url, worker, events)
    wait_until(lambda: len(healthy.accepted) == 6 and len(broken.accepted) == 4, timeout=30, message="healthy deliveries")
    letters = wait_until(lambda: dead_letters(amqp_url, worker.name), timeout=15, message="dead letters")
    while len(letters) < 6:
        letters += wait_until(lambda: dead_letters(amqp_url, worker.name), timeout=15, message="all dead letters")
    reasons = {headers["x-cdc-key"]: headers[HEADER_REASON] for _, headers in letters}
    assert "endpoint partner: HTTP 422" in reasons["2"] and "endpoint members_only: HTTP 503" in reasons["2"]
    assert "partner" not in reasons["1"] and "endpoint members_only: HTTP 503" in reasons["1"]
    assert "healthy" not in " ".join(reasons.values())
    assert per_key(healthy.accepted) == per_key((e.key_str, e.version) for e in events)


def test_when_every_endpoint_is_down_the_batch_waits_and_nothing_is_dead_lettered(
        amqp_url, run_sink, receivers, event_factory, wait_until):
    receiver = receivers()
    receiver.down = True
    worker = run_sink(endpoint("only", receiver))
    events = interleaved(event_factory, keys=2, per_key=2)
    publish(amqp_url, worker, events)
    # A first batch holds at most 4 events x 3 attempts: past 12 requests the batch was retried as a whole.
    wait_until(lambda: receiver.requests > 12, timeout=20, message="the batch retried after every attempt failed")
    assert dead_letters(amqp_url, worker.name) == []
    receiver.down = False
    # Events that ran out of attempts in the very batch during which the endpoint came back may be
    # dead-lettered; none is lost, and what arrives arrives in per-key order.
    dead = []
    wait_until(lambda: dead.extend(_dead_versions(amqp_url, worker.name)) or len(receiver.accepted) + len(dead) == 4,
               timeout=30, message="delivery after the outage")
    assert sorted([v for _, v in receiver.accepted] + dead) == sorted(e.version for e in events)
    assert all(v == sorted(v) for v in per_key(receiver.accepted).values())


def _dead_versions(amqp_url: str, sink: str) -> list[int]:
    return [int(headers["x-cdc-version"]) for _, headers in dead_letters(amqp_url, sink)]


def test_signatures_refuse_a_changed_body_a_wrong_secret_and_an_old_timestamp():
    body = b'{"id": "x"}'
    header = sign(SECRET, body)
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("other", body, header)
    old = sign(SECRET, body, timestamp=int(time.time()) - 600)
    assert not verify_signature(SECRET, body, old)  # a captured request replayed ten minutes later
    assert not verify_signature(SECRET, body, None) and not verify_signature(SECRET, body, "t=abc,v1=00")


def test_config_errors_name_the_problem():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="endpoint names .'a b'. may only hold"):
        WebhookSinkConfig(endpoints={"a b": {"url": "http://x", "secret": "s"}})
    with pytest.raises(ValidationError, match="url"):
        WebhookSinkConfig(endpoints={"a": {"url": "ftp://x", "secret": "s"}})
    with pytest.raises(ValidationError, match="secret"):
        WebhookSinkConfig(endpoints={"a": {"url": "http://x"}})
    assert "s3cret" not in repr(WebhookSinkConfig(endpoints={"a": {"url": "http://x", "secret": "s3cret"}}))
