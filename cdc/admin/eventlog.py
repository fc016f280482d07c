"""Reading the event-log stream (``<exchange>.log``) from a start to the tail it had when reading began.

A stream consumer over AMQP 0.9.1 needs ``basic_qos(prefetch_count > 0)`` and manual acks; where
it starts is the ``x-stream-offset`` argument: ``first``, a numeric offset, or a timestamp (the
stream seeks to the first chunk written at or after it, so a few earlier events may come too,
which replay tolerates). The stream never says "that was the last message", so the tail is probed
first (a consumer from ``last``), and reading stops once it has passed that tail: events written
meanwhile may be read too, which is harmless, since applying an event twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cdc.admin import PositionError
from cdc.admin.broker import Broker
from cdc.broker.topology import stop_stream_consumer
from cdc.domain.errors import TransientError

OFFSET_HEADER = "x-stream-offset"


@dataclass(frozen=True)
class LogMessage:
    offset: int
    body: bytes
    headers: dict[str, Any]


def stream_start(start: str) -> tuple[Any, int]:
    """``x-stream-offset`` argument and the minimum version to keep, for a recorded start (see cdc.admin.offsets)."""
    kind, _, value = start.partition(":")
    if kind == "first":
        return "first", 0
    if kind == "offset":
        return int(value), 0
    if kind == "timestamp":
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC), 0
    if kind == "version":
        return "first", int(value)
    raise PositionError(f"unknown event-log start {start!r}")


class EventLogReader:
    def __init__(self, broker: Broker, queue: str, prefetch: int = 2000, idle_timeout_s: float = 15.0,
                 first_wait_s: float = 3.0) -> None:
        self.broker = broker
        self.first_wait_s = first_wait_s
        self.queue = queue
        self.prefetch = prefetch
        self.idle_timeout_s = idle_timeout_s

    def tail(self, settle_s: float = 0.3, wait_s: float = 1.0) -> int | None:
        """Offset of the newest message in the stream now; None if the stream is empty."""
        if self.broker.depth(self.queue) is None:
            raise PositionError(f"the event log {self.queue} does not exist: it is declared by the reader "
                                "(cdc run --role reader) when it starts; nothing has been logged yet")
        seen: list[int] = []
        channel = self.broker.connection.channel()
        channel.basic_qos(prefetch_count=self.prefetch)

        def on_message(ch, method, properties, _body):
            seen.append(int((properties.headers or {}).get(OFFSET_HEADER, -1)))
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(self.queue, on_message, auto_ack=False, arguments={OFFSET_HEADER: "last"})
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            before = len(seen)
            self.broker.connection.process_data_events(time_limit=settle_s if seen else 0.05)
            if seen and len(seen) == before:
                break
        stop_stream_consumer(channel)
        return max(seen) if seen else None

    def read(self, start: Any, tail: int, batch_size: int = 500, until_ms: int | None = None,
             until_offset: int | None = None) -> Iterator[list[LogMessage]]:
        """Batches of messages from ``start`` up to ``tail`` (and not past ``until_*``)."""
        pending: list[LogMessage] = []
        done = False
        channel = self.broker.connection.channel()
        channel.basic_qos(prefetch_count=self.prefetch)

        def on_message(ch, method, properties, body):
            nonlocal done
            headers = dict(properties.headers or {})
            offset = int(headers.get(OFFSET_HEADER, -1))
            ch.basic_ack(method.delivery_tag)
            if done:
                return
            beyond = (until_offset is not None and offset > until_offset) or (
                until_ms is not None and properties.timestamp is not None and properties.timestamp * 1000 > until_ms)
            if beyond:
                done = True
                return
            pending.append(LogMessage(offset, body, headers))
            if offset >= tail or (until_offset is not None and offset >= until_offset):
                done = True

        channel.basic_consume(self.queue, on_message, auto_ack=False, arguments={OFFSET_HEADER: start})
        last_progress = time.monotonic()
        received = False
        try:
            while not done or pending:
                if len(pending) >= batch_size or (done and pending):
                    out, pending[:] = pending[:batch_size], pending[batch_size:]
                    yield out
                    last_progress = time.monotonic()
                    continue
                before = len(pending)
                self.broker.connection.process_data_events(time_limit=0.2)
                if len(pending) != before:
                    received = True
                    last_progress = time.monotonic()
                elif pending:
                    out, pending[:] = list(pending), []
                    yield out
                elif not received and time.monotonic() - last_progress > self.first_wait_s:
                    return  # the start lies after the tail (e.g. a time after the last event): nothing to read
                elif time.monotonic() - last_progress > self.idle_timeout_s:
                    raise TransientError(f"the event log {self.queue} stopped delivering before its tail (offset {tail}); "
                                         "retry the replay")
        finally:
            if channel.is_open:
                stop_stream_consumer(channel)
