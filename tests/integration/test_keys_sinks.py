"""Keys through the real sinks (issue 19, claims 8 and 9): events made by the real mapper from row
changes, encoded and decoded as the broker carries them, applied to the CRM (PostgreSQL), the cache
(Redis) and the search sink (osmem-server or OPENSEARCH_URL).

- A ``pii: hash`` key field: the CRM row's primary key, the cache key and the search document id hold
  the hash, never the raw value, and an update then a delete of the row find it.
- Composite keys ``('a|b', 'c')`` and ``('a', 'b|c')``, created in one batch and updated in another:
  both rows arrive, separately, in the CRM, the cache and the search index."""

from __future__ import annotations

import hashlib
import hmac
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis
from pydantic import SecretStr

from cdc.checkpoint import Checkpoint
from cdc.envelope import ChangeEvent, decode_many, key_string
from cdc.events import build_events
from cdc.mapping import EntityMapping, Mapper
from cdc.publisher import OutMessage
from cdc.reader import RowChange, SourceTxn
from cdc.sinks.base import SinkContext, get_sink_type

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for search_server
import search_server  # noqa: E402

pytestmark = pytest.mark.integration

SALT = b"a salt of our own"
RAW_EMAILS = ["ann@example.org", "bob|x\\y@example.org"]


def _mappings() -> list[EntityMapping]:
    person = EntityMapping.model_validate({
        "entity": "person", "source": {"db": "legacy", "table": "people"}, "key": ["email"],
        "fields": {"email": {"column": "email", "type": "string", "pii": "hash"}, "name": {"column": "name", "type": "string"}}})
    person._pii_salt = SALT  # noqa: SLF001 - what load_mappings sets from mappings.pii_salt
    pair = EntityMapping.model_validate({
        "entity": "pair", "source": {"db": "legacy", "table": "pairs"}, "key": ["a", "b"],
        "fields": {"a": {"column": "a", "type": "string"}, "b": {"column": "b", "type": "string"},
                   "note": {"column": "note", "type": "string"}}})
    return [person, pair]


MAPPER = Mapper(_mappings())
CONTEXT = SinkContext(entities=MAPPER.schemas())


def hashed(value: str) -> str:
    return hmac.new(SALT, value.encode("utf-8"), hashlib.sha256).hexdigest()


class Source:
    """Row changes through the real mapper to the events the sinks receive (through their bytes)."""

    def __init__(self) -> None:
        self.pos = 1000

    def batch(self, *changes: tuple[str, str, dict | None, dict | None]) -> list[ChangeEvent]:
        rows = []
        for table, op, before, after in changes:
            rows.append(RowChange("legacy", table, op, before, after, "mysql-bin.000004", self.pos, 0, 1_700_000_000))
            self.pos += 100
        txn = SourceTxn("0-1-5", "0-1-5", rows, Checkpoint(file="mysql-bin.000004", pos=self.pos, gtid="0-1-5"), 1_700_000_000)
        events, dead = build_events(txn, MAPPER, "legacy", 1)
        assert dead == []
        return [e for event in events for e in decode_many(OutMessage.from_event(event).body)]


@pytest.fixture
def sinks(pg_url, redis_url, unique_name):
    state = tempfile.mkdtemp(prefix="cdc-keys-search-")
    built = {
        "crm": get_sink_type("crm").factory("keys-crm", get_sink_type("crm").config_model(
            url=SecretStr(pg_url), schema_name=unique_name), CONTEXT),
        "cache": get_sink_type("cache").factory("keys-cache", get_sink_type("cache").config_model(
            url=SecretStr(redis_url), key_prefix=f"keys:{unique_name}"), CONTEXT),
        "search": get_sink_type("search").factory("keys-search", get_sink_type("search").config_model(
            type="search", url=SecretStr(search_server.url()), index_prefix=unique_name.replace("_", "-"),
            state_url=f"sqlite:///{state}/state.db"), CONTEXT),
    }
    for sink in built.values():
        sink.open()
    yield built
    for name, sink in built.items():
        try:
            sink.reset()
        finally:
            sink.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')


def apply(sinks, events: list[ChangeEvent]) -> None:
    for name, sink in sinks.items():
        assert sink.apply(events) == [], name


def test_a_hashed_key_field_is_hashed_in_every_sink_and_updates_and_deletes_find_the_row(sinks, pg_url, redis_url, unique_name):
    source = Source()
    apply(sinks, source.batch(*[("people", "c", None, {"email": e, "name": f"first {i}"}) for i, e in enumerate(RAW_EMAILS)]))
    apply(sinks, source.batch(("people", "u", {"email": RAW_EMAILS[0], "name": "first 0"}, {"email": RAW_EMAILS[0], "name": "second"}),
                              ("people", "u", {"email": RAW_EMAILS[1], "name": "first 1"}, {"email": RAW_EMAILS[1], "name": "second"})))
    expected = {hashed(e): {"email": hashed(e), "name": "second"} for e in RAW_EMAILS}
    for name, sink in sinks.items():
        assert sink.fetch_rows("person") == expected, name
    # The CRM's primary key column holds the hash.
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(f'SELECT email, name, _deleted FROM "{unique_name}".person ORDER BY email').fetchall()
    assert stored == sorted((hashed(e), "second", False) for e in RAW_EMAILS)
    # The cache's keys (value keys and version keys) and values hold the hash, never the raw value.
    client = redis.Redis.from_url(redis_url)
    try:
        names = [k.decode() for k in client.scan_iter(match=f"keys:{unique_name}:*", count=1000)]
        assert f"keys:{unique_name}:person:{hashed(RAW_EMAILS[0])}" in names
        values = [client.get(k) or b"" for k in names if client.type(k) == b"string"]
    finally:
        client.close()
    for raw in RAW_EMAILS:
        assert not any(raw in n for n in names) and not any(raw.encode() in v for v in values)
    # A delete finds the row everywhere.
    apply(sinks, source.batch(("people", "d", {"email": RAW_EMAILS[0], "name": "second"}, None)))
    for name, sink in sinks.items():
        assert sink.fetch_rows("person") == {hashed(RAW_EMAILS[1]): {"email": hashed(RAW_EMAILS[1]), "name": "second"}}, name
    with psycopg.connect(pg_url) as conn:
        deleted = conn.execute(f'SELECT email FROM "{unique_name}".person WHERE _deleted').fetchall()
    assert deleted == [(hashed(RAW_EMAILS[0]),)]


def test_composite_keys_that_joined_unescaped_would_be_one_arrive_separately_in_every_sink(sinks, pg_url, unique_name):
    source = Source()
    one, two = {"a": "a|b", "b": "c"}, {"a": "a", "b": "b|c"}
    created = source.batch(("pairs", "c", None, {**one, "note": "one"}), ("pairs", "c", None, {**two, "note": "two"}))
    assert len({e.key_str for e in created}) == 2
    apply(sinks, created)
    apply(sinks, source.batch(("pairs", "u", {**one, "note": "one"}, {**one, "note": "one, updated"}),
                              ("pairs", "u", {**two, "note": "two"}, {**two, "note": "two, updated"})))
    expected = {key_string(one): {**one, "note": "one, updated"}, key_string(two): {**two, "note": "two, updated"}}
    assert set(expected) == {"a\\|b|c", "a|b\\|c"}
    for name, sink in sinks.items():
        assert sink.fetch_rows("pair") == expected, name
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(f'SELECT a, b, note, _version FROM "{unique_name}".pair ORDER BY a').fetchall()
    assert [r[:3] for r in stored] == [("a", "b|c", "two, updated"), ("a|b", "c", "one, updated")]
    # A delete of one leaves the other.
    apply(sinks, source.batch(("pairs", "d", {**one, "note": "one, updated"}, None)))
    for name, sink in sinks.items():
        assert sink.fetch_rows("pair") == {key_string(two): {**two, "note": "two, updated"}}, name
