"""Legacy MariaDB -> daemon (real process) -> RabbitMQ -> CRM, with SIGKILLs mid-workload.

The outcome a user cares about: after inserts, updates, deletes, multi-row and multi-table
transactions, and the daemon killed with SIGKILL and restarted, the CRM equals the source row by
row, and every CRM row carries the version of the last change of its key in the binlog (nothing
lost, nothing stale, nothing applied out of order).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pymysql
import pytest

from cdc.checkpoint import Checkpoint
from cdc.config import SourceConfig
from cdc.demo.seed import ConnParams, create_schema, seed
from cdc.demo.workload import Workload
from cdc.envelope import key_string
from cdc.events import build_events
from cdc.mapping import Mapper, load_mappings
from cdc.reader import BinlogReader
from cdc.state.store import SqlStateStore

REPO = Path(__file__).resolve().parents[2]
ENTITIES = {"member": ("members", "member_id"), "event_registration": ("event_registrations", "registration_id")}


@pytest.fixture
def world(tmp_path, source_server, pg_url, amqp_url):
    uid = uuid.uuid4().hex[:8]
    db, schema, sink = f"legacy_e2e_{uid}", f"crm_e2e_{uid}", f"crm_e2e_{uid}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    params = ConnParams(host=source_server["host"], port=source_server["port"], user="root", password="", database=db)
    create_schema(params)

    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for path in (REPO / "mappings").glob("*.yaml"):
        (mappings / path.name).write_text(path.read_text().replace("db: legacy,", f"db: {db},"))
    config = tmp_path / "cdc.yaml"
    config.write_text(f"""
source: {{name: e2e, host: {source_server['host']}, port: {source_server['port']}, user: {source_server['user']},
          databases: [{db}], start_at: latest, heartbeat_s: 1, read_timeout_s: 10,
          replica_server_id: {random.randint(10_000, 2**31)}}}
broker: {{url: "{amqp_url}", exchange: cdc.e2e.{uid}}}
state: {{url: "sqlite:///{tmp_path}/state.db"}}
mappings: {{dir: {mappings}}}
sinks:
  {sink}: {{type: crm, url: "{pg_url}", schema_name: {schema}, batch_size: 500}}
metrics: {{enabled: false}}
log: {{format: json, level: INFO}}
""")
    world = dict(uid=uid, db=db, schema=schema, sink=sink, params=params, config=config, tmp=tmp_path,
                 mappings=mappings, state_url=f"sqlite:///{tmp_path}/state.db", pg_url=pg_url, source=source_server,
                 amqp_url=amqp_url)
    yield world
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
    admin.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    import pika

    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        ch = conn.channel()
        ch.queue_delete(f"cdc.sink.{sink}")
        ch.queue_delete(f"cdc.sink.{sink}.dlq")
        ch.exchange_delete(f"cdc.e2e.{uid}")


class Daemon:
    def __init__(self, world) -> None:
        self.world = world
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, CDC_SOURCE__PASSWORD=self.world["source"]["password"])
        log = open(self.world["tmp"] / f"daemon-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "cdc.cli", "run", "-c", str(self.world["config"])],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.world["tmp"].glob("daemon-*.log")))


def source_rows(world, mapper: Mapper) -> dict[str, dict[str, dict]]:
    conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                           database=world["db"], cursorclass=pymysql.cursors.DictCursor, init_command="SET time_zone='+00:00'")
    out: dict[str, dict[str, dict]] = {}
    with conn, conn.cursor() as cur:
        for entity, (table, _) in ENTITIES.items():
            mapping = next(m for m in mapper.mappings if m.entity == entity)
            cur.execute(f"SELECT * FROM {table}")
            rows = {}
            for row in cur.fetchall():
                mapped = Mapper.map_row(mapping, row)
                if mapped.values is not None:
                    rows[key_string(mapped.key)] = mapped.values
            out[entity] = rows
    return out


def crm_rows(world, mapper: Mapper) -> dict[str, dict[str, dict]]:
    from cdc.sinks.base import SinkContext
    from cdc.sinks.crm import CrmSink, CrmSinkConfig

    sink = CrmSink(world["sink"], CrmSinkConfig(url=world["pg_url"], schema_name=world["schema"]), SinkContext(entities=mapper.schemas()))
    sink.open()
    try:
        return {entity: sink.fetch_rows(entity) for entity in ENTITIES}
    finally:
        sink.close()


def crm_versions(world) -> dict[str, dict[str, int]]:
    out = {}
    with psycopg.connect(world["pg_url"]) as conn:
        for entity, (_, key) in ENTITIES.items():
            rows = conn.execute(f'SELECT {key}, _version FROM "{world["schema"]}".{entity}').fetchall()
            out[entity] = {str(k): v for k, v in rows}
    return out


def binlog_last_versions(world, mapper: Mapper, start: Checkpoint) -> dict[str, dict[str, int]]:
    """An independent pass over the binlog: the version of the last change of every key."""
    cfg = SourceConfig(host=world["source"]["host"], port=world["source"]["port"], user=world["source"]["user"],
                       password=world["source"]["password"], databases=[world["db"]], read_timeout_s=10,
                       replica_server_id=random.randint(10_000, 2**31))  # the server drops a duplicate id's stream
    reader = BinlogReader(cfg, mapper.tables())
    server = reader.preflight()
    head = reader.head_position()
    last: dict[str, dict[str, int]] = {e: {} for e in ENTITIES}
    stop = threading.Event()
    for txn in reader.transactions(start, stop):
        events, dead = build_events(txn, mapper, "e2e", server.server_id)
        assert not dead, dead
        for e in events:
            last[e["entity"]][key_string(e["key"])] = e["version"]
        if (txn.end.file, txn.end.pos) >= (head.file, head.pos):
            break
    return last


def diff(expected: dict, actual: dict) -> list[str]:
    problems = []
    for entity in expected:
        exp, act = expected[entity], actual.get(entity, {})
        problems += [f"{entity} {k} missing in CRM" for k in exp.keys() - act.keys()]
        problems += [f"{entity} {k} in CRM but not live in source" for k in act.keys() - exp.keys()]
        problems += [f"{entity} {k}: source {exp[k]} != CRM {act[k]}" for k in exp.keys() & act.keys() if exp[k] != act[k]]
    return problems


def test_workload_with_sigkills_ends_exactly_in_the_crm(world, wait_until):
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        start = wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the daemon's first checkpoint\n{daemon.logs()}")

        seed(world["params"], members=150, rng_seed=7)
        workload = Workload(world["params"], rate=400, max_ops=2400, rng_seed=11)
        result = {}
        runner = threading.Thread(target=lambda: result.setdefault("counts", workload.run()))
        runner.start()
        # SIGKILL the daemon three times while the workload writes, each time after it made progress.
        for i in range(1, 4):
            before = state.load_checkpoint("e2e")
            wait_until(lambda: workload.result.total_ops >= 500 * i, timeout=60, message="workload progress")
            wait_until(lambda: state.load_checkpoint("e2e") != before, timeout=60,
                       message=f"the checkpoint to move\n{daemon.logs()}")
            daemon.kill()
            daemon.start()
        runner.join(300)
        assert not runner.is_alive() and result["counts"].errors == 0
        rows = result["counts"].rows
        assert rows["inserted"] and rows["updated"] and rows["deleted"], rows

        expected_holder = {}

        def converged():
            expected_holder["source"] = source_rows(world, mapper)
            expected_holder["crm"] = crm_rows(world, mapper)
            return not diff(expected_holder["source"], expected_holder["crm"])

        try:
            wait_until(converged, timeout=120, interval=1, message="the CRM to equal the source")
        except AssertionError:
            problems = diff(expected_holder["source"], expected_holder["crm"])
            pytest.fail(f"{len(problems)} differences, e.g. {problems[:5]}\n{daemon.logs()}")
        source = expected_holder["source"]
        assert len(source["member"]) > 100 and len(source["event_registration"]) > 10

        # Every key's CRM version is the version of its last change in the binlog.
        last = binlog_last_versions(world, mapper, start)
        versions = crm_versions(world)
        for entity in ENTITIES:
            assert versions[entity] == last[entity], f"{entity}: CRM versions differ from the binlog's last changes"
        assert daemon.starts == 4
        assert daemon.terminate() == 0, daemon.logs()
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.kill()
        state.close()
