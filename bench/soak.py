"""Soak: a steady workload for a chosen time, with random faults, then every sink compared with the source.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 200] [--fault-every 30] [--faults all] [--seed 1]

Runs the daemon as real processes (``cdc run --role reader`` and ``--role sinks``) on the real
services, with three sinks: the CRM (PostgreSQL), a cache (Redis) and a search index (osmem-server
or OPENSEARCH_URL); Redis and the search server are reached through local TCP proxies so that
they can go down, or hang, without touching other users of them. The demo workload (inserts,
updates, deletes of members, events, registrations, payments) runs at ``--rate`` operations/s.

Every ``--fault-every`` seconds (jittered) one fault from ``--faults`` is injected:

    reader-kill   SIGKILL of the reader process, then started again
    sinks-kill    SIGKILL of the sink workers' process, then started again
    rabbitmq      RabbitMQ stopped and started (rabbitmqctl stop_app / start_app)
    postgresql    PostgreSQL restarted
    mariadb       the source MariaDB shut down and started with the same command line
    redis-down    Redis unreachable (connections refused) for 5-15 s
    search-down   the search server unreachable for 5-15 s
    redis-hang    Redis connections hang without closing (half-open) for 5-15 s

A fault is *survived* when, after it, the reader's checkpoint and the CRM both move again within
``--recover-s`` and no process exited by itself. Lag is measured all along by a canary: twice a
second a row of a table of its own is updated (commit time noted) and its arrival in the CRM is
watched for. rabbitmq, postgresql and mariadb act on the machine's shared services: run the soak
on a machine of its own (not beside the test suite).

The summary ends with ``name=value`` lines: load held, faults injected/survived, lag percentiles,
rows lost (rows that differ between the source and a sink at the end; must be 0), and memory of
the daemon's processes at start and at the end. Exit status 0 only when nothing was lost and every
fault was survived.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pymysql

REPO = Path(__file__).resolve().parents[1]
for folder in ("tests", "tests/e2e", "tests/faults"):
    sys.path.insert(0, str(REPO / folder))

import search_server  # noqa: E402 - OPENSEARCH_URL, or the tests' osmem-server launcher
from benchlib import DEFAULT_PG_URL, ensure_pg_database, memory_mb, percentile  # noqa: E402 - bench/, the script's own folder
from e2e_support import Daemon, differences, drop_world, make_world  # noqa: E402
from services import restart_mariadb, restart_postgresql, restart_rabbitmq  # noqa: E402
from tcp_proxy import TcpProxy  # noqa: E402

from cdc.demo.seed import seed  # noqa: E402
from cdc.demo.workload import Workload  # noqa: E402
from cdc.mapping import Mapper, load_mappings  # noqa: E402
from cdc.sinks.base import SinkContext  # noqa: E402
from cdc.sinks.cache import CacheSink, CacheSinkConfig  # noqa: E402
from cdc.sinks.search import SearchSink, SearchSinkConfig  # noqa: E402
from cdc.state.store import SqlStateStore  # noqa: E402

FAULTS = ("reader-kill", "sinks-kill", "rabbitmq", "postgresql", "mariadb", "redis-down", "search-down", "redis-hang")
CANARY = """entity: soak_canary
source: {{db: {db}, table: soak_canary}}
key: [id]
fields:
  id: {{column: id, type: integer}}
  seq: {{column: seq, type: integer}}
sinks:
  crm: {{table: soak_canary}}
"""


class Canary(threading.Thread):
    """Updates its row twice a second; notes when each value is readable in the CRM."""

    def __init__(self, world, interval: float = 0.5) -> None:
        super().__init__(name="canary", daemon=True)
        self.world, self.interval = world, interval
        self.committed: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        params, seq = self.world["params"], 0
        source = watcher = None
        while not self.stop.is_set():
            try:
                if source is None:
                    source = pymysql.connect(host=params.host, port=params.port, user=params.user, password=params.password,
                                             database=params.database, autocommit=True, connect_timeout=2)
                seq += 1
                with source.cursor() as cur:
                    cur.execute("INSERT INTO soak_canary (id, seq) VALUES (1, %s) ON DUPLICATE KEY UPDATE seq = %s", (seq, seq))
                self.committed[seq] = time.time()
            except pymysql.err.Error:
                source = None  # the source is restarting: try again next tick
            deadline = time.monotonic() + self.interval
            while time.monotonic() < deadline:
                try:
                    if watcher is None:
                        watcher = psycopg.connect(self.world["pg_url"], autocommit=True, connect_timeout=2)
                    found = watcher.execute(f'SELECT seq FROM "{self.world["schema"]}".soak_canary WHERE id = 1').fetchone()
                except psycopg.Error:
                    watcher = None
                    found = None
                if found:
                    now = time.time()
                    for s in self.committed:
                        if s <= found[0] and s not in self.seen:
                            self.seen[s] = now
                time.sleep(0.01)  # the canary's observation period

    def lags(self) -> list[float]:
        return sorted(self.seen[s] - self.committed[s] for s in self.seen if s in self.committed)


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - a service is still coming back
            pass
        time.sleep(0.2)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=200, help="Workload operations per second.")
    ap.add_argument("--fault-every", type=float, default=30, help="Mean seconds between faults.")
    ap.add_argument("--faults", default="all", help=f"Comma-separated, from: {', '.join(FAULTS)}; or all.")
    ap.add_argument("--recover-s", type=float, default=120, help="Time a fault is given to be recovered from.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-events", type=int, default=1, help="broker.batch_events (1: one event a message).")
    args = ap.parse_args()
    faults = list(FAULTS) if args.faults == "all" else args.faults.split(",")
    unknown = set(faults) - set(FAULTS)
    if unknown:
        ap.error(f"unknown fault(s) {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    rng = random.Random(args.seed)

    search_url = search_server.url()
    redis_url = "redis://127.0.0.1:6379/12"
    redis_port = 6379
    search_port = int(search_url.rsplit(":", 1)[1].strip("/"))
    tmp = Path(tempfile.mkdtemp(prefix="cdc-soak-"))
    source = {"host": "127.0.0.1", "port": 3307, "user": "cdc", "password": "cdc-secret"}
    with TcpProxy(redis_port) as redis_proxy, TcpProxy(search_port) as search_proxy:
        tag = f"soak{redis_proxy.port}"
        world = make_world(tmp, source, ensure_pg_database(DEFAULT_PG_URL), "amqp://guest:guest@127.0.0.1:5672/%2F",
                           extra_yaml="snapshot: {mode: never}",
                           extra_sinks=f"""  cache_{tag}: {{type: cache, url: "redis://127.0.0.1:{redis_proxy.port}/12", key_prefix: {tag}, batch_size: 500}}
  search_{tag}: {{type: search, url: "http://127.0.0.1:{search_proxy.port}", index_prefix: {tag}, batch_size: 500}}
""", broker=f"batch_events: {args.batch_events}")
        admin = pymysql.connect(host=source["host"], port=source["port"], user="root", database=world["db"], autocommit=True)
        admin.cursor().execute("CREATE TABLE soak_canary (id INT PRIMARY KEY, seq BIGINT NOT NULL)")
        (world["mappings"] / "soak_canary.yaml").write_text(CANARY.format(db=world["db"]))
        mapper = Mapper(load_mappings(world["mappings"]))
        state = SqlStateStore(world["state_url"])
        reader, sinks = Daemon(world, ["reader"]), Daemon(world, ["sinks"])
        cache = CacheSink(f"cache_{tag}", CacheSinkConfig(url=redis_url, key_prefix=tag), SinkContext(entities=mapper.schemas()))
        search = SearchSink(f"search_{tag}", SearchSinkConfig(url=search_url, index_prefix=tag, state_url=world["state_url"]),
                            SinkContext(entities=mapper.schemas()))
        canary = Canary(world)
        injected: list[tuple[str, bool, float]] = []
        try:
            reader.start()
            sinks.start()
            if not wait(lambda: state.load_checkpoint("e2e") is not None, 60):
                raise SystemExit(f"the reader did not start:\n{reader.logs()}")
            seed(world["params"], members=200, rng_seed=args.seed)
            canary.start()
            workload = Workload(world["params"], rate=args.rate, rng_seed=args.seed + 1)
            runner = threading.Thread(target=workload.run, daemon=True)
            runner.start()
            wait(lambda: len(canary.seen) > 3, 60)
            memory_start = {"reader": memory_mb(reader.proc.pid), "sinks": memory_mb(sinks.proc.pid)}
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            print(f"soak: {args.minutes:g} min at {args.rate:g} ops/s, a fault every ~{args.fault_every:g}s from {', '.join(faults)}")
            while time.monotonic() < end:
                pause = rng.uniform(0.5, 1.5) * args.fault_every
                time.sleep(min(pause, max(0.0, end - time.monotonic())))  # the soak's own schedule, not a wait for a result
                if time.monotonic() >= end:
                    break
                fault = rng.choice(faults)
                began = time.monotonic()
                survived = inject(fault, rng, reader, sinks, redis_proxy, search_proxy, state, world, args.recover_s)
                took = time.monotonic() - began
                injected.append((fault, survived, took))
                print(f"  {time.monotonic() - t0:7.1f}s {fault:12s} {'survived' if survived else 'NOT RECOVERED'} in {took:5.1f}s; "
                      f"{workload.result.total_ops:,} operations so far, {workload.result.errors} errors")
            workload.stop()
            runner.join(60)
            load = workload.result
            memory_end = {"reader": memory_mb(reader.proc.pid), "sinks": memory_mb(sinks.proc.pid)}
            lost, detail = compare(world, mapper, cache, search, args.recover_s)
            canary.stop.set()
            lags = canary.lags()
            exited = [d.tag for d in (reader, sinks) if d.proc.poll() is not None]
        finally:
            canary.stop.set()
            reader.stop_if_running()
            sinks.stop_if_running()
            for sink in (cache, search):
                try:
                    sink.reset()
                except Exception:  # noqa: BLE001 - best-effort cleanup
                    pass
            drop_world(world)
            search_server.stop()

    survived = sum(1 for _, ok, _ in injected if ok)
    print(f"load held: {load.rate:,.1f} ops/s over {load.elapsed:,.0f}s ({load.total_ops:,} operations, {load.errors} errors); "
          f"rows inserted {load.rows['inserted']:,}, updated {load.rows['updated']:,}, deleted {load.rows['deleted']:,}")
    print(f"faults: {len(injected)} injected, {survived} survived: "
          + ", ".join(f"{f} x{sum(1 for g, _, _ in injected if g == f)}" for f in faults))
    print(f"canary lag (commit -> CRM), {len(lags)} samples: p50 {percentile(lags, 50):.2f}s p95 {percentile(lags, 95):.2f}s "
          f"p99 {percentile(lags, 99):.2f}s max {max(lags, default=float('nan')):.2f}s")
    print(f"rows lost or different at the end: {lost}" + (f" ({detail})" if lost else ""))
    print("memory (RSS): " + ", ".join(f"{k} {memory_start[k]:.0f} -> {memory_end[k]:.0f} MB" for k in memory_start))
    if exited:
        print(f"processes that exited by themselves: {exited}; logs in {tmp}")
    print(f"ops_per_s={load.rate:.1f}")
    print(f"faults_injected={len(injected)}")
    print(f"faults_survived={survived}")
    for p in (50, 95, 99):
        print(f"lag_p{p}_s={percentile(lags, p):.2f}")
    print(f"lag_max_s={max(lags, default=float('nan')):.2f}")
    print(f"rows_lost={lost}")
    for k in memory_start:
        print(f"rss_{k}_start_mb={memory_start[k]:.0f}")
        print(f"rss_{k}_end_mb={memory_end[k]:.0f}")
    return 0 if lost == 0 and survived == len(injected) and not exited else 1


def inject(fault: str, rng: random.Random, reader: Daemon, sinks: Daemon, redis_proxy: TcpProxy, search_proxy: TcpProxy,
           state: SqlStateStore, world, recover_s: float) -> bool:
    checkpoint = state.load_checkpoint("e2e")
    applied = _crm_max_version(world)
    if fault == "reader-kill":
        reader.kill()
        reader.start()
    elif fault == "sinks-kill":
        sinks.kill()
        sinks.start()
    elif fault == "rabbitmq":
        restart_rabbitmq()
    elif fault == "postgresql":
        restart_postgresql()
    elif fault == "mariadb":
        restart_mariadb()
    else:
        proxy = redis_proxy if fault.startswith("redis") else search_proxy
        if fault.endswith("hang"):
            proxy.freeze()
        else:
            proxy.down()
        time.sleep(rng.uniform(5, 15))  # the outage's length
        proxy.thaw()
        proxy.up()
    moved = wait(lambda: state.load_checkpoint("e2e") != checkpoint, recover_s)
    applied_again = wait(lambda: _crm_max_version(world) > applied, recover_s)
    alive = reader.proc.poll() is None and sinks.proc.poll() is None
    return moved and applied_again and alive


def _crm_max_version(world) -> int:
    with psycopg.connect(world["pg_url"], connect_timeout=2) as conn:
        row = conn.execute(f'SELECT max(_version) FROM "{world["schema"]}".member').fetchone()
    return row[0] or 0


def compare(world, mapper: Mapper, cache: CacheSink, search: SearchSink, timeout: float) -> tuple[int, str]:
    """Rows (source keys) that differ in any sink once the sinks have caught up; 0 is the only good answer."""
    cache.open()
    search.open()
    found: dict[str, list[str]] = {}

    def same() -> bool:
        found.clear()
        found.update(differences(world, mapper, {"cache": cache, "search": search}))
        return not found

    wait(same, timeout)
    return sum(len(v) for v in found.values()), "; ".join(f"{k}: {v[:3]}" for k, v in found.items())


if __name__ == "__main__":
    sys.exit(main())
