"""Two readers for one source: one active through the lease, the other standing by.

SIGKILL of the active reader: the standby takes over (at once on the same host, since the dead
holder's pid is gone). A hung active reader (SIGSTOP): the standby takes over once the lease
expires, and the old reader, resumed, finds its lease lost and stops writing. Nothing is lost
and nothing is applied out of order: the CRM ends equal to the source, with the binlog's last
version of every key.
"""

from __future__ import annotations

import signal
import threading
import time

from e2e_support import Daemon, binlog_last_versions, converge, crm_versions

from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.state.store import SqlStateStore

TTL = 3  # source.lease_ttl_s in the e2e world


def test_standby_reader_takes_over_after_a_kill_and_after_a_hang(world_factory, wait_until):
    world = world_factory("snapshot: {mode: never}")
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    a, b, sinks = Daemon(world, ["reader"]), Daemon(world, ["reader"]), Daemon(world, ["sinks"])
    b.tag = "reader-b"
    a.start()
    sinks.start()
    try:
        start = wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{a.logs()}")
        b.start()
        wait_until(lambda: "standing by" in b.logs(0), timeout=30, message=f"reader B on standby\n{b.logs()}")
        seed(world["params"], members=80, rng_seed=41)
        workload = Workload(world["params"], rate=200, max_ops=50_000, rng_seed=42)
        runner = threading.Thread(target=workload.run)
        runner.start()

        def moved_since(cp):
            return lambda: state.load_checkpoint("e2e") != cp

        # 1. The active reader is killed: B takes over.
        wait_until(moved_since(state.load_checkpoint("e2e")), timeout=30, message="progress under A")
        a.kill()
        killed_at, cp = time.monotonic(), state.load_checkpoint("e2e")
        wait_until(moved_since(cp), timeout=30, message=f"B to take over\n{b.logs()}")
        takeover_after_kill = time.monotonic() - killed_at
        assert state.lease_holder("reader:e2e")["owner"].split(":")[1] == str(b.proc.pid)

        # 2. B hangs (SIGSTOP): A, restarted, waits for the lease to expire, then takes over.
        a.start()
        wait_until(lambda: "standing by" in a.logs(1), timeout=30, message=f"A on standby\n{a.logs()}")
        b.proc.send_signal(signal.SIGSTOP)
        hung_at, cp = time.monotonic(), state.load_checkpoint("e2e")
        # B's last renewal may have been up to a third of the ttl before the SIGSTOP (or, in flight,
        # land just after this read): its lease runs out at this expiry or later, and A must not take
        # it before. The time from the SIGSTOP alone says nothing about that.
        hung_lease = state.lease_holder("reader:e2e")
        assert hung_lease["owner"].split(":")[1] == str(b.proc.pid)
        wait_until(moved_since(cp), timeout=TTL + 30, message=f"A to take over from the hung B\n{a.logs()}")
        takeover_after_hang = time.monotonic() - hung_at
        taken = state.lease_holder("reader:e2e")
        assert taken["owner"].split(":")[1] == str(a.proc.pid)
        assert taken["acquired_at"] >= hung_lease["expires_at"], (
            f"A took B's lease {hung_lease['expires_at'] - taken['acquired_at']:.2f}s before it expired")
        b.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: "lost lease" in b.logs(0), timeout=TTL * 3, message=f"B to notice its lost lease\n{b.logs()}")
        assert state.lease_holder("reader:e2e")["owner"].split(":")[1] == str(a.proc.pid)

        workload.stop()
        runner.join(60)
        converge(world, mapper, wait_until, lambda: a.logs() + b.logs())
        assert crm_versions(world) == binlog_last_versions(world, mapper, start)
        print(f"takeover after SIGKILL: {takeover_after_kill:.1f}s; after a hang: {takeover_after_hang:.1f}s (ttl {TTL}s)")
    finally:
        for d in (a, b, sinks):
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
            d.stop_if_running()
