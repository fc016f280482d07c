"""The state store on PostgreSQL while that PostgreSQL restarts (a private server, never the shared one):
every write made during the restart lands once the server is back, none raises the driver's exception;
an outage longer than the store's retry budget is a TransientError naming the store without its password."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from private_postgres import PrivatePostgres

from cdc.domain.errors import TransientError
from cdc.domain.positions import Checkpoint, SinkOffset
from cdc.source.schema_history import SchemaHistory, parse_ddl
from cdc.state.store import SqlStateStore

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))


@pytest.fixture(scope="module")
def private_pg():
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_writes_during_a_restart_all_land_and_none_raises(private_pg, wait_until):
    print(f"seed {SEED} (set CDC_TEST_SEED to replay)")
    rng = random.Random(SEED)
    store = SqlStateStore(private_pg.url)
    history = SchemaHistory(store)
    sid = store.snapshot_create("restart-src", "db", "t", None, 1000)
    written: dict[str, int] = {"checkpoint": 0, "offset": 0, "snapshot": 0, "ddl": 0}
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(kind: str) -> None:
        n = 0
        while not stop.is_set():
            n += rng.randint(1, 7)
            try:
                if kind == "checkpoint":
                    store.save_checkpoint("restart-src", Checkpoint(file="mysql-bin.000001", pos=n, gtid=f"0-1-{n}", ts_ms=n))
                elif kind == "offset":
                    store.save_sink_offset("restart-sink", SinkOffset(version=n, file="mysql-bin.000001", pos=n, ts_ms=n,
                                                                      applied_ms=n))
                elif kind == "snapshot":
                    store.snapshot_update(sid, status="running", rows_done=n, last_key=f"[{n}]")
                else:
                    history.record("restart-src", parse_ddl(f"ALTER TABLE t{n} ADD COLUMN c INT", "db"), "mysql-bin.000001",
                                   n, None, n)
            except BaseException as exc:  # noqa: BLE001 - what this test is about
                errors.append(exc)
                return
            written[kind] = n
            time.sleep(0.01)  # paced writers, as the checkpointer and the sink workers are

    threads = [threading.Thread(target=write, args=(kind,)) for kind in written]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(written.values()), timeout=20, message="every writer to have written")
        before = dict(written)
        private_pg.stop()
        down_at = time.monotonic()
        wait_until(lambda: time.monotonic() - down_at > 2 + rng.random() * 2, timeout=10, message="an outage of 2-4 s")
        private_pg.start()
        wait_until(lambda: all(written[k] > before[k] for k in written), timeout=30,
                   message=f"every writer to go on after the restart ({errors})")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, f"a state-store write raised during the restart: {errors[0]!r}"
    assert store.load_checkpoint("restart-src").pos == written["checkpoint"]
    assert store.load_sink_offset("restart-sink").version == written["offset"]
    assert next(s for s in store.snapshot_list("restart-src") if s["id"] == sid)["rows_done"] == written["snapshot"]
    recorded = [e["pos"] for e in history.entries("restart-src")]
    assert recorded == sorted(set(recorded)) and recorded[-1] == written["ddl"], "a DDL recorded twice or lost"
    store.close()


def test_an_outage_longer_than_the_retries_is_transient_and_hides_the_password(private_pg):
    password = f"pw-{random.Random(SEED).randrange(10**9)}-secret"  # trust authentication: accepted, ignored
    url = private_pg.url.replace("postgres@", f"postgres:{password}@")
    store = SqlStateStore(url, retry_s=1.5)
    store.save_sink_offset("outage-sink", SinkOffset(version=1, file="mysql-bin.000001", pos=1, ts_ms=1, applied_ms=1))
    private_pg.stop()
    try:
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            store.save_sink_offset("outage-sink", SinkOffset(version=2, file="mysql-bin.000001", pos=2, ts_ms=2, applied_ms=2))
        assert time.monotonic() - started >= 1.4, "gave up before its retry budget"
        message = str(caught.value)
        assert password not in message and "state store" in message and str(private_pg.port) in message, message
    finally:
        private_pg.start()
    store.save_sink_offset("outage-sink", SinkOffset(version=3, file="mysql-bin.000001", pos=3, ts_ms=3, applied_ms=3))
    assert store.load_sink_offset("outage-sink").version == 3
    store.close()


def test_the_webhook_sink_saves_its_offset_across_a_restart(private_pg, event_factory, wait_until):
    """A batch applied while the state store is down: its offset lands when the server is back, the sink
    raises nothing (its worker used to die of the driver's OperationalError out of the offset save)."""
    import http.server

    from cdc.sinks.webhook import WebhookSink, WebhookSinkConfig

    class Accept(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    config = WebhookSinkConfig(endpoints={"rcv": {"url": f"http://127.0.0.1:{receiver.server_address[1]}/", "secret": "s"}},
                               state_url=private_pg.url)
    sink = WebhookSink(f"hook-{SEED}", config)
    sink.open()
    try:
        first = [event_factory(key=k) for k in range(5)]
        sink.apply(first)
        private_pg.stop()
        outcome: list = []
        later = [event_factory(key=k) for k in range(5)]
        applying = threading.Thread(target=lambda: outcome.append(_outcome(sink.apply, later)))
        applying.start()
        down_at = time.monotonic()
        wait_until(lambda: time.monotonic() - down_at > 2, timeout=5, message="an outage of 2 s")
        private_pg.start()
        applying.join(30)
        assert outcome == [None], f"the batch applied during the restart raised: {outcome}"
        assert sink.read_offset().version == max(e.version for e in later)
    finally:
        sink.close()
        receiver.shutdown()
        receiver.server_close()


def _outcome(fn, *args) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        return exc
    return None
