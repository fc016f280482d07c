"""Table ids across a restart of the source, against a PRIVATE binlog MariaDB that this module starts and
restarts (never the shared one).

A server gives table ids anew at each start, so after a restart two tables can swap ids. The binlog library
forgets its table map only at a rotate event with a timestamp, which a file left by a shutdown or a crash does
not end with: a reader that streams over the restart in one connection (it lagged behind, or started after
it from an older checkpoint) would decode one table's rows with the other's map (``freeze_schema`` keeps a
map it has for an id). A reader connected during the restart loses its connection and reopens a new stream,
with an empty map."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from pydantic import SecretStr
from tls_certs import free_port

from cdc.domain.errors import StreamInterrupted
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import SourceConfig
from cdc.source.binlog_stream import BinlogReader, SourceTxn

pytestmark = pytest.mark.integration

DB, USER, PASSWORD = "restartdb", "cdc_restart", "restart-secret"


class PrivateMariaDB:
    def __init__(self, root: Path) -> None:
        self.install = shutil.which("mariadb-install-db")
        self.server = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
        if self.install is None or self.server is None:
            pytest.skip("mariadb-install-db / mariadbd are not installed here")
        self.data, self.sock, self.log = root / "data", root / "mysqld.sock", root / "error.log"
        subprocess.run([self.install, "--no-defaults", f"--datadir={self.data}", "--user=root", "--skip-test-db",
                        "--auth-root-authentication-method=normal"], check=True, capture_output=True, timeout=120)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.server, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}", f"--socket={self.sock}",
             "--bind-address=127.0.0.1", "--user=root", "--server-id=1", f"--log-bin={self.data}/bin",
             "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--skip-name-resolve",
             "--innodb-buffer-pool-size=16M", f"--log-error={self.log}", f"--pid-file={self.data / 'mysqld.pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.root().close()
                return
            except pymysql.err.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text()[-2000:] if self.log.exists() else ""
                    raise AssertionError(f"the private mariadbd did not start (log {self.log}):\n{tail}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # a clean shutdown: the binlog file ends with a Stop event, no rotate
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def root(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.sock), user="root", autocommit=True)

    def sql(self, *statements: str) -> list:
        with self.root() as conn, conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
            return list(cur.fetchall())


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(tmp_path_factory.mktemp("mariadb-restart"))
    server.start()
    try:
        server.sql(f"CREATE DATABASE {DB}",
                   f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                   f"GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{USER}'@'%'")
        yield server
    finally:
        server.stop()


def _source(server: PrivateMariaDB, **over) -> SourceConfig:
    return SourceConfig(**{"host": "127.0.0.1", "port": server.port, "user": USER, "password": SecretStr(PASSWORD),
                           "databases": [DB], "heartbeat_s": 1, "read_timeout_s": 10,
                           "replica_server_id": random.randint(10_000, 2**31), **over})


def _table_ids(server: PrivateMariaDB, file: str, tables: tuple[str, str]) -> dict[str, int]:
    ids = {}
    for row in server.sql(f"SHOW BINLOG EVENTS IN '{file}'"):
        found = re.match(r"table_id: (\d+) \(" + DB + r"\.(\w+)\)", row[5] or "")
        if row[2] == "Table_map" and found and found.group(2) in tables:
            ids[found.group(2)] = int(found.group(1))
    return ids


def _rows(txns: list[SourceTxn]) -> list[tuple[str, dict]]:
    return [(c.table, c.after) for t in txns for c in t.changes]


def _swapped_ids_across_a_restart(server: PrivateMariaDB, rng: random.Random):
    """Writes one row to each of two tables, restarts, writes again in the other order, so that the tables'
    ids swap. Returns (position before the writes, the rows in binlog order)."""
    alpha, beta = f"alpha_{rng.randrange(10**6)}", f"beta_{rng.randrange(10**6)}"
    # The same column types, other names: a row decoded with the other table's map looks plausible.
    server.sql(f"CREATE TABLE {DB}.{alpha} (id INT PRIMARY KEY, name VARCHAR(40))",
               f"CREATE TABLE {DB}.{beta} (id INT PRIMARY KEY, city VARCHAR(40))")
    server.restart()  # both runs below open the two tables first after their start
    file, pos = server.sql("SHOW MASTER STATUS")[0][:2]
    values = {t: [(rng.randrange(10**6), f"{t[:1]}{rng.randrange(10**6)}") for _ in range(2)] for t in (alpha, beta)}
    server.sql(f"INSERT INTO {DB}.{alpha} VALUES {values[alpha][0]}", f"INSERT INTO {DB}.{beta} VALUES {values[beta][0]}")
    server.restart()
    after_file = server.sql("SHOW MASTER STATUS")[0][0]
    server.sql(f"INSERT INTO {DB}.{beta} VALUES {values[beta][1]}", f"INSERT INTO {DB}.{alpha} VALUES {values[alpha][1]}")
    before_ids, after_ids = _table_ids(server, file, (alpha, beta)), _table_ids(server, after_file, (alpha, beta))
    assert before_ids == {alpha: after_ids[beta], beta: after_ids[alpha]}, (
        f"the tables' ids did not swap across the restart ({before_ids} then {after_ids}): the test proves nothing")
    expected = [(alpha, {"id": values[alpha][0][0], "name": values[alpha][0][1]}),
                (beta, {"id": values[beta][0][0], "city": values[beta][0][1]}),
                (beta, {"id": values[beta][1][0], "city": values[beta][1][1]}),
                (alpha, {"id": values[alpha][1][0], "name": values[alpha][1][1]})]
    return Checkpoint(file=file, pos=int(pos)), expected, after_file


@pytest.mark.parametrize("resume_by", ["position", "gtid"])
def test_a_stream_over_a_restart_decodes_each_table_with_its_own_map(mariadb, resume_by):
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    start, expected, _ = _swapped_ids_across_a_restart(mariadb, random.Random(seed))
    reader = BinlogReader(_source(mariadb, resume_by=resume_by))
    reader.preflight()
    if resume_by == "gtid":
        start = start.model_copy(update={"gtid": mariadb.sql(f"SELECT BINLOG_GTID_POS('{start.file}', {start.pos})")[0][0]})
    stop, txns = threading.Event(), []
    for txn in reader.transactions(start, stop):
        txns.append(txn)
        if len(txns) == 4:
            break
    assert _rows(txns) == expected


def test_a_reader_streaming_during_the_restart_reopens_with_a_new_map(mariadb):
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    alpha, beta = f"alpha_{rng.randrange(10**6)}", f"beta_{rng.randrange(10**6)}"
    mariadb.sql(f"CREATE TABLE {DB}.{alpha} (id INT PRIMARY KEY, name VARCHAR(40))",
                f"CREATE TABLE {DB}.{beta} (id INT PRIMARY KEY, city VARCHAR(40))")
    mariadb.restart()
    reader = BinlogReader(_source(mariadb))
    reader.preflight()
    start = reader.head_position()
    mariadb.sql(f"INSERT INTO {DB}.{alpha} VALUES (1, 'a1')", f"INSERT INTO {DB}.{beta} VALUES (1, 'b1')")
    stream = reader.transactions(start, threading.Event())
    first = [next(stream), next(stream)]
    mariadb.restart()
    mariadb.sql(f"INSERT INTO {DB}.{beta} VALUES (2, 'b2')", f"INSERT INTO {DB}.{alpha} VALUES (2, 'a2')")
    with pytest.raises(StreamInterrupted):
        next(stream)  # the connection died with the server; the reader reopens from its last boundary
    again = reader.transactions(first[-1].end, threading.Event())
    rest = [next(again), next(again)]
    again.close()
    assert _rows(first + rest) == [(alpha, {"id": 1, "name": "a1"}), (beta, {"id": 1, "city": "b1"}),
                                   (beta, {"id": 2, "city": "b2"}), (alpha, {"id": 2, "name": "a2"})]
