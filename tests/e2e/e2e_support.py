"""What the end-to-end tests share: a scratch legacy database, the daemon as a real process,
and row-by-row comparison of the source with the CRM."""

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

from cdc.broker.topology import reader_dead_exchange
from cdc.demo.seed import ConnParams, create_schema
from cdc.domain.envelope import key_string
from cdc.domain.positions import Checkpoint
from cdc.mapping import Mapper
from cdc.runtime.config import SourceConfig
from cdc.source.binlog_stream import BinlogReader
from cdc.source.change_events import build_events


def make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml: str = "", extra_sinks: str = "", http_port: int | None = None,
               broker: str = ""):
    """``http_port``: serve /metrics, probes, the admin API (token "e2e-token") and the status page there;
    ``broker``: more settings of the broker section (e.g. ``batch_events: 20``)."""
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
          databases: [{db}], start_at: latest, heartbeat_s: 1, read_timeout_s: 10, lease_ttl_s: 3,
          replica_server_id: {random.randint(10_000, 2**31)}}}
broker: {{url: "{amqp_url}", exchange: cdc.e2e.{uid}{", " + broker if broker else ""}}}
state: {{url: "sqlite:///{tmp_path}/state.db"}}
mappings: {{dir: {mappings}}}
sinks:
  {sink}: {{type: crm, url: "{pg_url}", schema_name: {schema}, batch_size: 500}}
{extra_sinks}{f"metrics: {{port: {http_port}}}" if http_port else "metrics: {enabled: false}"}
{"admin: {token: e2e-token, sample_interval_s: 1}" if http_port else ""}
log: {{format: json, level: INFO}}
{extra_yaml}""")
    world = dict(uid=uid, db=db, schema=schema, sink=sink, params=params, config=config, tmp=tmp_path,
                 mappings=mappings, state_url=f"sqlite:///{tmp_path}/state.db", pg_url=pg_url, source=source_server,
                 amqp_url=amqp_url)
    return world


def world_with_other_crm_sink(world_factory, pg_url, broker: str = "") -> tuple[dict, str]:
    """A world (snapshots off) with a second CRM sink in its own schema next to its own sink; and that sink's name."""
    other = f"other_{os.urandom(4).hex()}"
    world = world_factory("snapshot: {mode: never}",
                          extra_sinks=f"  {other}: {{type: crm, url: \"{pg_url}\", schema_name: {other}, batch_size: 500}}\n",
                          broker=broker)
    return world, other


def run_cli(world, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``cdc <args> -c <the world's config>`` as an operator runs it, the source password in the environment."""
    env = dict(os.environ, CDC_SOURCE__PASSWORD=world["source"]["password"])
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args, "-c", str(world["config"])],
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def drop_world(world) -> None:
    uid, db, schema, sink, amqp_url, pg_url = (world[k] for k in ('uid', 'db', 'schema', 'sink', 'amqp_url', 'pg_url'))
    admin = pymysql.connect(host=world['source']['host'], port=world['source']['port'], user='root', autocommit=True)
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
        ch.exchange_delete(reader_dead_exchange(f"cdc.e2e.{uid}"))


def drop_extra_sink(world, other: str) -> None:
    """Drop a second CRM sink a test added to ``world`` (its schema and queues) and the world's event log."""
    import pika

    with psycopg.connect(world["pg_url"], autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
    with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
        channel = conn.channel()
        for queue in (f"cdc.sink.{other}", f"cdc.sink.{other}.dlq", f"cdc.e2e.{world['uid']}.log"):
            channel.queue_delete(queue)


REPO = Path(__file__).resolve().parents[2]
ENTITIES = {"member": ("members", "member_id"), "event_registration": ("event_registrations", "registration_id")}


class Daemon:
    """``cdc run`` as a real process; ``roles`` picks one role (e.g. ["reader"], ["sinks"])."""

    def __init__(self, world, roles: list[str] | None = None) -> None:
        self.world = world
        self.roles = roles or []
        self.tag = "daemon" if not roles else "-".join(r.replace(":", "_") for r in roles)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def env(self) -> dict:
        return dict(os.environ, CDC_SOURCE__PASSWORD=self.world["source"]["password"])

    def start(self) -> None:
        env = self.env()
        log = open(self.world["tmp"] / f"{self.tag}-{self.starts}.log", "wb")
        roles = [arg for role in self.roles for arg in ("--role", role)]
        self.proc = subprocess.Popen([sys.executable, "-m", "cdc.cli", "run", "-c", str(self.world["config"]), *roles],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def stop_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def logs(self, start: int | None = None) -> str:
        """The daemon's output: of run ``start`` only, or the tail of every run."""
        if start is not None:
            return (self.world["tmp"] / f"{self.tag}-{start}.log").read_text(errors="replace")
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.world["tmp"].glob(f"{self.tag}-*.log")))


def source_rows(world, mapper: Mapper, entities: dict = ENTITIES) -> dict[str, dict[str, dict]]:
    """``entities``: entity -> (source table, key column), the demo's by default."""
    conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                           database=world["db"], cursorclass=pymysql.cursors.DictCursor, init_command="SET time_zone='+00:00'")
    out: dict[str, dict[str, dict]] = {}
    with conn, conn.cursor() as cur:
        for entity, (table, _) in entities.items():
            mapping = next(m for m in mapper.mappings if m.entity == entity)
            cur.execute(f"SELECT * FROM {table}")
            rows = {}
            for row in cur.fetchall():
                mapped = Mapper.map_row(mapping, row)
                if mapped.values is not None:
                    rows[key_string(mapped.key)] = mapped.values
            out[entity] = rows
    return out


def crm_rows(world, mapper: Mapper, entities: dict = ENTITIES) -> dict[str, dict[str, dict]]:
    from cdc.sinks.base import SinkContext
    from cdc.sinks.crm import CrmSink, CrmSinkConfig

    sink = CrmSink(world["sink"], CrmSinkConfig(url=world["pg_url"], schema_name=world["schema"]), SinkContext(entities=mapper.schemas()))
    sink.open()
    try:
        return {entity: sink.fetch_rows(entity) for entity in entities}
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
            if e["entity"] in last:  # the entities these tests compare
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
        problems += [f"{entity} {k}: {_row_diff(exp[k], act[k])}" for k in exp.keys() & act.keys() if exp[k] != act[k]]
    return problems


def _row_diff(source: dict, sink: dict, width: int = 120) -> str:
    """The fields that differ, each value cut to ``width`` characters (rows may hold megabytes)."""
    def short(value) -> str:
        text = repr(value)
        return text if len(text) <= width else f"{text[:width]}... ({len(text)} chars)"

    fields = [f for f in dict.fromkeys([*source, *sink]) if source.get(f, "<absent>") != sink.get(f, "<absent>")]
    return "; ".join(f"{f}: source {short(source.get(f, '<absent>'))} != sink {short(sink.get(f, '<absent>'))}"
                     for f in fields[:10]) + (f" (+{len(fields) - 10} more fields)" if len(fields) > 10 else "")




def diff_projected(expected: dict, actual: dict) -> list[str]:
    """Like :func:`diff`, for sinks that keep a projection of each row (the mappings' per-sink fields):
    the same keys, and every stored field equal to the source's."""
    projected = {
        entity: {k: {f: row[f] for f in actual.get(entity, {}).get(k, row) if f in row} for k, row in rows.items()}
        for entity, rows in expected.items()
    }
    return diff(projected, actual)


def differences(world, mapper: Mapper, projected: dict | None = None, entities: dict = ENTITIES,
                seen: dict | None = None) -> dict[str, list[str]]:
    """Sink name -> differences from the source (the CRM row by row, each ``projected`` sink by the fields
    it keeps); only sinks that differ. ``seen["source"]`` receives the source rows when given."""
    source = source_rows(world, mapper, entities)
    if seen is not None:
        seen["source"] = source
    found = {"crm": diff(source, crm_rows(world, mapper, entities))}
    for name, sink in (projected or {}).items():
        found[name] = diff_projected(source, {e: sink.fetch_rows(e) for e in entities})
    return {name: p for name, p in found.items() if p}


def crm_equals_source(world, mapper: Mapper) -> bool:
    """The world's CRM sink (``world["schema"]``) equals the source row by row; False while its worker creates its tables."""
    from cdc.domain.errors import TransientError

    try:
        return not diff(source_rows(world, mapper), crm_rows(world, mapper))
    except TransientError:
        return False


def converge(world, mapper: Mapper, wait_until, logs, projected: dict | None = None, timeout: float = 120,
             entities: dict = ENTITIES) -> dict:
    """Wait until the CRM equals the source row by row and each ``projected`` sink (name -> sink with
    ``fetch_rows``) holds the source's values of the fields it keeps; return the source rows. On time-out
    fail with the differences and ``logs()``. ``entities`` as for :func:`source_rows`."""
    seen: dict = {}
    last: dict = {}

    def same() -> bool:
        last["problems"] = differences(world, mapper, projected, entities, seen)
        return not last["problems"]

    try:
        wait_until(same, timeout=timeout, interval=1, message="every sink to equal the source")
    except AssertionError:
        sample = {name: p[:3] for name, p in last.get("problems", {}).items()}
        raise AssertionError(f"sinks differ from the source: {sample}\n{logs()}") from None
    return seen["source"]


def close_sinks(*sinks) -> None:
    """Empty and close the sinks a test opened to read back (cache, search), best effort: a cleanup that
    fails must not hide the test's own failure."""
    for sink in sinks:
        try:
            sink.reset()
            sink.close()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
