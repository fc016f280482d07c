"""Re-apply a sink from the event log, without touching the binlog reader.

Events go straight to the sink's ``apply()`` in batches. The version guard makes this safe while
the sink's worker keeps running: an event older than what a row holds changes nothing.

Two modes:

``catch-up`` (default)
    Events are applied as they are. Repairs rows that are *missing* with no version left behind (a
    sink rebuilt from empty, rows deleted in CRM), and any gap in the sink's history.
``repair`` (``--repair``)
    For rows damaged *behind the service's back* (deleted or overwritten while the sink still
    records their version): re-applying an event at the version the sink already holds would be
    ignored. So the newest event of each key in the window is re-applied at the newest version read
    in the window (``V_end``). That is safe: every change of that key up to ``V_end`` is in the
    window (the log holds events in binlog order), and every later change carries a higher
    version and still wins. Rows then hold ``V_end`` instead of their own change's version. Keeps
    one event per key of the window in memory. The key of the window's very last event cannot be
    lifted above its own version; ``cdc verify --repair`` covers it, and any row whose last change
    is older than the window.

Events the sink refuses go to its DLQ with the reason, as in normal operation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from cdc.admin import PositionError, sink_config
from cdc.admin.broker import Broker
from cdc.admin.eventlog import EventLogReader, stream_start
from cdc.admin.positions import parse_stream_offset, parse_timestamp
from cdc.broker.topology import event_log
from cdc.domain.envelope import ChangeEvent, decode_many
from cdc.runtime.config import Settings

log = logging.getLogger("cdc.ops.replay")


@dataclass
class ReplayResult:
    sink: str
    start: str
    mode: str
    read: int = 0
    applied: int = 0
    skipped: int = 0  # other entities, or older than a FILE:POS start
    malformed: int = 0
    rejected: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    max_version: int = 0
    seconds: float = 0.0
    rejections: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0


def parse_from(text: str) -> str:
    """``--from``: ``first``, an event-log offset, or a timestamp (ISO 8601 or -30m)."""
    text = text.strip()
    if text == "first":
        return "first"
    if text.isdigit():
        return f"offset:{parse_stream_offset(text)}"
    return f"timestamp:{int(parse_timestamp(text).timestamp() * 1000)}"


def parse_until(text: str | None) -> tuple[int | None, int | None]:
    """``--until``: an event-log offset or a timestamp -> (until_offset, until_ms)."""
    if text is None:
        return None, None
    if text.strip().isdigit():
        return int(text), None
    return None, int(parse_timestamp(text).timestamp() * 1000)


def replay(settings: Settings, sink, start: str, until: str | None = None, repair: bool = False,
           batch_size: int = 500) -> ReplayResult:
    """Apply the sink's events from ``start`` (see cdc.admin.offsets.sink_start) to the log's tail; ``sink`` is open."""
    config = sink_config(settings, sink.name)
    entities = None if "*" in config.entities else set(config.entities)
    until_offset, until_ms = parse_until(until)
    argument, min_version = stream_start(start)
    result = ReplayResult(sink.name, start, "repair" if repair else "catch-up")
    newest: dict[tuple[str, str], ChangeEvent] = {}
    started = time.monotonic()
    queue = event_log(settings.broker.exchange)
    with Broker(settings.broker.url.get_secret_value()) as broker:
        reader = EventLogReader(broker, queue)
        tail = reader.tail()
        if tail is None:
            result.seconds = time.monotonic() - started
            return result
        if isinstance(argument, int) and argument > tail:
            raise PositionError(f"event-log offset {argument} is past the log's last offset {tail}")
        for batch in reader.read(argument, tail, batch_size, until_ms, until_offset):
            events = []
            for message in batch:
                result.first_offset = message.offset if result.first_offset is None else result.first_offset
                result.last_offset = message.offset
                try:
                    decoded = decode_many(message.body)  # one event, or a batch of them (broker.batch_events)
                except (ValidationError, ValueError) as err:
                    result.read += 1
                    result.malformed += 1
                    log.warning("replay: event-log offset %s is not a change event, skipped: %s", message.offset, str(err)[:200])
                    continue
                result.read += len(decoded)
                for event in decoded:
                    if (entities is not None and event.entity not in entities) or event.version < min_version:
                        result.skipped += 1
                        continue
                    result.max_version = max(result.max_version, event.version)
                    if repair:
                        slot = (event.entity, event.key_str)
                        if slot not in newest or newest[slot].version < event.version:
                            newest[slot] = event
                    else:
                        events.append(event)
            if events:
                _apply(settings, sink, events, result)
        if repair and newest:
            # A row older than its entity's last truncate in the log is gone at the source: not re-written.
            floors = {e.entity: e.version for e in newest.values() if e.is_truncate}
            kept = [e for e in newest.values() if e.is_truncate or e.version > floors.get(e.entity, -1)]
            lifted = [e.model_copy(update={"version": result.max_version}) for e in kept]
            for i in range(0, len(lifted), batch_size):
                _apply(settings, sink, lifted[i:i + batch_size], result)
    result.seconds = time.monotonic() - started
    return result


def _apply(settings: Settings, sink, events: list[ChangeEvent], result: ReplayResult) -> None:
    rejections = sink.apply(events)
    result.applied += len(events) - len(rejections)
    if rejections:
        result.rejected += len(rejections)
        _dead_letter(settings, sink.name, rejections)
        result.rejections += [r.reason for r in rejections[:20 - len(result.rejections)]]


def _dead_letter(settings: Settings, sink: str, rejections) -> None:
    from cdc.broker.consume import publish_to_dlq
    from cdc.broker.topology import event_headers
    from cdc.domain.envelope import encode

    with Broker(settings.broker.url.get_secret_value()) as broker:
        channel = broker.channel()
        channel.confirm_delivery()
        for r in rejections:
            headers = event_headers(r.event.entity, r.event.key_str, r.event.version)
            publish_to_dlq(channel, sink, encode(r.event), headers, f"rejected by sink {sink} during replay: {r.reason}")
