"""Snapshots through the real daemon: under concurrent writes, after SIGKILL, at run time, after a purge."""

from __future__ import annotations

import subprocess
import sys
import threading

import pymysql
import pytest

from cdc.checkpoint import Checkpoint
from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.state.store import SqlStateStore
from e2e_support import Daemon, converge


def snapshots_done(state, source="e2e"):
    rows = state.snapshot_list(source)
    return rows if rows and all(r["status"] == "done" for r in rows) else None


@pytest.mark.parametrize("batch_events", [1, 50], ids=["one-event-a-message", "batch-messages"])
def test_initial_snapshot_under_concurrent_writes_to_the_same_keys(world_factory, wait_until, batch_events):
    world = world_factory("snapshot: {mode: initial, chunk_size: 100}", broker=f"batch_events: {batch_events}")
    mapper = Mapper(load_mappings(world["mappings"]))
    seed(world["params"], members=800, rng_seed=3)  # before the daemon: only a snapshot can bring these rows
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        workload = Workload(world["params"], rate=300, max_ops=1200, rng_seed=5)  # updates and deletes the same keys
        runner = threading.Thread(target=workload.run)
        runner.start()
        wait_until(lambda: snapshots_done(state), timeout=120, message=f"the snapshots to finish\n{daemon.logs()}")
        runner.join(120)
        source = converge(world, mapper, wait_until, daemon.logs)
        assert len(source["member"]) > 700
        assert {"members", "event_registrations"} <= {r["tbl"] for r in state.snapshot_list("e2e")}
        assert workload.result.rows["updated"] and workload.result.rows["deleted"]
        assert daemon.terminate() == 0
    finally:
        daemon.stop_if_running()


def test_a_killed_snapshot_resumes_from_its_last_chunk(world_factory, wait_until):
    world = world_factory("snapshot: {mode: initial, chunk_size: 250}")
    mapper = Mapper(load_mappings(world["mappings"]))
    seed(world["params"], members=12000, rng_seed=4)
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        def members_progress():
            rows = [r for r in state.snapshot_list("e2e") if r["tbl"] == "members"]
            return rows and rows[0]["rows_done"] >= 1000 and rows[0]["status"] == "running" and rows[0]

        before = wait_until(members_progress, timeout=120, interval=0.02, message=f"snapshot progress\n{daemon.logs()}")
        daemon.kill()
        daemon.start()
        done = wait_until(lambda: snapshots_done(state), timeout=120, message=f"the snapshots to finish\n{daemon.logs()}")
        members = next(r for r in done if r["tbl"] == "members")
        assert f"snapshot {members['id']} of {world['db']}.members: resuming after key" in daemon.logs(1)
        # Resumed, not restarted: at most the chunks in flight at the kill were read twice.
        assert 12000 <= members["rows_done"] < 12000 + 20 * 250, members
        assert before["rows_done"] >= 1000
        converge(world, mapper, wait_until, daemon.logs)
    finally:
        daemon.stop_if_running()


def test_runtime_snapshot_of_one_table_while_streaming(world_factory, wait_until):
    world = world_factory("snapshot: {mode: never}")
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the daemon's first checkpoint\n{daemon.logs()}")
        # Rows written with the binlog off for the session: the stream never sees them.
        conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                               database=world["db"], autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin=0, sql_mode=''")
            cur.executemany("INSERT INTO members (id, email, first_name, status, join_date) VALUES (%s, %s, 'Zoë', 'A', '0000-00-00')",
                            [(9000 + i, f" Hidden{i}@Example.org ") for i in range(300)])
        conn.close()
        seed(world["params"], members=50, rng_seed=9)  # streamed normally, meanwhile
        result = subprocess.run([sys.executable, "-m", "cdc.cli", "snapshot", "start", f"{world['db']}.members", "--watch",
                                 "-c", str(world["config"])], capture_output=True, text=True, timeout=120,
                                env=daemon.env())
        assert result.returncode == 0, result.stdout + result.stderr
        assert "requested" in result.stdout
        source = converge(world, mapper, wait_until, daemon.logs)
        assert "9299" in source["member"] and source["member"]["9299"]["email"] == "hidden299@example.org"
        status = subprocess.run([sys.executable, "-m", "cdc.cli", "snapshot", "status", "--all", "--json", "-c", str(world["config"])],
                                capture_output=True, text=True, timeout=60, env=daemon.env())
        assert '"status": "done"' in status.stdout and '"rows_total": 350' in status.stdout, status.stdout
    finally:
        daemon.stop_if_running()


def test_purged_checkpoint_recovers_by_snapshot_when_needed(world_factory, wait_until):
    world = world_factory("snapshot: {mode: when_needed, chunk_size: 500}")
    mapper = Mapper(load_mappings(world["mappings"]))
    seed(world["params"], members=300, rng_seed=6)
    state = SqlStateStore(world["state_url"])
    lost = Checkpoint(file="mysql-bin.000000", pos=4, gtid=None)  # older than any binlog the server has
    state.save_checkpoint("e2e", lost)
    daemon = Daemon(world)
    daemon.start()
    try:
        wait_until(lambda: snapshots_done(state), timeout=120, message=f"the recovery snapshot\n{daemon.logs()}")
        converge(world, mapper, wait_until, daemon.logs)
        audit = state.audit_log(10)
        assert any(a["from_value"] == lost.describe() and "gone" in a["reason"] for a in audit), audit
    finally:
        daemon.stop_if_running()


def _run_from(world, checkpoint: Checkpoint) -> tuple[int, str, SqlStateStore]:
    """The daemon started with ``checkpoint`` saved: its exit code (it must stop), logs and state store."""
    state = SqlStateStore(world["state_url"])
    state.save_checkpoint("e2e", checkpoint)
    daemon = Daemon(world)
    daemon.start()
    try:
        return daemon.proc.wait(60), daemon.logs(), state
    finally:
        daemon.stop_if_running()


def test_purged_checkpoint_without_when_needed_stops_with_the_way_out(world_factory, wait_until):
    code, logs, _ = _run_from(world_factory("snapshot: {mode: initial}"), Checkpoint(file="mysql-bin.000000", pos=4))
    assert code == 1
    assert "mysql-bin.000000:4" in logs and "oldest binlog still available" in logs and "cdc offsets reset" in logs


def test_a_checkpoint_this_server_never_wrote_stops_the_daemon_even_with_when_needed(world_factory):
    """A promoted replica or RESET MASTER numbers the binlog anew: the daemon must not stream (the sinks
    would ignore every change below their versions) nor recover by itself as for a purged binlog."""
    code, logs, state = _run_from(world_factory("snapshot: {mode: when_needed}"), Checkpoint(file="mysql-bin.999999", pos=4))
    assert code == 1, logs
    assert "before its checkpoint mysql-bin.999999:4" in logs and "every sink would ignore" in logs
    assert state.load_checkpoint("e2e") == Checkpoint(file="mysql-bin.999999", pos=4)  # left for the operator
    assert not state.snapshot_list("e2e")


def _gadgets(world, primary_key: bool) -> None:
    """A mapped table ``gadgets`` of three rows (without a primary key unless asked) in the world's source."""
    (world["mappings"] / "gadget.yaml").write_text(
        f"entity: gadget\nsource: {{db: {world['db']}, table: gadgets}}\nkey: [gadget_id]\n"
        "fields:\n  gadget_id: {column: id, type: integer}\n  label: {column: label, type: string}\n")
    conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root", database=world["db"],
                           autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE gadgets (id INT NOT NULL, label VARCHAR(20))" if not primary_key else
                    "CREATE TABLE gadgets (id INT PRIMARY KEY, label VARCHAR(20))")
        cur.executemany("INSERT INTO gadgets VALUES (%s, %s)", [(1, "one"), (2, "two"), (3, "three")])


def _crm_gadgets(world) -> list:
    import psycopg

    try:
        with psycopg.connect(world["pg_url"]) as conn:
            return conn.execute(f'SELECT gadget_id, label FROM "{world["schema"]}".gadget ORDER BY 1').fetchall()
    except psycopg.errors.UndefinedTable:
        return []


@pytest.mark.parametrize("mode", ["initial", "when_needed"])
def test_a_first_start_refused_for_a_table_without_key_snapshots_it_once_the_key_is_added(world_factory, wait_until, mode):
    """Issue 19 (1): the first start stops for a mapped table without a primary key; it must leave no
    checkpoint behind, so that the start after ALTER TABLE ... ADD PRIMARY KEY snapshots every table (the
    three rows reach the CRM) instead of streaming on from a checkpoint saved without its snapshots."""
    world = world_factory(f"snapshot: {{mode: {mode}, chunk_size: 100}}")
    _gadgets(world, primary_key=False)
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        code = daemon.proc.wait(60)
        assert code != 0 and "gadgets has no primary key" in daemon.logs(0) and "add a primary key" in daemon.logs(0)
        assert state.load_checkpoint("e2e") is None and state.snapshot_list("e2e") == []
        conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                               database=world["db"], autocommit=True)
        with conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE gadgets ADD PRIMARY KEY (id)")
        daemon.start()
        wait_until(lambda: snapshots_done(state), timeout=120, message=f"the snapshots to finish\n{daemon.logs()}")
        assert "gadgets" in {r["tbl"] for r in state.snapshot_list("e2e")}
        wait_until(lambda: _crm_gadgets(world) == [(1, "one"), (2, "two"), (3, "three")], timeout=60,
                   message=f"the three gadgets in the CRM\n{daemon.logs()}")
        assert state.load_checkpoint("e2e") is not None
    finally:
        daemon.stop_if_running()

