"""Ownership leases: at most one live owner per name, kept in the state store.

A lease is a row ``(name, owner, deadline)``. Its owner must renew it before the deadline; once
the deadline has passed anyone may take it. Names in use:

``reader:<source>``
    held by the process whose reader streams that source (the active reader; standbys wait for it,
    see :mod:`cdc.reader.leadership`). Whoever holds it owns the source's checkpoint.
``sink:<name>`` (or ``sink:<name>/<worker index>`` for a sink shared by several workers)
    held by each process running a worker of that sink.

``cdc offsets set/reset`` refuse to move a position while its lease has a live holder, naming the
holder. Owners are ``host:pid:random``, so a lease left by a process of this host that no longer
exists is recognised as stale (:func:`is_stale`) without waiting for its deadline.

    leases = Leases(state)
    if leases.acquire("reader:legacy", owner, ttl_s=10):   # take (or renew) for 10 s
        ...; leases.renew("reader:legacy", owner, 10)       # False once someone else took it
        leases.release("reader:legacy", owner)
    leases.holder("reader:legacy")                          # LeaseHolder or None
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from cdc.state.store import StateStore


def reader_lease(source: str) -> str:
    return f"reader:{source}"


def sink_lease(sink: str, worker_index: int = 0, workers: int = 1) -> str:
    return f"sink:{sink}" if workers <= 1 else f"sink:{sink}/{worker_index}"


def new_owner(role: str = "") -> str:
    """``host:pid:random[:role]``: unique, and tells a stale lease of this host from a live one."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    return f"{owner}:{role}" if role else owner


@dataclass(frozen=True)
class LeaseHolder:
    name: str
    owner: str
    expires_at: float  # epoch seconds
    acquired_at: float

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.expires_at - time.time())

    def describe(self) -> str:
        return f"{self.owner} (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.acquired_at))}, " \
               f"expires in {self.seconds_left:.0f}s unless renewed)"


class Leases:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take ``name`` for ``ttl`` seconds (or extend it if ``owner`` holds it); False while another live owner does."""
        return self.state.acquire_lease(name, owner, ttl)

    def renew(self, name: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease; False if it expired and another owner took it meanwhile."""
        return self.state.acquire_lease(name, owner, ttl)

    def release(self, name: str, owner: str) -> None:
        """Give the lease up at once (no-op unless ``owner`` holds it)."""
        self.state.release_lease(name, owner)

    def holder(self, name: str) -> LeaseHolder | None:
        """The live holder of ``name``: None if free, expired, or left by a dead process of this host."""
        held = self.state.lease_holder(name)
        if held is None or is_stale(held["owner"]):
            return None
        return LeaseHolder(name, held["owner"], float(held["expires_at"]), float(held["acquired_at"]))

    def hold(self, name: str, owner: str, ttl: float, stop: threading.Event) -> threading.Thread:
        """Renew ``name`` every ttl/3 in a daemon thread until ``stop`` is set, then release it.

        For locks that are advisory for operators (sink workers): a failed renewal is retried.
        """

        def keep() -> None:
            while not stop.wait(ttl / 3):
                try:
                    self.renew(name, owner, ttl)
                except Exception:  # noqa: BLE001 - the state store may be briefly unreachable; retry next tick
                    pass
            try:
                self.release(name, owner)
            except Exception:  # noqa: BLE001 - it expires by itself
                pass

        self.acquire(name, owner, ttl)
        thread = threading.Thread(target=keep, name=f"lease-{name}", daemon=True)
        thread.start()
        return thread


def is_stale(owner: str) -> bool:
    """True when ``owner`` names a process of this host that no longer runs (killed, crashed)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
