"""Legacy MariaDB -> daemon (real process) -> RabbitMQ -> CRM, with SIGKILLs mid-workload.

The outcome a user cares about: after inserts, updates, deletes, multi-row and multi-table
transactions, and the daemon killed with SIGKILL and restarted, the CRM equals the source row by
row, and every CRM row carries the version of the last change of its key in the binlog (nothing
lost, nothing stale, nothing applied out of order); with one event a message and with batch messages.
"""

from __future__ import annotations

import threading

import pytest
from e2e_support import ENTITIES, Daemon, binlog_last_versions, converge, crm_versions

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.state.store import SqlStateStore


def event_log_counts(world) -> list[int]:
    from cdc.admin.broker import Broker
    from cdc.admin.eventlog import EventLogReader
    from cdc.broker.topology import HEADER_COUNT, event_log

    with Broker(world["amqp_url"]) as broker:
        reader = EventLogReader(broker, event_log(f"cdc.e2e.{world['uid']}"))
        return [m.headers.get(HEADER_COUNT, 1) for batch in reader.read("first", reader.tail()) for m in batch]


@pytest.mark.parametrize("batch_events", [1, 25], ids=["one-event-a-message", "batch-messages"])
def test_workload_with_sigkills_ends_exactly_in_the_crm(world_factory, wait_until, batch_events):
    # Streaming only: a snapshot's rows carry the snapshot's version, not a binlog change's.
    world = world_factory("snapshot: {mode: never}", broker=f"batch_events: {batch_events}")
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

        source = converge(world, mapper, wait_until, daemon.logs)
        assert len(source["member"]) > 100 and len(source["event_registration"]) > 10

        # Every key's CRM version is the version of its last change in the binlog.
        last = binlog_last_versions(world, mapper, start)
        versions = crm_versions(world)
        for entity in ENTITIES:
            assert versions[entity] == last[entity], f"{entity}: CRM versions differ from the binlog's last changes"
        assert daemon.starts == 4
        counts = event_log_counts(world)  # events per message, as the reader published them
        assert sum(counts) >= sum(len(rows) for rows in source.values())
        assert (max(counts) > 1) == (batch_events > 1) and max(counts) <= batch_events
        assert daemon.terminate() == 0, daemon.logs()
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.kill()
        state.close()
