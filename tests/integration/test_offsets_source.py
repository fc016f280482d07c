"""`cdc offsets` on the source against the binlog MariaDB: positions found by GTID and by time,
validated against the server, refused while a live reader owns the checkpoint, audited."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pymysql
import pytest

from cdc.admin.positions import parse_file_pos
from cdc.domain.positions import Checkpoint
from cdc.state.lease import Leases, reader_lease
from cdc.state.store import SqlStateStore


@pytest.fixture
def scratch(tmp_path, source_server, unique_name):
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {unique_name}")
        cur.execute(f"CREATE TABLE {unique_name}.t (id INT PRIMARY KEY, v INT)")
    config = tmp_path / "cdc.yaml"
    config.write_text(f"""
source: {{name: ops, host: {source_server['host']}, port: {source_server['port']}, user: {source_server['user']},
          databases: [{unique_name}]}}
state: {{url: "sqlite:///{tmp_path}/state.db"}}
mappings: {{dir: {tmp_path}/mappings}}
metrics: {{enabled: false}}
""")
    (tmp_path / "mappings").mkdir()
    yield dict(db=unique_name, admin=admin, config=config, state=SqlStateStore(f"sqlite:///{tmp_path}/state.db"),
               password=source_server["password"])
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {unique_name}")
    admin.close()


def cdc(s, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CDC_SOURCE__PASSWORD=s["password"])
    return subprocess.run([sys.executable, "-m", "cdc.cli", "offsets", *args, "-c", str(s["config"])],
                          env=env, capture_output=True, text=True, timeout=120)


def write(s, value: int) -> Checkpoint:
    """One transaction; returns the binlog head after it (file, pos, gtid)."""
    with s["admin"].cursor() as cur:
        cur.execute(f"INSERT INTO {s['db']}.t VALUES (%s, %s)", (value, value))
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
        cur.execute("SELECT @@gtid_binlog_pos")
        return Checkpoint(file=file, pos=int(pos), gtid=cur.fetchone()[0])


def test_gtid_and_timestamp_find_the_transaction_boundary_and_are_audited(scratch, wait_until):
    after_a = write(scratch, 1)
    now = time.time()
    wait_until(lambda: time.time() >= int(now) + 1.05, timeout=3, message="the next second")
    t = dt.datetime.fromtimestamp(int(now) + 1, dt.UTC)
    after_b = write(scratch, 2)

    by_time = cdc(scratch, "set", "--source", "--timestamp", t.isoformat(), "--dry-run")
    assert by_time.returncode == 0, by_time.stderr
    assert "would move" in by_time.stdout
    assert scratch["state"].load_checkpoint("ops") is None  # a dry run changes nothing
    # The first transaction at or after T starts after A and no later than B (other tests may write in between).
    found = parse_file_pos(by_time.stdout.split("to:")[1].split()[0])
    assert _at(after_a) <= found.sort_key() < _at(after_b)

    by_gtid = cdc(scratch, "set", "--source", "--gtid", after_a.gtid, "--reason", "test")
    assert by_gtid.returncode == 0, by_gtid.stderr
    checkpoint = scratch["state"].load_checkpoint("ops")
    assert checkpoint.gtid == after_a.gtid
    assert _at(after_a) <= _at(checkpoint) < _at(after_b)
    audit = scratch["state"].audit_log(1)[0]
    assert audit["target"] == "source:ops" and audit["reason"] == "test" and after_a.gtid in audit["to_value"]

    at_head = cdc(scratch, "set", "--source", "--position", f"{after_a.file}:{after_a.pos}")
    assert at_head.returncode == 0, at_head.stderr
    assert scratch["state"].load_checkpoint("ops").pos == after_a.pos


def _at(checkpoint: Checkpoint) -> tuple[int, int]:
    return parse_file_pos(f"{checkpoint.file}:{checkpoint.pos}").sort_key()


@pytest.mark.parametrize("args, message", [
    (["--gtid", "0-1"], "malformed MariaDB GTID"),
    (["--gtid", "0-1-999999999999"], "not in the binlog yet"),
    (["--timestamp", "2001-01-01T00:00:00Z"], "before the oldest change"),
    (["--position", "mysql-bin.000001:5"], "not the start of an event"),
    (["--position", "mysql-bin.999999:4"], "not on the server"),
    (["--position", "nonsense"], "is not FILE:POS"),
])
def test_bad_positions_are_refused_with_exit_code_5(scratch, args, message):
    result = cdc(scratch, "set", "--source", *args)
    assert result.returncode == 5, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert scratch["state"].load_checkpoint("ops") is None


def test_refused_while_a_live_reader_holds_the_lease(scratch):
    Leases(scratch["state"]).acquire(reader_lease("ops"), "reader-host:1:abcdef", ttl=60)
    result = cdc(scratch, "reset", "--source", "--latest")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "reader-host:1:abcdef" in result.stderr and "Stop the reader" in result.stderr
    assert scratch["state"].load_checkpoint("ops") is None


def test_unknown_sink_is_a_usage_error(scratch):
    result = cdc(scratch, "set", "--sink", "nope", "--earliest")
    assert result.returncode == 2 and "unknown sink 'nope'" in result.stderr


def test_a_binlog_holding_an_event_over_max_allowed_packet_is_still_searched(scratch, source_server):
    # SHOW BINLOG EVENTS refuses a file with an event larger than max_allowed_packet (16 MiB here), as a row of
    # many megabytes makes; the search lists the file a page at a time and steps over that event.
    from cdc.admin.binlog_time import BinlogSearch
    from cdc.runtime.config import SourceConfig
    from cdc.source.binlog_stream import BinlogReader

    mb = 1024 * 1024
    with scratch["admin"].cursor() as cur:
        cur.execute(f"CREATE TABLE {scratch['db']}.big (id INT PRIMARY KEY, b LONGBLOB)")
        cur.execute(f"INSERT INTO {scratch['db']}.big VALUES (1, %s)", (os.urandom(6 * mb),))
        cur.execute(f"UPDATE {scratch['db']}.big SET b = CONCAT(b, %s)", (os.urandom(3 * mb),))
        cur.execute(f"UPDATE {scratch['db']}.big SET b = CONCAT(b, %s)", (os.urandom(mb),))  # before + after: 19 MB
        cur.execute("SHOW MASTER STATUS")
        big_done = cur.fetchone()[:2]
    time.sleep(1.1)
    since = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(1.1)
    after = write(scratch, 7)
    search = BinlogSearch(BinlogReader(SourceConfig(host=source_server["host"], port=source_server["port"],
                                                    user=source_server["user"], password=source_server["password"])))
    found = search.at_time(since)
    assert (big_done[0], int(big_done[1])) <= (found.file, found.pos) <= (after.file, after.pos)
    assert search.at(parse_file_pos(f"{found.file}:{found.pos}")).pos == found.pos  # a transaction boundary


def test_via_daemon_needs_a_running_reader_and_open_requests_are_shown(scratch):
    result = cdc(scratch, "set", "--source", "--latest", "--via-daemon")
    assert result.returncode == 1 and "no running reader owns source 'ops'" in result.stderr, result.stderr
    assert scratch["state"].position_request_list() == []
    result = cdc(scratch, "set", "--sink", "crm", "--latest", "--via-daemon")
    assert result.returncode == 2 and "unknown sink 'crm'" in result.stderr, result.stderr

    from cdc.admin.offsets import show
    from cdc.runtime.config import load_settings

    scratch["state"].position_request_create("source:ops", '{"gtid": "0-1-5"}', "ops@host", "why")
    shown = show(load_settings(scratch["config"]), scratch["state"], {})
    assert [(r["to"], r["status"], r["who"]) for r in shown["source"]["requests"]] == [("gtid 0-1-5", "requested", "ops@host")]
