"""Commit-to-applied lag per sink at a fixed offered load, end-to-end throughput, peak RSS per process.

    .venv/bin/python bench/bench_lag.py [--rate 5000] [--seconds 30] [--txn-rows 10] [--burst-rows 50000]

Runs the daemon as real processes on the real services, laid out as a deployment would be: one
reader process (``cdc run --role reader``) and one process per sink (``--role sink:crm``,
``sink:cache``, ``sink:search``), all on a scratch copy of the demo legacy schema.

1. Lag: a writer inserts member rows at ``--rate`` rows/s in transactions of ``--txn-rows``, and
   notes each transaction's commit time (``time.time()`` when COMMIT returned). One observer per
   sink watches for the transaction's last row to become readable in the sink itself (a CRM
   SELECT, a Redis EXISTS, a search GET by id) and notes that time. Lag = seen - committed, so it
   includes the binlog, the reader, RabbitMQ, the worker and the sink's own write. The first
   ``--warmup`` seconds are not counted. Observation resolution: a few milliseconds.
2. End-to-end throughput: ``--burst-rows`` rows written as fast as one connection can, timed from
   the first commit until the last row is readable in every sink (and per sink).
3. Peak RSS (VmHWM) of every process: the reader, each sink worker, and this script.

The search sink writes to OPENSEARCH_URL, or to an osmem-server started here. The last lines are
``name=value``, one per figure, for comparison over time.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
import psycopg
import pymysql
import redis
from benchlib import DEFAULT_PG_URL, ensure_pg_database, memory_mb, percentile  # bench/, the script's own folder
from opensearchpy import OpenSearch

from cdc.broker.topology import event_log, reader_dead_exchange
from cdc.demo.seed import ConnParams, create_schema

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PROCS: dict[str, subprocess.Popen] = {}
INSERT = ("INSERT INTO members (id, email, first_name, last_name, city, country, birth_date, status, join_date, balance, "
          "points) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)")


def row(i: int) -> tuple:
    return (i, f" Member{i}@Example.org ", "Zoë", "Müller", "Zürich", "ch", "31/12/1980", "A", "2020-01-01", "12.50", i)


class Writer:
    """Inserts rows with consecutive ids; remembers (last id, commit time) of every transaction."""

    def __init__(self, params: ConnParams) -> None:
        self.conn = pymysql.connect(host=params.host, port=params.port, user=params.user, password=params.password,
                                    database=params.database, init_command="SET SESSION sql_mode=''")
        self.next_id = 1
        self.commits: list[tuple[int, float]] = []

    def txn(self, rows: int) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(INSERT, [row(i) for i in range(self.next_id, self.next_id + rows)])
        self.conn.commit()
        self.next_id += rows
        self.commits.append((self.next_id - 1, time.time()))

    def paced(self, rate: float, per_txn: int, seconds: float) -> float:
        """Offer ``rate`` rows/s for ``seconds``; returns the rate achieved."""
        interval = per_txn / rate
        start_id, t0 = self.next_id, time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            due = t0 + k * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load, not waiting for a result
            self.txn(per_txn)
            k += 1
        return (self.next_id - start_id) / (time.monotonic() - t0)


class Observer(threading.Thread):
    """Notes when each committed transaction's last row becomes readable in one sink."""

    def __init__(self, name: str, writer: Writer, visible: Callable[[int], bool]) -> None:
        super().__init__(name=f"observe-{name}", daemon=True)
        self.sink, self.writer, self.visible = name, writer, visible
        self.seen: dict[int, float] = {}  # last id of a transaction -> when it was readable
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        k = 0
        try:
            while not self.stop.is_set():
                if k >= len(self.writer.commits):
                    time.sleep(0.002)
                    continue
                last_id, _ = self.writer.commits[k]
                if self.visible(last_id):
                    self.seen[last_id] = time.time()
                    k += 1
                else:
                    time.sleep(0.002)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def wait_for(self, last_id: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while last_id not in self.seen:
            if self.error or time.monotonic() > deadline:
                return None
            for role, proc in PROCS.items():
                if proc.poll() is not None:
                    raise SystemExit(f"the {role} process exited with status {proc.returncode}; its log is in {proc.args[-1]}")
            time.sleep(0.01)
        return self.seen[last_id]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000, help="Offered load, rows/s.")
    ap.add_argument("--seconds", type=float, default=30, help="Measured duration of the paced load.")
    ap.add_argument("--warmup", type=float, default=5, help="Paced seconds before measuring.")
    ap.add_argument("--txn-rows", type=int, default=10)
    ap.add_argument("--batch-events", type=int, default=1,
                    help="broker.batch_events: change events per message (1: one a message, the default).")
    ap.add_argument("--burst-rows", type=int, default=50_000, help="Rows of the end-to-end throughput run; 0: skip.")
    ap.add_argument("--sinks", default="crm,cache,search")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3307)
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--pg", default=DEFAULT_PG_URL)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = ap.parse_args()
    ensure_pg_database(args.pg)
    kinds = args.sinks.split(",")

    uid = uuid.uuid4().hex[:8]
    db, exchange = f"cdc_lag_{uid}", f"cdc.lag.{uid}"
    names = {kind: f"lag_{kind}_{uid}" for kind in kinds}
    tmp = Path(tempfile.mkdtemp(prefix=f"cdc-lag-{uid}-"))
    admin = pymysql.connect(host=args.host, port=args.port, user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {db}")
    params = ConnParams(host=args.host, port=args.port, user="root", password="", database=db)
    create_schema(params)
    search_url = None
    if "search" in kinds:
        import search_server  # OPENSEARCH_URL, or the tests' osmem-server launcher

        search_url = search_server.url()
    procs: dict[str, subprocess.Popen] = {}
    try:
        config = write_config(tmp, args, db, exchange, names, search_url)
        procs = start_daemons(config, tmp, names)
        PROCS.update(procs)
        writer = Writer(params)
        observers = {kind: Observer(kind, writer, probe(kind, names[kind], args, search_url)) for kind in kinds}
        for o in observers.values():
            o.start()
        writer.txn(1)  # first event: waits until every process is up and every sink has its tables
        for kind, o in observers.items():
            if o.wait_for(1, 120) is None:
                raise SystemExit(f"sink {kind} never applied the first row; see the logs in {tmp}")

        print(f"warming up {args.warmup:.0f}s at {args.rate:,.0f} rows/s ...")
        writer.paced(args.rate, args.txn_rows, args.warmup)
        first_measured = len(writer.commits)
        print(f"measuring {args.seconds:.0f}s at {args.rate:,.0f} rows/s offered, {args.txn_rows} rows per transaction ...")
        achieved = writer.paced(args.rate, args.txn_rows, args.seconds)
        measured = writer.commits[first_measured:]
        last_id = measured[-1][0]
        lags: dict[str, list[float]] = {}
        for kind, o in observers.items():
            if o.wait_for(last_id, 300) is None:
                raise SystemExit(f"sink {kind} did not catch up within 300s ({o.error or 'timeout'}); logs in {tmp}")
            lags[kind] = [o.seen[i] - committed for i, committed in measured]
        print(f"offered {args.rate:,.0f} rows/s, achieved {achieved:,.0f} rows/s over {len(measured)} transactions")
        for kind, values in lags.items():
            print(f"  {kind:7s} lag p50 {percentile(values, 50) * 1000:7.0f} ms  p95 {percentile(values, 95) * 1000:7.0f} ms  "
                  f"p99 {percentile(values, 99) * 1000:7.0f} ms  max {max(values) * 1000:7.0f} ms  "
                  f"mean {statistics.fmean(values) * 1000:6.0f} ms")

        burst: dict[str, float] = {}
        if args.burst_rows:
            print(f"end to end: {args.burst_rows:,} rows as fast as one connection writes ...")
            t0 = time.time()
            target = writer.next_id + args.burst_rows - 1
            while writer.next_id <= target:
                writer.txn(min(100, target - writer.next_id + 1))
            written = time.time() - t0
            for kind, o in observers.items():
                seen = o.wait_for(target, 600)
                if seen is None:
                    raise SystemExit(f"sink {kind} did not apply the burst within 600s; logs in {tmp}")
                burst[kind] = args.burst_rows / (seen - t0)
            overall = args.burst_rows / (max(o.seen[target] for o in observers.values()) - t0)
            print(f"  written in {written:.1f}s ({args.burst_rows / written:,.0f} rows/s); applied in every sink at "
                  f"{overall:,.0f} rows/s; per sink: " + ", ".join(f"{k} {v:,.0f}" for k, v in burst.items()))

        rss = {role: memory_mb(p.pid, "VmHWM") for role, p in procs.items()}
        rss["bench"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("peak RSS: " + ", ".join(f"{role} {mb:.0f} MB" for role, mb in rss.items()))
        for o in observers.values():
            o.stop.set()

        print(f"offered_rows_per_s={args.rate:.0f}")
        print(f"achieved_rows_per_s={achieved:.0f}")
        for kind, values in lags.items():
            for p in (50, 95, 99):
                print(f"{kind}_lag_p{p}_ms={percentile(values, p) * 1000:.0f}")
        if burst:
            print(f"e2e_all_sinks_rows_per_s={overall:.0f}")
            for kind, rate in burst.items():
                print(f"e2e_{kind}_rows_per_s={rate:.0f}")
        for role, mb in rss.items():
            print(f"peak_rss_{role.replace(':', '_')}_mb={mb:.0f}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        cleanup(args, db, exchange, names)
        if "search" in kinds:
            search_server.stop()


def write_config(tmp: Path, args, db: str, exchange: str, names: dict[str, str], search_url: str | None) -> Path:
    mappings = tmp / "mappings"
    mappings.mkdir()
    member = (REPO / "mappings" / "member.yaml").read_text().replace("db: legacy,", f"db: {db},")
    (mappings / "member.yaml").write_text(member)  # its crm/cache/search sections project onto sinks of those types
    sinks = []
    for kind, name in names.items():
        common = "batch_size: 2000, prefetch: 10000"
        if kind == "crm":
            sinks.append(f'  {name}: {{type: crm, url: "{args.pg}", schema_name: {name}, {common}}}')
        elif kind == "cache":
            sinks.append(f'  {name}: {{type: cache, url: "{args.redis}", key_prefix: {name}, {common}}}')
        elif kind == "search":
            sinks.append(f'  {name}: {{type: search, url: "{search_url}", index_prefix: {name.replace("_", "-")}, '
                         f'state_url: "sqlite:///{tmp}/search-state.db", {common}}}')
        else:
            raise SystemExit(f"unknown sink kind {kind!r}: choose among crm, cache, search")
    config = tmp / "cdc.yaml"
    config.write_text(f"""
source: {{name: lag, host: {args.host}, port: {args.port}, user: cdc, databases: [{db}], start_at: latest,
          replica_server_id: {random.randint(10_000, 2**31)}}}
broker: {{url: "{args.amqp}", exchange: {exchange}, batch_events: {args.batch_events}}}
state: {{url: "sqlite:///{tmp}/state.db"}}
mappings: {{dir: {mappings}}}
sinks:
{chr(10).join(sinks)}
metrics: {{enabled: false}}
log: {{format: json, level: INFO}}
""")
    return config


def start_daemons(config: Path, tmp: Path, names: dict[str, str]) -> dict[str, subprocess.Popen]:
    env = dict(os.environ, CDC_SOURCE__PASSWORD="cdc-secret")
    procs = {}
    for role in ["reader"] + [f"sink:{name}" for name in names.values()]:
        with open(tmp / f"{role.replace(':', '_')}.log", "wb") as log:
            procs[role] = subprocess.Popen([sys.executable, "-m", "cdc.cli", "run", "-c", str(config), "--role", role],
                                           env=env, stdout=log, stderr=subprocess.STDOUT)
    return procs


def probe(kind: str, name: str, args, search_url: str | None) -> Callable[[int], bool]:
    """A function telling whether member ``id`` is readable in the sink (its own connection)."""
    if kind == "crm":
        conn = psycopg.connect(args.pg, autocommit=True)

        def crm(member_id: int) -> bool:
            try:
                return conn.execute(f'SELECT 1 FROM "{name}".member WHERE member_id = %s', (member_id,)).fetchone() is not None
            except psycopg.errors.UndefinedTable:
                return False
        return crm
    if kind == "cache":
        client = redis.Redis.from_url(args.redis)
        return lambda member_id: bool(client.exists(f"{name}:member:{member_id}"))
    client = OpenSearch(hosts=[search_url], timeout=10)
    alias = f"{name.replace('_', '-')}-member"

    def search(member_id: int) -> bool:
        try:
            return bool(client.exists(index=alias, id=str(member_id)))
        except Exception:  # noqa: BLE001 - the index does not exist yet
            return False
    return search


def cleanup(args, db: str, exchange: str, names: dict[str, str]) -> None:
    admin = pymysql.connect(host=args.host, port=args.port, user="root", autocommit=True)
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
    with pika.BlockingConnection(pika.URLParameters(args.amqp)) as conn:
        ch = conn.channel()
        for name in names.values():
            ch.queue_delete(f"cdc.sink.{name}")
            ch.queue_delete(f"cdc.sink.{name}.dlq")
        ch.queue_delete(event_log(exchange))
        ch.exchange_delete(exchange)
        ch.exchange_delete(reader_dead_exchange(exchange))
    if "crm" in names:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{names["crm"]}" CASCADE')
    if "cache" in names:
        client = redis.Redis.from_url(args.redis)
        for chunk in client.scan_iter(f"{names['cache']}:*", count=10_000):
            client.delete(chunk)


if __name__ == "__main__":
    main()
