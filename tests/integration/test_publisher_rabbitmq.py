"""RabbitPublisher against the real RabbitMQ (CDC_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/%2F)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest
from tcp_proxy import TcpProxy

from cdc.broker.publisher import OutMessage, RabbitPublisher
from cdc.broker.topology import (
    HEADER_ENTITY,
    HEADER_KEY,
    HEADER_REASON,
    HEADER_VERSION,
    READER_DLQ,
    declare_reader_dlq,
    reader_dead_exchange,
)
from cdc.domain.errors import TransientError

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("CDC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.01)


def msg(i: int, entity: str = "customer") -> OutMessage:
    return OutMessage(
        routing_key=f"{entity}.c",
        body=b'{"i":%d,"pad":"%s"}' % (i, b"x" * 50),
        message_id=f"test:{i}",
        headers={HEADER_VERSION: 1_000 + i, HEADER_KEY: str(i), HEADER_ENTITY: entity},
        timestamp_ms=1_700_000_000_000 + i * 1000,
    )


@pytest.fixture(scope="module")
def admin() -> Any:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL.split('@')[-1]} ({exc!r}): "
                    "run `deploy/dev-services.sh up`", pytrace=False)
    yield conn
    if conn.is_open:
        conn.close()


@pytest.fixture
def topo(admin) -> Any:
    """A unique exchange with a quorum queue bound on '#'; deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    exchange, queue = f"cdc.test.pub.{suffix}", f"cdc.test.pub.{suffix}.q"
    ch = admin.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    yield exchange, queue
    ch = admin.channel()
    ch.queue_delete(queue=queue)
    ch.exchange_delete(exchange=exchange)
    ch.exchange_delete(reader_dead_exchange(exchange))
    ch.close()


def queue_depth(admin, queue: str) -> int:
    ch = admin.channel()
    try:
        return ch.queue_declare(queue=queue, passive=True).method.message_count
    finally:
        ch.close()


def drain(admin, queue: str, expected: int, timeout: float = 30.0) -> list[tuple[Any, Any, bytes]]:
    ch = admin.channel()
    ch.basic_qos(prefetch_count=1000)
    out = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, inactivity_timeout=1.0):
        if method is None:
            if len(out) >= expected or time.monotonic() > deadline:
                break
            continue
        out.append((method, props, body))
        if len(out) % 500 == 0 or len(out) >= expected:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if len(out) >= expected:
            break
    ch.cancel()
    ch.close()
    return out


class Recorder:
    def __init__(self) -> None:
        self.tokens: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, token: Any) -> None:
        with self.lock:
            self.tokens.append(token)


# ------------------------------------------------------------------------------------------


def test_transactions_confirmed_in_order_and_delivered(admin, topo) -> None:
    exchange, queue = topo
    rec = Recorder()
    pub = RabbitPublisher(AMQP_URL, exchange, rec, max_in_flight=500)
    pub.start()
    try:
        sent: list[OutMessage] = []
        tokens = []
        i = 0
        for t in range(300):
            n = t % 7  # includes empty transactions
            batch = [msg(i + k, entity="customer" if k % 2 else "order") for k in range(n)]
            i += n
            sent.extend(batch)
            tokens.append(("txn", t))
            pub.publish(batch, ("txn", t))
        assert pub.flush(30), pub.error
        assert rec.tokens == tokens  # in order, exactly once
        assert pub.error is None and pub.in_flight == 0
    finally:
        pub.close()
    assert rec.tokens == tokens  # nothing more after close

    got = drain(admin, queue, len(sent))
    assert len(got) == len(sent)
    for (method, props, body), m in zip(got, sent):
        assert body == m.body
        assert method.routing_key == m.routing_key
        assert props.message_id == m.message_id
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        assert props.timestamp == m.timestamp_ms // 1000
        assert props.headers == m.headers


def test_large_transaction_with_tiny_in_flight(admin, topo) -> None:
    exchange, queue = topo
    rec = Recorder()
    pub = RabbitPublisher(AMQP_URL, exchange, rec, max_in_flight=10)
    pub.start()
    peak = [0]

    def gen():
        for i in range(5_000):
            peak[0] = max(peak[0], pub.in_flight)
            yield msg(i)

    try:
        pub.publish(gen(), "big")
        pub.publish([], "after")
        assert pub.flush(60), pub.error
    finally:
        pub.close()
    assert rec.tokens == ["big", "after"]
    assert 0 < peak[0] <= 10
    wait_until(lambda: queue_depth(admin, queue) == 5_000, what="5000 messages in the queue")


def test_unroutable_message_fails_publisher(admin) -> None:
    exchange = f"cdc.test.pub.unbound.{uuid.uuid4().hex[:10]}"
    rec = Recorder()
    pub = RabbitPublisher(AMQP_URL, exchange, rec)
    try:
        pub.start()
        pub.publish([msg(1)], "lost")
        wait_until(lambda: pub.error is not None, what="publisher failure")
        assert "unroutable" in str(pub.error)
        assert not pub.flush(1)
        with pytest.raises(TransientError):
            pub.publish([msg(2)], "next")
        assert rec.tokens == []
    finally:
        pub.close()
        ch = admin.channel()
        ch.exchange_delete(exchange=exchange)
        ch.exchange_delete(reader_dead_exchange(exchange))
        ch.close()


def test_unreachable_broker_raises_without_password() -> None:
    secret = "pw-" + uuid.uuid4().hex
    port = _free_port()
    pub = RabbitPublisher(f"amqp://guest:{secret}@127.0.0.1:{port}/%2F", "cdc.events", lambda t: None,
                          connect_timeout_s=3)
    t0 = time.monotonic()
    with pytest.raises(TransientError) as info:
        pub.start()
    assert time.monotonic() - t0 < 10
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert secret not in text and secret not in repr(info.value)
    assert "***" in text
    pub.close()
    pub.close()
    with pytest.raises(TransientError):
        pub.publish([msg(1)], "x")


def test_wrong_password_raises_transient(admin) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    host_port = AMQP_URL.split("@", 1)[1]
    pub = RabbitPublisher(f"amqp://guest:{secret}@{host_port}", "cdc.events", lambda t: None, connect_timeout_s=5)
    with pytest.raises(TransientError) as info:
        pub.start()
    assert secret not in str(info.value)
    pub.close()


def test_connection_loss_unblocks_publish(topo) -> None:
    exchange, _queue = topo
    with TcpProxy(_amqp_port()) as proxy:
        rec = Recorder()
        pub = RabbitPublisher(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", exchange, rec, max_in_flight=50)
        pub.start()
        errors: list[BaseException] = []

        def producer() -> None:
            try:
                for t in range(1_000_000):
                    pub.publish([msg(t)], t)
            except TransientError as exc:
                errors.append(exc)

        th = threading.Thread(target=producer, daemon=True)
        th.start()
        try:
            wait_until(lambda: len(rec.tokens) > 100, what="some confirmations")
            proxy.freeze()  # stop forwarding: publish() fills max_in_flight and blocks
            wait_until(lambda: pub.in_flight >= 50, what="publisher blocked on max_in_flight")
            proxy.down()
            th.join(20)
            assert not th.is_alive(), "publish() deadlocked after the connection died"
            assert errors and pub.error is not None
            n = len(rec.tokens)
            assert rec.tokens == list(range(n))
        finally:
            pub.close()


def test_confirm_timeout_fails_publisher(topo) -> None:
    exchange, _queue = topo
    with TcpProxy(_amqp_port()) as proxy:
        rec = Recorder()
        pub = RabbitPublisher(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", exchange, rec,
                              confirm_timeout_s=1.0)
        pub.start()
        try:
            pub.publish([msg(1)], "a")
            wait_until(lambda: rec.tokens == ["a"], what="first confirmation")
            proxy.freeze()
            pub.publish([msg(2)], "b")
            wait_until(lambda: pub.error is not None, timeout=10, what="confirm timeout")
            assert "did not confirm" in str(pub.error)
            assert rec.tokens == ["a"]
        finally:
            proxy.down()
            pub.close()


def test_close_is_idempotent_and_fast(topo) -> None:
    exchange, _queue = topo
    pub = RabbitPublisher(AMQP_URL, exchange, lambda t: None)
    with pytest.raises(TransientError, match="not started"):
        pub.publish([msg(0)], "early")
    pub.start()
    pub.publish([msg(1)], "a")
    assert pub.flush(10)
    t0 = time.monotonic()
    pub.close()
    pub.close()
    assert time.monotonic() - t0 < 5
    assert pub._thread is not None and not pub._thread.is_alive()
    assert pub.error is None  # a requested close is not a failure
    assert pub.flush(0)  # nothing was left unconfirmed
    with pytest.raises(TransientError):
        pub.publish([msg(2)], "b")


# ------------------------------------------------------------------------------------------


def _amqp_port() -> int:
    return pika.URLParameters(AMQP_URL).port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reader_dead_letters_reach_the_reader_dlq_and_never_a_subscriber_of_the_events_exchange(admin, topo) -> None:
    """A dead letter carries the source row as it was (unmapped columns, fields the mappings hash or
    drop): a downstream team bound to '#' on the events exchange must get change events only."""
    exchange, queue = topo
    ch = admin.channel()
    declare_reader_dlq(ch, exchange)
    ch.close()
    rec = Recorder()
    pub = RabbitPublisher(AMQP_URL, exchange, rec, max_in_flight=50)
    pub.start()
    marker = uuid.uuid4().hex
    dead = OutMessage.reader_dead_letter("customer", {"after": {"ssn": "078-05-1120"}}, "cannot map", f"dead:{marker}",
                                         1_700_000_000_000)
    try:
        pub.publish([msg(1), dead, msg(2)], "txn")
        assert pub.flush(30), pub.error
        assert rec.tokens == ["txn"]
    finally:
        pub.close()
    got = drain(admin, queue, 2, timeout=5)
    assert [m.routing_key for m, _, _ in got] == ["customer.c", "customer.c"]
    assert queue_depth(admin, queue) == 0

    ch = admin.channel()  # the reader DLQ is shared: take ours, give back the rest
    letters, others = [], []
    try:
        for method, props, body in ch.consume(READER_DLQ, inactivity_timeout=2.0):
            if method is None:
                break
            if props.message_id == f"dead:{marker}":
                ch.basic_ack(method.delivery_tag)
                letters.append((method.routing_key, props.headers[HEADER_REASON], body))
            else:
                others.append(method.delivery_tag)
    finally:
        for tag in others:
            ch.basic_nack(tag, requeue=True)
        ch.cancel()
        ch.close()
    assert letters == [("dead.reader.customer", "cannot map", b'{"after":{"ssn":"078-05-1120"}}')]
