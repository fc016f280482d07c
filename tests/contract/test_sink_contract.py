"""The contract every sink passes (see conftest.py for the harness protocol): idempotence by version,
tombstones, offsets, restarts, rejections, and the same through a SinkWorker on a real RabbitMQ."""

from __future__ import annotations

import os
import random
import threading

import pytest
from sink_broker import Broker

from cdc.broker.topology import HEADER_REASON
from cdc.domain.envelope import Op, encode
from cdc.sinks.base import SinkConfig
from cdc.sinks.worker import SinkWorker

pytestmark = pytest.mark.integration


def row(id_: int, name: str | None = None, balance: str = "1.00") -> dict:
    return {"id": id_, "name": name or f"c{id_}", "balance": balance, "tags": ["a", {"n": id_}], "updated_at": "2024-03-01T12:00:00Z"}


def change(factory, id_: int, version: int, op: Op = Op.UPDATE, **fields):
    return factory("customer", id_, version, op, after=None if op is Op.DELETE else row(id_, **fields))


def snapshot(harness):
    return harness.rows("customer"), harness.sink.read_offset()


def test_redelivered_batch_changes_nothing(harness, event_factory):
    batch = [change(event_factory, i, 100 + i, Op.CREATE) for i in range(5)]
    assert harness.sink.apply(batch) == []
    first = snapshot(harness)
    assert first[0] == {str(i): row(i) for i in range(5)}
    assert harness.sink.apply(batch) == []
    assert snapshot(harness) == first


def test_replay_of_an_older_range_after_newer_is_ignored(harness, event_factory):
    old = [change(event_factory, i, 10 + i, Op.CREATE, name=f"old{i}") for i in range(10)]
    new = [change(event_factory, i, 20 + i, name=f"new{i}") for i in range(10)]
    harness.sink.apply(old)
    harness.sink.apply(new)
    assert harness.sink.apply(old) == []
    assert harness.rows("customer") == {str(i): row(i, f"new{i}") for i in range(10)}
    assert harness.sink.read_offset().version == 29


def test_out_of_order_versions_within_and_across_batches(harness, event_factory):
    harness.sink.apply([change(event_factory, 1, 33, name="v33"), change(event_factory, 2, 31, name="v31"),
                        change(event_factory, 1, 32, name="v32")])
    harness.sink.apply([change(event_factory, 2, 30, name="v30"), change(event_factory, 3, 35, name="v35")])
    harness.sink.apply([change(event_factory, 3, 34, name="v34")])
    assert harness.rows("customer") == {"1": row(1, "v33"), "2": row(2, "v31"), "3": row(3, "v35")}


@pytest.mark.parametrize("order", ["oldest-first", "newest-first"])
def test_same_key_twice_in_one_batch_newest_wins(harness, event_factory, order):
    batch = [change(event_factory, 1, 40, name="older"), change(event_factory, 1, 41, name="newer"),
             change(event_factory, 2, 42, Op.CREATE), change(event_factory, 2, 43, Op.DELETE)]
    if order == "newest-first":
        batch.reverse()
    assert harness.sink.apply(batch) == []
    assert harness.rows("customer") == {"1": row(1, "newer")}


def test_delete_then_late_older_insert_stays_deleted(harness, event_factory):
    harness.sink.apply([change(event_factory, 1, 50, Op.CREATE)])
    harness.sink.apply([change(event_factory, 1, 52, Op.DELETE)])
    harness.sink.apply([change(event_factory, 1, 51, name="late")])
    harness.sink.apply([change(event_factory, 7, 54, Op.DELETE)])  # a delete of a key never seen
    harness.sink.apply([change(event_factory, 7, 53, Op.CREATE)])
    assert harness.rows("customer") == {}


def test_delete_then_newer_insert_is_live_again(harness, event_factory):
    harness.sink.apply([change(event_factory, 1, 60, Op.CREATE), change(event_factory, 1, 61, Op.DELETE)])
    assert harness.rows("customer") == {}
    harness.sink.apply([change(event_factory, 1, 62, Op.CREATE, name="again")])
    assert harness.rows("customer") == {"1": row(1, "again")}


def test_crash_between_apply_and_ack_then_redelivery(harness, event_factory):
    harness.sink.apply([change(event_factory, 9, 69, Op.CREATE)])
    batch = [change(event_factory, i, 70 + i, Op.CREATE) for i in range(5)] + [change(event_factory, 9, 80, Op.DELETE)]
    harness.sink.apply(batch)
    once = snapshot(harness)
    harness.reopen()  # the process died before acking: the broker delivers the batch again
    assert snapshot(harness) == once
    assert harness.sink.apply(batch) == []
    assert snapshot(harness) == once
    assert once[0] == {str(i): row(i) for i in range(5)} and once[1].version == 80


def test_empty_batch(harness, event_factory):
    assert harness.sink.apply([]) == []
    assert harness.sink.read_offset() is None
    harness.sink.apply([change(event_factory, 1, 90)])
    before = snapshot(harness)
    assert harness.sink.apply([]) == []
    assert snapshot(harness) == before


def test_refused_event_is_the_only_rejection(harness, event_factory):
    bad = harness.bad_event(event_factory)
    if bad is None:
        pytest.skip(f"the {harness.name} sink accepts every well-formed event (the worker test covers malformed ones)")
    good = [change(event_factory, i, 5000 + i, Op.CREATE) for i in range(4)]
    rejections = harness.sink.apply([*good[:2], bad, *good[2:]])
    assert [r.event.id for r in rejections] == [bad.id]
    assert rejections[0].reason
    assert harness.rows("customer") == {str(i): row(i) for i in range(4)}


def test_offset_only_moves_forward_and_is_the_newest_applied_event(harness, event_factory):
    assert harness.sink.read_offset() is None
    newest = change(event_factory, 1, 101)
    harness.sink.apply([newest, change(event_factory, 2, 100)])
    offset = harness.sink.read_offset()
    assert (offset.version, offset.file, offset.pos, offset.ts_ms) == (101, newest.source.file, newest.source.pos, newest.source.ts_ms)
    harness.sink.apply([change(event_factory, 3, 99)])  # a replayed, older batch
    assert harness.sink.read_offset() == offset
    harness.sink.apply([change(event_factory, 3, 110)])
    assert harness.sink.read_offset().version == 110


# --- through a SinkWorker on a real RabbitMQ ----------------------------------------------------------

FAST = {"batch_size": 20, "batch_wait_ms": 20, "prefetch": 200, "delivery_limit": 5}


def test_worker_applies_valid_events_and_dead_letters_the_rest(harness, event_factory, amqp_url, unique_name, wait_until):
    bad = harness.bad_event(event_factory)
    events = [change(event_factory, i, 1000 + i, Op.CREATE) for i in range(40)]
    events += [change(event_factory, i, 2000 + i, name=f"u{i}") for i in range(0, 40, 2)]
    events += [change(event_factory, i, 3000 + i, Op.DELETE) for i in range(0, 40, 5)]
    expected = {str(i): row(i, f"u{i}" if i % 2 == 0 else None) for i in range(40) if i % 5}
    config = SinkConfig(type=harness.name, **FAST)
    broker = Broker(amqp_url, f"{unique_name}.events", unique_name, config)
    worker = SinkWorker(unique_name, harness.sink, config, amqp_url, broker.exchange, threading.Event())
    errors: list[Exception] = []
    thread = threading.Thread(target=lambda: _run(worker, errors), daemon=True)
    try:
        broker.publish_events(events[:30])
        broker.publish(b"{not json", headers={"x-test": "malformed"})
        if bad is not None:
            broker.publish_events([bad])
        broker.publish_events(events[30:])
        thread.start()
        wait_until(lambda: harness.rows("customer") == expected, timeout=30, message=f"the {harness.name} sink to hold every row")
        wait_until(lambda: broker.depth() == 0, timeout=10, message="every message acked")
        wait_until(lambda: (o := harness.sink.read_offset()) and o.version == 3035, timeout=10, message="the offset")
        want = 1 if bad is None else 2
        found: list[tuple[bytes, dict]] = []
        wait_until(lambda: found.extend(broker.dead_letters()) or len(found) >= want, timeout=10, message="the dead letters")
        assert len(found) == want
        dead = dict(found)
        assert set(dead) == {b"{not json"} | ({encode(bad)} if bad is not None else set())
        assert "malformed" in dead[b"{not json"][HEADER_REASON]
        if bad is not None:
            assert f"rejected by sink {unique_name}" in dead[encode(bad)][HEADER_REASON]
        assert errors == []
    finally:
        worker.stop.set()
        if thread.is_alive():
            thread.join(10)
        broker.close()
    assert not thread.is_alive()


def _run(worker: SinkWorker, errors: list[Exception]) -> None:
    try:
        worker.run()
    except Exception as err:  # noqa: BLE001 -- reported to the test thread
        errors.append(err)


# --- truncates (op t: TRUNCATE / DROP TABLE at the source) -------------------------------------------


def _seeded(request) -> random.Random:
    seed = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
    print(f"{request.node.name}: seed {seed} (CDC_TEST_SEED={seed} replays it)")
    return random.Random(seed)


def _rows_before(rng: random.Random, factory, count: int, first_version: int) -> tuple[list, dict]:
    """Generated creates and updates of keys 1..count below ``first_version + 10 * count``: (events, newest row per key)."""
    events, newest = [], {}
    version = first_version
    for _ in range(count * 3):
        key = rng.randint(1, count)
        version += rng.randint(1, 3)
        name = f"n{version}"
        events.append(change(factory, key, version, Op.CREATE if key not in newest else Op.UPDATE, name=name))
        newest[key] = name
    return events, newest


def test_truncate_removes_every_older_row_and_older_redeliveries_stay_out(harness, event_factory, request):
    rng = _seeded(request)
    old, _ = _rows_before(rng, event_factory, rng.randint(5, 40), 10_000)
    for i in range(0, len(old), 7):
        harness.sink.apply(old[i:i + 7])
    truncate = event_factory.truncate(version=old[-1].version + 5)
    assert harness.sink.apply([truncate]) == []
    assert harness.rows("customer") == {}
    assert harness.sink.read_offset().version == truncate.version
    rng.shuffle(old)
    assert harness.sink.apply(old) == []  # a redelivery or replay of everything before the truncate
    assert harness.sink.apply([truncate]) == []  # the truncate itself again
    harness.reopen()  # a process restart forgets nothing: the floor is in the store
    harness.sink.apply(old[: len(old) // 2])
    assert harness.rows("customer") == {}
    assert harness.sink.read_offset().version == truncate.version


def test_truncate_then_newer_inserts_are_kept(harness, event_factory, request):
    rng = _seeded(request)
    old, _ = _rows_before(rng, event_factory, 20, 20_000)
    harness.sink.apply(old)
    truncate = event_factory.truncate(version=old[-1].version + 1)
    new_keys = rng.sample(range(1, 40), 10)  # some keys existed before, some are new
    new = [change(event_factory, k, truncate.version + 1 + i, Op.CREATE, name=f"after{k}") for i, k in enumerate(new_keys)]
    assert harness.sink.apply([truncate, *new[:5]]) == []  # in one batch with the truncate
    assert harness.sink.apply(new[5:]) == []
    expected = {str(k): row(k, f"after{k}") for k in new_keys}
    assert harness.rows("customer") == expected
    harness.sink.apply(old)  # late older writes of the same keys change nothing
    assert harness.rows("customer") == expected
    assert harness.sink.read_offset().version == new[-1].version


def test_truncate_out_of_order_gives_the_same_rows(harness, event_factory, request):
    """Rows before and after two truncates, delivered shuffled in random batches (redeliveries, shards):
    the sink ends with exactly the rows written after the last truncate, newest per key."""
    rng = _seeded(request)
    first, _ = _rows_before(rng, event_factory, 15, 30_000)
    t1 = event_factory.truncate(version=first[-1].version + 1)
    middle, _ = _rows_before(rng, event_factory, 15, t1.version)
    t2 = event_factory.truncate(version=middle[-1].version + 1)
    last, newest = _rows_before(rng, event_factory, 15, t2.version)
    everything = first + [t1] + middle + [t2] + last
    deliveries = everything + rng.sample(everything, len(everything) // 3)  # some of them twice
    rng.shuffle(deliveries)
    while deliveries:
        size = rng.randint(1, 12)
        assert harness.sink.apply(deliveries[:size]) == []
        deliveries = deliveries[size:]
    assert harness.rows("customer") == {str(k): row(k, name) for k, name in newest.items()}
    assert harness.sink.read_offset().version == last[-1].version


def test_truncate_of_one_entity_leaves_the_others(harness, event_factory):
    harness.sink.apply([change(event_factory, i, 40_000 + i, Op.CREATE) for i in range(5)])
    other = event_factory.truncate(entity="customer_archive", version=40_100)
    rejections = harness.sink.apply([other])
    # An entity the sink does not consume is refused (dead-lettered with the reason), never silently taken.
    assert all("customer_archive" in r.reason for r in rejections)
    assert harness.rows("customer") == {str(i): row(i) for i in range(5)}


def test_deleted_key_stays_deleted_however_late_an_older_write_comes(harness, event_factory):
    """A tombstone is never forgotten: a dead letter replayed long after the delete (after a restart, after
    any tombstone expiry the target has) cannot bring the row back."""
    harness.sink.apply([change(event_factory, 3, 50_001, Op.CREATE), change(event_factory, 3, 50_003, Op.DELETE)])
    harness.reopen()
    expire = getattr(harness, "expire_tombstones", None)
    if expire is not None:
        expire()
    harness.sink.apply([change(event_factory, 3, 50_002, name="dead letter replayed")])
    assert harness.rows("customer") == {}
