"""Private instances of every service the daemon talks to, for harnesses that restart them.

Each one lives in a directory of its own under a temporary root, listens on a free port of
127.0.0.1, and can be stopped, started and restarted (the fault) without touching the machine's
shared services or anyone else's test. ``PrivateServices`` starts the whole set and tears it down,
bounded in time, whatever happened:

    with PrivateServices(root) as svc:
        svc.mariadb.port, svc.postgres.url("crm"), svc.redis.url(0), svc.rabbitmq.url, svc.search_url
        svc.rabbitmq.restart()

Used by bench/chaos.py and tests/chaos/. Binaries: mariadbd + mariadb-install-db, PostgreSQL's
initdb + postgres (as the ``postgres`` user when run as root: initdb refuses root), redis-server,
rabbitmq-server (the Debian wrapper runs the node as the ``rabbitmq`` user, so its directories
belong to that user), and osmem-server from PyPI for search.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> object:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - still starting
            last = exc
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else f"not ready within {timeout}s"
    raise ServiceError(f"{what}: {state} (last error: {last!r})\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _binary(name: str, *fallbacks: str) -> str:
    for candidate in (shutil.which(name), *fallbacks):
        if candidate and os.path.exists(candidate):
            return candidate
    raise ServiceError(f"{name} is not installed here (needed for a private instance)")


class PrivateMariaDB:
    """A binlog MariaDB with the reader's settings (deploy/dev-services.sh) and the ``cdc`` user."""

    user, password = "cdc", "cdc-secret"

    def __init__(self, root: Path) -> None:
        self.dir = root / "mariadb"
        self.data, self.sock, self.log = self.dir / "data", self.dir / "mysqld.sock", self.dir / "error.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def install(self) -> None:
        self.dir.mkdir(parents=True)
        flags = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run([_binary("mariadb-install-db"), "--no-defaults", f"--datadir={self.data}", *flags, "--skip-test-db",
                        "--auth-root-authentication-method=normal", "--skip-name-resolve"],
                       check=True, capture_output=True, timeout=180)

    def start(self) -> None:
        flags = ["--user=root"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [_binary("mariadbd", "/usr/sbin/mariadbd"), "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             f"--socket={self.sock}", "--bind-address=127.0.0.1", *flags, "--server-id=1", f"--log-bin={self.data}/bin",
             "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--gtid-domain-id=0",
             "--skip-name-resolve", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
             "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0",
             "--performance-schema=OFF", "--max-connections=200", f"--log-error={self.log}", f"--pid-file={self.dir / 'pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self.root_connection().close() or True, 90, "private mariadbd", self.proc, self.log)

    def provision(self) -> None:
        with self.root_connection() as conn, conn.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"CREATE USER IF NOT EXISTS '{self.user}'@'{host}' IDENTIFIED BY '{self.password}'")
                cur.execute(f"GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{self.user}'@'{host}'")

    def root_connection(self, **kw):
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True, connect_timeout=3, **kw)

    def stop(self) -> None:
        """A clean shutdown (SHUTDOWN), then the process is waited for."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            with self.root_connection() as conn, conn.cursor() as cur:
                cur.execute("SHUTDOWN")
            self.proc.wait(60)
        except Exception:  # noqa: BLE001 - not answering: terminate it instead
            _stop(self.proc, 60)

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivatePostgres:
    """A PostgreSQL cluster of its own (fsync off: the faults are restarts, not power cuts)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "postgres"
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            self.as_postgres = [_binary("runuser"), "-u", "postgres", "--"]

    @staticmethod
    def _bin(name: str) -> str:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        return str(found[-1]) if found else _binary(name)

    def install(self) -> None:
        self.dir.mkdir(parents=True)
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run([*self.as_postgres, self._bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=180)

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [*self.as_postgres, self._bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "shared_buffers=32MB", "-c", "max_connections=100"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for(lambda: self._answers(), 60, "private postgres", self.proc, self.log)

    def _answers(self) -> bool:
        import psycopg

        with psycopg.connect(self.url("postgres"), connect_timeout=2):
            return True

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        # A fast shutdown: a "smart" one would wait for the daemon's connections to end. Through
        # pg_ctl, because runuser does not pass a signal on to postgres.
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run([*self.as_postgres, self._bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60"],
                       capture_output=True, timeout=90, check=False)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            _stop(self.proc, 10)

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def install(self) -> None:
        self.dir.mkdir(parents=True)

    def start(self) -> None:
        # An RDB file lets a restart keep the data, as a production Redis with persistence does;
        # the harness saves before it stops the server (SHUTDOWN SAVE).
        self.proc = subprocess.Popen(
            [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self.client().ping(), 30, "private redis-server", self.proc, self.dir / "redis.log")

    def client(self, db: int = 0):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.client().shutdown(save=True)
        except Exception:  # noqa: BLE001 - the connection closes as the server exits
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            _stop(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivateRabbitMQ:
    """A RabbitMQ node of its own name, ports and directories, with the consistent-hash exchange.

    ``rabbitmqctl stop_app``/``start_app`` cannot bring this node's listener back here (RabbitMQ 3.10:
    ``eaddrinuse`` on its own port), so a restart is a whole node stop and start, as after a crash of
    the host; the quorum queues' data survives it in the node's directory.
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "rabbitmq"
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"cdc_chaos_{self.port}@localhost"
        self.proc: subprocess.Popen | None = None

    def install(self) -> None:
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "enabled_plugins").write_text("[rabbitmq_consistent_hash_exchange].\n")
        (self.dir / "rabbitmq.conf").write_text("loopback_users = none\n")
        if os.geteuid() == 0:
            for path in [self.dir, *self.dir.rglob("*")]:
                shutil.chown(path, "rabbitmq", "rabbitmq")

    def env(self) -> dict:
        return dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
                    RABBITMQ_DIST_PORT=str(self.dist_port), RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
                    RABBITMQ_LOG_BASE=str(self.dir / "log"), RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
                    RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"), RABBITMQ_PID_FILE=str(self.dir / "pid"),
                    RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"))

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> None:
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([_binary("rabbitmq-server", "/usr/sbin/rabbitmq-server")], env=self.env(),
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        wait_for(self._answers, 120, f"private RabbitMQ node {self.node}", self.proc, self.dir / "stdout.log")

    def _answers(self) -> bool:
        import pika

        if not _port_open(self.port):
            return False
        pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")).close()
        return True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env(), capture_output=True, timeout=120, check=False)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            _stop(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivateSearch:
    """osmem-server on a free port (in memory: a restart is not one of its faults, outages go through a proxy)."""

    def __init__(self, root: Path) -> None:
        self.server = None
        self.url = ""

    def install(self) -> None:
        pass

    def start(self) -> None:
        from osmem_server import OsmemServer

        self.server = OsmemServer.start(japanese=False, addr="127.0.0.1:0", startup_timeout=30)
        self.url = self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


class PrivateServices:
    """Every service, private; started in parallel where they do not depend on each other."""

    def __init__(self, root: Path, names: tuple[str, ...] = ("mariadb", "postgres", "redis", "rabbitmq", "search")) -> None:
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chmod(root, 0o755)  # the postgres and rabbitmq users reach their own folders through it
        self.root = root
        self.mariadb = PrivateMariaDB(root) if "mariadb" in names else None
        self.postgres = PrivatePostgres(root) if "postgres" in names else None
        self.redis = PrivateRedis(root) if "redis" in names else None
        self.rabbitmq = PrivateRabbitMQ(root) if "rabbitmq" in names else None
        self.search = PrivateSearch(root) if "search" in names else None

    @property
    def all(self) -> list:
        return [s for s in (self.mariadb, self.postgres, self.redis, self.rabbitmq, self.search) if s is not None]

    @property
    def search_url(self) -> str:
        return self.search.url

    def __enter__(self) -> PrivateServices:
        from concurrent.futures import ThreadPoolExecutor

        def bring_up(service) -> None:
            service.install()
            service.start()

        try:
            with ThreadPoolExecutor(len(self.all)) as pool:
                for future in [pool.submit(bring_up, s) for s in self.all]:
                    future.result()
            if self.mariadb is not None:
                self.mariadb.provision()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for service in reversed(self.all):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - tear down the rest anyway
                pass

    def __exit__(self, *exc) -> None:
        self.close()
