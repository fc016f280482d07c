"""Side by side with a real peer: pg_chameleon 2.0.21 and this project on one workload, MariaDB into PostgreSQL.

    .venv/bin/python bench/bench_peer.py [--rounds 2] [--modes one,split] [--batch-events 100] [--skip-peer]

The workload is the peer harness's (bench/peer/pg_chameleon_bench.sh): a `members` table of 9 columns
seeded with --seed-rows rows, then --ins inserts, --upd updates and --del deletes in --txn-rows-row
transactions. Each round runs the peer, then this project in each mode (`one`: `cdc run`, every role in
one command; `split`: `cdc run --role reader` and `cdc run --role sinks` as two processes), alternating
so that both meet the machine in the same state. Measured for both, by polling PostgreSQL every
--poll-s seconds:

  init_rows_per_s    seed rows / time until PostgreSQL holds them all (peer: `init_replica`; ours: the
                     daemon's start, its initial snapshot, until every row is in the CRM)
  first_change_s     first workload statement -> first change visible in PostgreSQL
  change_rows_per_s  changes / time from the first workload statement until PostgreSQL equals the source
  cpu                cores used by the replicator's processes during the change phase

Both targets are checked against the source at the end (row count and an order-independent hash of
every replicated column); a round whose target differs fails the run (exit 1). The last lines give
the medians and our ratios to the peer.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika
import psycopg
import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DEFAULT_PG_URL, ensure_pg_database  # noqa: E402

from cdc.broker.topology import event_log, reader_dead_exchange  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "bench" / "peer" / "pg_chameleon_bench.sh"
DB = "peerbench_cdc"
COLUMNS = "id, email, first_name, last_name, status, joined_at, dues, bio"
HZ = os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="one,split", help="Ours: one (`cdc run`), split (reader and sinks processes).")
    ap.add_argument("--seed-rows", type=int, default=100_000)
    ap.add_argument("--ins", type=int, default=100_000)
    ap.add_argument("--upd", type=int, default=100_000)
    ap.add_argument("--del", dest="dele", type=int, default=50_000)
    ap.add_argument("--txn-rows", type=int, default=1_000)
    ap.add_argument("--poll-s", type=float, default=0.1)
    ap.add_argument("--timeout-s", type=float, default=600)
    ap.add_argument("--batch-events", type=int, default=100, help="Our broker.batch_events.")
    ap.add_argument("--skip-peer", action="store_true", help="Run ours only (no pg_chameleon).")
    ap.add_argument("--wrap", default="", help="A command our daemon runs under, e.g. 'py-spy record -o /tmp/p.svg "
                    "--subprocesses --' (profiling).")
    ap.add_argument("--keep-logs", default="", help="A folder our daemon's logs are copied to.")
    ap.add_argument("--init-only", action="store_true", help="The initial copy alone (no change workload).")
    ap.add_argument("--db", default="peerbench_cdc", help="Our MariaDB database.")
    ap.add_argument("--peer-db", default="peerbench", help="The peer's MariaDB database (and PostgreSQL schema).")
    ap.add_argument("--peer-pg-db", default="chameleon_bench", help="The peer's PostgreSQL database.")
    ap.add_argument("--peer-dir", default="/var/tmp/peer-bench", help="The peer harness's venv, home and logs.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3307)
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--pg", default=DEFAULT_PG_URL)
    args = ap.parse_args()
    global DB
    DB = args.db
    if args.init_only:
        args.ins = args.upd = args.dele = 0
    ensure_pg_database(args.pg)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"one", "split"}
    if unknown:
        raise SystemExit(f"--modes: unknown mode(s) {sorted(unknown)}; choose among one, split")
    results: dict[str, list[dict]] = {}
    failed = False
    for round_no in range(1, args.rounds + 1):
        order = (["peer"] if not args.skip_peer else []) + modes
        if round_no % 2 == 0:
            order.reverse()  # alternate who goes first
        for who in order:
            print(f"round {round_no}: {who} ...", flush=True)
            figures = run_peer(args) if who == "peer" else run_ours(args, who)
            print(f"round {round_no}: {who}: " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
            results.setdefault(who, []).append(figures)
            failed = failed or not figures.get("equal", False)
    print()
    summary = {who: {k: statistics.median(r[k] for r in runs) for k in ("init_rows_per_s", "change_rows_per_s",
                                                                      "first_change_s", "cpu_cores")}
               for who, runs in results.items()}
    for who, s in summary.items():
        print(f"{who:5}: init {s['init_rows_per_s']:,.0f} rows/s, changes {s['change_rows_per_s']:,.0f} rows/s, first change "
              f"{s['first_change_s']:.2f} s, {s['cpu_cores']:.2f} cores (median of {len(results[who])})")
    if "peer" in summary:
        for who in modes:
            changes = (f", changes {summary[who]['change_rows_per_s'] / summary['peer']['change_rows_per_s']:.2f}"
                       if summary['peer']['change_rows_per_s'] else "")
            print(f"ratio {who}/peer: init {summary[who]['init_rows_per_s'] / summary['peer']['init_rows_per_s']:.2f}{changes}")
    if failed:
        raise SystemExit("a target did not end equal to the source: see the rounds above")


# --------------------------------------------------------------------------------------------- the peer

def run_peer(args) -> dict:
    env = dict(os.environ, MY_HOST=args.host, MY_PORT=str(args.port), SEED_ROWS=str(args.seed_rows), INS_ROWS=str(args.ins),
               UPD_ROWS=str(args.upd), DEL_ROWS=str(args.dele), TXN_ROWS=str(args.txn_rows), POLL_S=str(args.poll_s),
               CONVERGE_TIMEOUT_S=str(int(args.timeout_s)), PG_HOST=_pg_part(args.pg, "host"),
               PG_PORT=str(_pg_part(args.pg, "port")), PG_USER=_pg_part(args.pg, "user"), MY_DB=args.peer_db,
               PG_DB=args.peer_pg_db, PEER_DIR=args.peer_dir)
    done = subprocess.run(["bash", str(PEER)], env=env, capture_output=True, text=True, check=False)
    out = done.stdout
    final = re.search(r"pg_chameleon: init_rows_per_s=(\d+) change_rows_per_s=(\d+) total_s=([\d.]+)", out)
    if done.returncode not in (0, 2) or final is None:
        raise SystemExit(f"the peer harness failed (exit {done.returncode}):\n{done.stderr[-3000:]}\n{out[-2000:]}")
    first = re.search(r"first_change_visible_s=([\d.]+)", out)
    cpu = re.search(r"cpu during change phase \(([\d.]+)s\): chameleon=([\d.]+)s", out)
    return {"init_rows_per_s": int(final.group(1)), "change_rows_per_s": int(final.group(2)),
            "first_change_s": float(first.group(1)) if first else float("nan"),
            "cpu_cores": round(float(cpu.group(2)) / float(cpu.group(1)), 2) if cpu else float("nan"),
            "equal": "content_hash_match=yes" in out}


def _pg_part(url: str, part: str):
    info = psycopg.conninfo.conninfo_to_dict(url)
    return {"host": info.get("host", "127.0.0.1"), "port": info.get("port", 5432), "user": info.get("user", "postgres")}[part]


# --------------------------------------------------------------------------------------------- ours

def run_ours(args, mode: str) -> dict:
    uid = uuid.uuid4().hex[:8]
    schema, exchange = f"peer_{uid}", f"cdc.peer.{uid}"
    admin = pymysql.connect(host=args.host, port=args.port, user="root", autocommit=True)
    seed_source(admin, args.seed_rows)
    with tempfile.TemporaryDirectory(prefix="cdc-peer-") as tmp_name:
        tmp = Path(tmp_name)
        config = write_config(tmp, args, schema, exchange)
        env = dict(os.environ, CDC_SOURCE__PASSWORD="cdc-secret")
        init = subprocess.run([sys.executable, "-m", "cdc.cli", "mappings", "init", "-c", str(config), "--table",
                               f"{DB}.members", "--sinks", "crm"], env=env, capture_output=True, text=True, check=False)
        if init.returncode != 0:
            raise SystemExit(f"cdc mappings init failed:\n{init.stdout}{init.stderr}")
        roles = [["--role", "reader"], ["--role", "sinks"]] if mode == "split" else [[]]
        pg = psycopg.connect(args.pg, autocommit=True)
        table = f'"{schema}".member'
        started = time.monotonic()
        wrap = shlex.split(args.wrap)
        procs = [subprocess.Popen([*wrap, sys.executable, "-m", "cdc.cli", "run", "-c", str(config), *r], env=env,
                                  stdout=open(tmp / f"daemon{i}.log", "wb"), stderr=subprocess.STDOUT)
                 for i, r in enumerate(roles)]
        try:
            wait_for(lambda: _count(pg, table) == args.seed_rows, args.timeout_s, "the initial snapshot", procs, tmp)
            init_s = time.monotonic() - started
            figures = change_phase(args, admin, pg, table, procs, tmp) if not args.init_only else \
                {"change_rows_per_s": 0, "first_change_s": float("nan"), "cpu_cores": float("nan")}
            figures = {"init_rows_per_s": round(args.seed_rows / init_s)} | figures
            figures["equal"] = source_hash(admin) == target_hash(pg, table)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            pg.close()
            cleanup(args, admin, schema, exchange)
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                for log_file in tmp.glob("daemon*.log"):
                    shutil.copy(log_file, Path(args.keep_logs) / f"{mode}-{uid}-{log_file.name}")
    return figures


def seed_source(admin, rows: int) -> None:
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"""CREATE TABLE {DB}.members (
              id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(190) NOT NULL,
              first_name VARCHAR(100), last_name VARCHAR(100), status TINYINT NOT NULL DEFAULT 1,
              joined_at DATETIME, dues DECIMAL(10,2), bio TEXT,
              updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""")
        cur.execute(_insert(1, rows))


def _insert(first: int, last: int) -> str:
    return (f"INSERT INTO {DB}.members ({COLUMNS}) SELECT seq, CONCAT('m',seq,'@ex.org'), CONCAT('First',seq), "
            f"CONCAT('Last',seq), 1, '2020-01-02 03:04:05', 123.45, REPEAT('bio ',20) FROM {DB}.seq_{first}_to_{last}")


def write_config(tmp: Path, args, schema: str, exchange: str) -> Path:
    config = tmp / "cdc.yaml"
    config.write_text(f"""
source: {{name: peer, host: {args.host}, port: {args.port}, user: cdc, databases: [{DB}], start_at: latest,
          replica_server_id: {random.randint(10_000, 2**31)}}}
broker: {{url: "{args.amqp}", exchange: {exchange}, batch_events: {args.batch_events}}}
state: {{url: "sqlite:///{tmp}/state.db"}}
mappings: {{dir: {tmp / "mappings"}}}
sinks:
  {schema}: {{type: crm, url: "{args.pg}", schema_name: {schema}}}
metrics: {{enabled: false}}
log: {{format: json, level: INFO}}
""")
    return config


def change_phase(args, admin, pg, table: str, procs, tmp: Path) -> dict:
    """The peer harness's workload, one autocommit statement a transaction, timed until PostgreSQL equals the source."""
    statements = [_insert(s, min(s + args.txn_rows - 1, args.seed_rows + args.ins))
                  for s in range(args.seed_rows + 1, args.seed_rows + args.ins + 1, args.txn_rows)]
    statements += [f"UPDATE {DB}.members SET dues=dues+1 WHERE id BETWEEN {s} AND {min(s + args.txn_rows - 1, args.upd)}"
                   for s in range(1, args.upd + 1, args.txn_rows)]
    statements += [f"DELETE FROM {DB}.members WHERE id BETWEEN {s} AND {min(s + args.txn_rows - 1, args.dele)}"
                   for s in range(1, args.dele + 1, args.txn_rows)]
    before = _summary(pg, table)
    first: list[float] = []
    cpu0, t0 = sum(_cpu(p.pid) for p in procs), time.monotonic()

    def watch_first() -> None:
        while not first and time.monotonic() - t0 < args.timeout_s:
            if _summary(pg_watch, table) != before:
                first.append(time.monotonic() - t0)
            else:
                time.sleep(args.poll_s)

    pg_watch = psycopg.connect(args.pg, autocommit=True)
    watcher = threading.Thread(target=watch_first, daemon=True)
    watcher.start()
    with admin.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        cur.execute(f"SELECT COUNT(*), COALESCE(SUM(dues), 0), COALESCE(SUM(id), 0) FROM {DB}.members")
        target = tuple(cur.fetchone())
    wait_for(lambda: _summary(pg, table) == target, args.timeout_s, "PostgreSQL to equal the source", procs, tmp,
             args.poll_s)
    total = time.monotonic() - t0
    cpu = sum(_cpu(p.pid) for p in procs) - cpu0
    watcher.join(timeout=5)
    pg_watch.close()
    changes = args.ins + args.upd + args.dele
    return {"change_rows_per_s": round(changes / total), "first_change_s": round(first[0], 2) if first else float("nan"),
            "cpu_cores": round(cpu / total, 2)}


def _count(pg, table: str) -> int:
    try:
        return pg.execute(f"SELECT count(*) FROM {table} WHERE NOT _deleted").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return -1


def _summary(pg, table: str):
    try:
        row = pg.execute(f"SELECT count(*), COALESCE(sum(dues), 0), COALESCE(sum(id), 0) FROM {table} WHERE NOT _deleted").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return tuple(row)


def source_hash(admin) -> str:
    with admin.cursor() as cur:
        cur.execute(f"SELECT CONCAT(COUNT(*), ' ', SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', {COLUMNS})), 1, 15), 16, 10) "
                    f"AS UNSIGNED))) FROM {DB}.members")
        return cur.fetchone()[0]


def target_hash(pg, table: str) -> str:
    columns = COLUMNS.replace("joined_at", "to_char(joined_at, 'YYYY-MM-DD HH24:MI:SS')")
    return pg.execute(f"SELECT count(*) || ' ' || sum(('x' || substr(md5(concat_ws('|', {columns})), 1, 15))::bit(60)::bigint) "
                      f"FROM {table} WHERE NOT _deleted").fetchone()[0]


def _cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the daemon's snapshot chunk workers)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15]) / HZ
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _cpu(int(child))
    except OSError:
        pass
    return total


def wait_for(predicate, timeout: float, what: str, procs, tmp: Path, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(path.read_text()[-2000:] for path in sorted(tmp.glob("daemon*.log")))
            raise SystemExit(f"{'a daemon process exited' if dead else 'timed out'} waiting for {what}; its log:\n{logs}")
        time.sleep(poll)


def cleanup(args, admin, schema: str, exchange: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    with pika.BlockingConnection(pika.URLParameters(args.amqp)) as conn:
        ch = conn.channel()
        for queue in (f"cdc.sink.{schema}", f"cdc.sink.{schema}.dlq", event_log(exchange)):
            ch.queue_delete(queue)
        ch.exchange_delete(exchange)
        ch.exchange_delete(reader_dead_exchange(exchange))


if __name__ == "__main__":
    main()
