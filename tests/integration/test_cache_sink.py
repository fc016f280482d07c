"""The cache sink against a real Redis: formats, key templates, TTLs, invalidation, 63-bit versions."""

from __future__ import annotations

import time

import orjson
import pytest
import redis
from pydantic import SecretStr, ValidationError

from cdc.domain.envelope import Op
from cdc.domain.errors import TransientError
from cdc.sinks.base import SinkContext, get_sink_type
from cdc.sinks.cache import CacheSink, CacheSinkConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(unique_name):
    return f"it:{unique_name}"


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def make_sink(redis_url, prefix):
    sinks = []

    def make(name: str = "cache", **overrides) -> CacheSink:
        config = CacheSinkConfig(url=SecretStr(redis_url), key_prefix=prefix, **overrides)
        sink = CacheSink(name, config, SinkContext())
        sink.open()
        sinks.append(sink)
        return sink

    yield make
    sinks[0].reset()
    for sink in sinks:
        sink.close()


@pytest.fixture
def sink(make_sink) -> CacheSink:
    return make_sink()


def customer(event_factory, id_, version, op=Op.UPDATE, **after):
    row = {"id": id_, "name": f"c{id_}", "balance": "0.00", "tags": ["vip"]} | after
    return event_factory("customer", id_, version, op, after=row if op is not Op.DELETE else None)


def test_registered_by_name():
    assert get_sink_type("cache").config_model is CacheSinkConfig


def test_json_values_are_plain_strings(sink, client, prefix, event_factory):
    assert sink.apply([customer(event_factory, 1, 10, Op.CREATE, name="Ann")]) == []
    assert orjson.loads(client.get(f"{prefix}:customer:1")) == {"id": 1, "name": "Ann", "balance": "0.00", "tags": ["vip"]}
    assert client.ttl(f"{prefix}:customer:1") == -1
    assert client.get(f"{prefix}:__v__:{prefix}:customer:1") == b"0000000000000000010:customer:1"


def test_hash_format_and_field_projection(make_sink, client, prefix, event_factory):
    sink = make_sink(format="hash", fields={"customer": ["name", "tags", "missing"]})
    sink.apply([customer(event_factory, 1, 10, Op.CREATE, name="Ann", extra=1)])
    assert client.hgetall(f"{prefix}:customer:1") == {b"name": b'"Ann"', b"tags": b'["vip"]'}
    sink.apply([event_factory("customer", 1, 11, Op.UPDATE, after={"id": 1, "name": "Bo"})])
    assert client.hgetall(f"{prefix}:customer:1") == {b"name": b'"Bo"'}  # the whole row is replaced
    assert sink.fetch_rows("customer") == {"1": {"name": "Bo"}}


def test_key_templates_with_key_fields(make_sink, client, prefix, event_factory):
    sink = make_sink(keys={"order": "{prefix}:orders:{region}/{id}", "customer": "app:{entity}:{key}"})
    sink.apply([event_factory("order", {"id": 5, "region": "eu"}, 10, Op.CREATE, after={"id": 5, "region": "eu"})])
    sink.apply([customer(event_factory, 7, 11)])
    assert client.exists(f"{prefix}:orders:eu/5", "app:customer:7") == 2
    assert sink.fetch_rows("order") == {"5|eu": {"id": 5, "region": "eu"}}
    sink.reset()  # follows the versions to value keys outside the prefix
    assert client.exists("app:customer:7") == 0 and client.keys(f"{prefix}:*") == []


def test_bad_template_is_a_config_error(redis_url):
    with pytest.raises(ValidationError, match="name every field"):
        CacheSinkConfig(url=SecretStr(redis_url), keys={"customer": "c:{}"})


def test_event_the_template_cannot_name_is_rejected_alone(make_sink, event_factory):
    sink = make_sink(keys={"customer": "{prefix}:c:{id}"})
    bad = event_factory("customer", {"code": "X1"}, 20, Op.CREATE, after={"code": "X1"})
    rejections = sink.apply([customer(event_factory, 1, 19), bad, customer(event_factory, 2, 21)])
    assert [r.event for r in rejections] == [bad]
    assert "'id'" in rejections[0].reason and "code" in rejections[0].reason
    assert sorted(sink.fetch_rows("customer")) == ["1", "2"]
    assert sink.read_offset().version == 21


def test_value_ttl(make_sink, client, prefix, event_factory):
    sink = make_sink(ttl_s=100)
    sink.apply([customer(event_factory, 1, 10)])
    assert 90 < client.ttl(f"{prefix}:customer:1") <= 100
    assert client.ttl(f"{prefix}:__v__:{prefix}:customer:1") == -1  # the version outlives the value, for good
    client.delete(f"{prefix}:customer:1")  # as when the value expires
    sink.apply([customer(event_factory, 1, 9, name="older")])  # a late older write does not fill it in
    assert sink.fetch_rows("customer") == {}


def test_delete_keeps_a_tombstone_that_never_expires(make_sink, client, prefix, event_factory, caplog):
    sink = make_sink(tombstone_ttl_s=1)  # the old setting is accepted, with a warning, and changes nothing
    assert "tombstone_ttl_s is no longer used" in caplog.text
    sink.apply([customer(event_factory, 1, 10), customer(event_factory, 1, 11, Op.DELETE)])
    assert client.exists(f"{prefix}:customer:1") == 0
    vkey = f"{prefix}:__v__:{prefix}:customer:1"
    assert client.get(vkey).startswith(b"0000000000000000011") and client.ttl(vkey) == -1
    sink.apply([customer(event_factory, 1, 10)])  # redelivered insert: still deleted
    assert sink.fetch_rows("customer") == {}
    sink.apply([customer(event_factory, 1, 12, name="back")])
    assert client.ttl(vkey) == -1 and sink.fetch_rows("customer")["1"]["name"] == "back"


@pytest.mark.parametrize("fmt", ["json", "hash"])
def test_truncate_sweeps_the_entity_keys_in_chunks_and_keeps_a_floor(make_sink, client, prefix, event_factory, fmt):
    sink = make_sink(format=fmt)
    sink.apply([customer(event_factory, i, 100 + i) for i in range(2500)])  # more than one SCAN chunk
    sink.apply([event_factory("order", i, 5000 + i, Op.CREATE, after={"id": i}) for i in range(3)])
    sink.apply([customer(event_factory, 7, 3000, name="newer than the truncate")])
    truncate = event_factory.truncate("customer", version=2900)
    assert sink.apply([truncate]) == []
    assert sink.fetch_rows("customer") == {"7": sink.fetch_rows("customer")["7"]}
    assert sorted(sink.fetch_rows("order")) == ["0", "1", "2"]  # another entity: untouched
    assert client.get(f"{prefix}:__truncated__:customer") == f"{2900:019d}".encode()
    left = [k for k in client.scan_iter(match=f"{prefix}:customer:*", count=1000)]
    assert left == [f"{prefix}:customer:7".encode()]  # value and version keys below the floor are gone
    assert client.exists(f"{prefix}:__v__:{prefix}:customer:1") == 0
    sink.apply([customer(event_factory, 1, 2899, name="late")])
    assert sorted(sink.fetch_rows("customer")) == ["7"]


def test_invalidate_mode(make_sink, client, prefix, event_factory):
    """A newer event deletes the value and records its version; an older or repeated one does nothing."""
    sink = make_sink(mode="invalidate")
    key = f"{prefix}:customer:1"
    client.set(key, "loaded-by-app-before")
    sink.apply([customer(event_factory, 1, 10)])
    assert client.exists(key) == 0
    assert client.get(f"{prefix}:__v__:{key}").startswith(b"0000000000000000010")
    client.set(key, "loaded-by-app-after")
    sink.apply([customer(event_factory, 1, 10), customer(event_factory, 1, 9, Op.DELETE)])
    assert client.get(key) == b"loaded-by-app-after"
    sink.apply([customer(event_factory, 1, 11, Op.DELETE)])
    assert client.exists(key) == 0 and client.ttl(f"{prefix}:__v__:{key}") == -1  # a tombstone never expires
    assert sink.read_offset().version == 11


def test_versions_beyond_2_pow_53_compare_exactly(sink, event_factory):
    low, high = 2**62 + 1, 2**62 + 2
    assert float(low) == float(high)  # what a Lua number would see
    sink.apply([customer(event_factory, 1, high, name="high")])
    sink.apply([customer(event_factory, 1, low, name="low")])
    assert sink.fetch_rows("customer")["1"]["name"] == "high"
    top = 2**63 - 1
    sink.apply([customer(event_factory, 1, top, name="top")])
    assert sink.fetch_rows("customer")["1"]["name"] == "top"
    assert sink.read_offset().version == top


def test_script_is_reloaded_after_script_flush(sink, client, event_factory):
    sink.apply([customer(event_factory, 1, 10)])
    client.script_flush()
    assert sink.apply([customer(event_factory, 2, 11)]) == []
    assert sorted(sink.fetch_rows("customer")) == ["1", "2"]


def test_offsets_are_per_sink(make_sink, event_factory):
    first, second = make_sink("one"), make_sink("two")
    first.apply([customer(event_factory, 1, 10)])
    assert first.read_offset().version == 10 and second.read_offset() is None


def test_unreachable_redis_is_transient_and_hides_the_password():
    config = CacheSinkConfig(url=SecretStr("redis://:s3cr3t-pw@127.0.0.1:1/0"))
    sink = CacheSink("down", config, SinkContext())
    with pytest.raises(TransientError) as caught:
        sink.open()
    assert "s3cr3t-pw" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)
    assert "s3cr3t-pw" not in repr(config)
    sink.close()


def test_throughput_smoke(sink, event_factory):
    events = [customer(event_factory, i % 15_000, 1_000_000 + i, name=f"name {i}", balance=f"{i}.25") for i in range(20_000)]
    started = time.perf_counter()
    for i in range(0, len(events), 1000):
        assert sink.apply(events[i : i + 1000]) == []
    elapsed = time.perf_counter() - started
    print(f"\ncache sink apply: {len(events) / elapsed:,.0f} events/s ({len(events)} events, batches of 1000)")
    assert len(sink.fetch_rows("customer")) == 15_000
