import datetime as dt
import decimal

import pytest

from cdc.domain.envelope import ChangeEvent, binlog_file_seq, decode, encode, make_id, make_version, version_position


def test_version_increases_along_a_file_and_across_rotation():
    positions = [("mysql-bin.000001", 4, 0), ("mysql-bin.000001", 4, 1), ("mysql-bin.000001", 900, 0),
                 ("mysql-bin.000001", 2**32 - 2, 0), ("mysql-bin.000002", 4, 0), ("mysql-bin.000010", 256, 3)]
    versions = [make_version(*p) for p in positions]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def test_version_is_identical_on_reread_and_fits_63_bits():
    v = make_version("mysql-bin.999999", 2**31, 5)
    assert v == make_version("mysql-bin.999999", 2**31, 5)
    assert 0 < v < 2**63
    assert version_position(v) == (999999, 2**31 + 5)


def test_rows_of_one_event_stay_below_the_next_event():
    # Every row image takes at least one byte, so row i of an event at pos p maps below the next event.
    event_pos, rows, event_size = 1000, 50, 19 + 50 * 2
    last_row = make_version("b.000003", event_pos, rows - 1)
    next_event = make_version("b.000003", event_pos + event_size, 0)
    assert last_row < next_event


@pytest.mark.parametrize("name", ["mysql-bin", "bin.x1", "bin.-1"])
def test_bad_file_names_are_refused(name):
    with pytest.raises(ValueError, match="binlog file"):
        binlog_file_seq(name)


def test_id_is_deterministic_and_distinguishes_rows_and_entities():
    a = make_id("legacy", "mysql-bin.000001", 400, 0, "member")
    assert a == make_id("legacy", "mysql-bin.000001", 400, 0, "member")
    assert len({a, make_id("legacy", "mysql-bin.000001", 400, 1, "member"),
                make_id("legacy", "mysql-bin.000001", 400, 0, "contact")}) == 3


def test_encode_decode_round_trip_with_legacy_types():
    event = {
        "v": 1, "id": "x", "version": 5, "op": "c", "entity": "member", "key": {"member_id": 1},
        "before": None,
        "after": {"balance": decimal.Decimal("12.50"), "raw": b"\x00\xff", "t": dt.timedelta(hours=-30, seconds=1)},
        "source": {"name": "s", "server_id": 1, "gtid": None, "file": "f.000001", "pos": 4, "row": 0, "db": "d",
                   "table": "t", "ts_ms": 1, "snapshot": False},
        "txn": {"id": "0-1-5", "index": 0, "last": True}, "ts_ms": 2,
    }
    parsed = decode(encode(event))
    assert isinstance(parsed, ChangeEvent)
    assert parsed.after == {"balance": "12.50", "raw": "AP8=", "t": "-29:59:59"}
    assert decode(encode(parsed)) == parsed


def test_decode_rejects_malformed_bodies():
    with pytest.raises(ValueError):
        decode(b"{not json")
    with pytest.raises(ValueError):
        decode(b'{"id": "x"}')


def test_a_truncate_has_a_null_key_and_only_a_truncate_has_one(event_factory):
    import orjson
    import pydantic

    truncate = event_factory.truncate("customer", version=77)
    assert decode(encode(truncate)) == truncate and truncate.key is None and truncate.key_str == ""
    body = orjson.loads(encode(truncate))
    with pytest.raises(pydantic.ValidationError, match="truncate event"):
        ChangeEvent.model_validate({**body, "key": {"id": 1}})
    with pytest.raises(pydantic.ValidationError, match="needs a key"):
        ChangeEvent.model_validate({**body, "op": "u"})
