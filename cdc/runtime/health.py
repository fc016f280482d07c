"""Liveness and readiness of the daemon's roles, for ``/healthz`` and ``/readyz``.

``/healthz`` (liveness) answers 200 while the process serves requests and is not shutting down:
a failing liveness probe means "restart me", which only a wedged process needs.

``/readyz`` (readiness) answers 200 only when every role of the process is connected and making
progress:

- **reader, active** (holds the source's lease): an event or heartbeat arrived from the binlog
  stream within ``3 x source.heartbeat_s + 5`` seconds (the server sends heartbeats while idle, so
  silence means the stream is not open); the publisher has not failed; and the checkpoint is not
  stalled: when something has been read past the persisted checkpoint, the checkpoint moved within
  ``broker.confirm_timeout_s`` seconds.
- **reader, standby** (another process holds the lease): ready. It is healthy and able to take
  over; marking it unready would let a PodDisruptionBudget count it as already disrupted.
  ``cdc_reader_active`` and the status tell active from standby.
- **reader, starting** (or taking a free lease): not ready.
- **sink worker**: its broker channel is open and its consume loop went round within
  :data:`SINK_STALL_S` seconds. The loop turns at least every ``idle_tick_s`` when the queue is
  empty and after every batch, so it stalls only when a batch cannot be applied (target down,
  retrying) or the broker connection is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[], tuple[bool, str]]

SINK_STALL_S = 30.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    roles: dict[str, dict]


class Health:
    """The probes of one process: one readiness check per role."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.started_at = time.time()

    def register(self, role: str, check: Check) -> None:
        with self._lock:
            self._checks[role] = check

    def alive(self) -> bool:
        return not self.stopping.is_set()

    def readiness(self) -> Readiness:
        with self._lock:
            checks = dict(self._checks)
        roles = {}
        for role, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a probe that crashes reports the role unready
                ok, detail = False, f"probe failed: {exc.__class__.__name__}: {exc}"
            roles[role] = {"ready": ok, "detail": detail}
        ready = bool(roles) and all(r["ready"] for r in roles.values()) and self.alive()
        return Readiness(ready, roles)


def reader_check(daemon, heartbeat_s: float, stall_s: float) -> Check:
    """Readiness of the reader role of ``daemon`` (a cdc.runtime.daemon.Daemon)."""
    silence_s = 3 * heartbeat_s + 5

    def check() -> tuple[bool, str]:
        state, lease = daemon.reader_state, daemon.reader_lease
        if state == "waiting" and lease is not None:
            holder = lease.state.lease_holder(lease.name)
            if holder and holder["owner"] != lease.owner:
                return True, f"standby: lease {lease.name} is held by {holder['owner']}"
            return False, "taking the lease"
        pipeline = daemon.pipeline
        if state != "active" or pipeline is None:
            return False, "starting"
        now = time.monotonic()
        last = pipeline.reader.last_event_at
        if not last or now - last > silence_s:
            ago = f"{now - last:.0f}s ago" if last else "never"
            return False, f"binlog stream silent (last event or heartbeat {ago}); reconnecting"
        publisher = getattr(pipeline, "publisher", None)
        if publisher is not None and publisher.failed:
            return False, f"publisher failed: {publisher.error}"
        pending = pipeline.read_position is not None and pipeline.read_position != pipeline.persisted
        if pending and now - pipeline.persisted_at > stall_s:
            return False, f"checkpoint stalled for {now - pipeline.persisted_at:.0f}s while events are pending confirmation"
        where = pipeline.persisted.describe() if pipeline.persisted else "no checkpoint yet"
        return True, f"active, checkpoint {where}"

    return check


def sink_check(worker, stall_s: float = SINK_STALL_S) -> Check:
    """Readiness of one sink worker (a cdc.sinks.worker.SinkWorker)."""

    def check() -> tuple[bool, str]:
        channel = worker._channel  # noqa: SLF001 - read-only look at the worker's connection state
        if channel is None or not channel.is_open:
            return False, "not connected to the broker"
        idle = time.monotonic() - worker.alive_at
        if idle > stall_s:
            return False, f"no batch applied and no idle turn for {idle:.0f}s (target down or retrying?)"
        return True, "consuming"

    return check
