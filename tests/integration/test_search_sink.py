"""The search sink against osmem-server (or a real cluster at OPENSEARCH_URL): aliases, versions, tombstones."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
from opensearchpy import OpenSearch
from pydantic import SecretStr
from search_server import search_url  # noqa: F401  (the session fixture)

from cdc.domain.entity_schema import EntitySchema
from cdc.domain.entity_schema import FieldType as F
from cdc.domain.envelope import Op
from cdc.domain.errors import TerminalError, TransientError
from cdc.sinks.base import SinkContext, get_sink_type
from cdc.sinks.search import SearchSink, SearchSinkConfig
from cdc.sinks.search_mapping import IndexSpec, Outcome, classify_item
from cdc.state import open_state_store

pytestmark = pytest.mark.integration

CUSTOMER = EntitySchema(name="customer", key=("id",), fields={"id": F.INTEGER, "name": F.STRING, "balance": F.DECIMAL, "born": F.DATE})
EVERY_TYPE = EntitySchema(
    name="every_type",
    key=("id", "region"),
    fields={
        "id": F.INTEGER, "region": F.STRING, "big": F.BIGINT_UNSIGNED, "amount": F.DECIMAL, "ratio": F.FLOAT,
        "active": F.BOOLEAN, "born": F.DATE, "local_time": F.DATETIME, "at": F.TIMESTAMP, "duration": F.TIME,
        "doc": F.JSON, "blob": F.BYTES,
    },
)
CONTEXT = SinkContext(entities={s.name: s for s in (CUSTOMER, EVERY_TYPE)})


@pytest.fixture
def client(search_url):
    c = OpenSearch(hosts=[search_url])
    yield c
    c.close()


@pytest.fixture
def make_sink(search_url, unique_name, tmp_path, client):
    sinks = []
    prefix = unique_name.replace("_", "-")

    def make(name: str = "search", context: SinkContext = CONTEXT, **overrides) -> SearchSink:
        settings = dict(url=SecretStr(search_url), index_prefix=prefix, state_url=f"sqlite:///{tmp_path}/state.db") | overrides
        sink = get_sink_type("search").factory(name, SearchSinkConfig(**settings), context)
        sink.open()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()
    for index in client.indices.get(index=f"{prefix}-*"):  # by name: clusters may forbid wildcard deletes
        client.indices.delete(index=index)


@pytest.fixture
def sink(make_sink) -> SearchSink:
    return make_sink()


def customer(event_factory, id_, version, op=Op.UPDATE, **after):
    row = {"id": id_, "name": f"c{id_}", "balance": "0.00", "born": None} | after
    return event_factory("customer", id_, version, op, after=None if op is Op.DELETE else row)


def raw(client, alias, doc_id):
    return client.get(index=alias, id=doc_id)


def test_open_creates_index_with_mapping_behind_alias(sink, client):
    alias = sink._indices["customer"].alias
    assert client.indices.get_alias(name=alias) == {f"{alias}-v1": {"aliases": {alias: {}}}}
    mapping = client.indices.get_mapping(index=alias)[f"{alias}-v1"]["mappings"]
    props = mapping["properties"]
    assert mapping["dynamic"] == "strict"
    assert props["id"]["type"] == "long"
    assert props["name"]["type"] == "text" and props["name"]["fields"]["keyword"]["type"] == "keyword"
    assert props["balance"]["type"] == "keyword" and props["balance"]["fields"]["num"]["type"] == "double"
    assert props["born"]["type"] == "date"
    assert props["_cdc_version"]["type"] == "long" and props["_cdc_deleted"]["type"] == "boolean"
    every = client.indices.get_mapping(index=sink._indices["every_type"].alias)
    assert next(iter(every.values()))["mappings"]["properties"]["big"]["type"] == "unsigned_long"


def test_reopen_uses_existing_alias_and_adds_new_fields(make_sink, client, event_factory):
    first = make_sink()
    assert first.apply([customer(event_factory, 1, 10)]) == []
    grown = EntitySchema(name="customer", key=("id",), fields=dict(CUSTOMER.fields) | {"email": F.STRING})
    second = make_sink(context=SinkContext(entities={"customer": grown}))
    alias = second._indices["customer"].alias
    assert list(client.indices.get_alias(name=alias)) == [f"{alias}-v1"]
    assert second.apply([customer(event_factory, 2, 11, email="a@b.c")]) == []
    assert second.fetch_rows("customer")["2"]["email"] == "a@b.c"
    assert "1" in second.fetch_rows("customer")


def test_upsert_update_and_newest_per_key_in_batch(sink, event_factory, client):
    assert sink.apply([customer(event_factory, 1, 10, Op.CREATE, name="Ann", balance="12.50", born="1990-05-01")]) == []
    batch = [customer(event_factory, 1, 12, name="Ann B"), customer(event_factory, 1, 11, name="older"), customer(event_factory, 2, 13)]
    assert sink.apply(batch) == []
    rows = sink.fetch_rows("customer")
    assert rows == {
        "1": {"id": 1, "name": "Ann B", "balance": "0.00", "born": None},
        "2": {"id": 2, "name": "c2", "balance": "0.00", "born": None},
    }
    doc = raw(client, sink._indices["customer"].alias, "1")
    assert doc["_version"] == 12 and doc["_source"]["_cdc_version"] == 12


def test_every_canonical_type_is_accepted(sink, event_factory):
    row = {
        "id": 7, "region": "eu", "big": 2**64 - 1, "amount": "12345678901234567890.123456789", "ratio": 0.25,
        "active": True, "born": "2000-02-29", "local_time": "2024-01-02T03:04:05.123456", "at": "2024-01-02T03:04:05Z",
        "duration": "-838:59:59", "doc": [1, {"a": None}], "blob": "AAEC",
    }
    event = event_factory("every_type", {"id": 7, "region": "eu"}, 10, Op.CREATE, after=row)
    assert sink.apply([event]) == []
    assert sink.fetch_rows("every_type") == {"7|eu": row}


def test_stale_version_is_ignored_and_counts_as_applied(sink, event_factory, client):
    assert sink.apply([customer(event_factory, 1, 20, name="new")]) == []
    assert sink.apply([customer(event_factory, 1, 15, name="old")]) == []
    assert sink.apply([customer(event_factory, 1, 20, name="same version")]) == []
    assert sink.fetch_rows("customer")["1"]["name"] == "new"


def test_delete_leaves_tombstone_that_a_late_insert_cannot_resurrect(sink, event_factory, client):
    assert sink.apply([customer(event_factory, 1, 10, Op.CREATE), customer(event_factory, 2, 11, Op.CREATE)]) == []
    assert sink.apply([customer(event_factory, 1, 30, Op.DELETE)]) == []
    assert sink.apply([customer(event_factory, 1, 20, Op.CREATE, name="late")]) == []
    assert set(sink.fetch_rows("customer")) == {"2"}
    doc = raw(client, sink._indices["customer"].alias, "1")
    assert doc["_version"] == 30 and doc["_source"] == {"id": 1, "_cdc_version": 30, "_cdc_deleted": True}
    assert sink.apply([customer(event_factory, 1, 40, Op.CREATE, name="reborn")]) == []
    assert sink.fetch_rows("customer")["1"]["name"] == "reborn"


def test_refused_document_is_one_rejection_and_the_rest_applies(make_sink, event_factory):
    spec = IndexSpec(mappings={"name": {"type": "long"}})
    sink = make_sink(indices={"customer": spec})
    good = customer(event_factory, 1, 10, name="42")
    bad_date = customer(event_factory, 2, 11, name="7", born="not-a-date")
    bad_long = customer(event_factory, 3, 12, name="Ann")
    rejections = sink.apply([good, bad_date, bad_long])
    assert sorted(r.event.key_str for r in rejections) == ["2", "3"]
    alias = sink._indices["customer"].alias
    for r in rejections:
        assert r.reason.startswith(f"customer key {r.event.key_str}: index {alias} refused the document: ")
        assert "mapper_parsing_exception" in r.reason
    assert "[born]" in next(r.reason for r in rejections if r.event.key_str == "2")
    assert set(sink.fetch_rows("customer")) == {"1"}
    assert sink.read_offset().version == 12


RECORDED_ITEMS = {
    Outcome.APPLIED: {"index": {"_id": "1", "_version": 5, "result": "created", "status": 201}},
    Outcome.STALE: {"index": {"_id": "1", "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "[1]: version conflict"}}},
    Outcome.RETRY: {"index": {"_id": "1", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}},
    Outcome.MISSING_INDEX: {"index": {"_id": "1", "status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index [x]"}}},
    Outcome.REJECTED: {
        "index": {"_id": "1", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]",
                  "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"abc\""}}}
    },
}


@pytest.mark.parametrize("expected", list(RECORDED_ITEMS))
def test_classify_recorded_bulk_items(expected):
    outcome, detail = classify_item(RECORDED_ITEMS[expected])
    assert outcome is expected
    if expected is Outcome.REJECTED:
        assert detail == 'mapper_parsing_exception: failed to parse field [n] (caused by illegal_argument_exception: For input string: "abc")'
    assert classify_item({"index": {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "x"}}})[0] is Outcome.RETRY
    assert classify_item({"create": {"status": 403, "error": {"type": "cluster_block_exception", "reason": "read-only"}}})[0] is Outcome.RETRY


def test_throttled_items_are_retried_then_applied(sink, event_factory, monkeypatch):
    real_bulk = sink._client.bulk
    calls = []

    def throttle_first_item_once(body, **params):
        calls.append(body.count(b"\n") // 2)
        response = real_bulk(body=body, **params)
        if len(calls) == 1:
            response["errors"] = True
            response["items"][0] = RECORDED_ITEMS[Outcome.RETRY]
        return response

    monkeypatch.setattr(sink._client, "bulk", throttle_first_item_once)
    first = customer(event_factory, 1, 10)
    assert sink.apply([first, customer(event_factory, 2, 11)]) == []
    assert calls == [2, 1]
    assert set(sink.fetch_rows("customer")) == {"1", "2"}


def test_items_still_throttled_after_max_retries_raise_transient(make_sink, event_factory, monkeypatch):
    sink = make_sink(max_retries=1)
    monkeypatch.setattr(sink._client, "bulk", lambda body, **_: {"errors": True, "items": [RECORDED_ITEMS[Outcome.RETRY]]})
    with pytest.raises(TransientError, match="still failing after 1 retries: es_rejected_execution_exception"):
        sink.apply([customer(event_factory, 1, 10)])
    assert sink.read_offset() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_transient_and_never_shows_the_password(tmp_path):
    config = SearchSinkConfig(url=SecretStr(f"http://admin:s3cr3t-pw@127.0.0.1:{_free_port()}"), state_url=f"sqlite:///{tmp_path}/s.db")
    sink = SearchSink("search", config, CONTEXT)
    with pytest.raises(TransientError) as info:
        sink.open()
    assert "s3cr3t-pw" not in str(info.value) and "admin:***@127.0.0.1" in str(info.value)
    sink.close()
    sink.close()


class _Refuse401(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802
        self.send_response(401)
        self.end_headers()

    def do_GET(self):  # noqa: N802
        body = b'{"error":{"type":"security_exception","reason":"authentication failed"},"status":401}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_refused_credentials_are_terminal_and_name_the_setting(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse401)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://admin:wrong-pw@127.0.0.1:{server.server_address[1]}"
        sink = SearchSink("search", SearchSinkConfig(url=SecretStr(url), state_url=f"sqlite:///{tmp_path}/s.db"), CONTEXT)
        with pytest.raises(TerminalError, match=r"sinks\.search\.url") as info:
            sink.open()
        assert "wrong-pw" not in str(info.value)
        sink.close()
    finally:
        server.shutdown()
        server.server_close()


def test_offset_is_stored_in_the_state_store_and_moves_forward_only(make_sink, event_factory, tmp_path):
    sink = make_sink()
    assert sink.read_offset() is None
    sink.apply([customer(event_factory, 1, 50), customer(event_factory, 2, 40)])
    sink.apply([customer(event_factory, 3, 30)])
    store = open_state_store(f"sqlite:///{tmp_path}/state.db")
    try:
        assert store.load_sink_offset("search").version == 50
    finally:
        store.close()
    assert make_sink().read_offset().version == 50


def test_reset_deletes_documents_indices_and_offset(sink, event_factory, client):
    sink.apply([customer(event_factory, 1, 10)])
    sink.reset()
    assert sink.read_offset() is None
    assert sink.fetch_rows("customer") == {}
    alias = sink._indices["customer"].alias
    assert list(client.indices.get_alias(name=alias)) == [f"{alias}-v1"]


def test_throughput_smoke(make_sink, event_factory):
    sink = make_sink(entities=["customer"])
    events = [customer(event_factory, i, 1000 + i, Op.CREATE, name=f"name {i}", balance=f"{i}.25") for i in range(20_000)]
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(events), 1000):
        assert sink.apply(events[i : i + 1000]) == []
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"\nsearch sink: {len(events) / elapsed:,.0f} events/s end to end (20,000 events, batches of 1,000; "
        f"target >= 10,000); the sink's own CPU: {len(events) / cpu:,.0f} events/s"
    )
    assert len(sink.fetch_rows("customer")) == 20_000


def test_alias_over_two_indices_without_write_index_is_terminal(make_sink, client):
    sink = make_sink(entities=["customer"])
    alias = sink._indices["customer"].alias
    client.indices.create(index=f"{alias}-v2")
    client.indices.put_alias(index=f"{alias}-v2", name=alias)
    with pytest.raises(TerminalError, match="without a write index"):
        make_sink(entities=["customer"])


def test_an_entity_can_be_written_through_an_alias_of_its_own_name(make_sink, client, event_factory, unique_name):
    from cdc.sinks.search_mapping import IndexSpec

    alias = f"{unique_name.replace('_', '-')}-directory"
    sink = make_sink(indices={"customer": IndexSpec(alias=alias)})
    assert sink.apply([event_factory("customer", 1, 10, after={"id": 1})]) == []
    assert client.indices.exists_alias(name=alias)
    assert set(sink.fetch_rows("customer")) == {"1"}
