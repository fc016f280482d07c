"""The demo legacy source (cdc.demo) against the real binlog MariaDB from `deploy/dev-services.sh up`.

Runs in its own database (CDC_TEST_DEMO_DATABASE, default `legacy_demo_test`) so the developer's seeded
`legacy` database is left alone. Admin steps use root without a password over 127.0.0.1
(CDC_SOURCE_ADMIN_USER / CDC_SOURCE_ADMIN_PASSWORD override); data steps use the app user `legacy`.
"""

from __future__ import annotations

import os
import time

import pymysql
import pytest

from cdc.demo.seed import TABLES, ConnParams, connect, create_schema, seed, table_counts
from cdc.demo.workload import Workload

pytestmark = pytest.mark.integration

HOST = os.environ.get("CDC_SOURCE__HOST", "127.0.0.1")
PORT = int(os.environ.get("CDC_SOURCE__PORT", "3307"))
ADMIN_USER = os.environ.get("CDC_SOURCE_ADMIN_USER", "root")
ADMIN_PASSWORD = os.environ.get("CDC_SOURCE_ADMIN_PASSWORD", "")
DATABASE = os.environ.get("CDC_TEST_DEMO_DATABASE", "legacy_demo_test")
APP_USER = os.environ.get("CDC_DEMO__USER", "legacy")
APP_PASSWORD = os.environ.get("CDC_DEMO__PASSWORD", "legacy-secret")


def _admin_connect(deadline_s: float = 5.0) -> pymysql.Connection:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return pymysql.connect(host=HOST, port=PORT, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                   connect_timeout=2, autocommit=True, charset="utf8mb4")
        except pymysql.err.OperationalError as exc:
            error = exc
        if time.monotonic() >= deadline:
            pytest.fail(f"the binlog MariaDB source is not reachable at {HOST}:{PORT} as {ADMIN_USER} ({error}). "
                        "Start it with `deploy/dev-services.sh up`.", pytrace=False)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def admin():
    conn = _admin_connect()
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def params(admin) -> ConnParams:
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
        cur.execute(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4")
        cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO %s@'%%'", (APP_USER,))
    yield ConnParams(host=HOST, port=PORT, user=APP_USER, password=APP_PASSWORD, database=DATABASE)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")


def _scalar(params: ConnParams, sql: str, args=()):
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _snapshot(params: ConnParams, tables) -> dict[str, dict[int, tuple]]:
    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            out = {}
            for table in tables:
                cur.execute(f"SELECT * FROM {table}")
                out[table] = {row[0]: row for row in cur.fetchall()}
            return out
    finally:
        conn.close()


def test_server_is_a_row_based_binlog_source(admin):
    with admin.cursor() as cur:
        cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        assert cur.fetchone() == (1, "ROW", "FULL", "FULL")


def test_seed_gives_expected_counts_and_quirks(params):
    create_schema(params)
    counts = seed(params, members=300, rng_seed=7)

    in_db = table_counts(params)
    assert set(in_db) == set(TABLES)
    assert {t: in_db[t] for t in counts} == counts
    assert in_db["members"] == 300
    assert in_db["events"] == 12
    assert in_db["event_registrations"] == 450
    assert in_db["ce_credits"] == 600
    assert in_db["orders"] == 360
    assert in_db["order_items"] >= in_db["orders"]
    assert in_db["membership_types"] == 7 and in_db["chapters"] == 12 and in_db["certifications"] == 8

    assert _scalar(params, "SELECT COUNT(*) FROM members WHERE join_date = '0000-00-00'") >= 1
    assert _scalar(params, "SELECT COUNT(*) FROM members WHERE last_login = '0000-00-00 00:00:00'") >= 1
    assert _scalar(params, "SELECT COUNT(*) FROM member_certifications WHERE expires_on = '0000-00-00'") >= 1
    assert _scalar(params, "SELECT COUNT(*) FROM members WHERE email <> TRIM(email)") >= 1
    assert _scalar(params, "SELECT COUNT(*) FROM members WHERE birth_date REGEXP '^[0-9]{2}/[0-9]{2}/[0-9]{4}$'") > 200
    assert _scalar(params, "SELECT MAX(points) FROM members") > 2**31  # INT UNSIGNED beyond the signed range
    assert _scalar(params, "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
                           " AND TABLE_NAME = 'members' AND COLUMN_NAME = 'first_name'", (DATABASE,)) == "latin1"

    conn = connect(params, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT email, first_name, last_name, HEX(first_name), join_date FROM members WHERE id = 1")
            email, first, last, first_hex, join_date = cur.fetchone()
    finally:
        conn.close()
    assert (email, first, last) == ("  Zoe.Muller@Example.COM ", "Zoë", "Müller")
    assert first_hex == "5A6FEB"  # stored as latin1 bytes, read back as the same text
    assert join_date in ("0000-00-00", None)  # PyMySQL returns a zero DATE unconverted


def test_seed_is_deterministic(params):
    def checksum() -> int:
        create_schema(params)
        seed(params, members=100, rng_seed=11)
        return _scalar(params, "SELECT GROUP_CONCAT(c ORDER BY t) FROM (SELECT 'm' t, SUM(CRC32(CONCAT_WS('|', id, email,"
                               " first_name, last_name, birth_date, join_date, last_login, created, balance, points)))"
                               " c FROM members UNION ALL SELECT 'o', SUM(CRC32(CONCAT_WS('|', id, member_id, total,"
                               " status, created))) FROM orders) x")

    assert checksum() == checksum()


def test_workload_inserts_updates_and_deletes(params, admin):
    create_schema(params)
    seed(params, members=200, rng_seed=3)
    tables = ("members", "event_registrations", "orders", "order_items", "payments", "ce_credits",
              "member_certifications")
    before = _snapshot(params, tables)
    with admin.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        gtid_before = cur.fetchone()[0]

    result = Workload(params, max_ops=200, rng_seed=3).run()

    assert result.total_ops == 200 and result.errors == 0
    assert result.rows["inserted"] > 0 and result.rows["updated"] > 0 and result.rows["deleted"] > 0
    after = _snapshot(params, tables)
    inserted = {t: set(after[t]) - set(before[t]) for t in tables}
    deleted = {t: set(before[t]) - set(after[t]) for t in tables}
    updated = {t: {i for i in set(before[t]) & set(after[t]) if before[t][i] != after[t][i]} for t in tables}

    assert inserted["members"] and inserted["orders"] and inserted["order_items"] and inserted["payments"]
    assert inserted["event_registrations"] and inserted["ce_credits"]
    assert updated["members"] and updated["event_registrations"]
    assert deleted["event_registrations"], "registration cancellations are hard deletes"
    assert deleted["members"], "some members are hard-deleted"
    soft_deleted = [i for i in updated["members"] if before["members"][i][-1] == 0 and after["members"][i][-1] == 1]
    assert soft_deleted, "some members are soft-deleted (deleted = 1)"
    with admin.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        assert cur.fetchone()[0] != gtid_before


def test_workload_on_empty_tables_creates_what_it_needs(params):
    create_schema(params)
    result = Workload(params, max_ops=60, rng_seed=9).run()
    assert result.total_ops == 60 and result.errors == 0
    counts = table_counts(params)
    assert counts["members"] > 0 and counts["events"] > 0


def test_workload_keeps_the_requested_pace(params):
    create_schema(params)
    seed(params, members=50, rng_seed=1)
    result = Workload(params, rate=100, duration=1.0, rng_seed=1).run()
    assert 0.95 <= result.elapsed < 1.5
    assert 60 <= result.total_ops <= 102
