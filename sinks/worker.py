"""Runs any :class:`~cdc.sinks.base.Sink` from its RabbitMQ queue.

    queue cdc.sink.<name> --batch--> decode --valid--> sink.apply --> ack(last, multiple)
                                        |                  |
                                        | malformed        | Rejection
                                        v                  v
                              exchange cdc.dlx --<name>--> queue cdc.sink.<name>.dlq (reason in x-cdc-reason)

A batch is acknowledged only after ``apply`` returned, so a crash in between leads to
redelivery, which the sink's version guard makes harmless. ``TransientError``: the batch is
retried with capped exponential backoff for as long as it takes (a target that is down is no
fault of the messages, so they are not counted towards the delivery limit); only a shutdown
gives the batch back to the queue. A message that crashes the worker again and again is
dead-lettered once it has been delivered ``delivery_limit`` times without an ack: by the worker
itself, with the count in the reason, or failing that by the quorum queue's own delivery limit.
A lost broker connection is reopened with backoff. ``TerminalError`` stops the worker and is
re-raised.

Crash loops and innocent messages: when a process dies, every message it held unacked goes back to
the queue with its delivery count raised, not only the one that killed it. So that the messages
prefetched behind a poison message are not dead-lettered with it, a worker starts every connection
*cautious*: one message at a time (prefetch 1), as long as the queue hands it redeliveries. The first
message delivered for the first time shows that the redeliveries are behind it: the worker then
consumes anew with the configured prefetch. A poison message thus costs the messages behind it at
most one delivery each (the first crash), whatever the delivery limit. Workers sharing a sharded sink
(``worker.count`` > 1) skip this: consuming anew would give their single-active-consumer shards
away to a standby; for them the delivery limit alone dead-letters the poison message.

A message holds one event or, with ``broker.batch_events`` > 1, several (``x-cdc-count``): a batch's
size counts events, and an event of a batch message that is malformed or rejected is dead-lettered
alone, as a single-event message, while the others are applied. A batch message delivered again
after a delivery without an ack (the worker died holding it) is split back into its queue, one
message per event, so that an event that kills the process costs its batch-mates nothing.

The worker owns the sink's lifecycle: ``run()`` opens the sink and closes it when it returns.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from cdc.broker.consume import (
    close_quietly,
    lost_connection_errors,
    open_channel,
    publish_to_dlq,
    reconnect_delay,
    service_for,
    short_error,
    split_into_queue,
)
from cdc.broker.topology import (
    HEADER_COUNT,
    HEADER_ENTITY,
    HEADER_KEY,
    declare_sink_queues,
    event_headers,
    move_stale_sink_queues,
    sink_queue,
    sink_queues,
)
from cdc.domain.envelope import ChangeEvent, decode, decode_many, encode, is_batch, split_batch
from cdc.domain.errors import TerminalError, TransientError
from cdc.sinks.base import Sink, SinkConfig

log = logging.getLogger("cdc.sinks.worker")


class WorkerMetrics(Protocol):
    def events_applied(self, sink: str, entity: str, op: str, n: int) -> None: ...

    def events_dead_lettered(self, sink: str, reason_kind: str, n: int, entity: str = "") -> None: ...

    def batch_seconds(self, sink: str, seconds: float) -> None: ...


@dataclass
class _Message:
    tag: int
    body: bytes
    properties: Any
    events: list[ChangeEvent] | None = None  # decoded, valid (None: not decoded, or not at all)
    dead_lettered: bool = False  # the whole message went to the DLQ
    redelivered: bool = False
    count: int = 1  # events it holds (x-cdc-count of a batch message)
    queue: str = ""  # the queue it came from

    @property
    def deliveries(self) -> int:
        """Earlier deliveries of this message that ended without an ack (quorum queues count them)."""
        count = (getattr(self.properties, "headers", None) or {}).get("x-delivery-count")
        return int(count) if isinstance(count, int) else 0


class SinkWorker:
    def __init__(
        self,
        name: str,
        sink: Sink,
        sink_config: SinkConfig,
        amqp_url: str,
        exchange: str,
        stop: threading.Event,
        metrics: WorkerMetrics | None = None,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 30.0,
        idle_tick_s: float = 0.2,
        worker_index: int = 0,
        workers: int = 1,
        standby_delay_s: float = 3.0,
    ) -> None:
        self.name = name
        self.sink = sink
        self.config = sink_config
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.stop = stop
        self.metrics = metrics
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.idle_tick_s = idle_tick_s
        self._connection: Any = None
        self._channel: Any = None
        self._pending: collections.deque[_Message] = collections.deque()
        self._pending_bytes = 0  # sum of the bodies in _pending, kept as they come and go
        self._pending_events = 0  # events in _pending (a batch message holds several)
        # Sharded sinks: this worker consumes its own shards at once and the others, as a standby
        # (single-active-consumer), a little later, so that K workers started together share the
        # shards and the survivors take over a dead worker's shards.
        self.worker_index = worker_index
        self.workers = max(1, workers)
        self.standby_delay_s = standby_delay_s
        self._standby: list[str] = []
        self._standby_at = 0.0
        self._consumers: dict[str, str] = {}  # consumer tag -> queue
        self._cautious = True  # prefetch 1 while the queue hands out redeliveries (see the module's notes)
        self.alive_at = time.monotonic()  # the consume loop's last turn: readiness (cdc.runtime.health)

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Consume and apply until ``stop`` is set. Raises TerminalError if the sink cannot go on."""
        if self.config.prefetch < self.config.batch_size:
            log.warning("sink %s: prefetch %d < batch_size %d limits batches", self.name, self.config.prefetch, self.config.batch_size)
        log.info("sink %s: worker starting (queue %s)", self.name, sink_queue(self.name))
        try:
            self._open_sink()
            failures = 0
            while not self.stop.is_set():
                try:
                    self._connect()
                    failures = 0
                    self._consume()
                except lost_connection_errors() as err:
                    failures += 1
                    _observe(self.metrics, "reconnected", self.name)
                    delay = reconnect_delay(failures, self.retry_initial_s, self.retry_max_s)
                    log.warning("sink %s: broker connection lost (%s: %s); reconnecting in %.1fs",
                                self.name, type(err).__name__, err, delay)
                    self._disconnect()
                    self.stop.wait(delay)
        except TerminalError as err:
            log.error("sink %s: stopping: %s", self.name, err)
            raise
        except Exception:
            log.exception("sink %s: stopping on an unexpected error; unacked messages will be redelivered", self.name)
            raise
        finally:
            self._disconnect()
            self.sink.close()
            log.info("sink %s: worker stopped", self.name)

    def _open_sink(self) -> None:
        while not self.stop.is_set():
            try:
                self._retrying(self.sink.open)
                return
            except TransientError as err:
                log.warning("sink %s: cannot open the sink yet: %s", self.name, err)

    def _connect(self) -> None:
        self._pending.clear()  # unacked deliveries of a lost connection come back from the broker
        self._pending_bytes = 0
        self._pending_events = 0
        # confirm mode: dead-letter publishes are confirmed before the original is acked
        self._connection, self._channel = open_channel(self.amqp_url, f"cdc-sink-{self.name}")
        declare_sink_queues(self._channel, self.exchange, self.name, self.config.entities, self.config.delivery_limit,
                            self.config.shards)
        stale, moved = move_stale_sink_queues(self._connection, self.exchange, self.name, self.config.entities,
                                              self.config.shards)
        if stale:
            log.warning("sink %s: %s of another shards setting: %d messages left there moved into %s, queues deleted",
                        self.name, ", ".join(stale), moved, ", ".join(sink_queues(self.name, self.config.shards)))
        # Not with several workers on single-active-consumer shards: consuming anew would hand the
        # shard to the other worker's standby consumer. There the queue's delivery limit stays the guard.
        self._cautious = self.config.prefetch > 1 and self.workers == 1
        self._channel.basic_qos(prefetch_count=1 if self._cautious else self.config.prefetch)
        self._consumers = {}
        queues = sink_queues(self.name, self.config.shards)
        own = [q for i, q in enumerate(queues) if i % self.workers == self.worker_index % self.workers]
        self._standby = [q for q in queues if q not in own]
        self._standby_at = time.monotonic() + self.standby_delay_s
        for queue in own:
            self._consume_queue(queue)
        log.info("sink %s: consuming %s", self.name, ", ".join(own))

    def _consume_queue(self, queue: str) -> None:
        self._consumers[self._channel.basic_consume(queue, self._on_message, auto_ack=False)] = queue

    def _leave_cautious(self) -> None:
        """Consume anew with the configured prefetch (a consumer keeps the prefetch it started with).

        Called while the batch in hand is not yet acked: with prefetch 1 no consumer can have been
        sent anything more, so cancelling returns nothing to the queue (no delivery counted)."""
        consumers, self._consumers = self._consumers, {}
        for tag in consumers:
            self._channel.basic_cancel(tag)
        self._cautious = False
        self._channel.basic_qos(prefetch_count=self.config.prefetch)
        for queue in dict.fromkeys(consumers.values()):
            self._consume_queue(queue)
        log.info("sink %s: no redeliveries pending; prefetch back to %d", self.name, self.config.prefetch)

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        close_quietly(connection, log, f"sink {self.name}")

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        count = (getattr(properties, "headers", None) or {}).get(HEADER_COUNT)
        self._pending.append(_Message(method.delivery_tag, body, properties, redelivered=bool(method.redelivered),
                                      count=count if isinstance(count, int) and count > 1 else 1,
                                      queue=self._consumers.get(method.consumer_tag, "")))
        self._pending_events += self._pending[-1].count
        self._pending_bytes += len(body)

    def _consume(self) -> None:
        while not self.stop.is_set():
            if self._standby and time.monotonic() >= self._standby_at:
                for queue in self._standby:
                    self._consume_queue(queue)
                log.info("sink %s: standing by on %s", self.name, ", ".join(self._standby))
                self._standby = []
            self.alive_at = time.monotonic()
            batch = self._collect()
            if batch:
                self._handle(batch)

    def _collect(self) -> list[_Message]:
        """Up to batch_size messages, waiting at most batch_wait_ms after the first one."""
        connection = self._connection
        if not self._pending:
            connection.process_data_events(time_limit=self.idle_tick_s)
            if not self._pending:
                return []
        if self._cautious:  # one message at a time: no waiting for a batch that cannot fill
            return self._take(len(self._pending))
        deadline = time.monotonic() + self.config.batch_wait_ms / 1000
        limit = self.config.batch_max_bytes
        while (self._pending_events < self.config.batch_size and not self.stop.is_set()
               and self._pending_bytes < limit):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connection.process_data_events(time_limit=remaining)
        count, size, events = 0, 0, 0
        for message in self._pending:
            size += len(message.body)
            events += message.count
            if count and (events > self.config.batch_size or size > limit):
                break
            count += 1
        return self._take(count)

    def _take(self, count: int) -> list[_Message]:
        batch = [self._pending.popleft() for _ in range(count)]
        self._pending_bytes -= sum(len(m.body) for m in batch)
        self._pending_events -= sum(m.count for m in batch)
        return batch

    # --- one batch -------------------------------------------------------------------------------

    def _handle(self, batch: list[_Message]) -> None:
        started = time.perf_counter()
        valid: list[_Message] = []
        for message in batch:
            if message.deliveries and message.queue and is_batch(message.body) and \
                    split_into_queue(self._channel, message.queue, message.body, getattr(message.properties, "headers", None)):
                # A batch delivered before without an ack: the worker died holding it, maybe because of one of
                # its events. Its events go back to the queue one message each, so that a poison event is
                # dead-lettered alone by the delivery limit; their version guard makes the later order harmless.
                log.warning("sink %s: batch message %d was delivered %d time(s) without an ack; its %d events "
                            "go back to %s one by one", self.name, message.tag, message.deliveries, message.count,
                            message.queue)
                message.dead_lettered = True  # done with it: acked with the batch, never given back
                continue
            if message.deliveries >= self.config.delivery_limit:
                self._dead_letter(message, "delivery_limit", (
                    f"not acknowledged after {message.deliveries} deliveries (sink {self.name}'s delivery_limit is "
                    f"{self.config.delivery_limit}): the sink worker crashed, was killed or lost its broker connection "
                    "each time it held this event; dead-lettered without applying it again"), message.deliveries)
                continue
            try:
                message.events = decode_many(message.body)
                valid.append(message)
            except (ValidationError, ValueError) as err:
                if not is_batch(message.body) or not self._decode_each(message):
                    self._dead_letter(message, "malformed", f"malformed event (cannot decode): {short_error(err)}")
                elif message.events:
                    valid.append(message)
        events = [e for m in valid for e in m.events]
        try:
            rejections = self._retrying(self.sink.apply, events) if events else []
        except TransientError as err:
            log.warning("sink %s: shutting down with a batch of %d not applied (%s); returning it to the queue",
                        self.name, len(batch), err)
            self._give_back(batch)
            return
        owner = {id(e): m for m in valid for e in m.events} if rejections else {}
        by_id = {e.id: (m, e) for m in valid for e in m.events} if rejections else {}
        rejected: set[int] = set()  # ids of the rejected event objects
        for rejection in rejections:
            message, event = owner.get(id(rejection.event)), rejection.event
            if message is None:
                message, event = by_id.get(rejection.event.id, (None, None))
            if message is None or id(event) in rejected:
                continue
            rejected.add(id(event))
            self._dead_letter_event(message, event, "rejected", f"rejected by sink {self.name}: {rejection.reason}")
        if self._cautious and not all(m.redelivered for m in batch):
            self._leave_cautious()  # before the ack, so that no consumer holds more than this batch
        self._channel.basic_ack(delivery_tag=batch[-1].tag, multiple=True)
        elapsed = time.perf_counter() - started
        log.debug("sink %s: batch of %d messages, %d events applied (%d dead-lettered) in %.3fs",
                  self.name, len(batch), len(events) - len(rejected), len(batch) - len(valid) + len(rejected), elapsed)
        if self.metrics is not None:
            counts: collections.Counter[tuple[str, str]] = collections.Counter(
                (e.entity, e.op.value) for e in events if id(e) not in rejected
            )
            for (entity, op), n in counts.items():
                self.metrics.events_applied(self.name, entity, op, n)
            self.metrics.batch_seconds(self.name, elapsed)
            if events:
                _observe(self.metrics, "apply_latency", self.name, time.time() - min(e.ts_ms for e in events) / 1000)

    def _decode_each(self, message: _Message) -> bool:
        """A batch message that does not decode as a whole: decode its events one by one, dead-letter the
        malformed ones alone and keep the rest in ``message.events``. False if it is not even a JSON array."""
        try:
            bodies = split_batch(message.body)
        except ValueError:
            return False
        message.events = []
        for body in bodies:
            try:
                message.events.append(decode(body))
            except (ValidationError, ValueError) as err:
                self._dead_letter_body(message, body, None, "malformed", f"malformed event (cannot decode): {short_error(err)}")
        message.dead_lettered = not message.events  # nothing left to apply: done with it
        return True

    def _dead_letter(self, message: _Message, kind: str, reason: str, deliveries: int | None = None) -> None:
        """The whole message to the DLQ; a batch message's events go one by one, as single-event messages."""
        try:
            bodies = split_batch(message.body) if is_batch(message.body) else [message.body]
        except ValueError:
            bodies = [message.body]  # not even JSON: as it came
        for body in bodies:
            self._dead_letter_body(message, body, None, kind, reason, deliveries)
        message.dead_lettered = True

    def _dead_letter_event(self, message: _Message, event: ChangeEvent, kind: str, reason: str) -> None:
        """One event of a message to the DLQ (the message itself when it holds that event alone)."""
        body = None if is_batch(message.body) else message.body
        self._dead_letter_body(message, body, event, kind, reason)

    def _dead_letter_body(self, message: _Message, body: bytes | None, event: ChangeEvent | None, kind: str,
                          reason: str, deliveries: int | None = None) -> None:
        headers = dict(getattr(message.properties, "headers", None) or {})
        if body is None or headers.pop(HEADER_COUNT, None) is not None:  # one event out of a batch: its own headers
            if event is None:
                try:
                    event = decode(body)
                except (ValidationError, ValueError):
                    event = None
            if event is not None:
                body = body if body is not None else encode(event)
                headers = event_headers(event.entity, event.key_str, event.version, headers)
        log.warning("sink %s: dead-lettering delivery %d: %s", self.name, message.tag, reason[:500],
                    extra={"entity": headers.get(HEADER_ENTITY), "key": headers.get(HEADER_KEY)})
        publish_to_dlq(self._channel, self.name, body, headers, reason, deliveries)
        if self.metrics is not None:
            entity = str(headers.get(HEADER_ENTITY) or (event.entity if event else ""))
            self.metrics.events_dead_lettered(self.name, kind, 1, entity)

    def _give_back(self, batch: list[_Message]) -> None:
        # One by one: messages already dead-lettered are acked, the rest requeued.
        for message in batch:
            if message.dead_lettered:
                self._channel.basic_ack(delivery_tag=message.tag)
            else:
                self._channel.basic_nack(delivery_tag=message.tag, requeue=True)

    # --- waiting without starving the connection -----------------------------------------------

    def _retrying(self, fn: Any, *args: Any) -> Any:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_when_event_set(self.stop),
            wait=wait_exponential(multiplier=self.retry_initial_s, min=self.retry_initial_s, max=self.retry_max_s),
            sleep=self._service_for,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(fn, *args)

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        _observe(self.metrics, "retried", self.name)
        level = logging.ERROR if state.attempt_number > self.config.max_retries else logging.WARNING
        log.log(level, "sink %s: transient failure (attempt %d): %s; retrying in %.2fs",
                self.name, state.attempt_number, err, state.upcoming_sleep)

    def _service_for(self, seconds: float) -> None:
        """Wait, keeping heartbeats flowing; new deliveries queue up in the pending buffer."""
        service_for(self._connection, self.stop, seconds, self.idle_tick_s)


def _observe(metrics: Any, hook: str, *args: Any) -> None:
    """Optional WorkerMetrics hooks (apply_latency, retried, reconnected) that a minimal implementation may lack."""
    if (method := getattr(metrics, hook, None)) is not None:
        method(*args)
