"""The binlog reader against the real binlog-enabled MariaDB (deploy/dev-services.sh)."""

from __future__ import annotations

import random
import threading
import uuid

import pymysql
import pytest

from cdc.domain.envelope import make_version
from cdc.domain.errors import CheckpointLost, PositionsWentBack, SourceSetupError, StreamInterrupted
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import SourceConfig
from cdc.source import row_decoder as binlog_fixes
from cdc.source.binlog_stream import BinlogReader

DB = "cdc_reader_test"


@pytest.fixture(scope="module")
def admin(source_server):
    conn = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
    yield conn
    conn.close()


@pytest.fixture
def table(admin):
    name = f"items_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE {DB}.{name} (id INT UNSIGNED PRIMARY KEY, label VARCHAR(20), qty BIGINT UNSIGNED) ENGINE=InnoDB")
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {DB}.{name}")


def config(source_server, **over) -> SourceConfig:
    # A replica server id of its own: the server drops an older stream with the same id.
    values = dict(host=source_server["host"], port=source_server["port"], user=source_server["user"],
                  password=source_server["password"], databases=[DB], heartbeat_s=1, read_timeout_s=10,
                  replica_server_id=random.randint(10_000, 2**31))
    values.update(over)
    return SourceConfig(**values)


def read(reader: BinlogReader, start: Checkpoint, until: Checkpoint) -> list:
    """Transactions from ``start`` up to and including the one ending at or after ``until``."""
    stop = threading.Event()
    out = []
    for txn in reader.transactions(start, stop):
        out.append(txn)
        if (txn.end.file, txn.end.pos) >= (until.file, until.pos):
            break
    return out


def write(admin, *statements: str) -> None:
    with admin.cursor() as cur:
        cur.execute("BEGIN")
        for s in statements:
            cur.execute(s)
        cur.execute("COMMIT")


def test_preflight_accepts_the_binlog_server(source_server):
    info = BinlogReader(config(source_server)).preflight()
    assert info.flavor == "mariadb" and info.gtid_mode and info.server_id == 1


def test_preflight_refuses_a_server_without_binlog_and_names_the_setting():
    # The machine's own MariaDB on 3306 runs with binary logging off.
    reader = BinlogReader(SourceConfig(host="127.0.0.1", port=3306, user="root", password=""))
    with pytest.raises(SourceSetupError) as err:
        reader.preflight()
    message = str(err.value)
    assert "--log-bin" in message and "binlog_row_metadata" in message


def test_preflight_names_missing_grants(source_server, admin):
    user = f"nogrant{uuid.uuid4().hex[:6]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
        cur.execute(f"GRANT SELECT ON {DB}.* TO '{user}'@'%'")
    try:
        with pytest.raises(SourceSetupError, match=rf"lacks REPLICATION SLAVE.*GRANT REPLICATION SLAVE.*'{user}'"):
            BinlogReader(config(source_server, user=user, password="pw")).preflight()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")


def test_wrong_password_is_a_clear_setup_error_without_the_secret(source_server):
    with pytest.raises(SourceSetupError) as err:
        BinlogReader(config(source_server, password="definitely-wrong-pw")).preflight()
    assert "source.password" in str(err.value) and "definitely-wrong-pw" not in str(err.value)


@pytest.mark.parametrize("resume_by", ["gtid", "position"])
def test_multi_row_transactions_arrive_whole_and_reread_identically(source_server, admin, table, resume_by):
    reader = BinlogReader(config(source_server, resume_by=resume_by), {(DB, table)})
    reader.preflight()
    start = reader.head_position()
    write(admin, f"INSERT INTO {DB}.{table} VALUES (1,'a',18446744073709551615),(2,'b',0),(3,'c',7)")
    write(admin, f"UPDATE {DB}.{table} SET label='B' WHERE id=2", f"DELETE FROM {DB}.{table} WHERE id=3")
    until = reader.head_position()
    txns = [t for t in read(reader, start, until) if t.changes]
    assert [[(c.op, (c.after or c.before)["id"]) for c in t.changes] for t in txns] == [
        [("c", 1), ("c", 2), ("c", 3)], [("u", 2), ("d", 3)]]
    assert txns[0].changes[0].after["qty"] == 18446744073709551615  # BIGINT UNSIGNED max survives
    assert txns[1].changes[0].before["label"] == "b" and txns[1].changes[0].after["label"] == "B"
    assert txns[0].gtid and txns[0].end.gtid and txns[0].end.gtid.endswith(txns[0].gtid.split("-")[-1])

    # Resuming from the first transaction's end yields the second one with the same positions.
    again = [t for t in read(reader, txns[0].end, until) if t.changes]
    assert [(c.file, c.pos, c.row) for c in again[0].changes] == [(c.file, c.pos, c.row) for c in txns[1].changes]
    assert again[0].end == txns[1].end


def test_without_the_c_decoder_the_reader_says_so_and_reads_the_same_rows(source_server, admin, table, monkeypatch,
                                                                          caplog):
    reader = BinlogReader(config(source_server), {(DB, table)})
    start = reader.head_position()
    write(admin, f"INSERT INTO {DB}.{table} VALUES (1,'é',18446744073709551615),(2,NULL,0)")
    until = reader.head_position()

    def rows() -> list:
        return [(c.op, c.after) for t in read(reader, start, until) for c in t.changes]

    with caplog.at_level("WARNING", logger="cdc.reader"):
        in_c = rows()
    assert not [r for r in caplog.records if "cdc.source._rowdecode" in r.getMessage()]
    monkeypatch.setattr(binlog_fixes, "_rowdecode", None)
    with caplog.at_level("WARNING", logger="cdc.reader"):
        in_python = rows()
    warning = [r.getMessage() for r in caplog.records if "cdc.source._rowdecode" in r.getMessage()]
    assert len(warning) == 1 and "pip install -e ." in warning[0], warning
    assert in_python == in_c == [("c", {"id": 1, "label": "é", "qty": 18446744073709551615}),
                                 ("c", {"id": 2, "label": None, "qty": 0})]


def test_versions_increase_across_binlog_rotation(source_server, admin, table):
    reader = BinlogReader(config(source_server), {(DB, table)})
    reader.preflight()
    start = reader.head_position()
    write(admin, f"INSERT INTO {DB}.{table} VALUES (10,'x',1)")
    with admin.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
    write(admin, f"UPDATE {DB}.{table} SET qty=2 WHERE id=10")
    until = reader.head_position()
    changes = [c for t in read(reader, start, until) for c in t.changes]
    assert changes[0].file != changes[1].file
    versions = [make_version(c.file, c.pos, c.row) for c in changes]
    assert versions[0] < versions[1]
    # Resume by position from before the rotation reads the same change after it.
    again = [c for t in read(BinlogReader(config(source_server, resume_by="position"), {(DB, table)}), start, until) for c in t.changes]
    assert [make_version(c.file, c.pos, c.row) for c in again] == versions


def test_a_killed_connection_interrupts_instead_of_resuming_mid_transaction(source_server, admin, table):
    # A user of its own, so that only this reader's connection is killed (other tests and daemons may be streaming).
    user = f"killme{uuid.uuid4().hex[:6]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
        cur.execute(f"GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'")
    try:
        _kill_and_resume(source_server, admin, table, user)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")


def _kill_and_resume(source_server, admin, table, user):
    reader = BinlogReader(config(source_server, user=user, password="pw", replica_server_id=4202), {(DB, table)})
    reader.preflight()
    start = reader.head_position()
    stop = threading.Event()
    stream = reader.transactions(start, stop)
    write(admin, f"INSERT INTO {DB}.{table} VALUES (20,'k',1)")
    first = next(t for t in stream if t.changes)
    with admin.cursor() as cur:
        cur.execute("SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%%' AND user = %s", (user,))
        for (pid,) in cur.fetchall():
            cur.execute(f"KILL {pid}")
    write(admin, f"INSERT INTO {DB}.{table} VALUES (21,'k',1)")
    with pytest.raises(StreamInterrupted):
        for _ in stream:
            pass
    # Reopened from the last boundary, nothing is missed.
    until = reader.head_position()
    resumed = [t for t in read(reader, first.end, until) if t.changes]
    assert [c.after["id"] for t in resumed for c in t.changes] == [21]


def test_a_checkpoint_older_than_the_oldest_binlog_is_refused_with_the_way_out(source_server):
    reader = BinlogReader(config(source_server))
    reader.preflight()
    with pytest.raises(CheckpointLost) as err:
        reader.start_position(Checkpoint(file="mysql-bin.000000", pos=4))
    message = str(err.value)
    assert "oldest binlog still available" in message and "cdc offsets reset" in message


def test_a_checkpoint_past_the_servers_binlog_end_is_refused_not_streamed_below_the_sinks_versions(source_server):
    # A promoted replica or RESET MASTER: the checkpoint's position was never written by this server.
    reader = BinlogReader(config(source_server))
    reader.preflight()
    head = reader.head_position()
    ahead = Checkpoint(file=head.file, pos=head.pos + 10**6, gtid=head.gtid)
    with pytest.raises(PositionsWentBack) as err:
        reader.start_position(ahead)
    message = str(err.value)
    assert f"ends at {head.file}:{head.pos}" in message and ahead.describe() in message
    assert "every sink would ignore" in message and "cdc offsets reset --source --latest" in message
    assert reader.start_position(head) == head  # its own head is a valid start


def test_a_gtid_resume_that_lands_before_the_checkpoint_is_refused(source_server, admin, table):
    # The GTID position is found on a binlog numbered lower than the one that wrote the checkpoint
    # (here: the same GTID state with a position this server has not reached).
    reader = BinlogReader(config(source_server))
    reader.preflight()
    head = reader.head_position()
    assert head.gtid, "the test server runs with GTIDs"
    write(admin, f"INSERT INTO {DB}.{table} VALUES (1, 'a', 1)")
    elsewhere = Checkpoint(file=head.file, pos=head.pos + 10**6, gtid=head.gtid)
    with pytest.raises(PositionsWentBack) as err:
        read(reader, elsewhere, reader.head_position())
    assert f"resumed by GTID {head.gtid}" in str(err.value) and elsewhere.describe() in str(err.value)
    [txn] = read(reader, head, reader.head_position())  # from the checkpoint this server wrote: streamed
    assert [c.after["id"] for c in txn.changes] == [1]


def test_a_large_transaction_arrives_in_bounded_segments(source_server, admin, table):
    reader = BinlogReader(config(source_server, max_txn_rows=1000), {(DB, table)})
    reader.preflight()
    start = reader.head_position()
    with admin.cursor() as cur:
        cur.execute("BEGIN")
        cur.executemany(f"INSERT INTO {DB}.{table} VALUES (%s, 'bulk', 1)", [(i,) for i in range(1, 12_001)])
        cur.execute("COMMIT")
    until = reader.head_position()
    segments = [t for t in read(reader, start, until) if t.changes]
    assert all(len(t.changes) <= 1001 for t in segments)
    assert [t.partial for t in segments] == [True] * (len(segments) - 1) + [False]
    assert len({t.id for t in segments}) == 1  # one source transaction
    assert (segments[-1].end.file, segments[-1].end.pos) <= (until.file, until.pos)
    assert [c.after["id"] for t in segments for c in t.changes] == list(range(1, 12_001))


@pytest.fixture
def make_user(admin):
    """make(*grant statements with {user}) -> user name (password "pw"); dropped afterwards."""
    made = []

    def make(*grants: str) -> str:
        user = f"cdcgr{uuid.uuid4().hex[:6]}"
        made.append(user)
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
            for grant in grants:
                cur.execute(grant.format(user=f"'{user}'@'%'"))
        return user

    yield make
    with admin.cursor() as cur:
        for user in made:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_preflight_warns_about_privileges_the_user_does_not_need(source_server, admin, make_user, caplog):
    user = make_user("GRANT SELECT, INSERT, UPDATE, DELETE, DROP, ALTER, CREATE, FILE, SHUTDOWN, SUPER, "
                     "REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {user} WITH GRANT OPTION",
                     f"GRANT ALL PRIVILEGES ON `{DB}`.* TO {{user}}")
    with caplog.at_level("WARNING", logger="cdc.reader"):
        info = BinlogReader(config(source_server, user=user, password="pw"), warn_grants=True).preflight()  # goes on
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    text = warnings[0]
    assert f"'{user}'" in text and info.warnings and info.warnings[0] in text
    for privilege in ("INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "CREATE", "FILE", "SHUTDOWN", "SUPER", "GRANT OPTION",
                      "ALL PRIVILEGES"):
        assert privilege in text
    assert "SELECT," not in text.split("REVOKE")[1]  # the needed ones are not revoked
    statements = [s.strip() for s in text.split("run: ")[1].split(" (the reader")[0].replace("then: ", "").split(";")]
    assert statements == [
        f"REVOKE INSERT, UPDATE, DELETE, CREATE, DROP, SHUTDOWN, FILE, ALTER, SUPER, GRANT OPTION ON *.* FROM '{user}'@'%'",
        f"REVOKE ALL PRIVILEGES ON `{DB}`.* FROM '{user}'@'%'",
        f"GRANT SELECT ON `{DB}`.* TO '{user}'@'%'",
    ]
    # The statements it names work, and leave a user with nothing more to revoke.
    with admin.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    caplog.clear()
    with caplog.at_level("WARNING", logger="cdc.reader"):
        info = BinlogReader(config(source_server, user=user, password="pw"), warn_grants=True).preflight()
    assert info.warnings == () and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_preflight_is_quiet_for_a_minimal_user(source_server, make_user, caplog):
    user = make_user("GRANT REPLICATION SLAVE, BINLOG MONITOR, SLAVE MONITOR ON *.* TO {user}",
                     f"GRANT SELECT, SHOW VIEW ON `{DB}`.* TO {{user}}")
    reader = BinlogReader(config(source_server, user=user, password="pw"), warn_grants=True)
    with caplog.at_level("WARNING", logger="cdc.reader"):
        info = reader.preflight()
        reader.head_position()  # what the grants are for: the binlog head, the binlog list
        reader.binlog_files()
    assert info.warnings == () and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_preflight_names_a_source_database_the_user_cannot_select(source_server, make_user):
    user = make_user("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {user}", "GRANT SELECT ON `other_db`.* TO {user}")
    with pytest.raises(SourceSetupError, match=rf"lacks SELECT on `{DB}`.*GRANT SELECT ON `{DB}`\.\* TO '{user}'@'%'"):
        BinlogReader(config(source_server, user=user, password="pw")).preflight()
