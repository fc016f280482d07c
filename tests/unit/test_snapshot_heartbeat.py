"""Issue 19 (10): a heartbeat's Tick carries the heartbeat's own position, and the snapshot's caught-up mark is
that position, never the server's head read afterwards (which may be past what the stream received)."""

from types import SimpleNamespace

from pymysqlreplication.event import HeartbeatLogEvent

from cdc.checkpoint import Checkpoint
from cdc.config import load_settings
from cdc.mapping import Mapper
from cdc.reader import TICK, BinlogReader, Tick, _tick
from cdc.snapshot import Snapshotter
from cdc.state.store import MemoryStateStore


def _heartbeat(ident: str, log_pos: int) -> HeartbeatLogEvent:
    event = object.__new__(HeartbeatLogEvent)
    event.packet, event.ident = SimpleNamespace(log_pos=log_pos), ident
    return event


def test_a_tick_carries_the_heartbeats_position():
    assert _tick(_heartbeat("mysql-bin.000007", 4711), "mysql-bin.000006") == Tick(Checkpoint(file="mysql-bin.000007", pos=4711))
    assert _tick(_heartbeat("", 0), "mysql-bin.000006") is TICK


def test_the_watermark_after_a_heartbeat_is_the_received_position_not_the_head():
    settings = load_settings(None)
    reader = BinlogReader(settings.source)
    reader.head_position = lambda: Checkpoint(file="mysql-bin.000007", pos=99_999)  # written since, not received
    snapshotter = Snapshotter(settings, MemoryStateStore(), Mapper([]), reader)
    snapshotter.out.append(object())  # a chunk out, waiting for its watermark
    snapshotter.pump = lambda *args: None
    received = Checkpoint(file="mysql-bin.000007", pos=4711)
    snapshotter.on_tick(received, None, Tick(received))
    assert snapshotter.caught_up_to == received
    snapshotter.on_tick(received, None, Tick(Checkpoint(file="mysql-bin.000007", pos=100)))  # never backwards
    assert snapshotter.caught_up_to == received
