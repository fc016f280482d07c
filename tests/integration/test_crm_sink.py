"""The CRM sink against a real PostgreSQL: idempotence, tombstones, offsets, typed columns."""

from __future__ import annotations

import time

import psycopg
import pytest
from pydantic import SecretStr

from cdc.domain.entity_schema import EntitySchema
from cdc.domain.entity_schema import FieldType as F
from cdc.domain.envelope import Op
from cdc.domain.errors import TerminalError
from cdc.sinks.base import SinkContext, get_sink_type
from cdc.sinks.crm import CrmSink, CrmSinkConfig

pytestmark = pytest.mark.integration

CUSTOMER = EntitySchema(
    name="customer",
    key=("id",),
    fields={"id": F.INTEGER, "name": F.STRING, "balance": F.DECIMAL, "born": F.DATE},
)
EVERY_TYPE = EntitySchema(
    name="every_type",
    key=("id", "region"),
    fields={
        "id": F.INTEGER,
        "region": F.STRING,
        "big": F.BIGINT_UNSIGNED,
        "amount": F.DECIMAL,
        "ratio": F.FLOAT,
        "active": F.BOOLEAN,
        "born": F.DATE,
        "local_time": F.DATETIME,
        "at": F.TIMESTAMP,
        "duration": F.TIME,
        "doc": F.JSON,
        "blob": F.BYTES,
    },
)
CONTEXT = SinkContext(entities={s.name: s for s in (CUSTOMER, EVERY_TYPE)})


def _admin(pg_url: str) -> psycopg.Connection:
    return psycopg.connect(pg_url, autocommit=True)


@pytest.fixture
def schema(pg_url, unique_name):
    yield unique_name
    with _admin(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')


@pytest.fixture
def make_sink(pg_url, schema):
    sinks = []

    def make(name: str = "crm", context: SinkContext = CONTEXT, **overrides) -> CrmSink:
        config = CrmSinkConfig(url=SecretStr(pg_url), schema_name=schema, **overrides)
        sink = CrmSink(name, config, context)
        sink.open()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def sink(make_sink) -> CrmSink:
    return make_sink()


def customer(event_factory, id_, version, op=Op.UPDATE, **after):
    row = {"id": id_, "name": f"c{id_}", "balance": "0.00", "born": None} | after
    return event_factory("customer", id_, version, op, after=row if op is not Op.DELETE else None)


def test_registered_by_name():
    assert get_sink_type("crm").config_model is CrmSinkConfig


def test_insert_then_update(sink, event_factory):
    assert sink.apply([customer(event_factory, 1, 10, Op.CREATE, name="Ann", balance="12.50")]) == []
    assert sink.fetch_rows("customer") == {"1": {"id": 1, "name": "Ann", "balance": "12.50", "born": None}}
    assert sink.apply([customer(event_factory, 1, 11, name="Anne", born="1990-02-03")]) == []
    assert sink.fetch_rows("customer")["1"] == {"id": 1, "name": "Anne", "balance": "0.00", "born": "1990-02-03"}


def test_redelivered_batch_changes_nothing(sink, event_factory, pg_url, schema):
    batch = [customer(event_factory, i, 100 + i, Op.CREATE) for i in range(5)]
    sink.apply(batch)
    with _admin(pg_url) as conn:
        before = conn.execute(f'SELECT id, _version, _updated_at FROM "{schema}".customer ORDER BY id').fetchall()
    assert sink.apply(batch) == []
    with _admin(pg_url) as conn:
        after = conn.execute(f'SELECT id, _version, _updated_at FROM "{schema}".customer ORDER BY id').fetchall()
    assert after == before


def test_older_version_after_newer_is_ignored(sink, event_factory):
    sink.apply([customer(event_factory, 1, 20, name="new")])
    sink.apply([customer(event_factory, 1, 19, name="old")])
    assert sink.fetch_rows("customer")["1"]["name"] == "new"


def test_same_key_twice_in_one_batch_last_version_wins(sink, event_factory):
    batch = [customer(event_factory, 1, 31, name="second"), customer(event_factory, 1, 30, name="first")]
    batch += [customer(event_factory, 2, 32, name="x"), customer(event_factory, 2, 33, Op.DELETE)]
    assert sink.apply(batch) == []
    assert sink.fetch_rows("customer") == {"1": {"id": 1, "name": "second", "balance": "0.00", "born": None}}


def test_delete_then_late_older_insert_stays_deleted(sink, event_factory, pg_url, schema):
    sink.apply([customer(event_factory, 1, 40, Op.CREATE, name="Ann")])
    sink.apply([customer(event_factory, 1, 42, Op.DELETE)])
    sink.apply([customer(event_factory, 1, 41, name="late")])
    sink.apply([customer(event_factory, 7, 44, Op.DELETE)])  # delete of a row never seen: a tombstone
    sink.apply([customer(event_factory, 7, 43, Op.CREATE)])
    assert sink.fetch_rows("customer") == {}
    with _admin(pg_url) as conn:
        rows = conn.execute(f'SELECT id, name, _version, _deleted FROM "{schema}".customer ORDER BY id').fetchall()
    assert rows == [(1, "Ann", 42, True), (7, None, 44, True)]
    sink.apply([customer(event_factory, 1, 45, Op.CREATE, name="again")])  # re-inserted at the source
    assert sink.fetch_rows("customer")["1"]["name"] == "again"


def test_offset_is_written_with_the_batch_and_only_moves_forward(sink, event_factory, make_sink):
    assert sink.read_offset() is None
    sink.apply([customer(event_factory, 1, 51), customer(event_factory, 2, 50)])
    offset = sink.read_offset()
    assert (offset.version, offset.file, offset.pos) == (51, "mysql-bin.000001", 51)
    sink.apply([customer(event_factory, 3, 49)])  # a replayed, older batch
    assert sink.read_offset().version == 51
    sink.apply([customer(event_factory, 3, 60)])
    assert sink.read_offset().version == 60
    other = make_sink(name="crm-other")  # offsets are per sink
    assert other.read_offset() is None


def test_offset_rolls_back_with_a_failed_batch(sink, event_factory, pg_url, schema):
    sink.apply([customer(event_factory, 1, 70)])
    with _admin(pg_url) as conn:  # break the schema under the running sink
        conn.execute(f'ALTER TABLE "{schema}".customer DROP COLUMN name')
    with pytest.raises(TerminalError, match="name"):
        sink.apply([customer(event_factory, 2, 71)])
    assert sink.read_offset().version == 70


def test_unconvertible_value_rejects_that_event_only(sink, event_factory):
    good = [customer(event_factory, i, 80 + i, balance=f"{i}.5") for i in range(3)]
    bad = customer(event_factory, 9, 90, balance="12,50")
    rejections = sink.apply([*good, bad])
    assert [r.event for r in rejections] == [bad]
    reason = rejections[0].reason
    assert "customer" in reason and "9" in reason and "balance" in reason and "12,50" in reason
    assert sorted(sink.fetch_rows("customer")) == ["0", "1", "2"]


def test_value_refused_by_the_database_rejects_that_event_only(sink, event_factory, pg_url, schema):
    with _admin(pg_url) as conn:
        conn.execute(f'ALTER TABLE "{schema}".customer ADD CONSTRAINT name_short CHECK (length(name) < 10)')
    bad = customer(event_factory, 2, 101, name="far too long a name")
    rejections = sink.apply([customer(event_factory, 1, 100), bad, customer(event_factory, 3, 102)])
    assert [r.event for r in rejections] == [bad]
    assert "name_short" in rejections[0].reason
    assert sorted(sink.fetch_rows("customer")) == ["1", "3"]
    assert sink.read_offset().version == 102


def test_typed_columns_round_trip(sink, event_factory, pg_url, schema):
    after = {
        "id": 1,
        "region": "eu",
        "big": 18446744073709551615,
        "amount": "12345678901234567890.123456789",
        "ratio": 0.25,
        "active": True,
        "born": "1970-01-01",
        "local_time": "2024-02-29T23:59:59.123456",
        "at": "2024-03-01T12:00:00Z",
        "duration": "-838:59:59",
        "doc": {"tags": ["a", "b"], "n": 1, "nested": {"x": None}},
        "blob": "AAH/",
    }
    assert sink.apply([event_factory("every_type", {"id": 1, "region": "eu"}, 5, Op.CREATE, after=after)]) == []
    assert sink.fetch_rows("every_type") == {"1|eu": after}
    with _admin(pg_url) as conn:
        row = conn.execute(f'SELECT big, blob, pg_typeof(at)::text, doc->>\'n\' FROM "{schema}".every_type').fetchone()
    assert row == (18446744073709551615, b"\x00\x01\xff", "timestamp with time zone", "1")


def test_values_keep_their_meaning_through_the_json_rows(sink, event_factory, pg_url, schema):
    """The rows reach PostgreSQL as JSON: escapes, offsets, exponents and NULLs read back as sent."""
    tricky = 'quote " backslash \\ tab \t newline \n {"a": [1]} Zoë 漢字 🎉 \\u0041'
    after = {
        "id": -(2**63), "region": tricky, "big": 0, "amount": "1E-30", "ratio": 5e-324, "active": False,
        "born": "0001-01-01", "local_time": "9999-12-31T23:59:59.999999", "at": "2024-03-01T12:00:00+05:30:07",
        "duration": None, "doc": {"s": tricky, "list": [None, True, 1.5]}, "blob": "",
    }
    key = {"id": after["id"], "region": tricky}
    assert sink.apply([event_factory("every_type", key, 7, Op.CREATE, after=after)]) == []
    with _admin(pg_url) as conn:
        conn.execute("SET TIME ZONE 'America/New_York'")
        row = conn.execute(f'SELECT region, amount::text, ratio, born::text, local_time::text, at AT TIME ZONE \'UTC\', '
                           f'duration, doc, blob FROM "{schema}".every_type').fetchone()
    assert row[0] == tricky and row[1] == "0." + "0" * 29 + "1"
    assert row[2] == 5e-324 and row[3] == "0001-01-01" and row[4] == "9999-12-31 23:59:59.999999"
    assert row[5].isoformat() == "2024-03-01T06:29:53" and row[6] is None
    assert row[7] == {"s": tricky, "list": [None, True, 1.5]} and row[8] == b""
    # A tombstone for a row never seen is inserted from the before image; bad non-key values become NULL.
    before = {"id": 2, "region": tricky, "amount": "not a number", "at": "2024-01-01T00:00:00Z"}
    assert sink.apply([event_factory("every_type", {"id": 2, "region": tricky}, 8, Op.DELETE, before=before)]) == []
    with _admin(pg_url) as conn:
        assert conn.execute(f'SELECT amount, at IS NOT NULL, _deleted FROM "{schema}".every_type WHERE id = 2').fetchone() == (
            None, True, True)


def test_new_fields_are_added_and_a_wrong_table_is_refused(make_sink, event_factory, pg_url, schema):
    make_sink()
    grown = CUSTOMER.model_copy(update={"fields": {**CUSTOMER.fields, "email": F.STRING}})
    sink = make_sink(context=SinkContext(entities={"customer": grown}))
    sink.apply([event_factory("customer", 1, 1, Op.CREATE, after={"id": 1, "email": "a@b.c"})])
    assert sink.fetch_rows("customer")["1"]["email"] == "a@b.c"
    retyped = CUSTOMER.model_copy(update={"fields": {**CUSTOMER.fields, "name": F.INTEGER}})
    with pytest.raises(TerminalError, match=r"name is text, expected bigint"):
        make_sink(context=SinkContext(entities={"customer": retyped}))


def test_table_name_override(make_sink, event_factory, pg_url, schema):
    sink = make_sink(tables={"customer": "crm_customers"}, entities=["customer"])
    sink.apply([customer(event_factory, 1, 1)])
    with _admin(pg_url) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{schema}".crm_customers').fetchone() == (1,)
        assert conn.execute("SELECT to_regclass(%s)", (f'"{schema}".every_type',)).fetchone() == (None,)


def test_throughput_smoke(sink, event_factory):
    events = [
        customer(event_factory, i % 15_000, 1_000_000 + i, name=f"name {i}", balance=f"{i}.25", born="2001-01-01")
        for i in range(20_000)
    ]
    started = time.perf_counter()
    for i in range(0, len(events), 1000):
        assert sink.apply(events[i : i + 1000]) == []
    elapsed = time.perf_counter() - started
    print(f"\nCRM sink apply: {len(events) / elapsed:,.0f} events/s ({len(events)} events, batches of 1000)")
    assert len(sink.fetch_rows("customer")) == 15_000
