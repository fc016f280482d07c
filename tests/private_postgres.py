"""A PostgreSQL server of a test's own (initdb into a temporary directory, its own port), which the test
may stop, restart or kill without touching the shared PostgreSQL other tests and engineers use.

As root, the server runs as user ``postgres`` (initdb refuses root), through ``runuser``. ``fsync=off``:
the tests restart the server cleanly (fast shutdown), never pull the power.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def pg_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """``start()`` initialises (once) and starts the server; ``stop()`` is a fast shutdown (sessions are
    terminated, as in a restart in production); ``restart()`` both, on the same port and data."""

    def __init__(self, settings: tuple[str, ...] = ()) -> None:
        self.initdb, self.postgres = pg_bin("initdb"), pg_bin("postgres")
        if self.initdb is None or self.postgres is None:
            pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed here")
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("running as root without runuser: cannot start a private PostgreSQL as user postgres")
            self.as_postgres = [runuser, "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="cdc-pg-private-"))  # outside pytest's root-only tmp dirs
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.settings = settings
        self.pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
        self.running = False
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 60) -> None:
        if not self.data.exists():
            subprocess.run([*self.as_postgres, self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres"],
                           check=True, capture_output=True, timeout=120)
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        for setting in self.settings:
            options += f" -c {setting}"
        # pg_ctl: the postmaster's own pid is in charge (runuser would stand between a signal and it).
        done = subprocess.run([*self.as_postgres, self.pg_ctl, "start", "-w", "-t", str(int(timeout)), "-D", str(self.data),
                               "-l", str(self.log), "-o", options], capture_output=True, text=True, timeout=timeout + 10)
        if done.returncode != 0 or not self._answers():
            raise AssertionError(f"private PostgreSQL on port {self.port} did not start: {done.stderr}\n{self.log_tail()}")
        self.running = True

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown: open sessions are cut, as in ``pg_ctl restart -m fast`` in production."""
        if not self.running:
            return
        subprocess.run([*self.as_postgres, self.pg_ctl, "stop", "-w", "-m", "fast", "-t", str(int(timeout)), "-D",
                        str(self.data)], capture_output=True, timeout=timeout + 10, check=True)
        self.running = False
        assert not self._answers(), f"private PostgreSQL on port {self.port} still answers after its shutdown"

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _answers(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False
