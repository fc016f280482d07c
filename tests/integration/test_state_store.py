"""The state store on its two back ends: a SQLite file (default) and PostgreSQL."""

import uuid

import pytest

from cdc.domain.positions import Checkpoint, SinkOffset
from cdc.state.store import SqlStateStore, open_state_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path}/sub/state.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_state_store(url)
    yield s
    s.close()


def test_checkpoint_round_trip_and_overwrite(store):
    source = f"src-{uuid.uuid4().hex[:6]}"
    assert store.load_checkpoint(source) is None
    store.save_checkpoint(source, Checkpoint(file="mysql-bin.000001", pos=4, gtid="0-1-5", ts_ms=10))
    store.save_checkpoint(source, Checkpoint(file="mysql-bin.000002", pos=900, gtid="0-1-9,1-2-3", ts_ms=20))
    assert store.load_checkpoint(source) == Checkpoint(file="mysql-bin.000002", pos=900, gtid="0-1-9,1-2-3", ts_ms=20)


def test_the_end_of_what_was_published_round_trips_and_is_forgotten(store):
    source = f"src-{uuid.uuid4().hex[:6]}"
    assert store.load_published(source) is None
    store.save_published(source, Checkpoint(file="mysql-bin.000001", pos=4))
    store.save_published(source, Checkpoint(file="mysql-bin.000003", pos=77, gtid="0-1-9"))
    assert store.load_published(source) == Checkpoint(file="mysql-bin.000003", pos=77, gtid="0-1-9")
    store.save_published(source, None)
    assert store.load_published(source) is None


def test_sink_offsets_and_audit(store):
    sink = f"sink-{uuid.uuid4().hex[:6]}"
    offset = SinkOffset(version=2**62 + 7, file="mysql-bin.000001", pos=4, ts_ms=1, applied_ms=2)
    store.save_sink_offset(sink, offset)
    assert store.load_sink_offset(sink) == offset
    store.record_audit("ops", f"sink:{sink}", "a", "b", "test")
    assert any(r["target"] == f"sink:{sink}" and r["to_value"] == "b" for r in store.audit_log(20))


def test_a_checkpoint_survives_reopening_the_file(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    SqlStateStore(url).save_checkpoint("s", Checkpoint(file="b.000003", pos=77))
    assert SqlStateStore(url).load_checkpoint("s").pos == 77


def test_a_lease_has_one_live_owner_and_expires_when_not_renewed(store):
    name = f"reader:{uuid.uuid4().hex[:6]}"
    assert store.acquire_lease(name, "a", ttl_s=0.5)
    assert not store.acquire_lease(name, "b", ttl_s=0.5)
    assert store.acquire_lease(name, "a", ttl_s=0.5)  # renewal
    assert store.lease_holder(name)["owner"] == "a"
    import time

    deadline = time.monotonic() + 5
    while store.lease_holder(name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the expiry with a deadline
    assert store.acquire_lease(name, "b", ttl_s=5)
    assert not store.acquire_lease(name, "a", ttl_s=5)
    store.release_lease(name, "a")  # not the owner: no effect
    assert store.lease_holder(name)["owner"] == "b"
    store.release_lease(name, "b")
    assert store.lease_holder(name) is None


def test_a_first_checkpoint_and_its_snapshot_requests_are_saved_together_or_not_at_all(store, monkeypatch):
    """Issue 19 (1): what a first start saves (cdc.reader.pipeline) is one transaction: when a part of it fails
    (a SIGKILL, the store lost, here the checkpoint's insert refused after the snapshots were inserted),
    neither the checkpoint nor any snapshot request is left, so the next start plans its snapshots again."""
    from cdc.state import store as store_module

    source = f"src-{uuid.uuid4().hex[:6]}"
    cp = Checkpoint(file="mysql-bin.000001", pos=4, gtid="0-1-5", ts_ms=10)
    planned = [("legacy", "members", "email LIKE '%@x.org'", 5), ("legacy", "orders", None, 0)]
    real_insert = store_module.source_checkpoints.insert

    def cut(*args, **kwargs):
        raise RuntimeError("killed while saving the first checkpoint")

    monkeypatch.setattr(store_module.source_checkpoints, "insert", cut)
    with pytest.raises(RuntimeError):
        store.save_checkpoint_with_snapshots(source, cp, planned)
    monkeypatch.setattr(store_module.source_checkpoints, "insert", real_insert)
    assert store.load_checkpoint(source) is None and store.snapshot_list(source) == []

    ids = store.save_checkpoint_with_snapshots(source, cp, planned)
    assert store.load_checkpoint(source) == cp
    assert [(r["id"], r["db"], r["tbl"], r["where_clause"], r["rows_total"], r["status"]) for r in store.snapshot_list(source)] == [
        (ids[0], "legacy", "members", "email LIKE '%@x.org'", 5, "requested"), (ids[1], "legacy", "orders", None, 0, "requested")]
    # when_needed: the unfinished ones are superseded in the same transaction, the new checkpoint overwrites
    store.snapshot_update(ids[0], status="running")
    new = Checkpoint(file="mysql-bin.000002", pos=4)
    again = store.save_checkpoint_with_snapshots(source, new, [("legacy", "members", None, 7)], supersede="superseded")
    rows = {r["id"]: r for r in store.snapshot_list(source)}
    assert store.load_checkpoint(source) == new
    assert [rows[i]["status"] for i in ids] == ["cancelled", "cancelled"] and rows[ids[0]]["error"] == "superseded"
    assert rows[again[0]]["status"] == "requested" and rows[again[0]]["rows_total"] == 7


def test_processes_opening_a_new_postgresql_store_at_once_all_succeed(pg_url):
    # The chaos harness (seed 1956198221) met it: the daemon and `cdc snapshot start` creating the state
    # tables at the same moment; PostgreSQL let both pass create_all's existence check and the second
    # CREATE TABLE failed on pg_type's unique index.
    import threading

    import psycopg
    import sqlalchemy as sa

    base, _, _ = pg_url.rpartition("/")
    name = f"state_race_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        for _ in range(3):
            url = f"{base}/{name}"
            engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
            with engine.begin() as conn:  # a new store each round
                conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
            errors: list[BaseException] = []
            barrier = threading.Barrier(6)

            def open_one() -> None:
                try:
                    barrier.wait()
                    open_state_store(url).close()
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=open_one) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not errors, errors[0]
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
