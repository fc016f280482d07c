"""Readiness semantics (cdc.runtime.health) with small fakes of the daemon's parts; and log context."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from types import SimpleNamespace

from cdc.domain.positions import Checkpoint
from cdc.runtime.health import Health, reader_check, sink_check
from cdc.runtime.logs import bind_role, setup_logging


class FakeLease:
    def __init__(self, holder: str | None, owner: str = "me") -> None:
        self.name, self.owner = "reader:legacy", owner
        self.state = SimpleNamespace(lease_holder=lambda _name: {"owner": holder} if holder else None)


def reader_daemon(state="active", last_event_ago=1.0, persisted_ago=1.0, pending=False, failed=False, holder=None):
    now = time.monotonic()
    cp = Checkpoint(file="mysql-bin.000001", pos=100, ts_ms=0)
    pipeline = SimpleNamespace(
        reader=SimpleNamespace(last_event_at=now - last_event_ago),
        publisher=SimpleNamespace(failed=failed, error="connection reset"),
        read_position=Checkpoint(file="mysql-bin.000001", pos=200, ts_ms=0) if pending else cp,
        persisted=cp, persisted_at=now - persisted_ago,
    )
    return SimpleNamespace(reader_state=state, reader_lease=FakeLease(holder), pipeline=pipeline if state == "active" else None)


def check(daemon) -> tuple[bool, str]:
    return reader_check(daemon, heartbeat_s=1.0, stall_s=60)()


def test_an_active_reader_streaming_is_ready():
    ok, detail = check(reader_daemon())
    assert ok and detail.startswith("active, checkpoint mysql-bin.000001:100")


def test_a_standby_reader_is_ready_but_one_taking_a_free_lease_is_not():
    assert check(reader_daemon("waiting", holder="other-host:1")) == (True, "standby: lease reader:legacy is held by other-host:1")
    assert check(reader_daemon("waiting", holder=None))[0] is False
    assert check(reader_daemon("starting"))[0] is False


def test_a_silent_stream_a_failed_publisher_or_a_stalled_checkpoint_is_unready():
    ok, detail = check(reader_daemon(last_event_ago=30))
    assert not ok and "silent" in detail
    ok, detail = check(reader_daemon(failed=True))
    assert not ok and "connection reset" in detail
    ok, detail = check(reader_daemon(pending=True, persisted_ago=120))
    assert not ok and "stalled" in detail
    # An idle source: the checkpoint is old but nothing is pending, so nothing is stalled.
    assert check(reader_daemon(pending=False, persisted_ago=3600))[0] is True


def test_a_sink_worker_is_ready_while_its_loop_turns_on_an_open_channel():
    worker = SimpleNamespace(_channel=SimpleNamespace(is_open=True), alive_at=time.monotonic())
    assert sink_check(worker)() == (True, "consuming")
    worker.alive_at -= 60
    assert sink_check(worker)()[0] is False
    worker._channel = None
    assert sink_check(worker)() == (False, "not connected to the broker")


def test_health_is_unready_without_roles_and_reports_a_crashing_probe():
    health = Health()
    assert health.readiness().ready is False
    health.register("reader", lambda: 1 / 0)
    report = health.readiness()
    assert not report.ready and "ZeroDivisionError" in report.roles["reader"]["detail"]


def test_log_lines_carry_the_role_and_extra_context():
    setup_logging("json", "INFO")
    stream = io.StringIO()
    logging.getLogger().handlers[0].stream = stream

    def sink_thread():
        bind_role("sink:crm", "legacy")
        logging.getLogger("cdc.sinks.worker").warning("dead-lettering", extra={"entity": "member", "key": "42"})

    thread = threading.Thread(target=sink_thread)
    thread.start()
    thread.join()
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["sink"], line["entity"], line["key"]) == ("crm", "member", "42")
