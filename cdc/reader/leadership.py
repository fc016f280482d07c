"""Reader high availability: one active reader per source, the others on standby.

The active reader holds the lease ``reader:<source>`` in the state store and renews it every
third of its ttl. A standby polls until the lease is free or has expired (its holder was killed
or hung), takes it and resumes from the checkpoint. A reader that cannot renew in time stops
streaming and stops writing the checkpoint at once (fencing), then goes back to standby. Any
event published twice around a failover carries the same version, so sinks ignore the repeat.

Failover takes at most ``source.lease_ttl_s`` plus the reader's start-up (a couple of seconds); a
reader restarted on the same host after its predecessor died takes the lease over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cdc.state.lease import is_stale, new_owner
from cdc.state.store import StateStore

log = logging.getLogger("cdc.ha")


class Lease:
    def __init__(self, state: StateStore, name: str, ttl_s: float, owner: str | None = None) -> None:
        self.state = state
        self.name = name
        self.ttl_s = ttl_s
        self.owner = owner or new_owner("reader")
        self.lost = threading.Event()

    def wait_for(self, stop: threading.Event) -> bool:
        """Block until this process holds the lease (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self.state.acquire_lease(self.name, self.owner, self.ttl_s):
                    self.lost.clear()
                    log.info("ha: lease %s taken by %s; active", self.name, self.owner)
                    return True
                holder = self.state.lease_holder(self.name)
                if holder and is_stale(holder["owner"]):
                    # Its holder was a process of this host that no longer exists (killed, crashed):
                    # no need to wait for the ttl.
                    log.info("ha: lease %s was held by %s, which is gone; taking it over", self.name, holder["owner"])
                    self.state.release_lease(self.name, holder["owner"])
                    continue
            except Exception as exc:  # noqa: BLE001 - the state store may be briefly unreachable
                log.warning("ha: cannot reach the state store for lease %s: %s", self.name, exc)
                holder = None
            if not announced:
                log.info("ha: standing by; lease %s is held by %s", self.name, holder["owner"] if holder else "?")
                announced = True
            stop.wait(self.ttl_s / 4)
        return False

    def keep(self, stop: threading.Event, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in the background until ``stop``; call ``on_lost`` if the lease cannot be kept."""

        def renew() -> None:
            last_ok = time.monotonic()
            while not stop.wait(self.ttl_s / 3):
                try:
                    if self.state.acquire_lease(self.name, self.owner, self.ttl_s):
                        last_ok = time.monotonic()
                        continue
                    reason = "another reader took it"
                except Exception as exc:  # noqa: BLE001 - retried until the lease would expire
                    if time.monotonic() - last_ok < self.ttl_s * 0.7:
                        log.warning("ha: renewing lease %s failed (%s); retrying", self.name, exc)
                        continue
                    reason = f"the state store did not answer: {exc}"
                log.error("ha: lost lease %s (%s); stopping this reader", self.name, reason)
                self.lost.set()
                on_lost()
                return

        thread = threading.Thread(target=renew, name=f"lease-{self.name}", daemon=True)
        thread.start()
        return thread

    def holds(self) -> bool:
        return not self.lost.is_set()

    def release(self) -> None:
        try:
            self.state.release_lease(self.name, self.owner)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("ha: could not release lease %s (%s); it expires in %ss", self.name, exc, self.ttl_s)

