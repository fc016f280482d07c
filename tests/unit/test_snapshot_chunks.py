"""A snapshot chunk's messages: batched once by the chunk reader, and the rows the stream touched
taken out by the reader thread without encoding anything again."""

from __future__ import annotations

import orjson
import pytest

from cdc.broker.publisher import group_events
from cdc.broker.topology import READER_DEAD_PREFIX
from cdc.domain.envelope import encode
from cdc.domain.positions import Checkpoint
from cdc.mapping import EntityMapping
from cdc.runtime.config import load_settings
from cdc.snapshot.chunks import ChunkReader, ChunkRequest, WorkerSetup

MAPPING = EntityMapping.model_validate({
    "entity": "thing", "source": {"db": "d", "table": "t"}, "key": ["id"],
    "fields": {"id": {"column": "id", "type": "integer"}, "label": {"column": "label", "type": "string"},
               "n": {"column": "n", "type": "integer"}},
    "deleted_when": {"column": "gone", "equals": 1}})
HIGH = Checkpoint(file="bin.000003", pos=4711, gtid="0-1-9")
REQUEST = ChunkRequest(7, "d", "t", ("id",), (0,), (12,))


def reader(batch_events: int, max_bytes: int = 1 << 20) -> ChunkReader:
    settings = load_settings(None, source={"name": "src"})
    return ChunkReader(WorkerSetup(settings.source, [MAPPING], "mariadb", 1, batch_events, max_bytes))


def rows() -> list[dict]:
    """Twelve rows: row 4 (id 5) cannot be mapped, row 7 (id 8) is soft-deleted (op d: another routing key)."""
    return [{"id": i, "label": f"v{i}", "n": "many" if i == 5 else i, "gone": int(i == 8)} for i in range(1, 13)]


def events(messages) -> list[dict]:
    """Every change event the messages hold, in order, less the clock's fields; a dead letter as its routing key."""
    out = []
    for m in messages:
        if m.routing_key.startswith(READER_DEAD_PREFIX):
            out.append(m.routing_key)
            continue
        body = orjson.loads(m.body)
        for event in body if isinstance(body, list) else [body]:
            del event["ts_ms"], event["source"]["ts_ms"]
            out.append(event)
    return out


@pytest.mark.parametrize("batch_events", [1, 3, 100])
def test_a_chunk_without_the_dropped_rows_holds_every_other_event_in_well_formed_messages(batch_events):
    every = reader(1)._encode(REQUEST, rows(), HIGH).messages_without(set())  # noqa: SLF001
    assert [m.count for m in every] == [1] * 12
    assert events(every)[4] == f"{READER_DEAD_PREFIX}.thing" and events(every)[7]["op"] == "d"
    chunk = reader(batch_events)._encode(REQUEST, rows(), HIGH)  # noqa: SLF001
    assert chunk.keys == [(i,) for i in range(1, 13)]
    assert chunk.messages_without(set()) == group_events(chunk.messages_without(set()), batch_events, 1 << 20)
    for drop in (set(), {0}, {2}, {4}, {7}, {0, 1, 2}, {3, 6, 11}, set(range(12)), {11}):
        got = chunk.messages_without(drop)
        # The same events as the single messages of the rows kept, in the same order...
        assert events(got) == events([m for row, m in enumerate(every) if row not in drop])
        # ...in messages as group_events makes them: one routing key each, at most batch_events.
        for m in got:
            held = events([m])
            if m.routing_key.startswith(READER_DEAD_PREFIX):
                continue
            assert {f"{e['entity']}.{e['op']}" for e in held} == {m.routing_key} and m.count == len(held) <= batch_events
            assert m.headers["x-cdc-version"] == held[-1]["version"] and m.headers["x-cdc-entity"] == "thing"
            if m.count == 1:
                assert m.message_id == held[0]["id"] and m.headers["x-cdc-key"] == str(held[0]["key"]["id"])
            else:
                assert m.message_id == f"{held[0]['id']}+{m.count - 1}" and m.headers["x-cdc-count"] == m.count
                assert "x-cdc-key" not in m.headers


def test_a_batch_keeps_to_the_byte_limit_and_the_keys_the_stream_touched_are_found():
    one = len(reader(1)._encode(REQUEST, rows()[:1], HIGH).messages[0][1])  # noqa: SLF001
    chunk = reader(100, max_bytes=2 * one + 3)._encode(REQUEST, rows(), HIGH)  # noqa: SLF001
    assert max(m.count for m in chunk.messages_without(set())) == 2
    assert chunk.dropped({(3,), (99,), (8,)}) == {2, 7}
    too_small = reader(100, max_bytes=one - 1)._encode(REQUEST, rows(), HIGH)  # noqa: SLF001
    dead = too_small.messages_without({11})
    assert [m.routing_key for m in dead] == [f"{READER_DEAD_PREFIX}.thing"] * 7 + ["thing.d"] + [f"{READER_DEAD_PREFIX}.thing"] * 3
    assert "over broker.max_message_bytes" in dead[0].headers["x-cdc-reason"] and len(too_small.problems) == 11
    body = orjson.loads(chunk.messages_without(chunk.dropped({(2,)}))[0].body)
    assert body["key"] == {"id": 1} and body["version"] == chunk.messages[0][3]["x-cdc-version"]


def test_each_event_body_is_what_encode_gives_for_the_event():
    """The chunk's constant envelope is encoded once and spliced in: the bytes must be encode()'s own."""
    chunk = reader(1)._encode(REQUEST, rows(), HIGH)  # noqa: SLF001
    bodies = [m.body for m in chunk.messages_without(set()) if not m.routing_key.startswith(READER_DEAD_PREFIX)]
    assert len(bodies) == 11
    for body in bodies:
        event = orjson.loads(body)
        assert list(event["source"]) == ["name", "server_id", "gtid", "file", "pos", "row", "db", "table", "ts_ms",
                                         "snapshot"]
        assert encode(event) == body


def test_the_last_key_is_the_range_end_or_for_the_last_chunk_its_last_row():
    chunk = reader(1)._encode(REQUEST, rows(), HIGH)  # noqa: SLF001
    assert chunk.last_key() == (12,)
    last = ChunkRequest(7, "d", "t", ("id",), (12,), None)
    assert reader(1)._encode(last, rows()[:3], HIGH).last_key() == (3,)  # noqa: SLF001
    assert reader(1)._encode(last, [], HIGH).last_key() == (12,)  # noqa: SLF001


def test_the_chunk_select_reads_the_range_in_key_order():
    assert ChunkRequest(1, "d", "t", ("a", "b"), (1, "x"), (5, "y"), "c > 2").sql() == (
        "SELECT * FROM `d`.`t` WHERE (`a`, `b`) > (%s, %s) AND (`a`, `b`) <= (%s, %s) AND (c > 2) ORDER BY `a`, `b`",
        [1, "x", 5, "y"])
    assert ChunkRequest(1, "d", "t`x", ("id",), None, None).sql() == ("SELECT * FROM `d`.`t``x` ORDER BY `id`", [])
