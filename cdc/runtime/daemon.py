"""The long-lived process: runs the reader and/or sink workers until SIGTERM/SIGINT.

Shutdown is clean: the reader abandons the transaction it is reading (it is read again on
restart), waits for the broker to confirm what it published, persists its checkpoint; each sink
worker finishes or gives back its current batch. A terminal error in any role stops the process
with exit status 1 and a message saying what to fix.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable

from cdc.domain.errors import CdcError, ConfigError, TransientError
from cdc.reader.leadership import Lease
from cdc.runtime import metrics, patches
from cdc.runtime.bootstrap import build_mapper, build_pipeline, build_state, build_worker
from cdc.runtime.config import Settings
from cdc.runtime.health import Health, reader_check, sink_check
from cdc.runtime.logs import bind_role
from cdc.runtime.malloc import tune_malloc

log = logging.getLogger("cdc.daemon")


def expand_roles(settings: Settings, roles: list[str]) -> list[str]:
    out: list[str] = []
    for role in roles:
        if role == "all":
            out += ["reader"] + [f"sink:{name}" for name in settings.sinks]
        elif role == "sinks":
            out += [f"sink:{name}" for name in settings.sinks]
        elif role == "reader":
            out.append(role)
        elif role.startswith("sink:") and role[5:] in settings.sinks:
            out.append(role)
        else:
            known = ", ".join(["all", "reader", "sinks"] + [f"sink:{n}" for n in settings.sinks])
            raise ConfigError(f"unknown role {role!r}; known roles: {known}")
    return list(dict.fromkeys(out))


class Daemon:
    def __init__(self, settings: Settings, roles: list[str], progress_interval_s: float = 10.0) -> None:
        self.settings = settings
        self.roles = expand_roles(settings, roles)
        self.progress_interval_s = progress_interval_s
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.pipeline = None
        self._threads: list[threading.Thread] = []
        self.health = Health()
        self.reader_state, self.reader_lease = "starting", None  # starting | waiting (for the lease) | active

    def run(self) -> int:
        patches.install()  # before anything is built (idempotent: the CLI's entry point installed them already)
        patches.preimport()  # in this thread, before any role thread starts (see cdc.runtime.patches)
        mapper = build_mapper(self.settings)
        state = build_state(self.settings)
        server = self._serve_http(state, mapper) if self.settings.metrics.enabled else None
        self._install_signals()
        jobs: list[tuple[str, Callable[[], None]]] = []
        if "reader" in self.roles:
            jobs.append(("reader", lambda: self._run_reader(state, mapper)))
            self.health.register("reader", reader_check(self, self.settings.source.heartbeat_s, self.settings.broker.confirm_timeout_s))
        for role in self.roles:
            if role.startswith("sink:"):
                worker = build_worker(role[5:], self.settings, mapper, self.stop)
                self.health.register(role, sink_check(worker))
                jobs.append((role, self._leased(state, mapper, role[5:], worker.run)))
        log.info("daemon: starting roles %s", ", ".join(self.roles))
        # Modules, mappings and clients live as long as the process: out of the collector's way, so that a
        # full collection scans what the roles allocate (batches of events), not the whole start-up heap.
        gc.freeze()
        tuned = tune_malloc()
        if tuned:
            log.debug("daemon: glibc allocator settings %s", tuned)
        for name, job in jobs:
            thread = threading.Thread(target=self._guard, args=(name, job), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._wait()
        for thread in self._threads:
            thread.join(timeout=self.settings.broker.confirm_timeout_s + 5)
        if server is not None:
            server.shutdown()
        state.close()
        if self.failures:
            for failure in self.failures:
                log.error("daemon: stopped: %s", failure)
            return 1
        log.info("daemon: stopped cleanly")
        return 0

    def _run_reader(self, state, mapper) -> None:
        """Stream while this process holds the source's lease; stand by while another one does."""
        lease = Lease(state, f"reader:{self.settings.source.name}", self.settings.source.lease_ttl_s)
        self.reader_lease = lease
        while not self.stop.is_set():
            self.reader_state = "waiting"
            if not lease.wait_for(self.stop):
                return
            self.reader_state = "active"
            metrics.reader_active.labels(self.settings.source.name).set(1)
            # Built after taking the lease: the checkpoint may have moved while another reader was active.
            try:
                pipeline = build_pipeline(self.settings, state, mapper)
            except TransientError as exc:  # the state store did not answer: try again, holding the lease
                log.warning("daemon: cannot start the reader yet: %s", exc)
                metrics.reader_active.labels(self.settings.source.name).set(0)
                self.stop.wait(1.0)
                continue
            pipeline.guard = lease.holds
            pipeline.owner = lease.owner  # applies the operator's position requests (cdc offsets set --via-daemon)
            self.pipeline = pipeline
            run_stop = self._run_stop = threading.Event()

            def lost() -> None:
                run_stop.set()
                pipeline.reader.interrupt()

            lease.keep(run_stop, lost)
            threading.Thread(target=_follow, args=(self.stop, run_stop), daemon=True).start()
            try:
                pipeline.run(run_stop)
            finally:
                run_stop.set()
                metrics.reader_active.labels(self.settings.source.name).set(0)
                if lease.holds():
                    lease.release()

    def _leased(self, state, mapper, sink: str, job: Callable[[], None]) -> Callable[[], None]:
        """Hold ``sink:<name>`` while the worker runs, so `cdc offsets set --sink` knows it is in use; run the
        operator's replay requests for the sink beside it."""
        from cdc.state.lease import Leases, new_owner, sink_lease

        def run() -> None:
            done = threading.Event()
            name = sink_lease(sink, self.settings.worker.index, self.settings.worker.count)
            owner = new_owner(f"sink:{sink}")
            keeper = Leases(state).hold(name, owner, self.settings.source.lease_ttl_s, done)
            requests = threading.Thread(target=self._sink_requests, args=(state, mapper, sink, owner, done),
                                        name=f"requests:{sink}", daemon=True)
            requests.start()
            try:
                job()
            finally:
                done.set()
                keeper.join(timeout=5)
                requests.join(timeout=5)

        return run

    def _sink_requests(self, state, mapper, sink: str, owner: str, done: threading.Event, poll_s: float = 1.0) -> None:
        """Replays of this sink asked for by the operator (`cdc offsets set --sink NAME --via-daemon`), run here,
        beside the worker, one at a time (cdc.admin.offsets.run_sink_request)."""
        from cdc.admin.offsets import run_sink_request
        from cdc.runtime.bootstrap import build_sink
        from cdc.state.lease import is_stale

        try:  # a replay left half done by a worker process of this host that died is taken up again
            for request in state.position_request_list(f"sink:{sink}", ("applying",)):
                if request["applied_by"] and is_stale(request["applied_by"]):
                    state.position_request_transition(request["id"], "applying", "requested")
        except Exception:  # not worth failing the worker for
            log.exception("daemon: cannot release the replay requests of sink %s left by a dead worker", sink)
        while not done.wait(poll_s):
            try:
                for request in state.position_request_list(f"sink:{sink}", ("requested",)):
                    log.info("daemon: replaying sink %s for %s (request %s)", sink, request["who"], request["id"])
                    run_sink_request(self.settings, state, sink, request, lambda: build_sink(sink, self.settings, mapper), owner)
            except Exception:  # the state store is down for a moment: ask again later
                log.exception("daemon: cannot read the replay requests of sink %s; asking again later", sink)

    def request_stop(self, *_args) -> None:
        if not self.stop.is_set():
            log.info("daemon: shutting down")
        self.stop.set()
        self.health.stopping.set()
        if getattr(self, "_run_stop", None) is not None:
            self._run_stop.set()
        if self.pipeline is not None:
            self.pipeline.reader.interrupt()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)

    def _serve_http(self, state, mapper):
        from cdc.runtime.http import AdminApp, serve
        from cdc.runtime.monitor import Monitor

        sinks = list(self.settings.sinks) if self.settings.admin.enabled else [r[5:] for r in self.roles if r.startswith("sink:")]
        monitor = Monitor(self.settings, state, mapper, sinks, watch_source="reader" in self.roles or self.settings.admin.enabled)
        threading.Thread(target=monitor.run, args=(self.stop,), name="monitor", daemon=True).start()
        app = AdminApp(self.settings, self.health, monitor, state, mapper, self.roles)
        return serve(app, self.settings.metrics.host, self.settings.metrics.port)

    def _guard(self, name: str, job: Callable[[], None]) -> None:
        bind_role(name, self.settings.source.name)
        try:
            job()
        except CdcError as exc:
            self.failures.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any crash of a role stops the process, loudly
            log.exception("daemon: role %s crashed", name)
            self.failures.append(f"{name}: unexpected {exc.__class__.__name__}: {exc}")
        finally:
            if not self.stop.is_set():
                self.request_stop()

    def _wait(self) -> None:
        last = time.monotonic()
        previous = self._counts()
        while not self.stop.wait(0.5):
            now = time.monotonic()
            if now - last >= self.progress_interval_s:
                current = self._counts()
                self._report(previous, current, now - last)
                previous, last = current, now

    def _counts(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        if self.pipeline is not None:
            counts["reader"] = self.pipeline.events_read
        for metric in metrics.sink_applied.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = f"sink:{sample.labels['sink']}"
                    counts[key] = counts.get(key, 0) + sample.value
        return counts

    def _report(self, before: dict[str, float], after: dict[str, float], seconds: float) -> None:
        parts = []
        for role in self.roles:
            total = after.get(role, 0)
            rate = (total - before.get(role, 0)) / seconds
            parts.append(f"{role} {int(total)} events ({rate:,.0f}/s)")
        if self.pipeline is not None and self.pipeline.persisted is not None:
            parts.append(f"checkpoint {self.pipeline.persisted.describe()}")
        log.info("progress: %s", "; ".join(parts))


def _follow(source: threading.Event, target: threading.Event) -> None:
    """Set ``target`` when ``source`` is set (or stop watching once ``target`` is set)."""
    while not target.wait(0.2):
        if source.is_set():
            target.set()


def run_daemon(settings: Settings, roles: list[str]) -> int:
    return Daemon(settings, roles).run()
