"""The operator moves the running reader's position through the daemon (`cdc offsets set --source
--via-daemon`, `POST /api/offsets`), with the real daemon process under a workload.

The reader takes the request at a transaction boundary, drains what it published, saves the new
checkpoint, audits it in the requester's name and streams from there without a restart: moved
back in time, it reads the changes since then again (the sinks skip them by version) and every
sink still equals the source. A position the server cannot serve is refused by the daemon, the
CLI says why and exits non-zero, and the daemon streams on. A sink damaged behind the service's
back is replayed by the daemon running its worker (`cdc offsets set --sink NAME --via-daemon`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.request

import orjson
import pymysql
import pytest
from e2e_support import Daemon, converge, drop_world, make_world, run_cli
from test_metrics_e2e import TOKEN, free_port, get, metric

from cdc.admin.offsets import who
from cdc.admin.positions import parse_file_pos
from cdc.demo.seed import seed
from cdc.mapping import Mapper, load_mappings
from cdc.state.store import SqlStateStore


class WritableDaemon(Daemon):
    """The daemon with the admin API's writes allowed (``admin.read_only: false``)."""

    def env(self) -> dict:
        return dict(super().env(), CDC_ADMIN__READ_ONLY="false")


def post(port: int, path: str, body: dict, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=orjson.dumps(body), method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


class Workload(threading.Thread):
    """Updates members' cities one transaction at a time; remembers when each statement started."""

    def __init__(self, world) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()
        self.started: list[float] = []

    def run(self) -> None:
        conn = pymysql.connect(host=self.world["source"]["host"], port=self.world["source"]["port"], user="root",
                               database=self.world["db"], autocommit=True)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM members WHERE deleted = 0 ORDER BY id")
            ids = [r[0] for r in cur.fetchall()]
            n = 0
            while not self.stop.wait(0.03):
                n += 1
                self.started.append(time.time())
                cur.execute("UPDATE members SET city = %s WHERE id = %s", (f"city {n}", ids[n % len(ids)]))

    def since(self, t: float) -> int:
        return sum(1 for s in self.started if s >= t)


@pytest.fixture
def daemon_world(tmp_path, source_server, pg_url, amqp_url, wait_until):
    port = free_port()
    world = make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml="snapshot: {mode: never}", http_port=port)
    world["port"] = port
    daemon = WritableDaemon(world)
    state = SqlStateStore(world["state_url"])
    daemon.start()
    try:
        wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{daemon.logs()}")
        seed(world["params"], members=40, rng_seed=11)
        yield world, daemon, state, Mapper(load_mappings(world["mappings"]))
    finally:
        daemon.stop_if_running()
        state.close()
        drop_world(world)


def test_operator_moves_the_running_reader_back_and_it_reads_again_from_there(daemon_world, wait_until):
    world, daemon, state, mapper = daemon_world
    port = world["port"]
    converge(world, mapper, wait_until, daemon.logs)
    workload = Workload(world)
    workload.start()
    try:
        t0 = int(time.time()) + 1
        wait_until(lambda: time.time() >= t0 + 3, timeout=6, interval=0.1, message="three seconds of workload after T")
        when = dt.datetime.fromtimestamp(t0, dt.UTC).isoformat()

        # Without coordination: refused, and the refusal names the coordinated way.
        refused = run_cli(world, "offsets", "set", "--source", "--timestamp", when)
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "--via-daemon" in refused.stderr and "held by" in refused.stderr

        plain_dry = run_cli(world, "offsets", "set", "--source", "--timestamp", when, "--dry-run")
        assert plain_dry.returncode == 0 and "this would be refused; --via-daemon" in plain_dry.stdout, plain_dry.stdout
        dry = run_cli(world, "offsets", "set", "--source", "--timestamp", when, "--via-daemon", "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "would move" in dry.stdout and "would apply it at a transaction boundary" in dry.stdout, dry.stdout
        assert state.position_request_list() == []  # a dry run asks nothing

        read_before = metric(port, "cdc_reader_events_total", source="e2e", entity="member")
        moved = run_cli(world, "offsets", "set", "--source", "--timestamp", when, "--via-daemon", "--reason", "re-read test")
        assert moved.returncode == 0, moved.stdout + moved.stderr + daemon.logs()
        assert "moved by the running reader" in moved.stdout, moved.stdout
        time.sleep(1)  # the workload goes on after the move
    finally:
        workload.stop.set()
        workload.join(10)
    assert daemon.proc.poll() is None, daemon.logs()

    request = state.position_request_list("source:e2e")[-1]
    assert request["status"] == "done" and request["who"] == who(), request
    from_pos, to_pos = (parse_file_pos(request[k].split()[0]) for k in ("from_value", "to_value"))
    assert to_pos.sort_key() < from_pos.sort_key(), request  # moved back
    assert f"from: {request['from_value']}" in moved.stdout and f"to:   {request['to_value']}" in moved.stdout
    audit = next(a for a in state.audit_log(10) if a["target"] == "source:e2e")
    assert audit["who"] == who() and audit["reason"].startswith("re-read test"), audit
    assert (audit["from_value"], audit["to_value"]) == (request["from_value"], request["to_value"])

    # Every sink equals the source; the changes since T were read a second time, the sinks skipped
    # what they had (versions), and the reader went on past where it was.
    converge(world, mapper, wait_until, daemon.logs)
    wait_until(lambda: metric(port, "cdc_reader_events_total", source="e2e", entity="member") - read_before
               >= workload.since(t0), timeout=30, interval=0.5,
               message=f"the reader to read the {workload.since(t0)} changes since T again\n{daemon.logs()}")
    checkpoint = state.load_checkpoint("e2e")
    assert parse_file_pos(f"{checkpoint.file}:{checkpoint.pos}").sort_key() > from_pos.sort_key()
    assert "position moved by" in daemon.logs(0)
    assert daemon.starts == 1 and daemon.proc.poll() is None


def test_a_position_the_server_cannot_serve_is_refused_by_the_daemon_which_streams_on(daemon_world, wait_until):
    world, daemon, state, mapper = daemon_world
    port = world["port"]
    converge(world, mapper, wait_until, daemon.logs)
    before = state.load_checkpoint("e2e")

    bad = run_cli(world, "offsets", "set", "--source", "--position", "mysql-bin.999999:4", "--via-daemon", "--wait", "60")
    assert bad.returncode == 5, bad.stdout + bad.stderr + daemon.logs()
    assert "running reader refused" in bad.stderr and "not on the server" in bad.stderr, bad.stderr
    request = state.position_request_list("source:e2e")[-1]
    assert request["status"] == "failed" and request["error_kind"] == "position", request
    assert not [a for a in state.audit_log(10) if a["target"] == "source:e2e"]  # nothing moved, nothing audited

    # The admin API: the same request, token required; the daemon answers through the request's status.
    status, body = post(port, "/api/offsets", {"gtid": "0-1-999999999999"}, token=None)
    assert status == 401, body
    status, body = post(port, "/api/offsets", {"gtid": "0-1-999999999999", "who": "e2e", "reason": "api test"})
    assert status == 202, body

    def finished():
        code, row = get(port, body["poll"], TOKEN)
        row = orjson.loads(row)
        return row if code == 200 and row["status"] not in ("requested", "applying") else None

    row = wait_until(finished, timeout=30, interval=0.3, message="the daemon to answer the API's request")
    assert row["status"] == "failed" and "not in the binlog" in row["error"] and "admin API token admin (e2e" in row["who"], row

    # The daemon kept streaming from where it was.
    assert daemon.proc.poll() is None, daemon.logs()
    seed(world["params"], members=10, rng_seed=12)
    converge(world, mapper, wait_until, daemon.logs)
    # The reader saves its checkpoint on a timer after the broker confirmed, not with the sinks' writes.
    wait_until(lambda: parse_file_pos(f"{(cp := state.load_checkpoint('e2e')).file}:{cp.pos}").sort_key()
               > parse_file_pos(f"{before.file}:{before.pos}").sort_key(),
               timeout=30, interval=0.3, message="the checkpoint to move past where the refused request found it")

    # Through the API to the head: applied, audited in the API caller's name.
    status, body = post(port, "/api/offsets", {"latest": True, "who": "e2e", "reason": "api latest"})
    assert status == 202, body
    row = wait_until(finished, timeout=30, interval=0.3, message="the daemon to apply the API's request")
    assert row["status"] == "done", row
    audit = next(a for a in state.audit_log(10) if a["target"] == "source:e2e")
    assert audit["who"].startswith("admin API token admin (e2e") and audit["reason"].startswith("api latest"), audit

    # No reader running: nobody would apply it, so the CLI says so at once.
    assert daemon.terminate() == 0
    alone = run_cli(world, "offsets", "set", "--source", "--latest", "--via-daemon")
    assert alone.returncode == 1 and "no running reader" in alone.stderr, alone.stdout + alone.stderr


def test_a_sink_is_replayed_by_the_daemon_running_its_worker(daemon_world, wait_until):
    import psycopg
    from e2e_support import crm_rows, diff, source_rows

    world, daemon, state, mapper = daemon_world
    sink = world["sink"]
    converge(world, mapper, wait_until, daemon.logs)
    t0 = int(time.time()) + 1
    wait_until(lambda: time.time() >= t0 + 0.2, timeout=3, interval=0.05, message="the next second")
    conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                           database=world["db"], autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM members WHERE deleted = 0 ORDER BY id LIMIT 10")
        ids = [r[0] for r in cur.fetchall()]
        for i in ids:
            cur.execute("UPDATE members SET city = %s WHERE id = %s", (f"After T {i}", i))
    converge(world, mapper, wait_until, daemon.logs)
    with psycopg.connect(world["pg_url"], autocommit=True) as pg:  # damage behind the service's back
        pg.execute(f'DELETE FROM "{world["schema"]}".member WHERE member_id = ANY(%s)', (ids[:5],))
    assert len(diff(source_rows(world, mapper), crm_rows(world, mapper))) == 5
    when = dt.datetime.fromtimestamp(t0, dt.UTC).isoformat()

    refused = run_cli(world, "offsets", "set", "--sink", sink, "--timestamp", when)
    assert refused.returncode == 4 and "--via-daemon" in refused.stderr, refused.stdout + refused.stderr
    dry = run_cli(world, "offsets", "set", "--sink", sink, "--timestamp", when, "--via-daemon", "--dry-run")
    assert dry.returncode == 0 and "would replay" in dry.stdout and "the running worker" in dry.stdout, dry.stdout
    assert state.position_request_list(f"sink:{sink}") == []

    replayed = run_cli(world, "offsets", "set", "--sink", sink, "--timestamp", when, "--via-daemon", "--reason", "sink test")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr + daemon.logs()
    assert "replayed by the running worker" in replayed.stdout, replayed.stdout
    assert not diff(source_rows(world, mapper), crm_rows(world, mapper))  # done when the command returns
    audit = next(a for a in state.audit_log(10) if a["target"] == f"sink:{sink}")
    assert audit["who"] == who() and audit["reason"].startswith("sink test") and "replayed to event-log offset" in audit["to_value"]
    assert state.load_sink_rewind(sink) is None  # nothing left pending for `cdc replay`
    assert daemon.proc.poll() is None, daemon.logs()
