"""Apply throughput of each sink from a pre-filled queue, through the real SinkWorker.

    .venv/bin/python bench/bench_sinks.py [--events 50000] [--sinks crm,cache,search]

For each sink: publish ``--events`` member events (one per key) to a fresh queue, then start a
SinkWorker and time it until the sink's offset reaches the last event. ``--batch-events N`` publishes
N events a message, as the reader does with ``broker.batch_events``. The search sink runs against
OPENSEARCH_URL, or an osmem-server started here; the server's own bulk rate (the sink's documents,
and one-integer documents) is measured too, as the ceiling of that sink. The CPU this process spends
while the worker applies (the worker and its AMQP I/O; every server is a process of its own) gives
each sink's own cost a event, and so the rate the worker could reach against a server that kept up.
Last lines are ``name=value``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import threading
import time
import uuid
from pathlib import Path

import pika
from benchlib import DEFAULT_PG_URL, ensure_pg_database  # bench/, the script's own folder

from cdc.broker.topology import HEADER_COUNT, HEADER_KEY, declare_sink_queues, sink_dlq, sink_queue
from cdc.domain.entity_schema import EntitySchema, FieldType
from cdc.domain.envelope import batch_body, encode
from cdc.sinks.base import SinkContext, get_sink_type
from cdc.sinks.worker import SinkWorker

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
SCHEMA = EntitySchema(name="member", key=("member_id",), fields={
    "member_id": FieldType.INTEGER, "email": FieldType.STRING, "first_name": FieldType.STRING,
    "balance": FieldType.DECIMAL, "joined_on": FieldType.DATE, "active": FieldType.BOOLEAN,
    "created_at": FieldType.TIMESTAMP})


def event(i: int) -> dict:
    return {"v": 1, "id": f"bench:{i}", "version": 1000 + i, "op": "c", "entity": "member", "key": {"member_id": i},
            "before": None, "after": {"member_id": i, "email": f"m{i}@example.org", "first_name": "Zoë", "balance": "12.50",
                                      "joined_on": "2020-01-01", "active": True, "created_at": "2024-01-01T00:00:00Z"},
            "source": {"name": "bench", "server_id": 1, "gtid": None, "file": "mysql-bin.000001", "pos": 1000 + i, "row": 0,
                       "db": "legacy", "table": "members", "ts_ms": 1, "snapshot": False}, "txn": None, "ts_ms": 1}


def sink_config(kind: str, uid: str, search_url: str | None) -> dict:
    common = {"batch_size": 2000, "prefetch": 10000}
    if kind == "crm":
        return {"type": "crm", "url": ensure_pg_database(DEFAULT_PG_URL), "schema_name": f"bench_{uid}", **common}
    if kind == "cache":
        return {"type": "cache", "url": "redis://127.0.0.1:6379/14", "key_prefix": f"bench{uid}", **common}
    return {"type": "search", "url": search_url, "index_prefix": f"bench-{uid}", "state_url": f"sqlite:////tmp/bench-{uid}.db", **common}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(kind: str, events: int, search_url: str | None, batch_events: int = 1) -> tuple[float, float]:
    """(seconds to apply every event, seconds of this process's CPU meanwhile)."""
    uid = uuid.uuid4().hex[:8]
    name, exchange = f"bench_{kind}_{uid}", f"cdc.bench.{uid}"
    sink_type = get_sink_type(kind)
    config = sink_type.config_model.model_validate(sink_config(kind, uid, search_url))
    sink = sink_type.factory(name, config, SinkContext(entities={"member": SCHEMA}))
    with pika.BlockingConnection(pika.URLParameters(AMQP)) as conn:
        ch = conn.channel()
        declare_sink_queues(ch, exchange, name, ["*"], 10)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        if batch_events > 1:  # as the reader publishes with broker.batch_events
            for start in range(0, events, batch_events):
                bodies = [encode(event(i)) for i in range(start, min(events, start + batch_events))]
                ch.basic_publish(exchange, "member.c", batch_body(bodies),
                                 pika.BasicProperties(delivery_mode=2, headers={HEADER_COUNT: len(bodies)}))
        for i in range(events if batch_events <= 1 else 0):
            ch.basic_publish(exchange, "member.c", encode(event(i)),
                             pika.BasicProperties(delivery_mode=2, headers={HEADER_KEY: str(i)}) if i % 5000 == 0 else props)
    stop = threading.Event()
    worker = SinkWorker(name, sink, config, AMQP, exchange, stop)
    gc.freeze()  # as cdc.runtime.daemon does before its roles start
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    last = 1000 + events - 1
    probe = sink_type.factory(name, config, SinkContext(entities={"member": SCHEMA}))
    probe.open()
    while True:
        offset = probe.read_offset()
        if offset is not None and offset.version >= last:
            break
        if not thread.is_alive():
            raise SystemExit(f"the {kind} worker stopped early")
        time.sleep(0.02)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    stop.set()
    thread.join(30)
    probe.reset()
    probe.close()
    with pika.BlockingConnection(pika.URLParameters(AMQP)) as conn:
        ch = conn.channel()
        ch.queue_delete(sink_queue(name))
        ch.queue_delete(sink_dlq(name))
        ch.exchange_delete(exchange)
    return elapsed, cpu


def search_server_ceiling(events: int, search_url: str) -> tuple[float, float]:
    """The search server's own bulk rate, without RabbitMQ or the worker: (the sink's documents for
    the same events, in the sink's index and bulks of 2,000; one-integer documents). A sink cannot
    apply faster than the first."""
    from opensearchpy import OpenSearch

    from cdc.domain.envelope import decode
    from cdc.sinks.search_mapping import bulk_payload

    uid = uuid.uuid4().hex[:8]
    sink_type = get_sink_type("search")
    config = sink_type.config_model.model_validate(sink_config("search", uid, search_url))
    sink = sink_type.factory(f"ceiling_{uid}", config, SinkContext(entities={"member": SCHEMA}))
    sink.open()  # creates the index with the sink's mapping
    alias = f"bench-{uid}-member"
    fields = tuple(SCHEMA.fields)
    payloads = [bulk_payload(decode(encode(event(i))), alias, fields) for i in range(events)]
    client = OpenSearch(hosts=[search_url], timeout=120)
    rates = []
    for docs in (payloads, [b'{"index":{"_index":"%s-min","_id":"%d"}}\n{"n":%d}\n' % (alias.encode(), i, i)
                            for i in range(events)]):
        t0 = time.perf_counter()
        for start in range(0, events, 2000):
            response = client.bulk(body=b"".join(docs[start:start + 2000]))
            assert not response["errors"], response["items"][:1]
        rates.append(events / (time.perf_counter() - t0))
    client.indices.delete(index=f"{alias}-min", ignore_unavailable=True)
    sink.reset()
    sink.close()
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--sinks", default="crm,cache,search")
    ap.add_argument("--batch-events", type=int, default=1,
                    help="Events per message, as broker.batch_events publishes them (1: one a message).")
    args = ap.parse_args()
    kinds = args.sinks.split(",")
    search_url = None
    if "search" in kinds:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import search_server  # OPENSEARCH_URL, or the tests' osmem-server launcher

        search_url = search_server.url()
    results, cpu_us = {}, {}
    try:
        for kind in kinds:
            elapsed, cpu = run(kind, args.events, search_url, args.batch_events)
            results[kind], cpu_us[kind] = args.events / elapsed, cpu / args.events * 1e6
            print(f"{kind}: {args.events:,} events from a full queue in {elapsed:.2f}s = {results[kind]:,.0f} events/s; "
                  f"the worker's own CPU: {cpu_us[kind]:.0f} µs a event (alone, {1e6 / cpu_us[kind]:,.0f} events/s "
                  "on one core against a server that kept up)")
        if "search" in kinds:
            docs, minimal = search_server_ceiling(args.events, search_url)
            results["search_server_bulk"], results["search_server_bulk_minimal"] = docs, minimal
            print(f"search server alone, bulks of 2,000: {docs:,.0f} docs/s of the sink's documents "
                  f"(the sink reaches {results['search'] / docs:.2f} of it), {minimal:,.0f} docs/s of one-integer documents")
    finally:
        if "search" in kinds:
            search_server.stop()
    for kind, rate in results.items():
        print(f"{kind}_docs_per_s={rate:.0f}" if kind.startswith("search_server") else f"{kind}_apply_events_per_s={rate:.0f}")
    for kind, us in cpu_us.items():
        print(f"{kind}_worker_cpu_us_per_event={us:.1f}")


if __name__ == "__main__":
    main()
