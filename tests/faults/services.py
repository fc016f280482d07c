"""Stopping and starting the shared services, for the fault tests and bench/soak.py.

These act on the machine's real services (the ones tests/conftest.py points at): run them only in
a suite or a soak that has the machine to itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _pg_cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)


def restart_postgresql() -> None:
    subprocess.run([*_pg_cluster(), "restart"], check=True, capture_output=True, timeout=120)


def restart_mariadb() -> None:
    """Stop the binlog source and start it again with the very same command line.

    Whoever started it (this checkout's deploy/dev-services.sh or another checkout's), it comes back
    with the same data directory and binlog, as after a crash-free restart in production.
    """
    import time

    import pymysql

    before = _uptime()
    conn = pymysql.connect(host="127.0.0.1", port=_port(), user="root")
    with conn.cursor() as cur:
        cur.execute("SELECT @@pid_file")
        pid = int(Path(cur.fetchone()[0]).read_text().strip())
    command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    with conn.cursor() as cur:
        cur.execute("SHUTDOWN")
    conn.close()
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the old process's exit, with a deadline
    subprocess.Popen([c.decode() for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    while time.monotonic() < deadline:
        try:
            assert _uptime() < before, "the source MariaDB did not restart"
            return
        except pymysql.err.OperationalError:
            time.sleep(0.1)
    raise AssertionError("the source MariaDB did not come back within 60 s")


def _port() -> int:
    return int(os.environ.get("CDC_SOURCE__PORT", "3307"))


def _uptime() -> int:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=_port(), user="root")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Uptime'")
            return int(cur.fetchone()[1])
    finally:
        conn.close()
