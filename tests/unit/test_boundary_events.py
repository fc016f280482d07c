"""Transaction boundaries and heartbeats (events.transactions, events.heartbeats; issue 23.3), without I/O.

Generated transactions with random mixes of entities and tables, whole or in segments, through the
reader's own step from a source transaction to messages: BEGIN first, END last, END's counts equal the
change events published (in total and per entity and table), every change event carries the
transaction id and its order within its entity; with the settings off nothing changes."""

from __future__ import annotations

import collections
import os
import random
import time

import orjson
import pytest

from cdc.broker.publisher import MemoryPublisher, OutMessage
from cdc.consumer import HeartbeatEvent, Subscription, TransactionEvent
from cdc.domain.boundary import HEARTBEAT_KEY, TXN_BEGIN_KEY, TXN_END_KEY, decode_boundary, is_boundary
from cdc.domain.envelope import decode_many
from cdc.domain.errors import ConfigError
from cdc.domain.positions import Checkpoint
from cdc.mapping import Mapper
from cdc.mapping.model import EntityMapping
from cdc.reader.pipeline import ReaderPipeline, _TxnBoundaries
from cdc.runtime.config import load_settings
from cdc.source.binlog_stream import RowChange, SourceTxn

SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
FILE = "mysql-bin.000003"


def _mappings() -> list[EntityMapping]:
    def m(entity: str, table: str, **extra) -> EntityMapping:
        return EntityMapping.model_validate({
            "entity": entity, "source": {"db": "legacy", "table": table}, "key": ["id"],
            "fields": {"id": {"column": "id", "type": "integer"}, "n": {"column": "n", "type": "integer"}}, **extra})

    # Two entities of one table (one of them filtered for odd n), one entity of each other table.
    return [m("member", "members"), m("member_even", "members", skip_when=[{"column": "n", "equals": 1}]),
            m("order", "orders"), m("payment", "payments")]


def _pipeline(transactions: bool = True, batch_events: int = 1, heartbeats: bool = False) -> ReaderPipeline:
    p = object.__new__(ReaderPipeline)
    p.settings = load_settings(None, broker={"batch_events": batch_events},
                               events={"transactions": transactions,
                                       "heartbeats": {"enabled": heartbeats, "interval_s": 5.0}})
    p.source, p.mapper = "legacy", Mapper(_mappings())
    p._txn_events, p._boundaries, p.events_read = 0, _TxnBoundaries(), 0
    p._server_id, p._heartbeat_due, p._last_commit_ts_ms = 7, 0.0, None
    return p


def _random_txn(rnd: random.Random, pos: int, gtid: str) -> list[RowChange]:
    changes = []
    for i in range(rnd.randint(0, 40)):
        table = rnd.choice(["members", "orders", "payments", "unmapped"])
        op = rnd.choice("cud")
        row = {"id": rnd.randint(1, 50), "n": rnd.randint(0, 1)}
        before, after = (None, row) if op == "c" else (row, None) if op == "d" else (row, {**row, "n": 1 - row["n"]})
        changes.append(RowChange("legacy", table, op, before, after, FILE, pos + 100 * i, 0, 1_700_000_000))
    return changes


def _segments(rnd: random.Random, changes: list[RowChange], txn_id: str, gtid: str | None, end: int) -> list[SourceTxn]:
    """The transaction whole, or as the reader hands a large one over: partial segments, then the last."""
    cuts = sorted(rnd.sample(range(1, len(changes)), k=min(len(changes) - 1, rnd.randint(0, 3)))) if len(changes) > 1 else []
    parts = [changes[a:b] for a, b in zip([0, *cuts], [*cuts, len(changes)])] or [[]]
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        out.append(SourceTxn(txn_id, gtid, part, Checkpoint(file=FILE, pos=end, gtid=gtid if last else None, ts_ms=1_700_000_000_000),
                             1_700_000_000, partial=not last))
    return out


def _publish(p: ReaderPipeline, segments: list[SourceTxn]) -> list[OutMessage]:
    out: list[OutMessage] = []
    for seg in segments:
        out += p._messages(seg, 7)
    return out


@pytest.mark.parametrize("batch_events", [1, 4])
def test_begin_first_end_last_and_end_counts_equal_the_changes_published(batch_events):
    print(f"seed {SEED} (CDC_TEST_SEED={SEED} to repeat)")
    rnd = random.Random(SEED)
    p = _pipeline(batch_events=batch_events)
    framed = 0
    for t in range(200):
        pos = 1000 + t * 100_000
        gtid = rnd.choice([None, f"0-1-{t + 1}"])
        txn_id = gtid or f"{FILE}:{pos - 50}"
        changes = _random_txn(rnd, pos, txn_id)
        messages = _publish(p, _segments(rnd, changes, txn_id, gtid, pos + 90_000))
        keys = [m.routing_key for m in messages]
        changed = [m for m in messages if not is_boundary(m.routing_key) and not m.routing_key.startswith("dead.")]
        events = [e for m in changed for e in decode_many(m.body)]
        if not events:  # no change event published (empty, unmapped, filtered): no boundaries either
            assert not any(is_boundary(k) for k in keys)
            continue
        framed += 1
        assert keys[0] == TXN_BEGIN_KEY and keys[-1] == TXN_END_KEY and keys.count(TXN_BEGIN_KEY) == keys.count(TXN_END_KEY) == 1
        assert all(not m.mandatory for m in messages if is_boundary(m.routing_key))
        assert all(m.mandatory for m in changed)
        begin, end = decode_boundary(messages[0].body), decode_boundary(messages[-1].body)
        assert isinstance(begin, TransactionEvent) and isinstance(end, TransactionEvent)
        assert (begin.status, end.status) == ("BEGIN", "END") and begin.id == end.id == txn_id
        assert begin.event_count is None and begin.data_collections is None
        assert (begin.position.file, begin.position.pos) == (events[0].source.file, events[0].source.pos)
        assert (end.position.file, end.position.pos, end.position.gtid) == (FILE, pos + 90_000, gtid)
        # END counts equal what was published, in total and per entity and table.
        assert end.event_count == len(events) == sum(m.count for m in changed)
        per = collections.Counter((e.entity, e.source.db, e.source.table) for e in events)
        assert {(c.entity, c.db, c.table): c.event_count for c in end.data_collections} == per
        assert sum(c.event_count for c in end.data_collections) == end.event_count
        # Every change event carries the transaction id, its order in it and among its entity's events.
        assert all(e.txn is not None and e.txn.id == txn_id for e in events)
        assert [e.txn.index for e in events] == list(range(len(events)))
        # txn.last is on the last event of the last segment, if that segment has one: END is always there.
        assert not any(e.txn.last for e in events[:-1])
        by_entity: dict[str, list[int]] = collections.defaultdict(list)
        for e in events:
            by_entity[e.entity].append(e.txn.entity_index)
        assert all(indexes == list(range(len(indexes))) for indexes in by_entity.values())
    assert framed > 100


def test_with_the_defaults_nothing_changes():
    rnd = random.Random(SEED)
    on, off = _pipeline(transactions=True), _pipeline(transactions=False)
    assert load_settings(None).events.transactions is False and load_settings(None).events.heartbeats.enabled is False
    for t in range(50):
        pos = 1000 + t * 100_000
        changes = _random_txn(rnd, pos, f"0-1-{t}")
        txn = SourceTxn(f"0-1-{t}", f"0-1-{t}", changes, Checkpoint(file=FILE, pos=pos + 90_000), 1_700_000_000)
        plain = off._messages(txn, 7)
        assert not any(is_boundary(m.routing_key) for m in plain)
        assert all(b"entity_index" not in m.body for m in plain)
        framed = [m for m in on._messages(txn, 7) if not is_boundary(m.routing_key)]
        # The same change events, in the same order; with the setting on they gain only txn.entity_index.
        strip = [{**orjson.loads(m.body), "ts_ms": 0} for m in framed]
        for e in strip:
            e["txn"].pop("entity_index")
        assert strip == [{**orjson.loads(m.body), "ts_ms": 0} for m in plain]


def test_a_large_transaction_read_again_after_a_reconnect_is_framed_again_from_its_start():
    rnd = random.Random(SEED)
    p = _pipeline()
    changes = [RowChange("legacy", "orders", "c", None, {"id": i, "n": 0}, FILE, 1000 + 10 * i, 0, 1) for i in range(30)]
    segments = _segments(random.Random(1), changes, "0-1-9", "0-1-9", 5000)
    while len(segments) < 2:
        segments = _segments(rnd, changes, "0-1-9", "0-1-9", 5000)
    first = p._messages(segments[0], 7)
    assert first[0].routing_key == TXN_BEGIN_KEY and TXN_END_KEY not in [m.routing_key for m in first]
    p._boundaries = _TxnBoundaries()  # what _run_once does on a reconnect: the transaction is read from its start
    p._txn_events = 0
    again = _publish(p, segments)
    end = decode_boundary(again[-1].body)
    assert again[0].routing_key == TXN_BEGIN_KEY and end.event_count == 30


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[OutMessage], object]] = []

    def publish(self, messages, token) -> None:
        self.calls.append((list(messages), token))


def test_heartbeats_are_published_at_the_interval_with_the_position_and_no_checkpoint(monkeypatch):
    p = _pipeline(heartbeats=True)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    p._heartbeat_due = clock[0] + 5.0
    rec = _Recorder()
    at = Checkpoint(file=FILE, pos=777, gtid="0-1-5", ts_ms=1)
    for step in range(40):  # a stream heartbeat every second
        clock[0] += 1.0
        p._heartbeat(rec, at, Checkpoint(file=FILE, pos=800 + step) if step % 2 else None)
    assert len(rec.calls) == 8  # every 5 s of 40
    for messages, token in rec.calls:
        assert token is None  # the confirmed path, but never a checkpoint
        (m,) = messages
        beat = decode_boundary(m.body)
        assert m.routing_key == HEARTBEAT_KEY and not m.mandatory and isinstance(beat, HeartbeatEvent)
        assert beat.source == "legacy" and beat.server_id == 7 and beat.position.gtid == "0-1-5" and beat.position.file == FILE
        assert beat.position.pos == 777 or beat.position.pos >= 800
    off = _pipeline(heartbeats=False)
    off._heartbeat(rec, at, None)
    assert len(rec.calls) == 8


def test_heartbeats_through_the_memory_publisher_are_confirmed_without_moving_anything():
    confirmed: list = []
    pub = MemoryPublisher(confirmed.append)
    pub.start()
    p = _pipeline(heartbeats=True)
    p._heartbeat(pub, Checkpoint(file=FILE, pos=4), None)
    assert [m.routing_key for m in pub.messages] == [HEARTBEAT_KEY] and confirmed == [None]


def test_settings_validation():
    with pytest.raises(ConfigError, match=r"events\.heartbeats\.interval_s is 1 but source\.heartbeat_s is 5"):
        load_settings(None, events={"heartbeats": {"enabled": True, "interval_s": 1}})
    assert load_settings(None, source={"heartbeat_s": 1}, events={"heartbeats": {"enabled": True, "interval_s": 1}})
    load_settings(None, events={"heartbeats": {"enabled": False, "interval_s": 1}})  # off: not checked
    with pytest.raises(ConfigError, match=r"events\.transaction: unknown key \(did you mean 'transactions'\?\)"):
        load_settings(None, events={"transaction": True})
    with pytest.raises(ConfigError, match="interval_s"):
        load_settings(None, events={"heartbeats": {"enabled": True, "interval_s": 0}})


def test_routing_keys_reach_no_sink_binding_and_the_subscription_option():
    from cdc.broker.topology import binding_keys, hashed_binding_keys, truncate_binding_keys

    def matches(pattern: str, key: str) -> bool:  # AMQP topic matching for '*' (one word); no '#' in these
        p, k = pattern.split("."), key.split(".")
        return len(p) == len(k) and all(a in ("*", b) for a, b in zip(p, k))

    patterns = (binding_keys(["*"]) + binding_keys(["cdc", "member"]) + hashed_binding_keys(["*"])
                + truncate_binding_keys(["*"]) + Subscription(name="x").binding_keys()
                + Subscription(name="x", entities=["cdc", "transaction"]).binding_keys())
    for key in (TXN_BEGIN_KEY, TXN_END_KEY, HEARTBEAT_KEY):
        assert not any(matches(p, key) for p in patterns), key
    assert Subscription(name="x").binding_keys() == Subscription(name="x", transactions=False).binding_keys()
    sub = Subscription(name="x", entities=["member"], ops=["c"], transactions=True, heartbeats=True)
    assert sub.binding_keys() == ["member.c", TXN_BEGIN_KEY, TXN_END_KEY, HEARTBEAT_KEY]


@pytest.mark.parametrize("mandatory", [True, False])
def test_marshal_publish_writes_the_mandatory_flag_as_pika_does(mandatory):
    import pika
    from pika import frame, spec

    from cdc.broker.publisher import encode_properties, marshal_publish, short_string

    headers = {"x-cdc-kind": "transaction"}
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="m", timestamp=1, headers=headers)
    reference = [frame.Method(1, spec.Basic.Publish(exchange="cdc.events", routing_key=TXN_END_KEY, mandatory=mandatory)).marshal(),
                 frame.Header(1, 2, props).marshal(), frame.Body(1, b"{}").marshal()]
    ours = marshal_publish(1, short_string("cdc.events"), TXN_END_KEY, encode_properties("m", 1, headers), b"{}", 131_064,
                           mandatory)
    assert ours == b"".join(reference)


def test_what_the_reader_publishes_matches_the_exported_contracts():
    from pathlib import Path

    import jsonschema

    schemas = Path(__file__).resolve().parents[2] / "schemas"
    txn_schema = orjson.loads((schemas / "transaction.json").read_bytes())
    beat_schema = orjson.loads((schemas / "heartbeat.json").read_bytes())
    p = _pipeline(heartbeats=True)
    rnd = random.Random(SEED)
    for t in range(20):
        changes = _random_txn(rnd, 1000 + t * 10_000, "x") or [RowChange("legacy", "orders", "c", None, {"id": 1, "n": 0},
                                                                         FILE, 1000 + t * 10_000, 0, 1)]
        for m in p._messages(SourceTxn(f"0-1-{t}", f"0-1-{t}", changes, Checkpoint(file=FILE, pos=9_000_000), 1), 7):
            if is_boundary(m.routing_key):
                jsonschema.validate(orjson.loads(m.body), txn_schema)
    rec = _Recorder()
    p._heartbeat_due = 0.0
    p._heartbeat(rec, Checkpoint(file=FILE, pos=4, gtid="0-1-3"), None)
    jsonschema.validate(orjson.loads(rec.calls[0][0][0].body), beat_schema)


class _Channel:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.published: list[tuple[str, bytes, dict]] = []

    def basic_ack(self, tag: int) -> None:
        self.acked.append(tag)

    def basic_publish(self, exchange, routing_key, body, properties, mandatory) -> None:
        self.published.append((routing_key, body, properties.headers))


def test_the_consumer_library_hands_boundaries_typed_to_the_handler_past_the_idempotency_store():
    from types import SimpleNamespace

    from cdc.consumer import Consumer, MemoryIdempotencyStore

    seen: list = []
    store = MemoryIdempotencyStore()
    consumer = Consumer("amqp://unused", Subscription(name="t", transactions=True, heartbeats=True), seen.append,
                        idempotency=store)
    consumer._channel = channel = _Channel()
    p = _pipeline(heartbeats=True)
    txn = SourceTxn("0-1-1", "0-1-1", [RowChange("legacy", "orders", "c", None, {"id": 1, "n": 0}, FILE, 400, 0, 1)],
                    Checkpoint(file=FILE, pos=900, gtid="0-1-1"), 1)
    rec = _Recorder()
    p._heartbeat(rec, Checkpoint(file=FILE, pos=900, gtid="0-1-1"), None)
    messages = p._messages(txn, 7) + rec.calls[0][0]
    for _delivery in range(2):  # redelivered: boundaries are handed again (they have no version), the change is skipped
        for tag, m in enumerate(messages):
            consumer._handle(SimpleNamespace(delivery_tag=tag, routing_key=m.routing_key), SimpleNamespace(headers=m.headers,
                             message_id=m.message_id), m.body)
    assert [type(e).__name__ for e in seen] == ["TransactionEvent", "ChangeEvent", "TransactionEvent", "HeartbeatEvent",
                                               "TransactionEvent", "TransactionEvent", "HeartbeatEvent"]
    assert seen[2].status == "END" and seen[2].event_count == 1 and seen[3].position.pos == 900
    assert consumer.counts["skipped"] == 1 and not channel.published
    consumer._handle(SimpleNamespace(delivery_tag=99, routing_key=TXN_END_KEY), SimpleNamespace(headers={}, message_id="x"),
                     b'{"kind": "transaction", "status": "SOMETIME"}')
    assert channel.published and "does not match the contract" in channel.published[0][2]["x-cdc-reason"]
