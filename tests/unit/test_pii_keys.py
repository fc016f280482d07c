"""``pii`` on key fields (issue 19, claim 8): a ``pii: hash`` key field is published hashed wherever the
key appears (``key``, ``id``, the ``x-cdc-key`` header and every text form derived from it), the same
value always giving the same hash so updates and deletes find the row; ``pii: mask`` on a key field
is refused when the mapping is loaded, naming the mapping, the field and the fix.

Property tests with generated rows: no raw value of a pii key field appears anywhere in what is
published, from the stream (:func:`cdc.source.change_events.build_events`) or from a snapshot chunk."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cdc.broker.publisher import OutMessage, group_events
from cdc.domain.envelope import decode_many, key_string
from cdc.domain.errors import ConfigError
from cdc.domain.positions import Checkpoint
from cdc.mapping import EntityMapping, Mapper, load_mappings
from cdc.runtime.config import load_settings
from cdc.snapshot.chunks import ChunkReader, ChunkRequest, WorkerSetup
from cdc.source.binlog_stream import RowChange, SourceTxn
from cdc.source.change_events import build_events

SALT = b"pepper of our own"
SENTINEL = "\u00a7RAW\u00a7"  # in every generated raw key value: a leak cannot hide behind a coincidence

# One hashed key field (text), a composite key with one hashed part, and a hashed integer key.
RAW_MAPPINGS = [
    {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["email"],
     "fields": {"email": {"column": "email", "type": "string", "pii": "hash"},
                "name": {"column": "name", "type": "string"}},
     "deleted_when": {"column": "gone", "equals": 1}},
    {"entity": "seat", "source": {"db": "legacy", "table": "seats"}, "key": ["venue", "holder"],
     "fields": {"venue": {"column": "venue", "type": "string"},
                "holder": {"column": "holder", "type": "string", "pii": "hash"},
                "name": {"column": "name", "type": "string"}}},
    {"entity": "badge", "source": {"db": "legacy", "table": "badges"}, "key": ["badge_no"],
     "fields": {"badge_no": {"column": "badge_no", "type": "integer", "pii": "hash"},
                "name": {"column": "name", "type": "string"}}},
]


def mappings() -> list[EntityMapping]:
    out = []
    for raw in RAW_MAPPINGS:
        m = EntityMapping.model_validate(raw)
        m._pii_salt = SALT  # noqa: SLF001 - what load_mappings sets from mappings.pii_salt
        out.append(m)
    return out


MAPPINGS = mappings()
MAPPER = Mapper(MAPPINGS)
TABLE = {m.entity: m.source.table for m in MAPPINGS}


def hashed(value) -> str:
    return hmac.new(SALT, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


def raw_texts(value) -> list[bytes]:
    """The forms a leaked value would take: its text, and its text as a JSON string holds it."""
    text = str(value)
    return [text.encode("utf-8"), orjson.dumps(text)[1:-1]]


def assert_no_leak(messages: list[OutMessage], secrets: list) -> None:
    for m in messages:
        headers = orjson.dumps({k: str(v) for k, v in m.headers.items()})
        for secret in secrets:
            for form in raw_texts(secret):
                where = (m.body, m.message_id.encode("utf-8"), headers, m.routing_key.encode("utf-8"))
                assert not any(form in part for part in where), f"raw key value {secret!r} published in {m}"


texts = st.text(min_size=0, max_size=12).map(lambda t: SENTINEL + t)
plain_texts = st.text(st.characters(exclude_characters="\u00a7", exclude_categories=("Cs",)), max_size=12).map(  # no pii; no lone
    lambda t: "venue " + t)  # surrogate either: no MySQL column holds one, and JSON cannot carry it
badge_numbers = st.integers(min_value=10**15, max_value=2**63 - 1)  # longer than any version, position or ts_ms


def change(table: str, op: str, before, after, pos: int, row: int = 0) -> RowChange:
    return RowChange("legacy", table, op, before, after, "mysql-bin.000007", pos, row, 1_700_000_000)


def txn(changes: list[RowChange]) -> SourceTxn:
    return SourceTxn("0-1-5", "0-1-5", changes, Checkpoint(file="mysql-bin.000007", pos=99_999, gtid="0-1-5"), 1_700_000_000)


def published(changes: list[RowChange], batch_events: int) -> tuple[list[OutMessage], list[dict]]:
    events, dead = build_events(txn(changes), MAPPER, "legacy", 1)
    assert dead == []
    singles = [OutMessage.from_event(e) for e in events]
    return singles + group_events(singles, batch_events, 1 << 20), events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(emails=st.lists(texts, min_size=1, max_size=4, unique=True), holders=st.lists(texts, min_size=1, max_size=3, unique=True),
       venue=plain_texts, badges=st.lists(badge_numbers, min_size=1, max_size=3, unique=True), batch_events=st.sampled_from([1, 3, 100]))
def test_no_raw_value_of_a_pii_key_field_is_published_by_the_stream(emails, holders, venue, badges, batch_events):
    changes, pos = [], 1000
    for i, email in enumerate(emails):
        changes.append(change("people", "c", None, {"email": email, "name": "n", "gone": 0}, pos))
        changes.append(change("people", "u", {"email": email, "name": "n", "gone": 0}, {"email": email, "name": "m", "gone": 0}, pos + 100))
        if i % 2:
            changes.append(change("people", "u", {"email": email, "name": "m", "gone": 0}, {"email": email, "name": "m", "gone": 1},
                                  pos + 200))  # soft-deleted: a delete through deleted_when
        else:
            changes.append(change("people", "d", {"email": email, "name": "m", "gone": 0}, None, pos + 200))
        pos += 1000
    for holder in holders:
        changes.append(change("seats", "c", None, {"venue": venue, "holder": holder, "name": "x"}, pos))
        changes.append(change("seats", "u", {"venue": venue, "holder": holder, "name": "x"}, {"venue": venue, "holder": holder + "2", "name": "x"},
                              pos + 100))  # the key changes: a delete of the old key and a create of the new
        changes.append(change("seats", "d", {"venue": venue, "holder": holder + "2", "name": "x"}, None, pos + 200))
        pos += 1000
    for badge in badges:
        changes.append(change("badges", "c", None, {"badge_no": badge, "name": "b"}, pos))
        changes.append(change("badges", "d", {"badge_no": badge, "name": "b"}, None, pos + 100))
        pos += 1000
    messages, events = published(changes, batch_events)
    assert_no_leak(messages, emails + holders + [h + "2" for h in holders] + badges)
    # Hashed the same everywhere: every event of one raw value carries one key, equal to its hashed field.
    keys: dict[tuple[str, str], set[str]] = {}
    for event in events:
        image = event["after"] or event["before"]
        if image is not None:
            assert {k: image[k] for k in event["key"]} == event["key"]
        keys.setdefault((event["entity"], key_string(event["key"])), set()).add(event["op"])
    expected = ({("person", hashed(e)) for e in emails} | {("badge", hashed(b)) for b in badges}
                | {("seat", key_string({"venue": venue, "holder": hashed(h)})) for h in holders}
                | {("seat", key_string({"venue": venue, "holder": hashed(h + "2")})) for h in holders})
    assert set(keys) == expected
    for (entity, _), ops in keys.items():
        assert "d" in ops and ("c" in ops or entity == "seat")
    # The venue is no pii: it stays as it is.
    assert all(e["key"]["venue"] == venue for e in events if e["entity"] == "seat")
    # Consumers' view: the decoded events' key text is the header's.
    for m in messages:
        if m.count == 1:
            (event,) = decode_many(m.body)
            assert m.headers["x-cdc-key"] == event.key_str


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(emails=st.lists(texts, min_size=1, max_size=6, unique=True), batch_events=st.sampled_from([1, 4, 100]))
def test_no_raw_value_of_a_pii_key_field_is_published_by_a_snapshot(emails, batch_events):
    setup = WorkerSetup(load_settings(None, source={"name": "legacy"}).source, MAPPINGS, "mariadb", 1, batch_events, 1 << 20)
    rows = [{"email": e, "name": "n", "gone": i % 2} for i, e in enumerate(emails)]  # every other one soft-deleted
    request = ChunkRequest(3, "legacy", "people", ("email",), None, None)
    chunk = ChunkReader(setup)._encode(request, rows, Checkpoint(file="mysql-bin.000007", pos=4711, gtid="0-1-9"))  # noqa: SLF001
    messages = chunk.messages_without(set())
    assert_no_leak(messages, emails)
    events = [e for m in messages for e in decode_many(m.body)]
    assert sorted(e.key_str for e in events) == sorted(hashed(e) for e in emails)
    assert all(e.id.endswith(":person:" + e.key_str) for e in events)


def test_a_hashed_key_is_the_same_for_the_same_value_and_differs_for_others():
    person = MAPPINGS[0]
    one = Mapper.map_row(person, {"email": "ann@example.org", "name": "Ann", "gone": 0})
    again = Mapper.map_row(person, {"email": "ann@example.org", "name": "Ann Lee", "gone": 1})  # soft-deleted
    other = Mapper.map_row(person, {"email": "bob@example.org", "name": "Bob", "gone": 0})
    assert one.key == again.key == {"email": hashed("ann@example.org")} == {"email": one.values["email"]}
    assert again.values is None and other.key != one.key


def _write(tmp_path, raw: dict) -> None:
    (tmp_path / f"{raw['entity']}.yaml").write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize("key", [["email"], ["venue", "email"]])
def test_mask_on_a_key_field_is_refused_at_load_naming_mapping_field_and_fix(tmp_path, key):
    raw = {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": key,
           "fields": {"email": {"column": "email", "type": "string", "pii": "mask"},
                      "venue": {"column": "venue", "type": "string"}}}
    with pytest.raises(ValidationError, match=r"entity 'person'.*key field 'email'.*pii: mask.*pii: hash"):
        EntityMapping.model_validate(raw)
    _write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_mappings(tmp_path, pii_salt="s")
    message = str(err.value)
    assert str(tmp_path / "person.yaml") in message and "'email'" in message
    assert "pii: hash" in message and "remove" in message and "distinct keys" in message


def test_mask_stays_allowed_on_fields_outside_the_key_and_hash_on_key_fields(tmp_path):
    _write(tmp_path, {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["email"],
                      "fields": {"email": {"column": "email", "type": "string", "pii": "hash"},
                                 "name": {"column": "name", "type": "string", "pii": "mask"}}})
    (loaded,) = load_mappings(tmp_path, pii_salt="s")
    assert loaded.fields["name"].pii == "mask"


@pytest.mark.parametrize("command", [["mappings", "check"], ["config", "check"]])
def test_cdc_mappings_check_refuses_mask_on_a_key_field(tmp_path, command):
    from typer.testing import CliRunner

    from cdc.cli.root import app

    directory = tmp_path / "mappings"
    directory.mkdir()
    _write(directory, {"entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["email"],
                       "fields": {"email": {"column": "email", "type": "string", "pii": "mask"}}})
    config = tmp_path / "cdc.yaml"
    # The source is never reached: the mappings are refused as they load.
    config.write_text(yaml.safe_dump({"source": {"host": "127.0.0.1", "port": 9, "user": "cdc", "databases": ["legacy"]},
                                      "mappings": {"dir": str(directory)}}))
    result = CliRunner().invoke(app, [*command, "-c", str(config)], env={"CDC_SOURCE__PASSWORD": "x"})
    assert result.exit_code == 2, result.output  # 2: the config or the mappings are wrong
    out = " ".join(result.output.split())
    assert "person.yaml" in out and "key field 'email' has 'pii: mask'" in out and "use 'pii: hash'" in out, out
