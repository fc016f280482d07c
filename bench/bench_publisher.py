"""Publisher throughput against the local RabbitMQ: asynchronous confirms vs. a confirm per message.

    /work/venv/bin/python bench/bench_publisher.py [-n 200000] [-t 10] [--blocking-n 5000]
        [--max-in-flight 20000] [--url amqp://guest:guest@127.0.0.1:5672/%2F]

Publishes N persistent ~400-byte messages in transactions of T rows through RabbitPublisher to a
temporary quorum queue (bound to a temporary topic exchange), waits until every transaction is
confirmed, and prints msg/s. Then publishes a smaller number with a BlockingConnection in confirm
mode (one confirm round trip per message) for comparison. Deletes its queue and exchange.
Final lines are ``key=value``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import orjson
import pika

from cdc.broker.publisher import OutMessage, RabbitPublisher
from cdc.broker.topology import HEADER_ENTITY, HEADER_KEY, HEADER_VERSION, reader_dead_exchange
from cdc.domain.redact import redact_url


def make_messages(n: int, start: int = 0) -> list[OutMessage]:
    out = []
    pad = "x" * 10
    for i in range(start, start + n):
        event = {
            "v": 1, "id": f"bench:mysql-bin.000001:{4 + i * 100}:0:customer", "version": (1 << 32) | (4 + i * 100),
            "op": "u", "entity": "customer", "key": {"id": i},
            "before": None,
            "after": {"id": i, "name": f"Customer {i}", "email": f"c{i}@example.com", "city": "Lyon", "note": pad},
            "source": {"name": "bench", "server_id": 1, "gtid": None, "file": "mysql-bin.000001", "pos": 4 + i * 100,
                       "row": 0, "db": "legacy", "table": "customers", "ts_ms": 1_700_000_000_000, "snapshot": False},
            "txn": None, "ts_ms": 1_700_000_000_000 + i,
        }
        out.append(OutMessage(
            routing_key="customer.u", body=orjson.dumps(event), message_id=event["id"],
            headers={HEADER_VERSION: event["version"], HEADER_KEY: str(i), HEADER_ENTITY: "customer"},
            timestamp_ms=event["ts_ms"],
        ))
    return out


def declare(url: str, exchange: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    conn.close()


def cleanup(url: str, exchange: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_delete(queue=queue)
    ch.exchange_delete(exchange=exchange)
    ch.exchange_delete(reader_dead_exchange(exchange))
    conn.close()


def depth(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue=queue, passive=True).method.message_count
    finally:
        conn.close()


def purge(url: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.channel().queue_purge(queue=queue)
    conn.close()


def bench_async(url: str, exchange: str, messages: list[OutMessage], txn_rows: int, max_in_flight: int) -> float:
    confirmed = []
    pub = RabbitPublisher(url, exchange, confirmed.append, max_in_flight=max_in_flight)
    pub.start()
    try:
        n = len(messages)
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, n, txn_rows)):
            pub.publish(messages[start:start + txn_rows], i)
        if not pub.flush(600):
            raise SystemExit(f"flush failed: {pub.error}")
        elapsed = time.perf_counter() - t0
    finally:
        pub.close()
    expected = (len(messages) + txn_rows - 1) // txn_rows
    if confirmed != list(range(expected)):
        raise SystemExit("confirmed tokens out of order or missing")
    return elapsed


def bench_blocking(url: str, exchange: str, messages: list[OutMessage]) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    t0 = time.perf_counter()
    for m in messages:
        ch.basic_publish(exchange, m.routing_key, m.body,
                         pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                              message_id=m.message_id, timestamp=m.timestamp_ms // 1000,
                                              headers=m.headers),
                         mandatory=True)
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    from cdc.runtime import patches

    patches.install()  # the libraries' patches, as the daemon installs them
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=200_000)
    ap.add_argument("-t", "--txn-rows", type=int, default=10)
    ap.add_argument("--blocking-n", type=int, default=5_000)
    ap.add_argument("--max-in-flight", type=int, default=20_000)
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = ap.parse_args(argv)

    suffix = uuid.uuid4().hex[:8]
    exchange, queue = f"cdc.bench.{suffix}", f"cdc.bench.{suffix}.q"
    try:
        declare(args.url, exchange, queue)
    except Exception as exc:  # noqa: BLE001
        print(f"RabbitMQ not reachable at {redact_url(args.url)} ({exc!r}): run deploy/dev-services.sh up",
              file=sys.stderr)
        return 2
    try:
        messages = make_messages(args.messages)
        avg = sum(len(m.body) for m in messages) / len(messages)
        print(f"messages={len(messages)} avg_body_bytes={avg:.0f} txn_rows={args.txn_rows} "
              f"max_in_flight={args.max_in_flight} queue={queue} (quorum)")

        elapsed = bench_async(args.url, exchange, messages, args.txn_rows, args.max_in_flight)
        in_queue = depth(args.url, queue)
        async_rate = len(messages) / elapsed
        print(f"async confirms: {len(messages)} msgs in {elapsed:.2f}s, queue depth {in_queue}")
        if in_queue != len(messages):
            print(f"WARNING: queue holds {in_queue}, expected {len(messages)}", file=sys.stderr)
        purge(args.url, queue)

        blocking_rate = 0.0
        if args.blocking_n > 0:
            bmsgs = messages[: args.blocking_n]
            belapsed = bench_blocking(args.url, exchange, bmsgs)
            blocking_rate = len(bmsgs) / belapsed
            print(f"blocking confirm per message: {len(bmsgs)} msgs in {belapsed:.2f}s")

        print(f"publisher_async_confirms_msgs_per_s={async_rate:.0f}")
        print(f"blocking_confirm_per_message_msgs_per_s={blocking_rate:.0f}")
        if blocking_rate:
            print(f"speedup={async_rate / blocking_rate:.1f}")
    finally:
        cleanup(args.url, exchange, queue)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
