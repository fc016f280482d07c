import datetime as dt
import decimal
from pathlib import Path

import pytest

from cdc.domain.errors import ConfigError
from cdc.domain.positions import Checkpoint
from cdc.mapping import Mapper, load_mappings
from cdc.source.binlog_stream import RowChange, SourceTxn
from cdc.source.change_events import build_events

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def member_row(**over):
    row = dict(id=7, email="  Zoe.Muller@Example.ORG ", first_name="Zoë", last_name="Müller", address="", city=None,
               country="de", phone=None, birth_date="31/12/1980", member_type_id=2, chapter_id=3, status="A",
               is_active=1, newsletter_optin=0, join_date=None, last_login=dt.datetime(2024, 1, 2, 3, 4, 5),
               created=dt.datetime(2024, 1, 1), modified=dt.datetime(1970, 1, 1), balance=decimal.Decimal("10.50"),
               points=4294967295, deleted=0)
    row.update(over)
    return row


def txn(*changes):
    return SourceTxn(id="0-1-9", gtid="0-1-9", changes=list(changes), end=Checkpoint(file="b.000001", pos=999), ts=1_700_000_000)


def change(op, before=None, after=None, row=0):
    return RowChange("legacy", "members", op, before, after, "b.000001", 500, row, 1_700_000_000)


@pytest.fixture(scope="module")
def mapper():
    return Mapper(load_mappings(MAPPINGS))


def test_member_mapping_fixes_legacy_quirks(mapper):
    (event,), dead = build_events(txn(change("c", after=member_row())), mapper, "legacy", 1)
    assert not dead
    after = event["after"]
    assert after["email"] == "zoe.muller@example.org"
    assert after["first_name"] == "Zoë" and after["address"] is None
    assert after["status"] == "active" and after["active"] is True and after["newsletter_opt_in"] is False
    assert after["birth_date"] == "1980-12-31"
    assert after["joined_on"] is None  # zero date
    assert after["updated_at"] is None  # zero TIMESTAMP arrives as 1970-01-01
    assert after["created_at"] == "2024-01-01T00:00:00Z"
    assert after["balance"] == "10.50" and after["points"] == 4294967295
    assert event["op"] == "c" and event["key"] == {"member_id": 7}
    assert event["txn"] == {"id": "0-1-9", "index": 0, "last": True}


def test_soft_delete_becomes_a_delete_and_undelete_a_create(mapper):
    live, gone = member_row(), member_row(deleted=1)
    (d,), _ = build_events(txn(change("u", live, gone)), mapper, "legacy", 1)
    assert d["op"] == "d" and d["before"]["member_id"] == 7 and d["after"] is None
    (c,), _ = build_events(txn(change("u", gone, live)), mapper, "legacy", 1)
    assert c["op"] == "c"
    assert build_events(txn(change("u", gone, member_row(deleted=1, city="X"))), mapper, "legacy", 1)[0] == []


def test_primary_key_change_is_delete_plus_create(mapper):
    events, _ = build_events(txn(change("u", member_row(id=1), member_row(id=2))), mapper, "legacy", 1)
    assert [(e["op"], e["key"]["member_id"]) for e in events] == [("d", 1), ("c", 2)]
    assert events[0]["id"] != events[1]["id"]


def test_unconvertible_value_is_a_dead_row_not_an_exception(mapper):
    events, dead = build_events(txn(change("c", after=member_row(balance="12,5.0")), change("c", after=member_row(id=8), row=1)),
                                mapper, "legacy", 1)
    assert [e["key"] for e in events] == [{"member_id": 8}]
    assert len(dead) == 1 and "balance" in dead[0].reason and "member" in dead[0].reason


def test_versions_follow_rows_and_txn_marks_last(mapper):
    events, _ = build_events(txn(*(change("c", after=member_row(id=i), row=i) for i in range(3))), mapper, "legacy", 1)
    assert [e["version"] for e in events] == sorted(e["version"] for e in events)
    assert [e["txn"]["last"] for e in events] == [False, False, True]


def test_bad_mapping_names_file_entity_and_field(tmp_path):
    (tmp_path / "x.yaml").write_text(
        "entity: thing\nsource: {db: d, table: t}\nkey: [id]\nfields:\n  id: {column: id, type: integr}\n")
    with pytest.raises(ConfigError, match=r"x.yaml \(entity thing\): fields.id.type"):
        load_mappings(tmp_path)


def test_key_must_be_a_field(tmp_path):
    (tmp_path / "x.yaml").write_text("entity: thing\nsource: {db: d, table: t}\nkey: [nope]\nfields:\n  id: {column: id, type: integer}\n")
    with pytest.raises(ConfigError, match="nope"):
        load_mappings(tmp_path)


def test_segments_of_a_large_transaction_number_events_across_segments(mapper):
    first = txn(*(change("c", after=member_row(id=i), row=i) for i in range(3)))
    first.partial = True
    events, _ = build_events(first, mapper, "legacy", 1)
    assert [(e["txn"]["index"], e["txn"]["last"]) for e in events] == [(0, False), (1, False), (2, False)]
    rest, _ = build_events(txn(change("c", after=member_row(id=9), row=0)), mapper, "legacy", 1, first_index=3)
    assert [(e["txn"]["index"], e["txn"]["last"]) for e in rest] == [(3, True)]
