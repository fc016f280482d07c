"""Benchmark of the pipeline on the real services: binlog -> confirmed in RabbitMQ -> applied in the CRM.

    .venv/bin/python bench/bench_pipeline.py [--rows 100000] [--txn-rows 10] [--extra-columns 0 | --narrow]
                                             [--batch-events 1]

Writes ``--rows`` member rows into a scratch copy of the demo legacy schema (transactions of
``--txn-rows``; ``--extra-columns N`` widens each row by N mapped columns, alternately INT and
VARCHAR; ``--narrow`` keeps only the 11 columns written; ``--batch-events N`` publishes as
``broker.batch_events`` does), then measures over that same binlog range:

1. the raw python-mysql-replication iteration rate: the library as released (the baseline), and
   with cdc.source.row_decoder (its compiled column decoder, in C (cdc/source/_rowdecode.c) once installed, which
   the reader uses);
2. the reader role (binlog -> mapper -> publisher, confirmed and checkpointed), rows/s;
3. the CRM sink worker applying the full queue, events/s.

The last lines are ``name=value``, one per figure, for comparison over time.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import threading
import time
import uuid
from pathlib import Path

import pika
import psycopg
import pymysql
from benchlib import DEFAULT_PG_URL, ensure_pg_database, memory_mb, reset_peak_rss  # bench/, the script's own folder
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from cdc.broker.topology import reader_dead_exchange
from cdc.demo.seed import ConnParams, create_schema
from cdc.domain.envelope import make_version
from cdc.mapping import Mapper, load_mappings
from cdc.runtime.bootstrap import build_pipeline
from cdc.runtime.config import load_settings
from cdc.runtime.malloc import tune_malloc
from cdc.sinks.base import SinkContext
from cdc.sinks.crm import CrmSink
from cdc.sinks.worker import SinkWorker
from cdc.source import row_decoder as binlog_fixes
from cdc.source.binlog_stream import BinlogReader
from cdc.state.store import MemoryStateStore

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from cdc.runtime import patches

    patches.install()  # the libraries' patches, as the daemon installs them
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--txn-rows", type=int, default=10, help="Rows per source transaction; 0: all in one.")
    ap.add_argument("--extra-columns", type=int, default=0,
                    help="Widen the members rows by this many mapped columns (alternately INT and VARCHAR(40)).")
    ap.add_argument("--narrow", action="store_true",
                    help="Rows of 11 columns instead of 21 (the columns the benchmark writes; the others dropped).")
    ap.add_argument("--no-crm", action="store_true", help="Skip the CRM stage.")
    ap.add_argument("--batch-events", type=int, default=1,
                    help="broker.batch_events: change events per message (1: one a message, the default).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3307)
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--pg", default=DEFAULT_PG_URL)
    args = ap.parse_args()
    tune_malloc()  # as cdc.runtime.daemon does for its roles
    ensure_pg_database(args.pg)

    uid = uuid.uuid4().hex[:8]
    db, exchange, sink_name = f"cdc_bench_{uid}", f"cdc.bench.{uid}", f"bench_{uid}"
    admin = pymysql.connect(host=args.host, port=args.port, user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {db}")
    params = ConnParams(host=args.host, port=args.port, user="root", password="", database=db)
    create_schema(params)
    member = (REPO / "mappings" / "member.yaml").read_text().replace("db: legacy,", f"db: {db},")
    member = member.replace("\nfields:\n", "\nfields:\n" + widen(admin, db, args.extra_columns), 1)
    if args.narrow:
        member = narrow(admin, db, member)
    mappings_dir = Path(f"/tmp/{db}-mappings")
    mappings_dir.mkdir()
    (mappings_dir / "member.yaml").write_text(member)
    mapper = Mapper(load_mappings(mappings_dir))
    settings = load_settings(None, source={"name": "bench", "port": args.port, "password": "cdc-secret", "databases": [db],
                                           "replica_server_id": 4290},
                             broker={"url": args.amqp, "exchange": exchange, "batch_events": args.batch_events},
                             sinks={sink_name: {"type": "crm", "url": args.pg, "schema_name": sink_name,
                                                "batch_size": 2000, "prefetch": 10000}},
                             metrics={"enabled": False})
    try:
        reader = BinlogReader(settings.source, mapper.tables())
        reader.preflight()
        start = reader.head_position()
        t0 = time.perf_counter()
        write_rows(params, args.rows, args.txn_rows)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - t0:.1f}s")
        end = reader.head_position()
        columns, row_bytes = row_width(admin, db)
        print(f"row width: {columns} columns, {row_bytes} bytes a row on average (InnoDB's estimate)")

        with binlog_fixes.shipped():
            raw = raw_iteration(settings, db, start, end)
        print(f"raw python-mysql-replication iteration, as released: {args.rows:,} rows in {raw:.2f}s = "
              f"{args.rows / raw:,.0f} rows/s")
        fixed = raw_iteration(settings, db, start, end)
        print(f"raw iteration with cdc.source.row_decoder (the reader's decoder, in {binlog_fixes.decoder()}): {fixed:.2f}s = {args.rows / fixed:,.0f} rows/s")

        rss_before = memory_mb(os.getpid())
        reset = reset_peak_rss()
        reader_s, reader_cpu = run_reader(settings, mapper, start, end)
        reader_peak = memory_mb(os.getpid(), "VmHWM") if reset else float("nan")
        print(f"reader (binlog -> confirmed in RabbitMQ, checkpointed): {reader_s:.2f}s = {args.rows / reader_s:,.0f} rows/s "
              f"({raw / reader_s:.2f} of the released library's raw rate, {fixed / reader_s:.2f} of the raw rate with "
              f"cdc's decoder); {reader_cpu * 1e6 / args.rows:.0f} µs of CPU a row")

        crm_s = None if args.no_crm else run_crm(settings, mapper, sink_name, args.rows)
        if crm_s:
            print(f"CRM sink worker (full queue -> PostgreSQL, acked): {crm_s:.2f}s = {args.rows / crm_s:,.0f} events/s")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS during the reader stage: {reader_peak:.0f} MB (before it: {rss_before:.0f} MB); "
              f"of this whole process: {peak_mb:.0f} MB")
        print(f"row_columns={columns}")
        print(f"raw_iteration_rows_per_s={args.rows / raw:.0f}")
        print(f"raw_iteration_fixed_rows_per_s={args.rows / fixed:.0f}")
        print(f"reader_rows_per_s={args.rows / reader_s:.0f}")
        print(f"reader_ratio_to_raw={raw / reader_s:.2f}")
        print(f"reader_ratio_to_raw_fixed={fixed / reader_s:.2f}")
        print(f"reader_cpu_us_per_row={reader_cpu * 1e6 / args.rows:.0f}")
        if crm_s:
            print(f"crm_apply_events_per_s={args.rows / crm_s:.0f}")
        print(f"reader_peak_rss_mb={reader_peak:.0f}")
        print(f"peak_rss_mb={peak_mb:.0f}")
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
        with pika.BlockingConnection(pika.URLParameters(args.amqp)) as conn:
            ch = conn.channel()
            ch.queue_delete(f"cdc.sink.{sink_name}")
            ch.queue_delete(f"cdc.sink.{sink_name}.dlq")
            ch.exchange_delete(exchange)
            ch.exchange_delete(reader_dead_exchange(exchange))
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{sink_name}" CASCADE')
        for p in mappings_dir.iterdir():
            p.unlink()
        mappings_dir.rmdir()


def widen(admin, db: str, extra: int) -> str:
    """Add ``extra`` columns with defaults to the scratch members table; the mapping lines for them."""
    lines = []
    for i in range(extra):
        ddl, kind = ("INT NOT NULL DEFAULT " + str(i * 1000), "integer") if i % 2 == 0 else \
            (f"VARCHAR(40) NOT NULL DEFAULT 'extra value {i}'", "string")
        admin.cursor().execute(f"ALTER TABLE {db}.members ADD COLUMN extra_{i} {ddl}")
        lines.append(f"  extra_{i}: {{column: extra_{i}, type: {kind}}}\n")
    return "".join(lines)


NARROW_COLUMNS = ("id", "email", "first_name", "last_name", "city", "country", "birth_date", "status", "join_date",
                  "balance", "points")  # the columns the benchmark writes


def narrow(admin, db: str, mapping: str) -> str:
    """Drop every other column of the scratch members table (11 columns remain); the mapping without them."""
    with admin.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'members'", (db,))
        dropped = [c for (c,) in cur.fetchall() if c not in NARROW_COLUMNS]
        cur.execute(f"ALTER TABLE {db}.members " + ", ".join(f"DROP COLUMN {c}" for c in dropped))
    kept = []
    for line in mapping.splitlines(keepends=True):
        column = re.search(r"\{column: (\w+)", line)
        if (column and column.group(1) not in NARROW_COLUMNS) or line.startswith(("deleted_when:", "  cache:", "  search:")):
            continue
        kept.append(line)
    return "".join(kept)


def row_width(admin, db: str) -> tuple[int, int]:
    with admin.cursor() as cur:
        cur.execute("ANALYZE TABLE " + db + ".members")
        cur.fetchall()
        cur.execute("SELECT (SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = %s AND table_name = 'members'), "
                    "avg_row_length FROM information_schema.tables WHERE table_schema = %s AND table_name = 'members'", (db, db))
        columns, avg = cur.fetchone()
    return int(columns), int(avg or 0)


def write_rows(params: ConnParams, rows: int, per_txn: int) -> None:
    conn = pymysql.connect(host=params.host, port=params.port, user=params.user, password=params.password,
                           database=params.database, init_command="SET SESSION sql_mode=''")
    if per_txn == 0:  # one transaction of every row
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO members (email, first_name, last_name, city, country, birth_date, status, join_date, balance, "
                "points) SELECT CONCAT(' Member', seq, '@Example.org '), 'Zoë', 'Müller', 'Zürich', 'ch', '31/12/1980', "
                f"'A', '2020-01-01', 12.50, seq FROM seq_1_to_{rows}")
        conn.commit()
        conn.close()
        return
    sql = ("INSERT INTO members (email, first_name, last_name, city, country, birth_date, status, join_date, balance, points) "
           "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)")
    with conn.cursor() as cur:
        for base in range(0, rows, per_txn):
            batch = [(f" Member{i}@Example.org ", "Zoë", "Müller", "Zürich", "ch", "31/12/1980", "A", "2020-01-01",
                      "12.50", i) for i in range(base, min(rows, base + per_txn))]
            cur.executemany(sql, batch)
            conn.commit()
    conn.close()


def raw_iteration(settings, db: str, start, end) -> float:
    src = settings.source
    stream = BinLogStreamReader(
        connection_settings=dict(host=src.host, port=src.port, user=src.user, password=src.password.get_secret_value()),
        server_id=4291, resume_stream=True, log_file=start.file, log_pos=start.pos, blocking=False,
        only_events=[WriteRowsEvent], only_schemas=[db], only_tables=["members"],
    )
    t0 = time.perf_counter()
    n = 0
    for event in stream:
        n += len(event.rows)
        if make_version(stream.log_file, stream.log_pos, 0) >= make_version(end.file, end.pos, 0):
            break
    stream.close()
    return time.perf_counter() - t0


def run_reader(settings, mapper: Mapper, start, end) -> tuple[float, float]:
    """Seconds until the last row is confirmed and checkpointed, and the CPU seconds this process spent on it."""
    cpu0 = time.process_time()
    state = MemoryStateStore()
    state.save_checkpoint(settings.source.name, start)
    pipeline = build_pipeline(settings, state, mapper)
    stop = threading.Event()
    gc.freeze()  # as cdc.runtime.daemon does before its roles start
    t0 = time.perf_counter()
    thread = threading.Thread(target=pipeline.run, args=(stop,))
    thread.start()
    while True:
        cp = pipeline.confirmed
        if cp is not None and (cp.file, cp.pos) >= (end.file, end.pos):
            break
        if not thread.is_alive():
            raise SystemExit("the reader stopped early")
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stop.set()
    pipeline.reader.interrupt()
    thread.join(30)
    return elapsed, cpu


def run_crm(settings, mapper: Mapper, sink_name: str, rows: int) -> float:
    cfg = settings.sinks[sink_name]
    sink = CrmSink(sink_name, cfg, SinkContext(entities=mapper.schemas()))
    stop = threading.Event()
    worker = SinkWorker(sink_name, sink, cfg, settings.broker.url.get_secret_value(), settings.broker.exchange, stop)
    t0 = time.perf_counter()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    dsn = cfg.url.get_secret_value()
    with psycopg.connect(dsn) as conn:
        while True:
            try:
                n = conn.execute(f'SELECT count(*) FROM "{sink_name}".member').fetchone()[0]
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                n = 0
            conn.commit()
            if n >= rows:
                break
            time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join(30)
    return elapsed


if __name__ == "__main__":
    main()
