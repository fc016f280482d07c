"""Published contracts: generated from the mappings, up to date, and what the mapper produces validates."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from pathlib import Path

import jsonschema
import orjson
import pydantic
import pytest
import yaml

from cdc.domain.envelope import encode
from cdc.mapping import EntityMapping, Mapper, contracts, load_mappings

REPO = Path(__file__).resolve().parents[2]

EVERY_TYPE = EntityMapping.model_validate({
    "entity": "gadget",
    "source": {"db": "legacy", "table": "gadgets"},
    "key": ["gadget_id"],
    "fields": {
        "gadget_id": {"column": "id", "type": "integer"},
        "name": {"column": "name", "type": "string", "transforms": ["trim"]},
        "serial": {"column": "serial", "type": "bigint_unsigned"},
        "price": {"column": "price", "type": "decimal"},
        "weight": {"column": "weight", "type": "float"},
        "active": {"column": "active", "type": "boolean"},
        "made_on": {"column": "made_on", "type": "date"},
        "seen_at": {"column": "seen_at", "type": "datetime"},
        "sold_at": {"column": "sold_at", "type": "timestamp"},
        "duration": {"column": "duration", "type": "time"},
        "attrs": {"column": "attrs", "type": "json"},
        "blob": {"column": "blob", "type": "bytes"},
        "state": {"column": "state", "type": "string", "labels": {"1": "on", "0": "off"}, "unknown_label": "error"},
        "owner_code": {"column": "owner", "type": "integer", "pii": "mask"},
    },
})

ROW = {
    "id": 7, "name": " Widget ", "serial": 2**64 - 1, "price": decimal.Decimal("12.50"), "weight": 1.5, "active": 1,
    "made_on": dt.date(2020, 2, 29), "seen_at": dt.datetime(2024, 5, 1, 10, 0, 0, 123000),
    "sold_at": dt.datetime(2024, 5, 1, 8, 0), "duration": dt.timedelta(hours=30, seconds=5), "attrs": '{"a": [1, 2]}',
    "blob": b"\x00\xffbin", "state": 1, "owner": 4242,
}


def _event(mapping: EntityMapping, op: str, before: dict | None, after: dict | None) -> bytes:
    def values(row):
        return None if row is None else Mapper.map_row(mapping, row).values

    key = Mapper.map_row(mapping, after or before).key
    return encode({
        "v": 1, "id": "legacy:mysql-bin.000001:400:0:gadget", "version": (1 << 32) | 400, "op": op,
        "entity": mapping.entity, "key": key, "before": values(before), "after": values(after),
        "source": {"name": "legacy", "server_id": 1, "gtid": "0-1-5", "file": "mysql-bin.000001", "pos": 400, "row": 0,
                   "db": "legacy", "table": "gadgets", "ts_ms": 1714550400000, "snapshot": False},
        "txn": {"id": "0-1-5", "index": 0, "last": True}, "ts_ms": 1714550400123,
    })


def _validator(schema: dict) -> jsonschema.Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_canonical_type_validates_against_its_schema_and_parses_to_python_types():
    body = _event(EVERY_TYPE, "u", before=ROW, after={**ROW, "price": decimal.Decimal("13.00"), "sold_at": None})
    errors = [e.message for e in _validator(contracts.event_schema(EVERY_TYPE)).iter_errors(orjson.loads(body))]
    assert errors == []

    event = contracts.EventModels([EVERY_TYPE]).parse(body)
    after = event.after
    assert type(event).__name__ == "GadgetEvent" and event.key.gadget_id == 7
    assert after.price == decimal.Decimal("13.00") and after.serial == 2**64 - 1
    assert after.made_on == dt.date(2020, 2, 29) and after.seen_at == dt.datetime(2024, 5, 1, 10, 0, 0, 123000)
    assert event.before.sold_at == dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC) and after.sold_at is None
    assert after.duration == "30:00:05" and after.attrs == {"a": [1, 2]} and after.blob == b"\x00\xffbin"
    assert after.state == "on" and after.owner_code == "4***"  # a masked field is text, whatever its source type


@pytest.mark.parametrize("change, problem", [
    (lambda e: e["after"].update(price=12.5), "price"),  # a decimal must be a string
    (lambda e: e["after"].update(sold_at="2024-05-01T08:00:00"), "sold_at"),  # a timestamp ends with Z
    (lambda e: e["after"].update(state="maybe"), "state"),  # labels are closed when unknown codes are errors
    (lambda e: e["after"].update(surprise=1), "surprise"),  # an unpublished field breaks the contract
    (lambda e: e["after"].pop("name"), "name"),  # every published field is present (null when unknown)
    (lambda e: e.update(op="d"), "after"),  # a delete carries no after image
    (lambda e: e.update(entity="member"), "entity"),
])
def test_the_contract_refuses_what_the_producer_must_not_send(change, problem):
    event = orjson.loads(_event(EVERY_TYPE, "c", before=None, after=ROW))
    change(event)
    errors = list(_validator(contracts.event_schema(EVERY_TYPE)).iter_errors(event))
    assert errors and any(problem in f"{e.path} {e.message} {e.schema_path}" for e in _flat(errors)), errors


def _flat(errors):
    for error in errors:
        yield error
        yield from _flat(error.context or [])


def test_typed_models_ignore_fields_added_later():
    event = orjson.loads(_event(EVERY_TYPE, "c", before=None, after=ROW))
    event["after"]["added_next_year"] = "x"
    parsed = contracts.EventModels([EVERY_TYPE]).parse(orjson.dumps(event))
    assert parsed.after.gadget_id == 7


def test_typed_models_refuse_a_wrong_value_with_the_field_named():
    event = orjson.loads(_event(EVERY_TYPE, "c", before=None, after=ROW))
    event["after"]["price"] = "twelve"
    with pytest.raises(pydantic.ValidationError, match="after.Gadget.price|price"):
        contracts.EventModels([EVERY_TYPE]).parse(orjson.dumps(event))


def test_the_published_files_are_up_to_date_with_the_mappings():
    stale = contracts.stale(load_mappings(REPO / "mappings", pii_salt="-"), REPO / "schemas")
    assert stale == [], f"schemas/ is stale: run `cdc schemas export --out schemas` ({stale})"


def test_every_published_schema_is_valid_and_asyncapi_names_every_entity():
    mappings = load_mappings(REPO / "mappings", pii_salt="-")
    for path in (REPO / "schemas").rglob("*.json"):
        jsonschema.Draft202012Validator.check_schema(orjson.loads(path.read_bytes()))
    doc = yaml.safe_load((REPO / "schemas" / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("2.6")
    boundaries = {"cdc.transaction.begin", "cdc.transaction.end", "cdc.heartbeat.reader"}  # off by default (events.*)
    assert set(doc["channels"]) == {f"{m.entity}.{{op}}" for m in mappings} | boundaries
    for name, channel in doc["channels"].items():
        assert channel["bindings"]["amqp"]["exchange"] == {"name": "cdc.events", "type": "topic", "durable": True,
                                                            "autoDelete": False, "vhost": "/"}
        message = channel["subscribe"]["message"]["$ref"].rsplit("/", 1)[1]
        if name in boundaries:
            assert (REPO / "schemas" / doc["components"]["messages"][message]["payload"]["$ref"]).is_file()
            continue
        single, batch = doc["components"]["messages"][message]["payload"]["oneOf"]
        assert (REPO / "schemas" / single["$ref"]).is_file()
        assert batch["type"] == "array" and batch["items"] == single  # a batch message: an array of the same events


def test_bytes_in_the_contract_are_base64():
    event = orjson.loads(_event(EVERY_TYPE, "c", before=None, after=ROW))
    assert base64.b64decode(event["after"]["blob"]) == b"\x00\xffbin"


def _truncate_body(mapping: EntityMapping, **over) -> dict:
    from cdc.domain.positions import Checkpoint
    from cdc.source.binlog_stream import SourceTxn
    from cdc.source.change_events import build_truncate_events

    txn = SourceTxn(id="0-1-6", gtid="0-1-6", changes=[], end=Checkpoint(file="mysql-bin.000001", pos=900), ts=1714550400,
                    ddl="TRUNCATE TABLE gadgets", ddl_db="legacy")
    (event,) = build_truncate_events(txn, Mapper([mapping]), "legacy", 1)
    return {**orjson.loads(encode(event)), **over}


def test_a_truncate_validates_against_the_contract_and_parses_to_the_typed_model():
    validator = _validator(contracts.event_schema(EVERY_TYPE))
    body = _truncate_body(EVERY_TYPE)
    assert list(validator.iter_errors(body)) == []
    parsed = contracts.EventModels([EVERY_TYPE]).parse(orjson.dumps(body))
    assert parsed.op.value == "t" and parsed.key is None and parsed.source.statement == "TRUNCATE TABLE gadgets"
    key = orjson.loads(_event(EVERY_TYPE, "c", None, ROW))["key"]
    assert list(validator.iter_errors(_truncate_body(EVERY_TYPE, key=key)))  # a truncate has no key
    assert list(validator.iter_errors({**orjson.loads(_event(EVERY_TYPE, "u", ROW, ROW)), "key": None}))  # a row change has one
