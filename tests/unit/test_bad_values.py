"""Values no decoder or mapper may stop the stream on (issue 19): zero and invalid dates, decode errors.

Every decoder path (cdc/source/_rowdecode.c, the Python plan of cdc/source/row_decoder.py, and the library's own
DATE and old-style DATETIME decoders where the reader still uses them) gives None for a date that does
not exist, on random packed values; an error of any other kind names its column; a rows event that
cannot be decoded becomes a dead row with its reason, column and raw bytes, never an exception.
"""

from __future__ import annotations

import base64
import calendar
import collections
import datetime as dt
import os
import random
from types import SimpleNamespace

import orjson
import pytest
from pymysqlreplication.row_event import NONE_SOURCE, RowsEvent, WriteRowsEvent

from cdc.domain.positions import Checkpoint
from cdc.mapping import Mapper
from cdc.mapping.model import EntityMapping
from cdc.source import row_decoder as bf
from cdc.source.binlog_stream import RowChange, SourceTxn, _collect
from cdc.source.change_events import build_events

SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))


@pytest.fixture
def rnd() -> random.Random:
    print(f"seed {SEED} (CDC_TEST_SEED={SEED} to repeat)")
    return random.Random(SEED)


def _real_date(year: int, month: int, day: int) -> dt.date | None:
    if 1 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]:
        return dt.date(year, month, day)
    return None


def _parts(rnd: random.Random) -> tuple[int, int, int]:
    """Year, month, day as the binlog's bit fields can hold them: real dates, days a month lacks
    (ALLOW_INVALID_DATES), zero parts (an empty sql_mode), and bits no server writes."""
    shape = rnd.random()
    if shape < 0.4:
        year, month = rnd.randint(1, 9999), rnd.randint(1, 12)
        return year, month, rnd.randint(calendar.monthrange(year, month)[1] - 3, 31)
    if shape < 0.6:
        return rnd.choice([0, rnd.randint(1, 9999)]), rnd.choice([0, rnd.randint(1, 12)]), rnd.choice([0, rnd.randint(1, 31)])
    if shape < 0.8:
        return rnd.randint(0, 2**14 - 1), rnd.randint(0, 15), rnd.randint(0, 31)
    return rnd.randint(1, 9999), rnd.randint(1, 12), rnd.randint(1, 28)


def test_every_decoder_gives_none_for_a_date_that_does_not_exist(rnd):
    # A DATE, then an INT: the row must go on after the date, whatever the date was.
    steps = (("d", bf._DATE, None, 0), ("n", bf._INT, None, (4, True)))
    c_plan = bf._c_plan(steps)
    seen = collections.Counter()
    for _ in range(20_000):
        year, month, day = _parts(rnd)
        packed = (year << 9) | (month << 5) | day
        n = rnd.randint(-2**31, 2**31 - 1)
        data = b"\x00" + packed.to_bytes(3, "little") + n.to_bytes(4, "little", signed=True)
        expected = _real_date(year, month, day)
        reasons = {} if expected else {"d": NONE_SOURCE.OUT_OF_DATE_RANGE}
        for name, decode, plan in (("C", bf._rowdecode.decode_row, c_plan), ("Python", bf.decode_row, steps)):
            none_sources: dict = {}
            values, pos = decode(data, 0, b"\x03", plan, none_sources, "strict")
            assert (values, pos, none_sources) == ({"d": expected, "n": n}, len(data), reasons), (name, year, month, day)
        # The library's own DATE decoder, as the reader patches it (tables it still reads itself).
        library = RowsEvent._RowsEvent__read_date(SimpleNamespace(packet=SimpleNamespace(read_uint24=lambda: packed)))
        assert library == expected, (year, month, day)
        seen["valid" if expected else "zero part" if not (year and month and day) else "invalid"] += 1
    assert min(seen.values()) > 1_000, seen


def test_the_library_as_shipped_raises_on_an_invalid_date_which_the_reader_does_not():
    packet = SimpleNamespace(packet=SimpleNamespace(read_uint24=lambda: (2024 << 9) | (2 << 5) | 30))
    with bf.shipped(), pytest.raises(ValueError, match="day is out of range"):
        RowsEvent._RowsEvent__read_date(packet)
    assert RowsEvent._RowsEvent__read_date(packet) is None


def test_datetimes_that_do_not_exist_are_none_in_every_decoder(rnd):
    """DATETIME2 (C and Python plan, with a fraction after it) and the old DATETIME of tables created before
    MySQL 5.6.4 (the library's decoder, patched)."""
    fsp = 3
    steps = (("t", bf._DATETIME2, None, fsp), ("n", bf._INT, None, (1, False)))
    c_plan = bf._c_plan(steps)
    for _ in range(10_000):
        year, month, day = _parts(rnd)
        year, month = min(year, 9999), min(month, 12)  # the field is year * 13 + month
        hour, minute, second = rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59)
        millis = rnd.randint(0, 999)
        packed = (1 << 39) | ((year * 13 + month) << 22) | (day << 17) | (hour << 12) | (minute << 6) | second
        data = b"\x00" + packed.to_bytes(5, "big") + (millis * 10).to_bytes(2, "big") + b"\x07"
        date = _real_date(year, month, day)
        expected = dt.datetime(year, month, day, hour, minute, second, millis * 1000) if date else None
        for name, decode, plan in (("C", bf._rowdecode.decode_row, c_plan), ("Python", bf.decode_row, steps)):
            values, pos = decode(data, 0, b"\x03", plan, {}, "strict")
            assert (values, pos) == ({"t": expected, "n": 7}, len(data)), (name, year, month, day)
        old_style = int(f"{year:04d}{month:02d}{day:02d}{hour:02d}{minute:02d}{second:02d}")
        library = RowsEvent._RowsEvent__read_datetime(SimpleNamespace(packet=SimpleNamespace(read_uint64=lambda: old_style)))
        assert library == (expected.replace(microsecond=0) if expected else None), (year, month, day)


def test_a_decode_error_names_its_column_in_both_decoders(rnd):
    for _ in range(200):
        columns = rnd.randint(1, 6)
        bad = rnd.randrange(columns)
        steps = tuple((f"c{i}", bf._STR, None, (1, "utf8")) for i in range(columns))
        texts = [("ok é".encode() if i != bad else b"\xff" + rnd.randbytes(3)) for i in range(columns)]
        data = b"\x00" + b"".join(len(t).to_bytes(1, "little") + t for t in texts)
        bitmap = ((1 << columns) - 1).to_bytes(1, "little")
        for decode, plan in ((bf._rowdecode.decode_row, bf._c_plan(steps)), (bf.decode_row, steps)):
            with pytest.raises(UnicodeDecodeError) as err:
                decode(data, 0, bitmap, plan, {}, "strict")
            assert err.value.cdc_column == f"c{bad}"
            assert f"while decoding column 'c{bad}'" in err.value.__notes__


class _Undecodable(WriteRowsEvent):
    """A rows event whose rows raise what no decoder foresaw (here a converter's bug)."""

    def __init__(self, raw: bytes) -> None:  # noqa: D107 - no packet parsing: the attributes _collect reads
        self.schema, self.table, self.timestamp = "legacy", "members", 1_700_000_000
        self.packet = SimpleNamespace(packet=SimpleNamespace(_data=b"\x00" + raw))

    @property
    def rows(self):
        exc = ZeroDivisionError("a converter's bug")
        exc.cdc_column = "joined"
        raise exc


def _mapping() -> EntityMapping:
    return EntityMapping.model_validate({
        "entity": "member", "source": {"db": "legacy", "table": "members"}, "key": ["member_id"],
        "fields": {"member_id": {"column": "id", "type": "integer"}, "joined": {"column": "joined", "type": "date"},
                   "n": {"column": "n", "type": "integer"}}})


def test_an_undecodable_rows_event_becomes_a_dead_row_with_its_bytes(rnd):
    raw = rnd.randbytes(rnd.randint(20, 200))
    changes: list[RowChange] = []
    _collect(_Undecodable(raw), "mysql-bin.000007", 1234, changes)
    (change,) = changes
    assert change.undecoded.column == "joined" and change.undecoded.raw == raw
    assert "legacy.members" in change.undecoded.reason and "ZeroDivisionError: a converter's bug" in change.undecoded.reason
    good = RowChange("legacy", "members", "c", None, {"id": 2, "joined": dt.date(2024, 2, 29), "n": 1},
                     "mysql-bin.000007", 1300, 0, 1)
    txn = SourceTxn("0-1-5", "0-1-5", [change, good], Checkpoint(file="mysql-bin.000007", pos=1400), 1)
    events, dead = build_events(txn, Mapper([_mapping()]), "legacy", 1)
    assert [e["key"] for e in events] == [{"member_id": 2}]  # the rest of the transaction flows
    (row,) = dead
    assert (row.entity, row.column, row.change.pos) == ("member", "joined", 1234)

    from cdc.reader.pipeline import ReaderPipeline

    pipeline = SimpleNamespace(source="legacy", settings=SimpleNamespace(broker=SimpleNamespace(max_message_bytes=10_000)))
    message = ReaderPipeline._dead_message(pipeline, row)
    body = orjson.loads(message.body)
    assert (body["db"], body["table"], body["pos"], body["column"]) == ("legacy", "members", 1234, "joined")
    assert base64.b64decode(body["raw_event"]) == raw and "ZeroDivisionError" in body["reason"]


def test_any_error_of_the_mapper_dead_letters_the_row_with_table_key_and_column(rnd, monkeypatch):
    from cdc.mapping import values

    def broken(v, spec, zone):  # an unforeseen error of a converter, not a ValueError
        raise LookupError("converter bug")

    monkeypatch.setitem(values._CONVERTERS, values.FieldType.DATE, broken)
    mapping = _mapping()  # compiled after the patch
    bad_id, n = rnd.randint(1, 10**6), rnd.randint(2, 8)
    rows = [{"id": i, "joined": "2024-01-01" if i == bad_id else None, "n": i} for i in range(bad_id - n, bad_id + n)]
    txn = SourceTxn("t", None, [RowChange("legacy", "members", "c", None, r, "mysql-bin.000001", 4, i, 1) for i, r in enumerate(rows)],
                    Checkpoint(file="mysql-bin.000001", pos=100), 1)
    events, dead = build_events(txn, Mapper([mapping]), "legacy", 1)
    assert len(events) == len(rows) - 1
    (row,) = dead
    assert row.key == {"member_id": bad_id} and "legacy.members" in row.reason and "converter bug" in row.reason


def test_dates_the_rules_make_null_are_counted_by_table_and_column(rnd):
    stored = [rnd.choice(["2024-02-30", "0000-00-00", "2024-02-29", None, dt.date(2024, 3, 1)]) for _ in range(200)]
    decoder_nulled = [rnd.random() < 0.2 for _ in stored]  # the binlog's None for an invalid date, with its reason
    changes = [RowChange("legacy", "members", "c", None, {"id": i, "joined": None if gone else value, "n": 0}, "mysql-bin.000001", 4, i, 1,
                         {"joined": NONE_SOURCE.OUT_OF_DATE_RANGE} if gone else None)
               for i, (value, gone) in enumerate(zip(stored, decoder_nulled))]
    nulled: collections.Counter = collections.Counter()
    events, dead = build_events(SourceTxn("t", None, changes, Checkpoint(file="mysql-bin.000001", pos=100), 1), Mapper([_mapping()]), "legacy", 1,
                                nulled=nulled)
    assert not dead
    expected = sum(1 for v, gone in zip(stored, decoder_nulled) if gone or v in ("2024-02-30", "0000-00-00"))
    assert nulled == ({("legacy", "members", "joined"): expected} if expected else {})
    assert sum(e["after"]["joined"] is None for e in events) == expected + sum(
        1 for v, gone in zip(stored, decoder_nulled) if v is None and not gone)
