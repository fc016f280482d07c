"""Dead letters: list, show, replay after a fix, purge.

Messages are read with ``basic_get`` without acknowledging them; what a command does not consume
goes back to the queue when its channel closes, so listing changes nothing (RabbitMQ counts the
redelivery in ``x-delivery-count``; DLQs have no delivery limit). Replay applies the chosen dead
letters through the sink in version order; those the sink refuses again are dead-lettered anew
with the new reason, so nothing is lost either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from cdc.admin.broker import Broker
from cdc.broker.topology import (
    HEADER_DELIVERIES,
    HEADER_REASON,
    READER_DLQ,
    sink_dlq,
)
from cdc.domain.envelope import ChangeEvent, decode, encode, is_batch


@dataclass
class DeadLetter:
    tag: int
    id: str
    reason: str
    body: bytes
    headers: dict[str, Any]
    event: ChangeEvent | None = None
    raw: dict[str, Any] | None = None  # reader dead letters: the row that could not be mapped

    @property
    def version(self) -> int:
        return self.event.version if self.event else 0

    def summary(self) -> dict[str, Any]:
        e, raw = self.event, self.raw or {}
        return {
            "id": self.id,
            "reason": self.reason,
            "entity": e.entity if e else raw.get("entity"),
            "key": e.key_str if e else None,
            "op": e.op.value if e else raw.get("op"),
            "version": e.version if e else None,
            "source_position": f"{e.source.file}:{e.source.pos}" if e else (f"{raw['file']}:{raw['pos']}" if "file" in raw else None),
            "deliveries": self.deliveries,
        }

    @property
    def deliveries(self) -> int | None:
        """Deliveries of the event to its sink that ended without an ack, where known."""
        count = self.headers.get(HEADER_DELIVERIES)
        return int(count) if isinstance(count, int) else None


@dataclass
class DlqReplayResult:
    applied: list[str] = field(default_factory=list)
    rejected_again: list[tuple[str, str]] = field(default_factory=list)
    left: int = 0  # not chosen, or not a change event


def queue_of(sink: str | None) -> str:
    return sink_dlq(sink) if sink else READER_DLQ


def fetch(broker: Broker, queue: str, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, unacknowledged on ``broker.channel()``."""
    channel = broker.channel()
    channel.basic_qos(prefetch_count=0)
    letters = []
    while len(letters) < limit:
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        headers = dict(properties.headers or {})
        if is_batch(body) and _split_in_place(broker, queue, body, headers):
            channel.basic_ack(method.delivery_tag)  # its events are in the queue now, one message each
            continue
        reason = _text(headers.get(HEADER_REASON)) or _broker_reason(headers)
        letter = DeadLetter(method.delivery_tag, properties.message_id or "", reason, body, headers)
        try:
            letter.event = decode(body)
            letter.id = letter.event.id
        except ValueError:
            try:
                letter.raw = orjson.loads(body)
            except orjson.JSONDecodeError:
                letter.raw = {}
            letter.reason = letter.reason or _text(letter.raw.get("reason"))
            letter.id = letter.id or f"tag-{method.delivery_tag}"
        letters.append(letter)
    return letters


def _split_in_place(broker: Broker, queue: str, body: bytes, headers: dict[str, Any]) -> bool:
    """A batch message in a DLQ (RabbitMQ's own delivery limit dead-letters batches whole): its events
    back to the same queue one message each, confirmed, so that each can be listed, replayed and purged
    on its own. False (and nothing published) if the body is not a JSON array."""
    from cdc.broker.consume import split_into_queue

    with broker.connection.channel() as channel:
        channel.confirm_delivery()
        return split_into_queue(channel, queue, body, headers)


def list_letters(url: str, sink: str | None, limit: int = 100) -> list[DeadLetter]:
    with Broker(url) as broker:
        _exists(broker, queue_of(sink))
        return sorted(fetch(broker, queue_of(sink), limit), key=lambda d: d.version)


def replay_letters(url: str, sink_obj, ids: list[str] | None = None, limit: int = 10_000, batch_size: int = 500) -> DlqReplayResult:
    """Apply the sink's dead letters (or those with ``ids``) in version order; ``sink_obj`` is open."""
    from cdc.broker.consume import publish_to_dlq

    result = DlqReplayResult()
    with Broker(url) as broker:
        queue = queue_of(sink_obj.name)
        _exists(broker, queue)
        channel = broker.channel()
        letters = fetch(broker, queue, limit)
        chosen = [d for d in letters if d.event is not None and (not ids or d.id in ids)]
        chosen.sort(key=lambda d: d.version)
        result.left = len(letters) - len(chosen)
        channel.confirm_delivery()
        for i in range(0, len(chosen), batch_size):
            batch = chosen[i:i + batch_size]
            rejections = {r.event.id: r.reason for r in sink_obj.apply([d.event for d in batch])}
            for letter in batch:
                if letter.id in rejections:
                    reason = f"rejected again by sink {sink_obj.name} on DLQ replay: {rejections[letter.id]}"
                    publish_to_dlq(channel, sink_obj.name, encode(letter.event), letter.headers, reason)
                    result.rejected_again.append((letter.id, rejections[letter.id]))
                else:
                    result.applied.append(letter.id)
                channel.basic_ack(letter.tag)
    return result


def purge(url: str, sink: str | None, ids: list[str] | None = None, limit: int = 100_000) -> int:
    """Delete the dead letters with ``ids`` (all of them without ids); returns how many."""
    with Broker(url) as broker:
        queue = queue_of(sink)
        _exists(broker, queue)
        if not ids:
            return broker.channel().queue_purge(queue).method.message_count
        letters = fetch(broker, queue, limit)
        gone = [d for d in letters if d.id in ids]
        for letter in gone:
            broker.channel().basic_ack(letter.tag)
        return len(gone)


def _exists(broker: Broker, queue: str) -> None:
    from cdc.domain.errors import ConfigError

    if broker.depth(queue) is None:
        raise ConfigError(f"dead-letter queue {queue} does not exist (the sink has never run, or the name is wrong)")


def _broker_reason(headers: dict[str, Any]) -> str:
    """The reason RabbitMQ gave (``x-death``) for a message it dead-lettered by itself."""
    deaths = headers.get("x-death") or []
    death = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    reason = _text(death.get("reason") or headers.get("x-first-death-reason"))
    queue = _text(death.get("queue") or headers.get("x-first-death-queue"))
    if reason == "delivery_limit":
        return (f"dead-lettered by RabbitMQ: delivered more times than the delivery limit of queue {queue} without an ack "
                "(the consumer crashed, was killed or lost its connection each time it held it)")
    if reason:
        return f"dead-lettered by RabbitMQ: {reason} in queue {queue}"
    return ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
