"""Shared fixtures: where the services are, polling with a deadline, and test events.

Services come from the environment, with the local defaults of ``deploy/dev-services.sh``:

    CDC_TEST_PG_URL      postgresql://postgres@127.0.0.1:5432/crm_test   (database created if missing)
    CDC_TEST_AMQP_URL    amqp://guest:guest@127.0.0.1:5672/%2F
    CDC_TEST_REDIS_URL   redis://127.0.0.1:6379/15
    CDC_SOURCE__HOST/PORT/USER/PASSWORD   127.0.0.1 / 3307 / cdc / cdc-secret  (binlog MariaDB)

A service that does not answer fails the test that needs it (it is never skipped): start them with
``deploy/dev-services.sh up``.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

# Helpers shared across test folders: e2e_support (tests/e2e), tcp_proxy (tests/faults).
for _folder in ("e2e", "faults"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), _folder))

from cdc.domain.envelope import ChangeEvent, Op, SourceInfo, TxnInfo, make_id, now_ms
from cdc.runtime import patches

# The libraries' patches, as the CLI's entry point and the daemon install them at start-up (importing a
# module of the service changes nothing in them: tests/unit/test_patches.py).
patches.install()

T = TypeVar("T")

START_HINT = "start the local services with `deploy/dev-services.sh up`"


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy (and return that), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {result!r})")
        time.sleep(interval)


def _fail_unreachable(service: str, where: str, err: BaseException) -> None:
    pytest.fail(f"{service} is not reachable at {where}: {err.__class__.__name__}: {err} -- {START_HINT}", pytrace=False)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


# --- services --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the CRM test database; the database is created if it does not exist."""
    import psycopg
    from pg_database import ensure_database  # tests/, this file's folder

    url = os.environ.get("CDC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/crm_test")
    try:
        ensure_database(url)
    except psycopg.OperationalError as err:
        _fail_unreachable("PostgreSQL", _redact(url), err)
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    import pika

    url = os.environ.get("CDC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError as err:
        _fail_unreachable("RabbitMQ", f"{params.host}:{params.port}", err)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get("CDC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        client.ping()
        client.close()
    except redis.RedisError as err:
        _fail_unreachable("Redis", _redact(url), err)
    return url


@pytest.fixture(scope="session")
def source_server() -> dict[str, Any]:
    """The binlog-enabled MariaDB (the legacy source): host, port, user, password."""
    server = {
        "host": os.environ.get("CDC_SOURCE__HOST", "127.0.0.1"),
        "port": int(os.environ.get("CDC_SOURCE__PORT", "3307")),
        "user": os.environ.get("CDC_SOURCE__USER", "cdc"),
        "password": os.environ.get("CDC_SOURCE__PASSWORD", "cdc-secret"),
    }
    try:
        socket.create_connection((server["host"], server["port"]), timeout=5).close()
    except OSError as err:
        _fail_unreachable("The binlog MariaDB", f"{server['host']}:{server['port']}", err)
    return server


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test run, usable as an identifier (schema, sink, exchange)."""
    stem = "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:24].strip("_")
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


class EventFactory:
    """Builds valid :class:`ChangeEvent` instances; versions increase by default, one per event."""

    def __init__(self, source: str = "test", file: str = "mysql-bin.000001") -> None:
        self.source = source
        self.file = file
        self._versions = itertools.count(1000)

    def __call__(
        self,
        entity: str = "customer",
        key: Any = 1,
        version: int | None = None,
        op: Op | str = Op.UPDATE,
        after: dict[str, Any] | None = None,
        before: dict[str, Any] | None = None,
        ts_ms: int | None = None,
        txn: TxnInfo | None = None,
    ) -> ChangeEvent:
        op = Op(op)
        key = key if isinstance(key, dict) else {"id": key}
        version = next(self._versions) if version is None else version
        pos = version & 0xFFFFFFFF
        if after is None and op is not Op.DELETE:
            after = dict(key)
        ts = now_ms() if ts_ms is None else ts_ms
        source = SourceInfo(
            name=self.source, server_id=1, file=self.file, pos=pos, row=0, db="legacy", table=entity, ts_ms=ts
        )
        return ChangeEvent(
            id=make_id(self.source, self.file, pos, 0, entity),
            version=version,
            op=op,
            entity=entity,
            key=key,
            before=before,
            after=None if op is Op.DELETE else after,
            source=source,
            txn=txn,
            ts_ms=ts,
        )


    def truncate(self, entity: str = "customer", version: int | None = None, statement: str | None = None,
                 ts_ms: int | None = None) -> ChangeEvent:
        """A truncate (op t) of ``entity`` at ``version``, as the reader makes it from a TRUNCATE TABLE."""
        version = next(self._versions) if version is None else version
        pos = version & 0xFFFFFFFF
        ts = now_ms() if ts_ms is None else ts_ms
        source = SourceInfo(name=self.source, server_id=1, file=self.file, pos=pos + 1, row=0, db="legacy", table=entity,
                            ts_ms=ts, statement=statement or f"TRUNCATE TABLE `{entity}`")
        return ChangeEvent(id=make_id(self.source, self.file, pos + 1, 0, entity) + ":truncate", version=version,
                           op=Op.TRUNCATE, entity=entity, key=None, source=source, ts_ms=ts)


@pytest.fixture
def event_factory() -> EventFactory:
    return EventFactory()


# --- end-to-end worlds (tests/e2e/e2e_support.py): a scratch legacy database, config, CRM schema --------


def _e2e_support():
    import e2e_support  # tests/e2e is on sys.path (top of this file)

    return e2e_support


@pytest.fixture
def world(tmp_path, source_server, pg_url, amqp_url):
    w = _e2e_support().make_world(tmp_path, source_server, pg_url, amqp_url)
    yield w
    _e2e_support().drop_world(w)


@pytest.fixture
def world_factory(tmp_path, source_server, pg_url, amqp_url):
    """make(extra_yaml) -> world, for tests that need other settings (e.g. a snapshot section)."""
    made = []

    def make(extra_yaml: str = "", extra_sinks: str = "", broker: str = ""):
        made.append(_e2e_support().make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml, extra_sinks,
                                              broker=broker))
        return made[-1]

    yield make
    for w in made:
        _e2e_support().drop_world(w)
