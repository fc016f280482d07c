"""RabbitMQ, PostgreSQL and the source MariaDB stopped and started mid-stream, under a continuous workload.

The daemon (reader and CRM sink in one process) must ride out each outage by itself: the reader
reopens from its checkpoint, the sink worker reconnects, and the CRM ends equal to the source with
the binlog's last version of every key.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.state.store import SqlStateStore
from e2e_support import Daemon, binlog_last_versions, crm_versions, converge


def _pg_cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)


def restart_postgresql() -> None:
    subprocess.run([*_pg_cluster(), "restart"], check=True, capture_output=True, timeout=120)


def restart_mariadb() -> None:
    """Stop the binlog source and start it again with the very same command line.

    Whoever started it (this checkout's deploy/dev-services.sh or another checkout's), it comes back
    with the same data directory and binlog, as after a crash-free restart in production.
    """
    import time

    import pymysql

    before = _uptime()
    conn = pymysql.connect(host="127.0.0.1", port=_port(), user="root")
    with conn.cursor() as cur:
        cur.execute("SELECT @@pid_file")
        pid = int(Path(cur.fetchone()[0]).read_text().strip())
    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    with conn.cursor() as cur:
        cur.execute("SHUTDOWN")
    conn.close()
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the old process's exit, with a deadline
    subprocess.Popen([c.decode() for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    while time.monotonic() < deadline:
        try:
            assert _uptime() < before, "the source MariaDB did not restart"
            return
        except pymysql.err.OperationalError:
            time.sleep(0.1)
    raise AssertionError("the source MariaDB did not come back within 60 s")


def _port() -> int:
    return int(os.environ.get("CDC_SOURCE__PORT", "3307"))


def _uptime() -> int:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=_port(), user="root")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Uptime'")
            return int(cur.fetchone()[1])
    finally:
        conn.close()


@pytest.mark.parametrize("restart", [restart_rabbitmq, restart_postgresql, restart_mariadb],
                         ids=["rabbitmq", "postgresql", "mariadb"])
def test_the_daemon_rides_out_a_service_restart(restart, world_factory, wait_until):
    world = world_factory("snapshot: {mode: never}")
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        start = wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{daemon.logs()}")
        seed(world["params"], members=80, rng_seed=51)
        workload = Workload(world["params"], rate=200, max_ops=50_000, rng_seed=52)
        runner = threading.Thread(target=workload.run)
        runner.start()
        wait_until(lambda: workload.result.total_ops > 200, timeout=60, message="workload progress")
        restart()
        cp = state.load_checkpoint("e2e")
        wait_until(lambda: state.load_checkpoint("e2e") != cp, timeout=90, message=f"progress after the restart\n{daemon.logs()}")
        wait_until(lambda: workload.result.total_ops > 600, timeout=60, message="more workload after the restart")
        workload.stop()
        runner.join(60)
        converge(world, mapper, wait_until, daemon.logs)
        assert crm_versions(world) == binlog_last_versions(world, mapper, start)
        assert daemon.proc.poll() is None, "the daemon recovered by itself"
        assert daemon.terminate() == 0
    finally:
        daemon.stop_if_running()
