"""TLS for real, against PRIVATE servers this module starts on free ports with throwaway certificates.

* Redis (``redis-server --tls-port``, mutual TLS, no plain-text port): the cache sink writes over TLS;
  a wrong CA is refused with a clear error.
* MariaDB (``mariadbd --ssl-*`` with its binlog, a user that ``REQUIRE SSL``): the reader's checks and
  its binlog stream run over TLS; without TLS the same user is refused.
* PostgreSQL (``initdb`` + ``ssl=on``, plain text refused): the state store and the CRM sink connect with
  ``sslmode=verify-full``; another CA is refused.

The shared services are never touched. Every private server is stopped at the end of the module.
RabbitMQ and the search server: a private TLS RabbitMQ is too heavy here and no real OpenSearch is
installable, so tests/unit/test_tls_config.py checks the context and parameters they get, and the tests at the
end of this module run the real clients (pika's blocking and asynchronous connections, opensearch-py)
through a TLS-terminating proxy in front of the shared RabbitMQ and of osmem-server: the client's TLS
handshake, verification and protocol over TLS are real; the broker's own TLS listener is not tested.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pymysql
import pytest
import redis
from pydantic import SecretStr
from tls_certs import Pki, TlsTerminatingProxy, free_port, make_pki

from cdc.broker.topology import reader_dead_exchange
from cdc.domain.envelope import Op
from cdc.domain.errors import TransientError
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import SourceConfig
from cdc.runtime.tls import TlsConfig
from cdc.sinks.base import SinkContext
from cdc.sinks.cache import CacheSink, CacheSinkConfig
from cdc.sinks.crm import CrmSink, CrmSinkConfig
from cdc.snapshot.chunks import ChunkSelect
from cdc.source.binlog_stream import BinlogReader

pytestmark = pytest.mark.integration


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
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
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what} not ready within {timeout}s (last error: {last!r})\n{tail}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- Redis -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_tls(pki, tmp_path_factory) -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed here")
    d = tmp_path_factory.mktemp("redis-tls")
    port = free_port()
    log = d / "redis.log"
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
         "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(d), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki.ca),
                             ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key), socket_timeout=5)
        _wait(client.ping, 15, "private TLS redis-server", proc, log)
        client.close()
        yield port
    finally:
        _stop(proc)


def _rediss(port: int, ca: Path, pki: Pki, client_cert: bool = True, password: str = "") -> str:
    auth = f":{password}@" if password else ""
    url = f"rediss://{auth}127.0.0.1:{port}/0?tls_ca={ca}"
    if client_cert:
        url += f"&tls_cert={pki.client_cert}&tls_key={pki.client_key}"
    return url


def test_cache_sink_writes_over_mutual_tls(redis_tls, pki, event_factory):
    # The server has no plain-text port (--port 0) and requires a client certificate.
    sink = CacheSink("cache", CacheSinkConfig(url=SecretStr(_rediss(redis_tls, pki.ca, pki)), key_prefix="tls"), SinkContext())
    sink.open()
    try:
        assert sink.apply([event_factory("customer", 1, 10, Op.CREATE, after={"id": 1, "name": "Ann"})]) == []
        assert sink.fetch_rows("customer") == {"1": {"id": 1, "name": "Ann"}}
        conn = sink._client.connection_pool.get_connection()
        try:
            assert isinstance(conn._sock, ssl.SSLSocket) and conn._sock.version() in ("TLSv1.2", "TLSv1.3")
        finally:
            sink._client.connection_pool.release(conn)
    finally:
        sink.reset()
        sink.close()


def test_cache_sink_refuses_a_server_signed_by_another_ca(redis_tls, pki):
    url = _rediss(redis_tls, pki.wrong_ca, pki, password="hunter2-secret")
    sink = CacheSink("cache", CacheSinkConfig(url=SecretStr(url), key_prefix="tls"), SinkContext())
    with pytest.raises(TransientError) as err:
        sink.open()
    sink.close()
    message = str(err.value)
    assert "certificate verify failed" in message and "hunter2-secret" not in message


def test_cache_sink_without_a_client_certificate_is_refused_by_the_server(redis_tls, pki):
    sink = CacheSink("cache", CacheSinkConfig(url=SecretStr(_rediss(redis_tls, pki.ca, pki, client_cert=False)),
                                              key_prefix="tls"), SinkContext())
    with pytest.raises(TransientError):
        sink.open()
    sink.close()


# --- MariaDB -----------------------------------------------------------------------------------------

DB = "tlsdb"
USER, PASSWORD = "cdc_tls", "tls-secret-pw"


@pytest.fixture(scope="module")
def mariadb_tls(pki, tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """(TCP port, root's unix socket) of a private binlog MariaDB with TLS."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
    if install is None or server is None:
        pytest.skip("mariadb-install-db / mariadbd are not installed here")
    d = tmp_path_factory.mktemp("mariadb-tls")
    data, sock, log = d / "data", d / "mysqld.sock", d / "error.log"
    subprocess.run([install, "--no-defaults", f"--datadir={data}", "--user=root", "--skip-test-db",
                    "--auth-root-authentication-method=normal"], check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--port={port}", f"--socket={sock}", "--bind-address=127.0.0.1",
         "--user=root", "--server-id=1", f"--log-bin={data}/bin", "--binlog-format=ROW", "--binlog-row-image=FULL",
         "--binlog-row-metadata=FULL", "--skip-name-resolve", "--innodb-buffer-pool-size=16M",
         f"--ssl-ca={pki.ca}", f"--ssl-cert={pki.server_cert}", f"--ssl-key={pki.server_key}",
         f"--log-error={log}", f"--pid-file={d / 'mysqld.pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        root = _wait(lambda: pymysql.connect(unix_socket=str(sock), user="root", autocommit=True), 60,
                     "private TLS mariadbd", proc, log)
        with root, root.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB}")
            cur.execute(f"CREATE TABLE {DB}.items (id INT PRIMARY KEY, label VARCHAR(20))")
            cur.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL")
            cur.execute(f"GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{USER}'@'%'")
        yield port, sock
    finally:
        _stop(proc)


def _source(port: int, **tls) -> SourceConfig:
    return SourceConfig(host="127.0.0.1", port=port, user=USER, password=SecretStr(PASSWORD), databases=[DB],
                        heartbeat_s=1, read_timeout_s=10, replica_server_id=random.randint(10_000, 2**31),
                        tls=TlsConfig(**tls))


def test_reader_streams_a_change_over_tls(mariadb_tls, pki):
    port, sock = mariadb_tls
    reader = BinlogReader(_source(port, enabled=True, ca=pki.ca, verify="verify-identity"), {(DB, "items")})
    info = reader.preflight()
    assert info.flavor == "mariadb"
    with reader.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1], "the reader's connection is not encrypted"
    start = reader.head_position()
    with pymysql.connect(unix_socket=str(sock), user="root", autocommit=True) as w, w.cursor() as cur:
        cur.execute(f"INSERT INTO {DB}.items VALUES (1, 'over tls')")
    stop, got = threading.Event(), []

    def read() -> None:
        for txn in reader.transactions(start, stop):
            if txn.changes:
                got.extend(txn.changes)
                stream = reader._stream
                got.append(isinstance(stream._stream_connection._sock, ssl.SSLSocket) if stream else None)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout=30)
    stop.set()
    reader.interrupt()
    assert got and got[0].after == {"id": 1, "label": "over tls"}
    assert got[-1] is True, "the binlog stream's socket is not a TLS socket"


def test_the_user_requires_ssl_so_a_plain_text_connection_is_refused(mariadb_tls):
    # What makes the test above meaningful: the server refuses this user without TLS. (With source.tls off,
    # PyMySQL >= 1.2 still encrypts opportunistically, without checking the certificate.)
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        pymysql.connect(host="127.0.0.1", port=mariadb_tls[0], user=USER, password=PASSWORD, ssl_disabled=True)


def test_snapshot_chunks_are_read_over_verified_tls(mariadb_tls, pki):
    port, sock = mariadb_tls
    with pymysql.connect(unix_socket=str(sock), user="root", autocommit=True) as w, w.cursor() as cur:
        cur.execute(f"REPLACE INTO {DB}.items VALUES (42, 'chunk over tls')")
    reader = BinlogReader(_source(port, enabled=True, ca=pki.ca, verify="verify-identity"), {(DB, "items")})
    select = ChunkSelect(reader.connection_settings())
    try:
        assert select.driver == "pymysql"  # the driver that takes cdc's SSLContext
        assert select.rows(f"SELECT * FROM {DB}.items WHERE id > %s ORDER BY id LIMIT 1", [41]) == [
            {"id": 42, "label": "chunk over tls"}]
        assert select.rows("SHOW SESSION STATUS LIKE 'Ssl_cipher'", [])[0]["Value"], "the chunk reader is not encrypted"
    finally:
        select.close()


def test_with_source_tls_off_snapshot_chunks_still_use_tls_a_server_offers(mariadb_tls):
    # As PyMySQL does for the rest of cdc: so a user that REQUIRE SSL can still snapshot, and nothing
    # goes in plain text where the server could encrypt it.
    reader = BinlogReader(_source(mariadb_tls[0]), {(DB, "items")})
    select = ChunkSelect(reader.connection_settings())
    try:
        assert select.driver == "mysqlclient"
        assert select.rows("SHOW SESSION STATUS LIKE 'Ssl_cipher'", [])[0]["Value"], "the chunk reader is not encrypted"
    finally:
        select.close()


def test_reader_refuses_a_server_signed_by_another_ca(mariadb_tls, pki):
    reader = BinlogReader(_source(mariadb_tls[0], enabled=True, ca=pki.wrong_ca))
    with pytest.raises(TransientError, match="certificate verify failed") as err:
        reader.preflight()
    assert PASSWORD not in str(err.value)


# --- PostgreSQL --------------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


@pytest.fixture(scope="module")
def postgres_tls(pki) -> Iterator[int]:
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed here")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot start a private PostgreSQL as user postgres")
        as_postgres = [runuser, "-u", "postgres", "--"]
    d = Path(tempfile.mkdtemp(prefix="cdc-pg-tls-"))  # outside pytest's root-only tmp dirs
    data, log = d / "data", d / "postgres.log"
    for name, src in (("server.crt", pki.server_cert), ("server.key", pki.server_key), ("ca.crt", pki.ca)):
        shutil.copy(src, d / name)
    os.chmod(d / "server.key", 0o600)
    if as_postgres:
        shutil.chown(d, "postgres", "postgres")
        for p in d.iterdir():
            shutil.chown(p, "postgres", "postgres")
    subprocess.run([*as_postgres, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    log_file = open(log, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*as_postgres, postgres, "-D", str(data), "-p", str(port), "-k", str(d), "-c", "listen_addresses=127.0.0.1",
         "-c", "ssl=on", "-c", f"ssl_cert_file={d / 'server.crt'}", "-c", f"ssl_key_file={d / 'server.key'}",
         "-c", f"ssl_ca_file={d / 'ca.crt'}", "-c", "fsync=off"],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 60,
              "private TLS postgres", proc, log)
        # only TLS connections over TCP: hostssl, no host line
        hba = data / "pg_hba.conf"
        hba.write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n")
        subprocess.run([*as_postgres, _pg_bin("pg_ctl") or "pg_ctl", "reload", "-D", str(data)], check=True,
                       capture_output=True, timeout=30)
        _wait(lambda: _refused_without_tls(port), 30, "pg_hba.conf reloaded (plain text refused)", proc, log)
        yield port
    finally:
        _stop(proc)
        log_file.close()
        shutil.rmtree(d, ignore_errors=True)


def _refused_without_tls(port: int) -> bool:
    import psycopg

    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable", connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return "no encryption" in str(exc)
    return False


def test_state_store_on_postgresql_with_verify_full(postgres_tls, pki):
    import psycopg

    from cdc.state.store import SqlStateStore

    url = (f"postgresql://postgres@127.0.0.1:{postgres_tls}/postgres?sslmode=verify-full&sslrootcert={pki.ca}"
           f"&sslcert={pki.client_cert}&sslkey={pki.client_key}")
    store = _wait(lambda: SqlStateStore(url), 20, "state store over TLS")
    store.save_checkpoint("legacy", Checkpoint(file="bin.000001", pos=4, gtid=None, ts_ms=1))
    assert store.load_checkpoint("legacy").pos == 4
    with store._engine.connect() as conn:  # the store's own pooled connection
        row = conn.exec_driver_sql("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").one()
    assert row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")
    # the server refuses a connection without TLS
    with pytest.raises(psycopg.OperationalError, match="no encryption|pg_hba"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{postgres_tls}/postgres?sslmode=disable", connect_timeout=5)


def test_state_store_refuses_postgresql_signed_by_another_ca(postgres_tls, pki):
    from sqlalchemy.exc import OperationalError

    from cdc.state.store import SqlStateStore

    url = f"postgresql://postgres@127.0.0.1:{postgres_tls}/postgres?sslmode=verify-full&sslrootcert={pki.wrong_ca}"
    with pytest.raises(OperationalError, match="certificate verify failed"):
        SqlStateStore(url)


# --- RabbitMQ and the search server, through a TLS-terminating proxy -------------------------------------


@pytest.fixture
def amqp_tls(pki, amqp_url) -> Iterator[tuple[str, TlsTerminatingProxy]]:
    """(amqps URL template without its tls_* parameters, proxy) in front of the shared RabbitMQ."""
    params = pika.URLParameters(amqp_url)
    with TlsTerminatingProxy(pki, (params.host, params.port)) as proxy:
        creds = params.credentials
        yield f"amqps://{creds.username}:{creds.password}@localhost:{proxy.port}/%2F", proxy


def test_publisher_and_ops_broker_over_amqps(amqp_tls, pki, amqp_url, unique_name):
    from cdc.admin.broker import Broker
    from cdc.broker.publisher import OutMessage, RabbitPublisher

    base, proxy = amqp_tls
    url = f"{base}?tls_ca={pki.ca}"  # verify-identity: the certificate names localhost
    exchange, queue = f"cdc.test.tls.{unique_name}", f"cdc.test.tls.{unique_name}.q"
    with Broker(url) as broker:  # BlockingConnection over TLS
        ch = broker.channel()
        ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(queue=queue, exchange=exchange, routing_key="#")
        try:
            confirmed: list = []
            pub = RabbitPublisher(url, exchange, confirmed.append, connect_timeout_s=10)  # SelectConnection over TLS
            pub.start()
            try:
                pub.publish([OutMessage(routing_key="customer.c", body=b'{"i":1}', message_id="tls:1", headers={},
                                        timestamp_ms=1_700_000_000_000)], "txn-1")
                assert pub.flush(20), pub.error
            finally:
                pub.close()
            assert confirmed == ["txn-1"]
            _wait(lambda: ch.queue_declare(queue=queue, passive=True).method.message_count == 1, 10, "message in queue")
            _method, _props, body = ch.basic_get(queue, auto_ack=True)
            assert body == b'{"i":1}'
        finally:
            ch.queue_delete(queue=queue)
            ch.exchange_delete(exchange=exchange)
            ch.exchange_delete(reader_dead_exchange(exchange))
    assert proxy.handshakes >= 2


def test_amqps_refuses_a_server_signed_by_another_ca(amqp_tls, pki):
    from cdc.admin.broker import Broker
    from cdc.broker.publisher import RabbitPublisher

    base, proxy = amqp_tls
    url = f"{base}?tls_ca={pki.wrong_ca}"
    pub = RabbitPublisher(url, "cdc.events", lambda t: None, connect_timeout_s=5)
    with pytest.raises(TransientError) as err:
        pub.start()
    pub.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value).upper() and "guest:guest" not in str(err.value)
    with pytest.raises(TransientError, match="cannot connect to RabbitMQ"), Broker(url):
        pass
    assert proxy.handshakes == 0


def test_search_client_over_https(pki):
    from opensearchpy import OpenSearch
    from search_server import url as search_server_url

    from cdc.sinks.search import _parse_url

    upstream = urlsplit(search_server_url())
    with TlsTerminatingProxy(pki, (upstream.hostname, upstream.port)) as proxy:
        _, args, _ = _parse_url(f"https://localhost:{proxy.port}?tls_ca={pki.ca}")
        client = OpenSearch(**args, timeout=10, max_retries=0)
        assert client.ping() and "version" in client.info()
        _, args, _ = _parse_url(f"https://localhost:{proxy.port}?tls_ca={pki.wrong_ca}")
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            OpenSearch(**args, timeout=10, max_retries=0).info()


def test_crm_sink_writes_over_tls_with_verify_full(postgres_tls, pki, event_factory):
    import psycopg

    from cdc.domain.entity_schema import EntitySchema, FieldType

    url = f"postgresql://postgres@127.0.0.1:{postgres_tls}/postgres?sslmode=verify-full&sslrootcert={pki.ca}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA IF NOT EXISTS crm_tls")
    customer = EntitySchema(name="customer", key=("id",), fields={"id": FieldType.INTEGER, "name": FieldType.STRING})
    sink = CrmSink("crm", CrmSinkConfig(url=SecretStr(url), schema_name="crm_tls"),
                   SinkContext(entities={"customer": customer}))
    sink.open()
    try:
        assert sink.apply([event_factory("customer", 1, 10, Op.CREATE, after={"id": 1, "name": "Ann"})]) == []
        assert sink.fetch_rows("customer")["1"]["name"] == "Ann"
        with sink._engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar() is True
    finally:
        sink.close()
