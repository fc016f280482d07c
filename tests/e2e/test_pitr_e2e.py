"""Point-in-time recovery of one damaged sink, and a rebuild of a sink from empty, with the real CLI.

Two CRM sinks replicate the same source. Rows of one of them are deleted and overwritten behind the
service's back. The operator sees it with `cdc verify`, is refused while that sink's worker runs,
stops the worker, rewinds the sink to a time before the damage, replays it from the event log and
restarts it: the sink equals the source again and the other sink was not touched. Then the same
sink is emptied and rebuilt from the start of the event log.
"""

from __future__ import annotations

import datetime as dt
import time

import psycopg
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


def other_rows(world, schema: str) -> dict:
    with psycopg.connect(world["pg_url"]) as conn:
        rows = conn.execute(f'SELECT member_id, email, city, _version, _updated_at FROM "{schema}".member WHERE NOT _deleted ORDER BY 1').fetchall()
    return {r[0]: r[1:] for r in rows}


@pytest.mark.parametrize("batch_events", [1, 20], ids=["one-event-a-message", "batch-messages"])
def test_damaged_sink_recovers_to_the_source_and_other_sinks_are_untouched(world_factory, pg_url, wait_until, batch_events):
    world, other = world_with_other_crm_sink(world_factory, pg_url, broker=f"batch_events: {batch_events}")
    sink, schema = world["sink"], world["schema"]
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    main = Daemon(world, ["reader", f"sink:{other}"])
    damaged_worker = Daemon(world, [f"sink:{sink}"])
    main.start()
    damaged_worker.start()
    try:
        wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{main.logs()}")
        seed(world["params"], members=80, rng_seed=5)

        wait_until(lambda: crm_equals_source(world, mapper), timeout=90, interval=0.5, message=f"the CRM to equal the source\n{damaged_worker.logs()}")

        # Changes after T: the damage will hit rows changed after T, the recovery rewinds to T.
        t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
        wait_until(lambda: time.time() >= t0.timestamp() + 1.2, timeout=5, message="the next second")
        admin = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                                database=world["db"], autocommit=True)
        with admin.cursor() as cur:
            cur.execute("SELECT id FROM members WHERE deleted = 0 ORDER BY id LIMIT 12")
            ids = [r[0] for r in cur.fetchall()]
            for i in ids:
                cur.execute("UPDATE members SET city = %s WHERE id = %s", (f"Recovered {i}", i))
            cur.execute("UPDATE members SET city = 'last' WHERE id = %s", (ids[-1],))
        wait_until(lambda: crm_equals_source(world, mapper), timeout=60, interval=0.5, message="the CRM to catch up")
        wait_until(lambda: {str(k): v[1] for k, v in other_rows(world, other).items()}
                   == {k: v["city"] for k, v in source_rows(world, mapper)["member"].items()},
                   timeout=60, interval=0.5, message="the other sink to catch up")
        untouched_before = other_rows(world, other)

        # The damage: rows deleted and overwritten in the CRM, behind the service's back.
        deleted, overwritten = [str(i) for i in ids[:3]], [str(i) for i in ids[3:6]]
        with psycopg.connect(world["pg_url"], autocommit=True) as conn:
            conn.execute(f'DELETE FROM "{schema}".member WHERE member_id = ANY(%s)', ([int(i) for i in deleted],))
            conn.execute(f'UPDATE "{schema}".member SET email = \'damaged@example.com\', city = NULL WHERE member_id = ANY(%s)',
                         ([int(i) for i in overwritten],))

        found = run_cli(world, "verify", "--sink", sink, "--entity", "member")
        assert found.returncode == 3, found.stdout + found.stderr
        assert "missing in sink (3)" in found.stdout and "different (3)" in found.stdout, found.stdout

        # The worker owns the sink: refused, nothing changed.
        refused = run_cli(world, "offsets", "set", "--sink", sink, "--timestamp", t0.isoformat())
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "held by" in refused.stderr and state.load_sink_rewind(sink) is None
        assert damaged_worker.terminate() == 0

        dry = run_cli(world, "offsets", "set", "--sink", sink, "--timestamp", t0.isoformat(), "--dry-run")
        assert dry.returncode == 0 and "would move" in dry.stdout and state.load_sink_rewind(sink) is None, dry.stdout + dry.stderr
        moved = run_cli(world, "offsets", "set", "--sink", sink, "--timestamp", t0.isoformat(), "--reason", "pitr test")
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert state.audit_log(1)[0]["reason"] == "pitr test"

        replayed = run_cli(world, "replay", "--sink", sink, "--repair")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert state.load_sink_rewind(sink) is None
        damaged_worker.start()

        assert not diff(source_rows(world, mapper), crm_rows(world, mapper))
        clean = run_cli(world, "verify")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert other_rows(world, other) == untouched_before

        status = run_cli(world, "status", "--json")
        assert status.returncode == 0 and f'"{other}"' in status.stdout, status.stdout + status.stderr

        # Rebuild from empty: the event log still holds every change since the daemon started.
        assert damaged_worker.terminate() == 0
        crm = CrmSink(sink, CrmSinkConfig(url=world["pg_url"], schema_name=schema), SinkContext(entities=mapper.schemas()))
        crm.open()
        crm.reset()
        crm.close()
        assert crm_rows(world, mapper)["member"] == {}
        rebuilt = run_cli(world, "replay", "--sink", sink, "--from", "first")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert not diff(source_rows(world, mapper), crm_rows(world, mapper))
        assert other_rows(world, other) == untouched_before
    finally:
        main.stop_if_running()
        damaged_worker.stop_if_running()
        state.close()
        drop_extra_sink(world, other)

