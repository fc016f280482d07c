"""Confirm ordering semantics: ConfirmTracker and MemoryPublisher (no I/O)."""

from __future__ import annotations

import threading
import time

import pytest

from cdc.broker.publisher import ConfirmTracker, MemoryPublisher, OutMessage
from cdc.broker.topology import HEADER_ENTITY, HEADER_KEY, HEADER_VERSION
from cdc.domain.envelope import ChangeEvent, SourceInfo, decode
from cdc.domain.errors import TransientError
from cdc.domain.redact import redact_url


def msg(i: int) -> OutMessage:
    return OutMessage(routing_key="customer.c", body=b'{"i":%d}' % i, message_id=f"m{i}",
                      headers={HEADER_VERSION: i + 1, HEADER_KEY: str(i), HEADER_ENTITY: "customer"},
                      timestamp_ms=1_700_000_000_000 + i)


def msgs(start: int, n: int) -> list[OutMessage]:
    return [msg(i) for i in range(start, start + n)]


def wait_until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.005)


# ---------------------------------------------------------------- ConfirmTracker


def test_tracker_multiple_ack_spanning_transactions() -> None:
    t = ConfirmTracker()
    t.published(3)
    assert t.end_transaction("a") == []
    t.published(2)
    assert t.end_transaction("b") == []
    t.published(4)
    assert t.end_transaction("c") == []
    assert t.in_flight == 9
    assert t.ack(2, multiple=True) == []
    assert t.ack(7, multiple=True) == ["a", "b"]
    assert t.in_flight == 2
    assert t.ack(9, multiple=True) == ["c"]
    assert t.in_flight == 0 and t.pending_transactions == 0


def test_tracker_single_acks_out_of_order() -> None:
    t = ConfirmTracker()
    t.published(2)
    t.end_transaction("a")
    t.published(2)
    t.end_transaction("b")
    assert t.ack(4) == []
    assert t.ack(3) == []
    assert t.acked_count == 2 and t.in_flight == 2
    assert t.ack(2) == []
    assert t.ack(1) == ["a", "b"]
    assert t.in_flight == 0


def test_tracker_multiple_ack_absorbs_single_acks_above() -> None:
    t = ConfirmTracker()
    t.published(6)
    t.end_transaction("a")
    t.ack(5)
    t.ack(6)
    assert t.acked_count == 2
    assert t.ack(3, multiple=True) == []
    assert t.acked_count == 5
    assert t.ack(4) == ["a"]
    assert t.acked_count == 6


def test_tracker_empty_transactions() -> None:
    t = ConfirmTracker()
    assert t.end_transaction("empty0") == ["empty0"]  # nothing before it: confirmed at once
    t.published(2)
    t.end_transaction("a")
    assert t.end_transaction("empty1") == []  # waits for "a"
    assert t.ack(2, multiple=True) == ["a", "empty1"]
    assert t.end_transaction("empty2") == ["empty2"]


def test_tracker_duplicate_and_stale_acks_are_harmless() -> None:
    t = ConfirmTracker()
    t.published(3)
    t.end_transaction("a")
    assert t.ack(3, multiple=True) == ["a"]
    assert t.ack(3, multiple=True) == []
    assert t.ack(1) == []
    assert t.acked_count == 3


def test_tracker_rejects_ack_beyond_published() -> None:
    t = ConfirmTracker()
    t.published(1)
    with pytest.raises(ValueError):
        t.ack(2)


def test_tracker_oldest_unconfirmed_time() -> None:
    t = ConfirmTracker()
    assert t.oldest_unconfirmed_at is None
    t.published(2, at=10.0)
    t.published(2, at=20.0)
    t.end_transaction("a")
    assert t.oldest_unconfirmed_at == 10.0
    t.ack(3, multiple=True)
    assert t.oldest_unconfirmed_at == 20.0
    t.ack(4)
    assert t.oldest_unconfirmed_at is None


# ---------------------------------------------------------------- MemoryPublisher


def test_auto_confirm_in_order() -> None:
    got = []
    p = MemoryPublisher(got.append)
    p.start()
    for i in range(5):
        p.publish(msgs(i * 3, 3), i)
    p.publish([], "empty")
    assert got == [0, 1, 2, 3, 4, "empty"]
    assert [m.message_id for m in p.messages] == [f"m{i}" for i in range(15)]
    assert [t for t, _ in p.transactions] == [0, 1, 2, 3, 4, "empty"]
    assert p.flush(0)


def test_manual_confirm_ordering_and_exactly_once() -> None:
    got = []
    p = MemoryPublisher(got.append, auto_confirm=False)
    p.publish(msgs(0, 3), "a")
    p.publish([], "empty-after-a")
    p.publish(msgs(3, 2), "b")
    p.publish(msgs(5, 4), "c")
    assert got == [] and p.in_flight == 9
    assert not p.flush(0.01)
    p.confirm_next(2)
    assert got == []
    p.confirm_next(1)
    assert got == ["a", "empty-after-a"]
    p.ack(9)  # single ack of the last message: "b" and "c" still wait
    assert got == ["a", "empty-after-a"]
    p.ack(5, multiple=True)
    assert got == ["a", "empty-after-a", "b"]
    p.ack(8, multiple=True)
    assert got == ["a", "empty-after-a", "b", "c"]
    p.confirm_all()
    assert got == ["a", "empty-after-a", "b", "c"]
    assert p.flush(0) and p.in_flight == 0


def test_empty_first_transaction_confirms_immediately() -> None:
    got = []
    p = MemoryPublisher(got.append, auto_confirm=False)
    p.publish([], "e")
    assert got == ["e"]


def test_nack_fails_and_stops_confirmations() -> None:
    got = []
    p = MemoryPublisher(got.append, auto_confirm=False)
    p.publish(msgs(0, 2), "a")
    p.publish(msgs(2, 2), "b")
    p.confirm_next(2)
    assert got == ["a"]
    p.nack(3)
    assert isinstance(p.error, TransientError) and "nack" in str(p.error)
    p.confirm_all()  # a late ack after a nack must not confirm anything
    assert got == ["a"]
    with pytest.raises(TransientError):
        p.publish(msgs(4, 1), "c")
    with pytest.raises(TransientError):
        p.publish([], "d")
    assert not p.flush(0)


def test_returned_message_fails() -> None:
    got = []
    p = MemoryPublisher(got.append, auto_confirm=False)
    p.publish(msgs(0, 1), "a")
    p.return_message(p.messages[0])
    p.confirm_all()
    assert got == [] and p.failed


def test_callback_error_fails_publisher() -> None:
    def boom(token):
        raise RuntimeError("checkpoint store down")

    p = MemoryPublisher(boom)
    p.publish(msgs(0, 1), "a")
    assert p.failed and "checkpoint store down" in str(p.error)
    with pytest.raises(TransientError):
        p.publish(msgs(1, 1), "b")


def test_reentrant_publish_from_callback_keeps_order() -> None:
    got = []
    p = MemoryPublisher(lambda t: (got.append(t), t == "a" and p.publish(msgs(9, 1), "nested")))
    p.publish(msgs(0, 1), "a")
    p.publish(msgs(1, 1), "b")
    assert got == ["a", "nested", "b"]


def test_backpressure_blocks_until_confirmed() -> None:
    got = []
    p = MemoryPublisher(got.append, auto_confirm=False, max_in_flight=10, batch_size=4)
    done = threading.Event()

    def producer() -> None:
        p.publish(msgs(0, 25), "big")
        done.set()

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    wait_until(lambda: len(p.messages) == 10)
    assert not done.is_set() and p.in_flight == 10
    while not done.is_set():
        p.confirm_next(3)
        assert p.in_flight <= 10
        time.sleep(0.002)
    th.join(5)
    assert len(p.messages) == 25
    assert got == []
    p.confirm_all()
    assert got == ["big"]


def test_blocked_publish_raises_on_failure() -> None:
    p = MemoryPublisher(lambda t: None, auto_confirm=False, max_in_flight=5)
    errors = []

    def producer() -> None:
        try:
            p.publish(msgs(0, 20), "big")
        except TransientError as exc:
            errors.append(exc)

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    wait_until(lambda: p.in_flight == 5)
    p.fail(TransientError("connection lost"))
    th.join(5)
    assert not th.is_alive()
    assert errors and "connection lost" in str(errors[0])


def test_blocked_publish_raises_on_close() -> None:
    p = MemoryPublisher(lambda t: None, auto_confirm=False, max_in_flight=5)
    errors = []
    th = threading.Thread(target=lambda: _catch(errors, p.publish, msgs(0, 20), "big"), daemon=True)
    th.start()
    wait_until(lambda: p.in_flight == 5)
    p.close()
    p.close()  # idempotent
    th.join(5)
    assert errors and "closed" in str(errors[0])


def _catch(errors, fn, *args) -> None:
    try:
        fn(*args)
    except TransientError as exc:
        errors.append(exc)


def test_generator_of_many_messages_with_bounded_in_flight() -> None:
    got = []
    seen_max = [0]
    p = MemoryPublisher(got.append, auto_confirm=False, max_in_flight=1000, batch_size=300)

    def gen():
        for i in range(10_000):
            seen_max[0] = max(seen_max[0], p.in_flight)
            yield msg(i)

    def confirmer(stop: threading.Event) -> None:
        while not stop.is_set():
            p.confirm_next(250)
            time.sleep(0.001)

    stop = threading.Event()
    th = threading.Thread(target=confirmer, args=(stop,), daemon=True)
    th.start()
    try:
        p.publish(gen(), "huge")
        assert p.flush(10)
    finally:
        stop.set()
        th.join(5)
    assert got == ["huge"] and len(p.messages) == 10_000
    assert p.in_flight == 0 and 0 < seen_max[0] <= 1000


def test_confirm_timeout() -> None:
    now = [100.0]
    p = MemoryPublisher(lambda t: None, auto_confirm=False, confirm_timeout_s=5.0, clock=lambda: now[0])
    p.publish(msgs(0, 1), "a")
    now[0] += 4.0
    assert not p.check_confirm_timeout()
    now[0] += 2.0
    assert p.check_confirm_timeout()
    assert p.failed and "did not confirm" in str(p.error)


def test_flush_waits_for_other_thread() -> None:
    got = []
    p = MemoryPublisher(got.append, auto_confirm=False)
    p.publish(msgs(0, 3), "a")
    timer = threading.Timer(0.05, p.confirm_all)
    timer.start()
    assert p.flush(5)
    assert got == ["a"]


def test_out_message_from_event() -> None:
    event = ChangeEvent(
        id="legacy:mysql-bin.000001:100:0:customer", version=(1 << 32) | 100, op="u", entity="customer",
        key={"id": 7}, after={"id": 7, "name": "x"},
        source=SourceInfo(name="legacy", server_id=1, file="mysql-bin.000001", pos=100, row=0,
                          db="shop", table="customers", ts_ms=1_700_000_000_000),
        ts_ms=1_700_000_000_123,
    )
    m = OutMessage.from_event(event)
    assert m.routing_key == "customer.u"
    assert m.message_id == event.id
    assert m.headers == {HEADER_VERSION: event.version, HEADER_KEY: "7", HEADER_ENTITY: "customer"}
    assert m.timestamp_ms == 1_700_000_000_123
    assert decode(m.body) == event
    assert OutMessage.from_event(event.model_dump(mode="json")) == m


def test_mask_url() -> None:
    assert redact_url("amqp://user:s3cr%40t@rabbit.example:5671/vh") == "amqp://user:***@rabbit.example:5671/vh"
    assert redact_url("amqp://rabbit.example/") == "amqp://rabbit.example/"


# ---------------------------------------------------------------- property encoding fast path


@pytest.mark.parametrize("headers", [
    {HEADER_VERSION: (7 << 32) | 1234, HEADER_KEY: "42", HEADER_ENTITY: "customer"},
    {HEADER_VERSION: 2**63 - 1, HEADER_KEY: "clé|ünïcode", HEADER_ENTITY: "order_line"},
    {HEADER_VERSION: -5, HEADER_KEY: "", HEADER_ENTITY: "x"},
    {HEADER_VERSION: 2**31, HEADER_KEY: "a", HEADER_ENTITY: "x", "n": -(2**31)},
    {},
])
def test_fast_properties_match_pika_encoding(headers) -> None:
    import pika

    from cdc.broker.publisher import _FastProperties, encode_properties

    kwargs = dict(content_type="application/json", delivery_mode=2, message_id="src:mysql-bin.000001:4:0:é",
                  timestamp=1_700_000_000, headers=headers)
    reference = b"".join(pika.BasicProperties(**kwargs).encode())
    assert encode_properties(kwargs["message_id"], kwargs["timestamp"], headers) == reference
    assert b"".join(_FastProperties(**kwargs).encode()) == reference
    decoded = pika.BasicProperties()
    decoded.decode(reference)
    assert decoded.headers == headers and decoded.message_id == kwargs["message_id"]


def test_fast_properties_fall_back_for_other_types() -> None:
    import pika

    from cdc.broker.publisher import _FastProperties, encode_properties

    for headers in ({"flag": True}, {"f": 1.5}, {"big": 2**64}, {"b": b"raw"}):
        assert encode_properties("m", 1, headers) is None
    kwargs = dict(content_type="application/json", delivery_mode=2, message_id="m", timestamp=1,
                  headers={"flag": True}, priority=3)
    assert _FastProperties(**kwargs).encode() == pika.BasicProperties(**kwargs).encode()


# ---------------------------------------------------------------- publish frames fast path


@pytest.mark.parametrize("body_size", [0, 1, 400, 131_064, 131_065, 3 * 131_064 + 7])
@pytest.mark.parametrize("routing_key", ["member.c", "événement.u", "dead.reader.x" * 19])
def test_marshal_publish_matches_pika_frames(body_size, routing_key) -> None:
    """The frames the RabbitPublisher writes for a message are byte for byte what pika's basic_publish writes."""
    import pika
    from pika import frame, spec

    from cdc.broker.publisher import encode_properties, marshal_publish, short_string

    body_max = 131_072 - 8  # pika's body frame limit for the default frame_max
    body = bytes(range(256)) * (body_size // 256) + bytes(body_size % 256)
    headers = {HEADER_VERSION: 12345, HEADER_KEY: "42", HEADER_ENTITY: "member"}
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="id-é", timestamp=1_700_000_000,
                                 headers=headers)
    reference = [frame.Method(3, spec.Basic.Publish(exchange="cdc.events", routing_key=routing_key, mandatory=True)).marshal(),
                 frame.Header(3, len(body), props).marshal()]
    reference += [frame.Body(3, body[i:i + body_max]).marshal() for i in range(0, len(body), body_max)]
    ours = marshal_publish(3, short_string("cdc.events"), routing_key, encode_properties("id-é", 1_700_000_000, headers), body,
                           body_max)
    assert ours == b"".join(reference)


def test_marshal_publish_refuses_a_routing_key_over_255_bytes() -> None:
    from cdc.broker.publisher import marshal_publish, short_string

    assert marshal_publish(1, short_string("x"), "k" * 256, b"", b"{}", 1000) is None
    with pytest.raises(ValueError, match="short string"):
        short_string("e" * 256)
