"""Benchmark: snapshot a large table into RabbitMQ (confirmed), with bounded memory.

    .venv/bin/python bench/bench_snapshot.py [--rows 1000000] [--chunk 5000] [--batch-events 100] [--workers 2]

Fills a scratch copy of the demo ``members`` table with ``--rows`` rows (binlog off for that
session, so only a snapshot can read them), then runs the reader role with one snapshot request
and measures until the broker confirmed the last chunk. Prints rows/s, its ratio to the chunk
SELECTs alone over the same table (the baseline, measured first in the same run) and the peak RSS
of the process and of each chunk worker process (``snapshot.workers``), which the chunking keeps
bounded whatever the table size. Last lines are ``name=value``.
"""

from __future__ import annotations

import argparse
import random
import resource
import threading
import time
import uuid
from pathlib import Path

import pika
import pymysql
from benchlib import memory_mb  # bench/, the script's own folder

from cdc.broker.topology import event_log, reader_dead_exchange
from cdc.demo.seed import ConnParams, create_schema
from cdc.mapping import Mapper, load_mappings
from cdc.runtime.bootstrap import build_pipeline
from cdc.runtime.config import load_settings
from cdc.runtime.malloc import tune_malloc
from cdc.snapshot.chunks import ChunkRequest, ChunkSelect
from cdc.state.store import MemoryStateStore

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from cdc.runtime import patches

    patches.install()  # the libraries' patches, as the daemon installs them
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--batch-events", type=int, default=1,
                    help="broker.batch_events: change events per message (1: one a message, the default).")
    ap.add_argument("--workers", type=int, default=None,
                    help="snapshot.workers: chunk reader processes (default: the setting's default; 0: the reader thread).")
    ap.add_argument("--port", type=int, default=3307)
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = ap.parse_args()
    tune_malloc()  # as cdc.runtime.daemon does for its roles

    uid = uuid.uuid4().hex[:8]
    db, exchange, queue = f"cdc_snapbench_{uid}", f"cdc.snapbench.{uid}", f"cdc.snapbench.{uid}"
    admin = pymysql.connect(host="127.0.0.1", port=args.port, user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {db}")
    create_schema(ConnParams(port=args.port, user="root", password="", database=db))
    mappings_dir = Path(f"/tmp/{db}-mappings")
    mappings_dir.mkdir()
    (mappings_dir / "member.yaml").write_text((REPO / "mappings" / "member.yaml").read_text().replace("db: legacy,", f"db: {db},"))
    mapper = Mapper(load_mappings(mappings_dir))
    with pika.BlockingConnection(pika.URLParameters(args.amqp)) as conn:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(queue, exchange, "#")
    try:
        t0 = time.perf_counter()
        with admin.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin=0, sql_mode=''")
            cur.execute(f"USE {db}")
            cur.execute(
                f"INSERT INTO {db}.members (email, first_name, last_name, city, country, birth_date, status, join_date, "
                "balance, points) SELECT CONCAT(' Member', seq, '@Example.org '), 'Zoë', 'Müller', 'Zürich', 'ch', "
                f"'31/12/1980', 'A', '2020-01-01', 12.50, seq FROM seq_1_to_{args.rows}")
        print(f"filled {args.rows:,} rows in {time.perf_counter() - t0:.1f}s (binlog off for that session)")
        settings = load_settings(None, source={"name": "snapbench", "port": args.port, "password": "cdc-secret",
                                               "databases": [db], "replica_server_id": random.randint(10_000, 2**31)},
                                 snapshot={"mode": "never", "chunk_size": args.chunk,
                                           **({"workers": args.workers} if args.workers is not None else {})},
                                 broker={"url": args.amqp, "exchange": exchange, "batch_events": args.batch_events}, metrics={"enabled": False})
        state = MemoryStateStore()
        pipeline = build_pipeline(settings, state, mapper)
        state.save_checkpoint("snapbench", pipeline.reader.head_position())
        pipeline.confirmed = state.load_checkpoint("snapbench")
        driver_s = read_alone(pipeline.reader.connection_settings(), db, args.rows, args.chunk)
        print(f"the chunk SELECTs alone (mysqlclient, key ranges of {args.chunk} rows, no mapping or publishing): "
              f"{driver_s:.1f}s = {args.rows / driver_s:,.0f} rows/s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        pipeline.snapshots.request(db, "members")
        stop = threading.Event()
        t0 = time.perf_counter()
        thread = threading.Thread(target=pipeline.run, args=(stop,))
        thread.start()
        while not (state.snapshot_list("snapbench") and state.snapshot_list("snapbench")[0]["status"] == "done"):
            if not thread.is_alive():
                raise SystemExit("the reader stopped early")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        workers = {pid: memory_mb(pid, "VmHWM") for pid in pipeline.snapshots.worker_pids()}
        stop.set()
        pipeline.reader.interrupt()
        thread.join(30)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"snapshot of {args.rows:,} rows, chunks of {args.chunk}, {settings.snapshot.workers} chunk reader process(es): "
              f"{elapsed:.1f}s = {args.rows / elapsed:,.0f} rows/s confirmed in RabbitMQ; peak RSS {peak:.0f} MB (before the "
              f"snapshot: {rss_before:.0f} MB)" + "".join(f"; worker {pid}: {mb:.0f} MB" for pid, mb in workers.items()))
        print(f"snapshot_select_alone_rows_per_s={args.rows / driver_s:.0f}")
        print(f"snapshot_rows_per_s={args.rows / elapsed:.0f}")
        print(f"snapshot_ratio_to_select_alone={driver_s / elapsed:.2f}")
        print(f"snapshot_peak_rss_mb={peak:.0f}")
        print(f"snapshot_workers={settings.snapshot.workers}")
        print(f"snapshot_worker_peak_rss_mb={max(workers.values(), default=0):.0f}")
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
        with pika.BlockingConnection(pika.URLParameters(args.amqp)) as conn:
            ch = conn.channel()
            ch.queue_delete(queue)
            ch.queue_delete(event_log(exchange))
            ch.exchange_delete(exchange)
            ch.exchange_delete(reader_dead_exchange(exchange))
        for p in mappings_dir.iterdir():
            p.unlink()
        mappings_dir.rmdir()


def read_alone(connection: dict, db: str, rows: int, chunk: int) -> float:
    """Seconds the snapshot's chunk reader takes to read the table by itself, with the snapshot's own
    SELECTs (the ids are 1..rows, so the ranges are known): the baseline."""
    select = ChunkSelect(connection)
    t0, seen = time.perf_counter(), 0
    try:
        for after in range(0, rows, chunk):
            seen += len(select.rows(*ChunkRequest(0, db, "members", ("id",), (after,), (after + chunk,)).sql()))
    finally:
        select.close()
    assert seen == rows, (seen, rows)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
