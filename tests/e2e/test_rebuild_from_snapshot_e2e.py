"""Rebuilding one sink from empty with a snapshot plus a replay from the snapshot's start, with the
real daemon and CLI (the runbook's "Rebuilding a sink from empty" when the event log no longer
reaches back to the sink's beginning).

Two CRM sinks replicate the same source. One is emptied while its worker is stopped. The operator
requests a snapshot of every mapped table (published to every sink) and replays that sink from the
event log starting just before the snapshot, while the source keeps changing: the snapshot's rows
give the base, the replay brings them and every later change, and the sink equals the source before
its worker even runs again. The other sink keeps equal to the source throughout.
"""

from __future__ import annotations

import datetime as dt

import pymysql
import pytest
from e2e_support import (
    Daemon,
    crm_equals_source,
    crm_rows,
    diff,
    drop_extra_sink,
    run_cli,
    source_rows,
    world_with_other_crm_sink,
)

from cdc.demo.seed import seed
from cdc.mapping import Mapper, load_mappings
from cdc.sinks.base import SinkContext
from cdc.sinks.crm import CrmSink, CrmSinkConfig
from cdc.state.store import SqlStateStore


@pytest.mark.parametrize("batch_events", [1, 20], ids=["one-event-a-message", "batch-messages"])
def test_an_emptied_sink_is_rebuilt_by_snapshot_plus_replay_and_the_other_sink_stays_equal(world_factory, pg_url, wait_until, batch_events):
    world, other = world_with_other_crm_sink(world_factory, pg_url, broker=f"batch_events: {batch_events}")
    sink, schema = world["sink"], world["schema"]
    other_world = dict(world, sink=other, schema=other)
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    main = Daemon(world, ["reader", f"sink:{other}"])
    worker = Daemon(world, [f"sink:{sink}"])
    main.start()
    worker.start()

    try:
        wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{main.logs()}")
        seed(world["params"], members=60, rng_seed=21)
        wait_until(lambda: crm_equals_source(world, mapper) and crm_equals_source(other_world, mapper), timeout=90, interval=0.5,
                   message=f"both sinks to equal the source\n{main.logs()}\n{worker.logs()}")

        # The sink is lost: worker stopped, store emptied.
        assert worker.terminate() == 0
        crm = CrmSink(sink, CrmSinkConfig(url=world["pg_url"], schema_name=schema), SinkContext(entities=mapper.schemas()))
        crm.open()
        crm.reset()
        crm.close()
        assert crm_rows(world, mapper)["member"] == {}

        # A snapshot of the entities' tables, to every sink, while the source keeps changing.
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
        snap = run_cli(world, "snapshot", "start", f"{world['db']}.members", f"{world['db']}.event_registrations", "--watch")
        assert snap.returncode == 0, snap.stdout + snap.stderr + main.logs()
        admin = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                                database=world["db"], autocommit=True)
        with admin, admin.cursor() as cur:
            cur.execute("SELECT id FROM members WHERE deleted = 0 ORDER BY id LIMIT 8")
            for (member_id,) in cur.fetchall():
                cur.execute("UPDATE members SET city = %s WHERE id = %s", (f"After snapshot {member_id}", member_id))
        seed(world["params"], members=5, rng_seed=22)  # new rows after the snapshot
        # The other sink got the snapshot and the changes: published, so in the event log too.
        wait_until(lambda: crm_equals_source(other_world, mapper), timeout=90, interval=0.5, message=f"the other sink to catch up\n{main.logs()}")

        # Replay only from the snapshot's start: everything older comes from the snapshot's rows.
        replayed = run_cli(world, "replay", "--sink", sink, "--from", start.isoformat())
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert not diff(source_rows(world, mapper), crm_rows(world, mapper))  # before its worker runs again
        assert crm_equals_source(other_world, mapper)

        worker.start()
        wait_until(lambda: crm_equals_source(world, mapper), timeout=60, interval=0.5, message=f"the rebuilt sink with its worker\n{worker.logs()}")
        clean = run_cli(world, "verify")
        assert clean.returncode == 0, clean.stdout + clean.stderr
    finally:
        main.stop_if_running()
        worker.stop_if_running()
        state.close()
        drop_extra_sink(world, other)

