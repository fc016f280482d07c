"""Positions as operators type them, binlog arithmetic, leases and exit codes: no I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from cdc.admin import EXIT_BAD_POSITION, EXIT_LEASE_HELD, EXIT_USAGE, LeaseHeld, PositionError, UnknownSink, exit_code
from cdc.admin.binlog_time import _last_true
from cdc.admin.eventlog import stream_start
from cdc.admin.offsets import Target, describe_start, refuse_if_owned, sink_start
from cdc.admin.positions import parse_file_pos, parse_gtid_set, parse_timestamp
from cdc.admin.status import lag_bytes
from cdc.domain.positions import Checkpoint
from cdc.state.lease import Leases
from cdc.state.store import MemoryStateStore

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_file_pos():
    assert str(parse_file_pos("mysql-bin.000042:1234")) == "mysql-bin.000042:1234"
    for bad in ("mysql-bin.000042", "mysql-bin:12", "mysql-bin.000001:2", ":4"):
        with pytest.raises(PositionError):
            parse_file_pos(bad)


def test_gtid_sets():
    assert parse_gtid_set(" 1-1-5, 0-1-42 ", "mariadb") == "0-1-42,1-1-5"
    assert parse_gtid_set("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7", "mysql")
    for bad, flavor in (("0-1", "mariadb"), ("0-1-2,0-1-3", "mariadb"), ("", "mariadb"), ("uuid:1", "mysql")):
        with pytest.raises(PositionError):
            parse_gtid_set(bad, flavor)


def test_timestamps():
    assert parse_timestamp("2024-05-01T10:00:00", NOW) == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert parse_timestamp("2024-05-01T12:00:00+02:00", NOW).hour == 10
    assert parse_timestamp("-2h", NOW) == NOW - dt.timedelta(hours=2)
    for bad in ("yesterday", "2024-05-02T00:00:00Z"):  # not a time; in the future
        with pytest.raises(PositionError):
            parse_timestamp(bad, NOW)


def test_sink_targets_round_trip_to_stream_arguments():
    assert sink_start(Target(earliest=True)) == "first" and stream_start("first") == ("first", 0)
    assert sink_start(Target(latest=True)) is None
    assert stream_start(sink_start(Target(offset="17"))) == (17, 0)
    version = sink_start(Target(position="mysql-bin.000002:400"))
    assert stream_start(version) == ("first", (2 << 32) | 400) and "2:400" in describe_start(version)
    with pytest.raises(PositionError, match="GTID"):
        sink_start(Target(gtid="0-1-1"))
    with pytest.raises(PositionError, match="exactly one"):
        Target(earliest=True, latest=True).chosen()


def test_lag_bytes_across_files():
    files = [("b.000001", 1000), ("b.000002", 500), ("b.000003", 300)]
    assert lag_bytes(Checkpoint(file="b.000003", pos=100), Checkpoint(file="b.000003", pos=300), files) == 200
    assert lag_bytes(Checkpoint(file="b.000001", pos=900), Checkpoint(file="b.000003", pos=50), files) == 100 + 500 + 50


def test_last_true_binary_search():
    values = [1, 3, 5, 7]
    assert _last_true(len(values), lambda i: values[i] <= 5) == 2
    assert _last_true(len(values), lambda i: values[i] < 0) == -1
    assert _last_true(0, lambda i: True) == -1


def test_lease_refusal_names_the_owner_and_frees_after_release():
    state = MemoryStateStore()
    leases = Leases(state)
    assert leases.acquire("reader:s", "elsewhere:1:aaa", 30)
    assert not leases.acquire("reader:s", "me:2:bbb", 30)
    with pytest.raises(LeaseHeld, match="elsewhere:1:aaa"):
        refuse_if_owned(state, ["reader:s"], "the reader", "source 's'")
    assert leases.renew("reader:s", "elsewhere:1:aaa", 30)
    leases.release("reader:s", "elsewhere:1:aaa")
    assert leases.holder("reader:s") is None
    refuse_if_owned(state, ["reader:s"], "the reader", "source 's'")


def test_exit_codes():
    assert exit_code(PositionError("x")) == EXIT_BAD_POSITION
    assert exit_code(LeaseHeld("x")) == EXIT_LEASE_HELD
    assert exit_code(UnknownSink("x")) == EXIT_USAGE
