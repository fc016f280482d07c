"""PostgreSQL restarted under the daemon, with the state store on it as in production (state.url), the CRM
on it too, an initial snapshot running, a DDL recorded while it is down, and the CRM, cache, search and
webhook sinks all consuming. The PostgreSQL is a private one (tests/private_postgres.py), never the
shared server. The daemon must never exit, and at the end every sink equals the source.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import threading
import time

import orjson
import pika
from e2e_support import ENTITIES, Daemon, close_sinks, converge, drop_world, make_world
from private_postgres import PrivatePostgres
from search_server import search_url  # noqa: F401 - the session fixture

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.domain.envelope import encode, key_string
from cdc.mapping import Mapper, load_mappings
from cdc.sinks.base import SinkContext
from cdc.sinks.cache import CacheSink, CacheSinkConfig
from cdc.sinks.search import SearchSink, SearchSinkConfig
from cdc.sinks.webhook import SIGNATURE_HEADER, verify_signature
from cdc.source.schema_history import SchemaHistory
from cdc.state.store import SqlStateStore

SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
SECRET = "webhook-secret-for-restart-test"


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook endpoint keeping, per key, the newest event it accepted (deliveries are at-least-once)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latest: dict[tuple[str, str], tuple[int, str, dict | None]] = {}  # (entity, key) -> (version, op, after)
        self.bad_signatures = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def accept(self, body: bytes, signature: str | None) -> int:
        if not verify_signature(SECRET, body, signature):
            with self.lock:
                self.bad_signatures += 1
            return 401
        event = json.loads(body)
        slot = (event["entity"], key_string(event["key"]))
        with self.lock:
            if slot not in self.latest or self.latest[slot][0] < event["version"]:
                self.latest[slot] = (event["version"], event["op"], event["after"])
        return 204

    def live_rows(self, entity: str) -> dict[str, dict]:
        with self.lock:
            return {key: after for (e, key), (_, op, after) in self.latest.items() if e == entity and op != "d"}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        status = self.server.accept(self.rfile.read(int(self.headers["Content-Length"])), self.headers.get(SIGNATURE_HEADER))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _as_json(rows: dict[str, dict]) -> dict[str, dict]:
    """Source values as the events carry them (dates as ISO text, decimals as strings...)."""
    return {key: orjson.loads(encode({"v": values}))["v"] for key, values in rows.items()}


def test_a_postgresql_restart_under_a_snapshot_a_ddl_and_four_sinks(tmp_path, source_server, amqp_url, redis_url,
                                                                    search_url, wait_until):  # noqa: F811
    print(f"seed {SEED} (set CDC_TEST_SEED to replay)")
    rng = random.Random(SEED)
    pg = PrivatePostgres()
    pg.start()
    receiver = Receiver()
    tag = f"{rng.randrange(16**6):06x}"
    cache_name, search_name, hook_name = f"cache_{tag}", f"search_{tag}", f"hook_{tag}"
    extra_sinks = (
        f'  {cache_name}: {{type: cache, url: "{redis_url}", key_prefix: r{tag}, batch_size: 200}}\n'
        f'  {search_name}: {{type: search, url: "{search_url}", index_prefix: r-{tag}, batch_size: 200}}\n'
        f'  {hook_name}: {{type: webhook, batch_size: 200, retry_max_s: 1, '
        f'endpoints: {{rcv: {{url: "{receiver.url}", secret: {SECRET}}}}}}}\n'
    )
    # The CRM on the private server too, as in production where one PostgreSQL holds both.
    world = make_world(tmp_path, source_server, pg.url, amqp_url, "snapshot: {chunk_size: 40, workers: 1}", extra_sinks)
    text = world["config"].read_text()
    world["config"].write_text(text.replace(f'state: {{url: "{world["state_url"]}"}}', f'state: {{url: "{pg.url}"}}'))
    assert pg.url in world["config"].read_text()
    world["state_url"] = pg.url
    mapper = Mapper(load_mappings(world["mappings"]))
    context = SinkContext(entities=mapper.schemas())
    cache = CacheSink(cache_name, CacheSinkConfig(url=f'{redis_url}', key_prefix=f"r{tag}"), context)
    search = SearchSink(search_name, SearchSinkConfig(url=search_url, index_prefix=f"r-{tag}", state_url=pg.url), context)
    daemon = Daemon(world)
    workload = Workload(world["params"], rate=120, max_ops=50_000, rng_seed=rng.randrange(2**31))
    runner = threading.Thread(target=workload.run)
    try:
        # Rows there before the daemon's first start: its initial snapshot reads them, 40 rows a chunk.
        seed(world["params"], members=400, rng_seed=rng.randrange(2**31))
        daemon.start()
        state = SqlStateStore(pg.url)

        def running() -> bool:
            return any(s["status"] == "running" for s in state.snapshot_list("e2e"))

        wait_until(running, timeout=90, interval=0.2, message=f"a snapshot to be running\n{daemon.logs()}")
        table = f"side_{tag}"
        for restart in range(3):
            if restart == 1:
                runner.start()  # the later restarts with changes streaming through every sink
            if restart > 0:
                wait_until(lambda: workload.result.total_ops > 150 * restart, timeout=60, message="workload progress")
            snapshot_running = running()
            pg.stop()
            down_at = time.monotonic()
            if restart == 0:
                assert snapshot_running, "the snapshot finished before the restart: make it longer"
                with _source(world).cursor() as cur:  # recorded by the reader while the state store is down
                    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(20))")
            outage = 2 + rng.random() * 3
            wait_until(lambda: time.monotonic() - down_at > outage, timeout=10, message=f"an outage of {outage:.1f}s")
            assert daemon.proc.poll() is None, f"the daemon exited during the outage\n{daemon.logs()}"
            pg.start()
            wait_until(lambda: daemon.proc.poll() is not None or time.monotonic() - down_at > outage + 3, timeout=15,
                       message="the daemon to reconnect")
            assert daemon.proc.poll() is None, f"the daemon exited after the restart\n{daemon.logs()}"
        workload.stop()
        runner.join(120)
        assert not runner.is_alive()

        cache.open()
        search.open()
        source = converge(world, mapper, wait_until, daemon.logs, {"cache": cache, "search": search}, timeout=240)
        assert len(source["member"]) >= 400
        expected = {entity: _as_json(rows) for entity, rows in source.items()}
        wait_until(lambda: all(receiver.live_rows(e) == expected[e] for e in ENTITIES), timeout=120, interval=1,
                   message=f"the webhook receiver to hold every source row\n{daemon.logs()}")
        assert receiver.bad_signatures == 0
        assert all(s["status"] == "done" for s in state.snapshot_list("e2e")), state.snapshot_list("e2e")
        ddl = [e for e in SchemaHistory(state).entries("e2e") if e["tbl"] == table]
        assert len(ddl) == 1 and ddl[0]["kind"] == "create_table", ddl
        logs = daemon.logs(0)
        assert "state store" in logs, "the daemon never met the restarts: the test proves nothing"
        assert daemon.proc.poll() is None, f"the daemon exited\n{daemon.logs()}"
        assert daemon.terminate() == 0
        state.close()
    finally:
        workload.stop()
        daemon.stop_if_running()
        close_sinks(cache, search)
        receiver.shutdown()
        receiver.server_close()
        try:
            with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
                channel = conn.channel()
                for name in (cache_name, search_name, hook_name):
                    channel.queue_delete(f"cdc.sink.{name}")
                    channel.queue_delete(f"cdc.sink.{name}.dlq")
            if not pg.running:
                pg.start()
            drop_world(world)
        finally:
            pg.close()


def _source(world):
    import pymysql

    return pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root", database=world["db"],
                           autocommit=True)
