"""The consume loop: typed events to a handler, ack after success, retries, dead letters, replay.

Per event (a message holds one, or several with ``broker.batch_events`` > 1; each is handled on its
own, in order, and the message is acked after the last): parse (typed model of its entity) -> skip if the idempotency store has seen its version
-> handler, retried with capped exponential backoff up to ``max_attempts`` -> record the version ->
ack. An unparseable message, a handler that raised :class:`Reject`, or one that failed every
attempt goes to ``cdc.consumer.<name>.dlq`` with the reason (publish confirmed before the ack).
Nothing is acked before the handler returned, so a crash means redelivery, never loss; a message
that crashes the process every time is dead-lettered by the queue's delivery limit.

Starting from a point (:class:`StartFrom`): the subscription's queue is declared and bound first,
so every event published from then on waits there; then the event-log stream is read from the
point, and once it reaches events published after that moment (or has nothing more) the consumer
switches to its queue. Events in both are delivered once thanks to the idempotency store (an
in-memory one for the run if none was given).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from cdc.broker.consume import (
    channel_closed_by_broker,
    close_quietly,
    dead_letter_properties,
    lost_connection_errors,
    open_channel,
    reconnect_delay,
    service_for,
    short_error,
)
from cdc.broker.topology import (
    DLX,
    HEADER_REASON,
    event_headers,
    event_log,
    stop_stream_consumer,
    unbatched,
)
from cdc.consumer.idempotency import IdempotencyStore, MemoryIdempotencyStore
from cdc.consumer.subscription import StartFrom, Subscription, declare
from cdc.domain.boundary import HeartbeatEvent, TransactionEvent, decode_boundary, is_boundary
from cdc.domain.envelope import ChangeEvent, decode, is_batch, now_ms, split_batch
from cdc.domain.errors import ConfigError

log = logging.getLogger("cdc.consumer")

# A ChangeEvent (typed by its entity's model where models are given); with Subscription(transactions=True) also
# TransactionEvent (BEGIN before a transaction's change events, END after them), with heartbeats=True HeartbeatEvent.
Handler = Callable[[Any], None]


class Reject(Exception):
    """Raise from a handler to dead-letter the event at once (retrying cannot help); the message is the reason."""


class _Stopping(Exception):
    pass


class Consumer:
    def __init__(
        self,
        amqp_url: str,
        subscription: Subscription,
        handler: Handler,
        *,
        models: Any = None,
        idempotency: IdempotencyStore | None = None,
        start: StartFrom | None = None,
        event_log_queue: str | None = None,
        stop: threading.Event | None = None,
        catch_up_idle_s: float = 1.0,
        clock_skew_s: float = 5.0,
    ) -> None:
        """``models``: a :class:`cdc.mapping.contracts.EventModels` for typed events (else plain ChangeEvent)."""
        self.url = amqp_url
        self.sub = subscription
        self.handler = handler
        self.models = models
        self.store = idempotency if idempotency is not None or start is None else MemoryIdempotencyStore()
        self.start = start
        self.event_log = event_log_queue or event_log(subscription.exchange)
        self.stop_event = stop or threading.Event()
        self.catch_up_idle_s = catch_up_idle_s
        self.clock_skew_s = clock_skew_s
        self.counts: collections.Counter[str] = collections.Counter()  # handled, skipped, retried, dead_lettered
        self.last_stream_offset: int | None = None
        self._connection: Any = None
        self._channel: Any = None
        self._pending: collections.deque = collections.deque()

    def stop(self) -> None:
        """Finish the event in hand, then stop; prefetched unacked events go back to the queue."""
        self.stop_event.set()

    def run(self) -> None:
        """Consume until stopped; a lost broker connection is reopened with backoff."""
        failures = 0
        while not self.stop_event.is_set():
            try:
                self._connect()
                failures = 0
                if self.start is not None:
                    self._replay(self.start)
                    self.start = None
                self._consume_queue()
            except _Stopping:
                break
            except channel_closed_by_broker() as err:
                if getattr(err, "reply_code", None) == 404 and self.start is not None:
                    raise ConfigError(f"subscription {self.sub.name}: event log {self.event_log!r} does not exist: "
                                      "the reader declares it; check the exchange name, or start without StartFrom") from None
                failures += 1
                self._backoff(failures, err)
            except lost_connection_errors() as err:
                failures += 1
                self._backoff(failures, err)
            finally:
                self._disconnect()
        log.info("subscription %s: stopped (%s)", self.sub.name, dict(self.counts))

    # --- connection ------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._pending.clear()  # unacked deliveries of a lost connection come back from the broker
        # confirm mode: a dead letter is confirmed before the original is acked
        self._connection, self._channel = open_channel(self.url, f"cdc-consumer-{self.sub.name}")
        declare(self._channel, self.sub)
        self._channel.basic_qos(prefetch_count=self.sub.prefetch)

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        close_quietly(connection, log, f"subscription {self.sub.name}")

    def _backoff(self, failures: int, err: Exception) -> None:
        delay = reconnect_delay(failures, self.sub.retry_initial_s, self.sub.retry_max_s)
        log.warning("subscription %s: broker connection lost (%s: %s); reconnecting in %.1fs",
                    self.sub.name, type(err).__name__, err, delay)
        self.stop_event.wait(delay)

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._pending.append((method, properties, body))

    def _next(self, wait_s: float) -> tuple | None:
        if not self._pending:
            self._connection.process_data_events(time_limit=wait_s)
        return self._pending.popleft() if self._pending else None

    # --- phases ----------------------------------------------------------------------------------

    def _consume_queue(self) -> None:
        self._channel.basic_consume(self.sub.queue, self._on_message, auto_ack=False)
        log.info("subscription %s: consuming %s", self.sub.name, self.sub.queue)
        while not self.stop_event.is_set():
            delivery = self._next(0.2)
            if delivery is not None:
                self._handle(*delivery)

    def _replay(self, start: StartFrom) -> None:
        bound_at_ms = now_ms()  # the queue is bound: from here on every event also waits there
        tag = self._channel.basic_consume(self.event_log, self._on_message, auto_ack=False,
                                          arguments={"x-stream-offset": start.argument()})
        log.info("subscription %s: replaying %s from %s", self.sub.name, self.event_log, start.argument())
        min_ts, idle_since, replayed = start.min_ts_ms(), time.monotonic(), 0
        while not self.stop_event.is_set():
            delivery = self._next(0.1)
            if delivery is None:
                if time.monotonic() - idle_since >= self.catch_up_idle_s:
                    break  # at the end of the log
                continue
            idle_since = time.monotonic()
            method, properties, body = delivery
            self.last_stream_offset = (properties.headers or {}).get("x-stream-offset", self.last_stream_offset)
            ts_ms = _ts_ms(body)
            if ts_ms is not None and ts_ms > bound_at_ms + self.clock_skew_s * 1000:
                break  # published after the queue was bound: the queue has it and everything after it
            if not self.sub.matches(method.routing_key) or (min_ts is not None and ts_ms is not None and ts_ms < min_ts):
                self._channel.basic_ack(method.delivery_tag)
                continue
            self._handle(method, properties, body)
            replayed += 1
        stop_stream_consumer(self._channel, tag)
        self._pending.clear()  # the rest is in the queue too
        log.info("subscription %s: replayed %d events, switching to %s", self.sub.name, replayed, self.sub.queue)

    # --- one message -----------------------------------------------------------------------------

    def _handle(self, method: Any, properties: Any, body: bytes) -> None:
        """One message: one event, or several (a batch, ``broker.batch_events`` > 1), each handled in order."""
        batch = is_batch(body)
        parsed = self._parse_boundary(body) if is_boundary(method.routing_key) else self._parse(body, batch)
        for item, event in parsed:
            if isinstance(event, Exception):
                self._dead_letter(method, properties, item, batch,
                                  f"malformed event (does not match the contract): {short_error(event)}")
            else:
                self._handle_event(method, properties, item, batch, event)
        self._channel.basic_ack(method.delivery_tag)

    def _parse(self, body: bytes, batch: bool) -> list[tuple[bytes, ChangeEvent | Exception]]:
        """(the event's own JSON, the typed event or why it is not one) for each event of the message."""
        parse = self.models.parse if self.models is not None else decode
        try:
            items = split_batch(body) if batch else [body]
        except ValueError as err:
            return [(body, err)]
        parsed: list[tuple[bytes, ChangeEvent | Exception]] = []
        for item in items:
            try:
                parsed.append((item, parse(item)))
            except (ValidationError, ValueError) as err:
                parsed.append((item, err))
        return parsed

    @staticmethod
    def _parse_boundary(body: bytes) -> list[tuple[bytes, Any]]:
        """A transaction boundary or heartbeat (cdc.domain.boundary), typed; never a batch."""
        try:
            return [(body, decode_boundary(body))]
        except (ValidationError, ValueError) as err:
            return [(body, err)]

    def _handle_event(self, method: Any, properties: Any, body: bytes, batch: bool, event: Any) -> None:
        boundary = isinstance(event, (TransactionEvent, HeartbeatEvent))  # no key, no version: not for the store
        if not boundary and self.store is not None and self.store.seen(event.entity, event.key_str, event.version):
            self.counts["skipped"] += 1
            return
        for attempt in range(1, self.sub.max_attempts + 1):
            try:
                self.handler(event)
                break
            except Reject as err:
                self._dead_letter(method, properties, body, batch, f"rejected by the handler: {err}", event)
                return
            except Exception as err:  # noqa: BLE001 - any failure of the team's handler is retried, then dead-lettered
                if attempt == self.sub.max_attempts:
                    self._dead_letter(method, properties, body, batch,
                                      f"handler failed {attempt} times, last: {type(err).__name__}: {err}", event)
                    return
                delay = min(self.sub.retry_max_s, self.sub.retry_initial_s * 2 ** (attempt - 1))
                self.counts["retried"] += 1
                log.warning("subscription %s: handler failed on %s (attempt %d/%d): %s: %s; retrying in %.2fs",
                            self.sub.name, event.id, attempt, self.sub.max_attempts, type(err).__name__, err, delay)
                if not self._sleep(delay):
                    # Given back whole; events of it already handled are skipped on redelivery when an
                    # idempotency store is in use.
                    self._channel.basic_nack(method.delivery_tag, requeue=True)
                    raise _Stopping from None
        if self.store is not None and not boundary:
            self.store.record(event.entity, event.key_str, event.version)
        self.counts["handled"] += 1

    def _dead_letter(self, method: Any, properties: Any, body: bytes, batch: bool, reason: str,
                     event: ChangeEvent | None = None) -> None:
        """Publish one event (or an unreadable message) to the DLQ, confirmed; the caller acks the message."""
        message_id = event.id if event is not None and batch else getattr(properties, "message_id", None)
        log.warning("subscription %s: dead-lettering %s: %s", self.sub.name, message_id or "?", reason[:500])
        headers = dict(getattr(properties, "headers", None) or {})
        if batch:  # one event out of a batch: its own headers
            headers = unbatched(headers) if event is None else event_headers(event.entity, event.key_str, event.version,
                                                                             headers)
        headers[HEADER_REASON] = reason[:2000]
        headers["x-cdc-routing-key"] = method.routing_key
        out = dead_letter_properties(headers, message_id)
        self._channel.basic_publish(exchange=DLX, routing_key=self.sub.queue, body=body, properties=out, mandatory=True)
        self.counts["dead_lettered"] += 1

    def _sleep(self, seconds: float) -> bool:
        """Wait while keeping heartbeats flowing; False if asked to stop meanwhile."""
        return service_for(self._connection, self.stop_event, seconds, 0.2)


def _ts_ms(body: bytes) -> int | None:
    import orjson

    try:
        value = orjson.loads(body)
        value = (value[0] if isinstance(value, list) and value else value).get("ts_ms")  # a batch: its first event
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None
