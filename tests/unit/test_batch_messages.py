"""Batch messages (``broker.batch_events`` > 1): which events are joined, and how consumers read them back."""

from __future__ import annotations

import pytest

from cdc.broker.publisher import OutMessage, group_events
from cdc.broker.topology import HEADER_COUNT, HEADER_ENTITY, HEADER_KEY, HEADER_VERSION
from cdc.domain.envelope import batch_body, decode_many, encode, is_batch, split_batch
from cdc.domain.errors import ConfigError
from cdc.runtime.config import load_settings


def messages(event_factory, spec: str) -> list[OutMessage]:
    """'cccuD': one message per letter; c/u/d = change events of customer, D = a reader dead letter."""
    out = []
    for i, op in enumerate(spec, start=1):
        if op == "D":
            out.append(OutMessage.reader_dead_letter("customer", {"row": i}, "unmappable", f"dead-{i}", 0))
        else:
            out.append(OutMessage.from_event(event_factory("customer", i, 100 + i, op)))
    return out


def test_only_consecutive_change_events_with_one_routing_key_are_joined(event_factory):
    grouped = group_events(messages(event_factory, "cccuuDcc"), 10, 1 << 20)
    assert [(m.routing_key, m.headers.get(HEADER_COUNT)) for m in grouped] == [
        ("customer.c", 3), ("customer.u", 2), ("dead.reader.customer", None), ("customer.c", 2)]
    first = grouped[0]
    assert [e.version for e in decode_many(first.body)] == [101, 102, 103]  # in order
    assert first.headers == {HEADER_VERSION: 103, HEADER_ENTITY: "customer", HEADER_COUNT: 3}  # no single key
    assert first.message_id.endswith("+2")


def test_batches_stop_at_max_events_and_max_bytes_and_single_events_stay_as_they_were(event_factory):
    original = messages(event_factory, "c" * 7)
    assert [m.headers.get(HEADER_COUNT) for m in group_events(original, 3, 1 << 20)] == [3, 3, None]
    size = len(original[0].body)
    by_bytes = group_events(original, 100, 2 * size + 3)  # room for two events and the brackets and comma
    assert [m.headers.get(HEADER_COUNT) for m in by_bytes] == [2, 2, 2, None]
    assert group_events(original, 1, 1 << 20) == original  # batch_events: 1 (the default) changes nothing
    lone = group_events(original, 100, 1)  # not even one fits: each stays single, as before
    assert lone == original and all(HEADER_KEY in m.headers for m in lone)


def test_decode_many_reads_single_and_batch_bodies(event_factory):
    events = [event_factory("customer", k, 10 + k) for k in range(3)]
    assert decode_many(encode(events[0])) == [events[0]]
    body = batch_body([encode(e) for e in events])
    assert is_batch(body) and decode_many(body) == events
    assert [decode_many(b)[0] for b in split_batch(body)] == events
    with pytest.raises(ValueError):
        decode_many(b"[]")
    with pytest.raises(ValueError):
        split_batch(encode(events[0]))


def test_batches_are_refused_with_a_sharded_sink(tmp_path):
    path = tmp_path / "cdc.yaml"
    path.write_text("broker: {batch_events: 50}\nsinks:\n  crm: {type: crm, url: 'postgresql://x@h/db', shards: 4}\n")
    with pytest.raises(ConfigError, match=r"broker.batch_events is 50 but sinks.crm.shards is 4.*batch_events: 1"):
        load_settings(path)
    path.write_text("broker: {batch_events: 50}\nsinks:\n  crm: {type: crm, url: 'postgresql://x@h/db'}\n")
    assert load_settings(path).broker.batch_events == 50


def test_max_in_flight_counts_the_events_a_batch_message_holds() -> None:
    import threading
    import time

    from cdc.broker.publisher import MemoryPublisher

    got = []
    publisher = MemoryPublisher(got.append, auto_confirm=False, max_in_flight=100, batch_size=50)
    singles = [OutMessage(routing_key="customer.c", body=b'{"i":%d}' % i, message_id=f"m{i}", timestamp_ms=0,
                          headers={HEADER_VERSION: i + 1, HEADER_KEY: str(i), HEADER_ENTITY: "customer"})
               for i in range(1000)]
    batches = group_events(singles, 25, 1 << 20)
    assert len(batches) == 40 and all(m.count == 25 for m in batches)
    done = threading.Event()
    threading.Thread(target=lambda: (publisher.publish(batches, "txn"), done.set()), daemon=True).start()
    deadline = time.monotonic() + 5
    while len(publisher.messages) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    acked = 0
    while not done.is_set() and time.monotonic() < deadline:
        # Never more than 4 messages of 25 events unconfirmed (a limit in messages would let all 40 out).
        assert len(publisher.messages) - acked <= 4 and publisher.in_flight <= 100
        if len(publisher.messages) - acked == 4:
            publisher.confirm_next(2)
            acked += 2
        time.sleep(0.001)
    publisher.confirm_all()
    assert done.is_set() and len(publisher.messages) == 40 and got == ["txn"]


def test_the_confirm_tracker_counts_acked_events_message_by_message() -> None:
    from cdc.broker.publisher import ConfirmTracker

    tracker = ConfirmTracker()
    tracker.published(3, counts=[5, 1, 10])
    tracker.published(2)  # single events
    assert tracker.acked_events == 0
    tracker.ack(2, multiple=True)
    assert tracker.acked_events == 6
    tracker.ack(4)  # out of order: not counted until the ones before it are acked
    assert tracker.acked_events == 6
    tracker.ack(3)
    assert tracker.acked_events == 17
    tracker.ack(5)
    assert tracker.acked_events == 18 and tracker.in_flight == 0
