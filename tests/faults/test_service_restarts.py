"""RabbitMQ, PostgreSQL and the source MariaDB stopped and started mid-stream, under a continuous workload.

The daemon (reader and CRM sink in one process) must ride out each outage by itself: the reader
reopens from its checkpoint, the sink worker reconnects, and the CRM ends equal to the source with
the binlog's last version of every key.
"""

from __future__ import annotations

import threading

import pytest
from e2e_support import Daemon, binlog_last_versions, converge, crm_versions
from services import restart_mariadb, restart_postgresql, restart_rabbitmq

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.state.store import SqlStateStore


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
