"""The mapping language: validation errors that name file, entity and field; filters, computed
fields, PII, projections, schema drift. No I/O beyond writing mapping files to tmp_path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from cdc.domain.errors import ConfigError
from cdc.domain.positions import Checkpoint
from cdc.mapping import EntityMapping, Mapper, MappingSchemaError, load_mappings
from cdc.mapping.projections import for_sink
from cdc.source.binlog_stream import RowChange, SourceTxn
from cdc.source.change_events import build_events

REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
DEMO_TABLES = {"membership_types", "chapters", "members", "events", "event_registrations", "certifications",
               "member_certifications", "ce_credits", "orders", "order_items", "payments"}


def mapping(**over) -> EntityMapping:
    raw = {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["person_id"],
           "fields": {"person_id": {"column": "id", "type": "integer"},
                      "email": {"column": "email", "type": "string", "transforms": ["trim", "lower"]},
                      "first": {"column": "fn", "type": "string"}, "last": {"column": "ln", "type": "string"}}}
    for k, v in over.items():
        if k == "fields":
            raw["fields"] = raw["fields"] | v
        else:
            raw[k] = v
    m = EntityMapping.model_validate(raw)
    m._pii_salt = b"pepper"
    return m


def row(**over):
    return {"id": 1, "email": " Ann@Example.org ", "fn": "Ann", "ln": "Lee", "deleted": 0} | over


def write(tmp_path, name, body) -> Path:
    (tmp_path / name).write_text(yaml.safe_dump(body) if isinstance(body, dict) else body)
    return tmp_path


def test_every_demo_table_is_mapped_and_valid():
    mappings = load_mappings(REPO_MAPPINGS)
    assert {m.source.table for m in mappings} == DEMO_TABLES
    assert {"member", "event_registration"} <= {m.entity for m in mappings}


@pytest.mark.parametrize("fields, expected", [
    ({"x": {"column": "x", "type": "strnig"}}, "fields.x.type"),
    ({"x": {"column": "x", "type": "string", "transforms": ["shout"]}}, "fields.x.transforms: unknown transform(s) ['shout']"),
    ({"x": {"type": "string", "computed": {"concat": ["nope"]}}}, "fields.x.computed: ['nope'] are not"),
    ({"x": {"column": "x", "type": "integer", "format": "%d"}}, "fields.x: 'format' applies to date"),
    ({"x": {"column": "x", "type": "bytes", "column_type": "binary(("}}, "fields.x: column_type 'binary(('"),
])
def test_load_errors_name_file_entity_and_field(tmp_path, fields, expected):
    body = {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["person_id"],
            "fields": {"person_id": {"column": "id", "type": "integer"}} | fields}
    with pytest.raises(ConfigError) as err:
        load_mappings(write(tmp_path, "person.yaml", body))
    assert "person.yaml (entity person)" in str(err.value) and expected in str(err.value)


def test_hashing_without_a_salt_is_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.delenv("CDC_MAPPINGS__PII_SALT", raising=False)
    body = {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["person_id"],
            "fields": {"person_id": {"column": "id", "type": "integer"}, "email": {"column": "email", "type": "string", "pii": "hash"}}}
    with pytest.raises(ConfigError, match=r"\['email'\] are 'pii: hash' but no salt.*CDC_MAPPINGS__PII_SALT"):
        load_mappings(write(tmp_path, "person.yaml", body))
    assert load_mappings(tmp_path, pii_salt="s3cret")[0].schema().fields["email"].value == "string"


def test_computed_fields_and_pii():
    m = mapping(fields={"name": {"type": "string", "computed": {"concat": ["first", "last"]}},
                        "label": {"type": "string", "computed": {"template": "{last}, {first}"}},
                        "contact": {"type": "string", "computed": {"coalesce": ["first", "email"]}},
                        "email": {"column": "email", "type": "string", "transforms": ["trim", "lower"], "pii": "hash"},
                        "first": {"column": "fn", "type": "string", "pii": "mask"},
                        "last": {"column": "ln", "type": "string", "pii": "drop"}})
    values = Mapper.map_row(m, row()).values
    assert values["name"] == "Ann Lee" and values["label"] == "Lee, Ann" and values["contact"] == "Ann"
    assert values["first"] == "A***" and "last" not in values and "last" not in m.schema().fields
    assert len(values["email"]) == 64 and values["email"] != Mapper.map_row(m, row(email="bob@example.org")).values["email"]
    assert values["email"] == Mapper.map_row(m, row(email="ANN@example.org")).values["email"]  # hashed after lower-casing


def test_row_filters_skip_rows_and_updates_out_of_the_filter_delete():
    m = mapping(skip_when=[{"field": "email", "matches": r"@qa\.invalid$"}], deleted_when={"column": "deleted", "equals": 1})
    mapper = Mapper([m])

    def events(op, before, after):
        change = RowChange("legacy", "people", op, before, after, "b.000001", 4, 0, 0)
        return build_events(SourceTxn("t", None, [change], Checkpoint(file="b.000001", pos=9), 0), mapper, "s", 1)[0]

    qa, real = row(email="x@QA.invalid"), row()
    assert events("c", None, qa) == []  # a test account never appears
    assert [e["op"] for e in events("u", real, qa)] == ["d"]
    assert [e["op"] for e in events("u", qa, real)] == ["c"]
    assert [e["op"] for e in events("u", real, row(deleted=1))] == ["d"]


@pytest.mark.parametrize("condition, deleted, kept", [
    ({"column": "deleted", "equals": 1}, row(deleted=1), row()),
    ({"column": "deleted", "equals": "1"}, row(deleted=1), row()),  # compared as text too
    ({"column": "deleted", "equals": True}, row(deleted=1), row()),  # TINYINT flags against a boolean
    ({"column": "deleted", "not_equals": 0}, row(deleted=2), row()),
    ({"column": "deleted", "in": [1, 2]}, row(deleted=2), row(deleted=3)),
    ({"column": "ln", "is_null": True}, row(ln=None), row()),
    ({"column": "ln", "is_null": False}, row(), row(ln=None)),
    ({"field": "email", "equals": "ann@example.org"}, row(), row(email="bob@example.org")),  # the converted value
    ({"field": "email", "matches": "^ann@"}, row(), row(email="bob@example.org")),
    ({"column": "email", "matches": "^ Ann@"}, row(), row(email="Ann@example.org")),  # the source value
    ({"column": "fn", "matches": "^A"}, row(fn=b"Ann"), row(fn=None)),  # bytes searched as text; null never matches
])
def test_each_condition_operator_on_columns_and_fields(condition, deleted, kept):
    m = mapping(deleted_when=condition)
    assert Mapper.map_row(m, deleted).values is None
    assert Mapper.map_row(m, kept).values is not None


def test_a_dropped_column_dead_letters_the_row_or_stops_by_configuration():
    gone = {k: v for k, v in row().items() if k != "ln"}
    change = RowChange("legacy", "people", "c", None, gone, "b.000001", 4, 0, 0)
    txn = SourceTxn("t", None, [change], Checkpoint(file="b.000001", pos=9), 0)
    events, dead = build_events(txn, Mapper([mapping()]), "s", 1)
    assert events == [] and len(dead) == 1
    assert "legacy.people" in dead[0].reason and "'person_id': 1" in dead[0].reason and "['ln']" in dead[0].reason
    with pytest.raises(MappingSchemaError, match="on_missing_column: fail"):
        build_events(txn, Mapper([mapping(on_missing_column="fail")]), "s", 1)


def test_unmapped_columns_pass_through_when_asked():
    m = mapping(unmapped_columns="pass_through")
    values = Mapper.map_row(m, row(nickname=b"annie", born=dt.date(1990, 1, 2))).values
    assert values["extra"] == {"deleted": 0, "nickname": "annie", "born": "1990-01-02"}
    assert m.schema().fields["extra"].value == "json"
    assert "extra" not in Mapper.map_row(mapping(), row(nickname="x")).values


def test_bad_value_reason_names_table_key_column_value_and_problem():
    m = mapping(fields={"first": {"column": "fn", "type": "string"}})
    change = RowChange("legacy", "people", "c", None, row(fn=b"caf\xe9"), "b.000001", 4, 0, 0)
    _, (dead,) = build_events(SourceTxn("t", None, [change], Checkpoint(file="b.000001", pos=9), 0), Mapper([m]), "s", 1)
    for part in ("table legacy.people", "key {'person_id': 1}", "field first (column fn)", "invalid UTF-8", "b'caf\\xe9'"):
        assert part in dead.reason


def test_projections_feed_each_sink_type():
    from cdc.sinks.base import get_sink_type

    mappings = load_mappings(REPO_MAPPINGS)
    schemas = Mapper(mappings).schemas()
    cache = get_sink_type("cache").config_model.model_validate({"type": "cache", "url": "redis://h", "keys": {"event": "ev:{event_id}"}})
    config, _ = for_sink("cache", cache, schemas, mappings)
    assert config.keys["member"] == "{prefix}:member:{member_id}" and config.keys["event"] == "ev:{event_id}"
    assert config.fields["member"][0] == "member_id" and "phone" not in config.fields["member"]
    search = get_sink_type("search").config_model.model_validate({"type": "search", "url": "http://h"})
    config, _ = for_sink("search", search, schemas, mappings)
    assert "title" in config.indices["event"].fields
    with_alias = [m.model_copy(update={"sinks": {**m.sinks, "search": m.sinks["search"].model_copy(update={"index": "directory"})}})
                  if m.entity == "member" else m for m in mappings]
    config, _ = for_sink("search", search, schemas, with_alias)
    assert config.indices["member"].alias == "directory"
    crm = get_sink_type("crm").config_model.model_validate({"type": "crm", "url": "postgresql://h/db"})
    config, narrowed = for_sink("crm", crm, schemas, mappings)
    assert config.tables["member"] == "member" and narrowed["member"] == schemas["member"]


def test_projection_fields_must_be_published_fields():
    with pytest.raises(ValueError, match=r"sinks.cache.fields: \['last'\]"):
        mapping(fields={"last": {"column": "ln", "type": "string", "pii": "drop"}}, sinks={"cache": {"fields": ["last"]}})
