"""Publishing change events to RabbitMQ with asynchronous publisher confirms.

One call to :meth:`Publisher.publish` carries one source transaction. The caller learns that a
transaction is safely in the broker through the ``on_confirmed(token)`` callback, which fires in
publish order, exactly once per transaction, and only when that transaction and every earlier one
are fully acked. That is the point where the reader may checkpoint (see docs/architecture.md, Delivery and idempotence).

Two implementations share the bookkeeping (:class:`ConfirmTracker`, ordered token dispatch,
backpressure, failure state):

* :class:`RabbitPublisher`: pika ``SelectConnection`` whose ioloop runs in a daemon thread.
* :class:`MemoryPublisher`: records messages; confirms immediately or on demand (unit tests).
"""

from __future__ import annotations

import abc
import itertools
import logging
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pika

from cdc.broker.topology import (
    HEADER_COUNT,
    HEADER_ENTITY,
    HEADER_KEY,
    HEADER_REASON,
    HEADER_VERSION,
    READER_DEAD_PREFIX,
    declare_exchange,
    event_headers,
    reader_dead_exchange,
)
from cdc.domain.envelope import ChangeEvent, batch_body, encode, key_string, routing_key
from cdc.domain.errors import ConfigError, TransientError
from cdc.domain.redact import redact_text, redact_url, url_secrets
from cdc.runtime.tls import amqp_parameters

log = logging.getLogger("cdc.publisher")

OnConfirmed = Callable[[Any], None]

_END = object()
_DEAD_PREFIX = READER_DEAD_PREFIX + "."  # OutMessage.reader_dead_letter's routing keys
DEFAULT_BATCH = 2000  # change events handed to the I/O thread per chunk of a large transaction


@dataclass(frozen=True, slots=True)
class OutMessage:
    routing_key: str  # "<entity>.<op>"
    body: bytes  # orjson-encoded ChangeEvent
    message_id: str  # event id
    headers: dict  # {HEADER_VERSION: int, HEADER_KEY: str, HEADER_ENTITY: str}
    timestamp_ms: int
    count: int = 1  # change events it holds (a batch message: several; see group_events)
    # False for transaction boundaries and heartbeats: the broker drops them where no queue is bound
    # (they are for subscribers who ask for them), where an unroutable change event fails the publisher.
    mandatory: bool = True

    @classmethod
    def reader_dead_letter(cls, entity: str, body: dict[str, Any] | bytes, reason: str, message_id: str, timestamp_ms: int,
                           key: str | None = None) -> OutMessage:
        """A row the reader could not publish, for ``cdc.reader.dlq``: ``body`` (or its encoding) says what it
        was, ``reason`` why."""
        headers = {HEADER_REASON: reason[:1000], HEADER_ENTITY: entity}
        if key is not None:
            headers[HEADER_KEY] = key
        return cls(routing_key=f"{READER_DEAD_PREFIX}.{entity}", body=body if isinstance(body, bytes) else encode(body),
                   message_id=message_id,
                   headers=headers, timestamp_ms=timestamp_ms)

    @classmethod
    def boundary(cls, routing_key: str, body: dict[str, Any], message_id: str, timestamp_ms: int) -> OutMessage:
        """A transaction boundary or heartbeat (cdc.domain.boundary): not mandatory, never batched (no key header)."""
        return cls(routing_key=routing_key, body=encode(body), message_id=message_id, headers={"x-cdc-kind": body["kind"]},
                   timestamp_ms=timestamp_ms, mandatory=False)

    @classmethod
    def from_event(cls, event: ChangeEvent | dict[str, Any], body: bytes | None = None) -> OutMessage:
        """Build the message for a :class:`ChangeEvent` (or a plain dict of the same shape); ``body``:
        its encoding, when the caller has it already."""
        if isinstance(event, ChangeEvent):
            entity, op, version = event.entity, event.op.value, event.version
            key, eid, ts_ms = event.key, event.id, event.ts_ms
        else:
            entity, version, key, eid, ts_ms = (event["entity"], event["version"], event["key"],
                                                event["id"], event["ts_ms"])
            op = getattr(event["op"], "value", event["op"])
        return cls(
            routing_key=routing_key(entity, op),
            body=encode(event) if body is None else body,
            message_id=eid,
            headers=event_headers(entity, key_string(key), version),
            timestamp_ms=ts_ms,
        )


def group_events(messages: list[OutMessage], max_events: int, max_bytes: int) -> list[OutMessage]:
    """Batch messages (``broker.batch_events``): runs of consecutive change events with one routing key.

    Every message costs RabbitMQ the same whatever its size, once per queue it lands in, so several
    rows per message is what lowers the broker's share of a row. Only consecutive change events of
    the same ``<entity>.<op>`` are joined, so routing (per entity, per op), the order of events in
    every queue and the transaction boundaries (one call per transaction) are those of single
    events. A batch holds at most ``max_events`` events and ``max_bytes`` of body; dead letters and
    schema changes stay single. Headers of a batch: entity, the last event's version and
    ``x-cdc-count``; no ``x-cdc-key`` (a batch holds many keys, hence no batching for sharded sinks).
    """
    if max_events <= 1 or len(messages) < 2:
        return messages
    keys = [m.routing_key if HEADER_KEY in m.headers and HEADER_VERSION in m.headers else None for m in messages]
    runs = event_runs(keys, [len(m.body) for m in messages], max_events, max_bytes)
    return [join_events([messages[i] for i in run]) for run in runs]


def event_runs(routing_keys: list[str | None], sizes: list[int], max_events: int, max_bytes: int) -> list[list[int]]:
    """Which messages :func:`group_events` makes one message of: their indexes, run by run.
    ``routing_keys[i]``: message i's, None where it is no change event; ``sizes[i]``: its body's bytes."""
    runs: list[list[int]] = []
    run: list[int] = []
    size = 0
    for i, key in enumerate(routing_keys):
        if key is None or max_events <= 1:  # stays single
            if run:
                runs.append(run)
                run = []
            runs.append([i])
            continue
        if run and (key != routing_keys[run[0]] or len(run) >= max_events or size + sizes[i] + 1 > max_bytes):
            runs.append(run)
            run = []
        if not run:
            size = 1
        run.append(i)
        size += sizes[i] + 1
    if run:
        runs.append(run)
    return runs


def join_events(run: list[OutMessage]) -> OutMessage:
    """One message of a run of change events with one routing key (see :func:`group_events`)."""
    if len(run) == 1:
        return run[0]
    first, last = run[0], run[-1]
    return OutMessage(
        routing_key=first.routing_key, body=batch_body([m.body for m in run]),
        message_id=batch_id(first.message_id, len(run)),
        headers=batch_headers(last.headers[HEADER_VERSION], first.headers[HEADER_ENTITY], len(run)),
        timestamp_ms=first.timestamp_ms, count=len(run))


def batch_id(first_id: str, count: int) -> str:
    """A batch message's id: its first event's, and how many follow."""
    return f"{first_id}+{count - 1}"


def batch_headers(version: int, entity: str, count: int) -> dict[str, Any]:
    """A batch message's headers: its last event's version, the entity, how many events it holds."""
    return {HEADER_VERSION: version, HEADER_ENTITY: entity, HEADER_COUNT: count}


# --------------------------------------------------------------------------------------------
# Pure bookkeeping
# --------------------------------------------------------------------------------------------


class ConfirmTracker:
    """Maps broker delivery tags to transaction tokens. Not thread-safe: the owner locks.

    Delivery tags are 1, 2, 3, ... in publish order on a confirm-mode channel. ``published(n)``
    takes the next ``n`` tags; ``end_transaction(token)`` closes a transaction at the last tag
    taken so far (an empty transaction closes at the same tag as the one before it). Acks may be
    single or ``multiple`` (everything up to and including the tag) and may come out of order;
    a token is released once every tag up to its transaction's last tag is acked, in order.
    All operations are O(1) amortised (out-of-order single acks cost a set entry until the
    contiguous prefix catches up).
    """

    __slots__ = ("_last_tag", "_acked_upto", "_acked_above", "_txns", "_batches", "_acked_events", "_popped_upto")

    def __init__(self) -> None:
        self._last_tag = 0  # highest tag assigned
        self._acked_upto = 0  # every tag <= this is acked
        self._acked_above: set[int] = set()  # acked tags > _acked_upto (out-of-order single acks)
        self._txns: deque[tuple[int, Any]] = deque()  # (last tag, token), unreleased
        # (last tag, published at, events, running event totals per message or None when one each), not fully acked
        self._batches: deque[tuple[int, float, int, list[int] | None]] = deque()
        self._acked_events = 0  # events of the fully acked batches
        self._popped_upto = 0  # last tag of the last fully acked batch

    @property
    def last_tag(self) -> int:
        return self._last_tag

    @property
    def acked_count(self) -> int:
        return self._acked_upto + len(self._acked_above)

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acked."""
        return self._last_tag - self.acked_count

    @property
    def acked_events(self) -> int:
        """Change events of the messages acked in order so far (a batch message holds several)."""
        acked = self._acked_events
        done = self._acked_upto - self._popped_upto  # acked messages of the oldest batch not fully acked
        if done > 0 and self._batches:
            totals = self._batches[0][3]
            acked += totals[done - 1] if totals is not None else done
        return acked

    @property
    def pending_transactions(self) -> int:
        return len(self._txns)

    @property
    def oldest_unconfirmed_at(self) -> float | None:
        """Publish time of the oldest batch holding an unacked message (None if all acked)."""
        return self._batches[0][1] if self._batches else None

    def published(self, n: int, at: float = 0.0, counts: list[int] | None = None) -> tuple[int, int]:
        """Take the next ``n`` delivery tags, for messages holding ``counts`` change events each (default
        one each); returns the (first, last) tags taken."""
        first = self._last_tag + 1
        if n > 0:
            self._last_tag += n
            totals = list(itertools.accumulate(counts)) if counts is not None and len(counts) != sum(counts) else None
            self._batches.append((self._last_tag, at, totals[-1] if totals else n, totals))
        return first, self._last_tag

    def end_transaction(self, token: Any) -> list[Any]:
        """Close the current transaction; returns tokens released now (empty txn, all acked)."""
        self._txns.append((self._last_tag, token))
        return self._release()

    def ack(self, tag: int, multiple: bool = False) -> list[Any]:
        """Record a broker ack; returns the tokens released, oldest first."""
        if tag > self._last_tag or tag < 0:
            raise ValueError(f"ack for delivery tag {tag}, but only {self._last_tag} published")
        if multiple:
            if tag > self._acked_upto:
                self._acked_upto = tag
                if self._acked_above:
                    self._acked_above = {t for t in self._acked_above if t > tag}
        elif tag > self._acked_upto:
            self._acked_above.add(tag)
        if self._acked_above:
            nxt = self._acked_upto + 1
            while nxt in self._acked_above:
                self._acked_above.discard(nxt)
                nxt += 1
            self._acked_upto = nxt - 1
        batches = self._batches
        while batches and batches[0][0] <= self._acked_upto:
            done = batches.popleft()
            self._acked_events += done[2]
            self._popped_upto = done[0]
        return self._release()

    def _release(self) -> list[Any]:
        txns = self._txns
        if not txns or txns[0][0] > self._acked_upto:
            return []
        out = []
        while txns and txns[0][0] <= self._acked_upto:
            out.append(txns.popleft()[1])
        return out


# --------------------------------------------------------------------------------------------
# Contract and shared machinery
# --------------------------------------------------------------------------------------------


class Publisher(abc.ABC):
    """Publishes source transactions and reports, in order, when each is confirmed.

    Contract:

    ``start()``
        Connect / get ready. Raises :class:`TransientError` if the broker cannot be reached.
    ``publish(messages, token) -> None``
        One source transaction (any iterable of :class:`OutMessage`, possibly empty, possibly
        a generator of a million messages). Blocks while ``max_in_flight`` published messages
        are unconfirmed. Raises :class:`TransientError` if the publisher is failed (connection
        broken or lost, nack, returned message, confirm timeout) or closed. A failed publisher
        stays failed: the caller closes it, builds a new one and re-reads from its checkpoint.
        Call it from one thread at a time.
    ``on_confirmed(token)`` (given at construction)
        Called with each token in the order ``publish()`` was called, exactly once, only after
        every message of that call and of every earlier call has been acked by the broker. A
        transaction with zero messages is confirmed as soon as every earlier one is. After a
        failure no further token is confirmed. It runs on the publisher's I/O thread (for
        :class:`RabbitPublisher`): keep it short. It may call ``publish()`` only on a
        :class:`MemoryPublisher`. If it raises, the publisher fails.
    ``error``
        The exception that failed the publisher, or None.
    ``flush(timeout) -> bool``
        Wait until every published transaction is confirmed (and its ``on_confirmed`` has
        returned). True if so; False on timeout, on failure (see ``error``), or once closed
        with transactions still unconfirmed.
    ``close()``
        Idempotent. Flushes nothing: unconfirmed transactions stay unconfirmed. Wakes blocked
        ``publish()`` calls (they raise) and stops the I/O thread.
    """

    def __init__(self, on_confirmed: OnConfirmed, max_in_flight: int = 5_000,
                 confirm_timeout_s: float | None = 60.0, batch_size: int = DEFAULT_BATCH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._on_confirmed = on_confirmed
        self._max_in_flight = max_in_flight
        self._confirm_timeout_s = confirm_timeout_s
        self._batch_size = max(1, batch_size)
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._tracker = ConfirmTracker()
        self._submitted = 0  # events handed over by publish() (a batch message counts its events)
        self._pending_tokens = 0  # publish() calls whose on_confirmed has not returned yet
        self._ready: deque[Any] = deque()  # released tokens awaiting dispatch
        self._dispatching = False
        self._error: BaseException | None = None
        self._closed = False
        self.confirmed_transactions = 0
        self.published_messages = 0

    # -- abstract -------------------------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def _submit(self, chunk: list[OutMessage], last: bool, token: Any) -> None:
        """Hand a chunk of one transaction over; ``last`` closes the transaction with ``token``."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- public ---------------------------------------------------------------------------
    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def in_flight(self) -> int:
        """Change events handed to publish() and not yet acked (``max_in_flight`` bounds them, so a
        batch message weighs what it holds: memory and broker backlog stay bounded either way)."""
        with self._cond:
            return self._submitted - self._tracker.acked_events

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    def publish(self, messages: Iterable[OutMessage], token: Any) -> None:
        cond = self._cond
        with cond:
            self._raise_if_unusable()
        it = iter(messages)
        nxt = next(it, _END)
        while True:
            with cond:
                while True:
                    self._raise_if_unusable()
                    room = self._max_in_flight - (self._submitted - self._tracker.acked_events)
                    if room > 0 or nxt is _END:
                        break
                    # Every state change (ack, failure, close) notifies; the timeout is a safety net.
                    cond.wait(1.0)
            limit = min(room, self._batch_size)
            chunk: list[OutMessage] = []
            events = 0
            while nxt is not _END and events < limit:
                chunk.append(nxt)  # type: ignore[arg-type]
                events += nxt.count  # type: ignore[union-attr]
                nxt = next(it, _END)
            last = nxt is _END
            with cond:
                self._raise_if_unusable()
                self._submitted += events
                if last:
                    self._pending_tokens += 1
            try:
                self._submit(chunk, last, token)
            except BaseException:
                with cond:
                    self._submitted -= events
                    if last:
                        self._pending_tokens -= 1
                raise
            if last:
                return

    def flush(self, timeout: float | None = None) -> bool:
        with self._cond:
            self._cond.wait_for(
                lambda: self._error is not None or self._closed or self._pending_tokens == 0, timeout)
            return self._error is None and self._pending_tokens == 0

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared internals -----------------------------------------------------------------
    def _raise_if_unusable(self) -> None:
        """Under the lock."""
        if self._error is not None:
            err = self._error
            if isinstance(err, TransientError):
                raise TransientError(str(err)) from err
            raise TransientError(f"publisher failed: {err!r}") from err
        if self._closed:
            raise TransientError("publisher is closed")

    def _fail(self, exc: BaseException) -> bool:
        """Enter the failed state (first error wins). Returns True if this call failed it."""
        with self._cond:
            if self._error is not None:
                return False
            self._error = exc
            self._ready.clear()
            self._cond.notify_all()
        if not self._closed:
            log.error("publisher failed: %s", exc)
        return True

    def _record_published(self, chunk: list[OutMessage], last: bool, token: Any) -> None:
        """Tracker bookkeeping after a chunk went out (caller dispatches afterwards)."""
        n = len(chunk)
        with self._cond:
            if n:
                self._tracker.published(n, self._clock(), [m.count for m in chunk])
                self.published_messages += n
            if last:
                released = self._tracker.end_transaction(token)
                if released and self._error is None:
                    self._ready.extend(released)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        with self._cond:
            if self._error is not None:
                return
            try:
                released = self._tracker.ack(tag, multiple)
            except ValueError as exc:
                err: BaseException | None = TransientError(f"broker confirm out of sequence: {exc}")
            else:
                err = None
                if released:
                    self._ready.extend(released)
                self._cond.notify_all()
        if err is not None:
            self._fail(err)
            return
        self._dispatch()

    def _dispatch(self) -> None:
        """Deliver released tokens in order; serialised across threads and re-entrant calls."""
        cond = self._cond
        with cond:
            if self._dispatching:
                return
            self._dispatching = True
        try:
            while True:
                with cond:
                    if not self._ready or self._error is not None:
                        self._dispatching = False
                        return
                    batch = list(self._ready)
                    self._ready.clear()
                done = 0
                try:
                    for token in batch:
                        if self._error is not None:
                            break
                        self._on_confirmed(token)
                        done += 1
                finally:
                    with cond:
                        self._pending_tokens -= done
                        self.confirmed_transactions += done
                        if self._pending_tokens == 0:
                            cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - a raising callback fails the publisher
            with cond:
                self._dispatching = False
            self._fail(TransientError(f"on_confirmed callback raised {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    def check_confirm_timeout(self) -> bool:
        """Fail the publisher if the oldest unconfirmed message is older than the timeout."""
        if self._confirm_timeout_s is None:
            return False
        with self._cond:
            if self._error is not None:
                return False
            at = self._tracker.oldest_unconfirmed_at
            age = None if at is None else self._clock() - at
        if age is not None and age > self._confirm_timeout_s:
            return self._fail(TransientError(
                f"broker did not confirm a message within {self._confirm_timeout_s:g}s "
                f"({self.in_flight} unconfirmed)"))
        return False


# --------------------------------------------------------------------------------------------
# In-memory implementation
# --------------------------------------------------------------------------------------------


class MemoryPublisher(Publisher):
    """Records messages; confirms at once (``auto_confirm``) or when a test says so.

    ``messages``: every message published, in order (delivery tag = index + 1).
    ``transactions``: ``(token, [messages])`` per completed publish() call.
    Helpers mimicking the broker: ``ack(tag, multiple)``, ``nack(tag, multiple)``,
    ``confirm_next(n)``, ``confirm_all()``, ``return_message(msg)``, ``fail(exc)``.
    ``on_confirmed`` runs in whichever thread confirms (the publishing thread with auto_confirm).
    """

    def __init__(self, on_confirmed: OnConfirmed, *, auto_confirm: bool = True,
                 max_in_flight: int = 5_000, confirm_timeout_s: float | None = None,
                 batch_size: int = DEFAULT_BATCH, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(on_confirmed, max_in_flight, confirm_timeout_s, batch_size, clock)
        self.auto_confirm = auto_confirm
        self.started = False
        self.messages: list[OutMessage] = []
        self.transactions: list[tuple[Any, list[OutMessage]]] = []
        self._current: list[OutMessage] = []

    def start(self) -> None:
        with self._cond:
            self._raise_if_unusable()
            self.started = True

    def _submit(self, chunk: list[OutMessage], last: bool, token: Any) -> None:
        with self._cond:
            self._raise_if_unusable()
            self.messages.extend(chunk)
            self._current.extend(chunk)
            if last:
                self.transactions.append((token, self._current))
                self._current = []
        self._record_published(chunk, last, token)
        if self.auto_confirm and chunk:
            self._on_ack(self._tracker.last_tag, True)
        else:
            self._dispatch()

    # -- broker mimicry -------------------------------------------------------------------
    def ack(self, tag: int, multiple: bool = False) -> None:
        self._on_ack(tag, multiple)

    def nack(self, tag: int, multiple: bool = False) -> None:
        self._fail(TransientError(f"broker nacked message {tag}{' (multiple)' if multiple else ''}"))

    def confirm_next(self, n: int = 1) -> None:
        """Ack (multiple=True) the next ``n`` unacked messages (fewer if fewer are published)."""
        with self._cond:
            tag = min(self._tracker.acked_count + n, self._tracker.last_tag)
        if tag > 0:
            self._on_ack(tag, True)

    def confirm_all(self) -> None:
        with self._cond:
            tag = self._tracker.last_tag
        if tag:
            self._on_ack(tag, True)

    def return_message(self, msg: OutMessage) -> None:
        self._fail(TransientError(f"message {msg.message_id} returned unroutable ({msg.routing_key})"))

    def fail(self, exc: BaseException) -> None:
        self._fail(exc)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# Fast encoding of our message properties
# --------------------------------------------------------------------------------------------

_BP = pika.BasicProperties
_FAST_FLAGS = struct.pack(
    ">H", _BP.FLAG_CONTENT_TYPE | _BP.FLAG_HEADERS | _BP.FLAG_DELIVERY_MODE | _BP.FLAG_MESSAGE_ID | _BP.FLAG_TIMESTAMP)
_CONTENT_TYPE = "application/json"
_FAST_PREFIX = _FAST_FLAGS + bytes([len(_CONTENT_TYPE)]) + _CONTENT_TYPE.encode()
_PERSISTENT = b"\x02"
_pack_I = struct.Struct(">I").pack
_pack_Q = struct.Struct(">Q").pack
_pack_cq = struct.Struct(">cq").pack
_pack_ci = struct.Struct(">ci").pack
_pack_SI = struct.Struct(">cI").pack


def encode_properties(message_id: str, timestamp: int, headers: dict) -> bytes | None:
    """AMQP content-header property bytes for our messages (content type application/json,
    persistent, message id, timestamp, headers of str/int values), byte-identical to
    ``pika.BasicProperties.encode``; None if a value is outside that fast path."""
    parts = []
    for key, value in headers.items():
        kb = key.encode()
        if len(kb) > 255:
            return None
        vt = type(value)
        if vt is int:
            if -(2**31) <= value < 2**31:  # pika's choice: 32-bit 'I' when it fits, else 64-bit 'l'
                parts += (bytes((len(kb),)), kb, _pack_ci(b"I", value))
            elif -(2**63) <= value < 2**63:
                parts += (bytes((len(kb),)), kb, _pack_cq(b"l", value))
            else:
                return None
        elif vt is str:
            vb = value.encode()
            parts += (bytes((len(kb),)), kb, _pack_SI(b"S", len(vb)), vb)
        else:
            return None
    mid = message_id.encode()
    if len(mid) > 255 or not 0 <= timestamp < 2**64:
        return None
    table = b"".join(parts)
    return b"".join((_FAST_PREFIX, _pack_I(len(table)), table, _PERSISTENT, bytes((len(mid),)), mid,
                     _pack_Q(timestamp)))


_FRAME_END = b"\xce"
_pack_frame_head = struct.Struct(">BHI").pack  # frame type, channel, payload size
_PUBLISH_METHOD = struct.pack(">IH", pika.spec.Basic.Publish.INDEX, 0)  # class/method ids, ticket 0
_pack_content_head = struct.Struct(">HxxQ").pack  # class id, weight 0, body size
_MANDATORY = b"\x01"
_NOT_MANDATORY = b"\x00"


def marshal_publish(channel: int, exchange: bytes, routing_key: str, properties: bytes, body: bytes,
                    body_max: int, mandatory: bool = True) -> bytes | None:
    """The frames of one mandatory Basic.Publish (method, content header, body frames of at most
    ``body_max`` bytes), byte-identical to what pika's ``basic_publish`` writes; ``exchange`` is
    the short-string already encoded, ``properties`` from :func:`encode_properties`. None if the
    routing key is too long for the fast path."""
    key = routing_key.encode()
    if len(key) > 255:
        return None
    method = b"".join((_PUBLISH_METHOD, exchange, bytes((len(key),)), key, _MANDATORY if mandatory else _NOT_MANDATORY))
    header = _pack_content_head(60, len(body)) + properties
    parts = [_pack_frame_head(1, channel, len(method)), method, _FRAME_END,
             _pack_frame_head(2, channel, len(header)), header, _FRAME_END]
    if len(body) <= body_max:
        if body:
            parts += (_pack_frame_head(3, channel, len(body)), body, _FRAME_END)
    else:
        for start in range(0, len(body), body_max):
            piece = body[start:start + body_max]
            parts += (_pack_frame_head(3, channel, len(piece)), piece, _FRAME_END)
    return b"".join(parts)


def short_string(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"{value!r} is longer than an AMQP short string (255 bytes)")
    return bytes((len(raw),)) + raw


class _FastProperties(pika.BasicProperties):
    """BasicProperties whose encode() takes the fast path above (pika's generic encoder is the
    largest single cost of a publish); anything unusual falls back to pika's encoder."""

    def encode(self) -> list[bytes]:  # type: ignore[override]
        if (self.content_type == _CONTENT_TYPE and self.delivery_mode == 2 and self.headers is not None
                and self.message_id is not None and self.timestamp is not None
                and self.content_encoding is None and self.priority is None and self.correlation_id is None
                and self.reply_to is None and self.expiration is None and self.type is None
                and self.user_id is None and self.app_id is None and self.cluster_id is None):
            fast = encode_properties(self.message_id, self.timestamp, self.headers)
            if fast is not None:
                return [fast]
        return super().encode()


# --------------------------------------------------------------------------------------------
# RabbitMQ implementation
# --------------------------------------------------------------------------------------------


_COALESCE_BYTES = 256 * 1024


def coalesce_socket_writes() -> None:
    """Make pika send its queued frames in one ``send`` of up to 256 KB instead of one per message.

    pika's asynchronous transport keeps every marshalled message as its own buffer and calls
    ``socket.send`` once per buffer: at thousands of messages a second that is a system call per
    event and half the I/O thread's time (profiled with py-spy). Joining the head buffers before
    pika's own send loop keeps its bookkeeping (byte count, partial sends) exactly as it was.
    """
    from pika.adapters.utils import io_services_utils

    transport = getattr(io_services_utils, "_AsyncTransportBase", None)
    produce = getattr(transport, "_produce", None)
    if produce is None or getattr(produce, "coalescing", False):
        return  # another pika layout: its own loop is correct, just slower

    def _produce(self) -> None:
        buffers = self._tx_buffers
        if len(buffers) > 1 and len(buffers[0]) < _COALESCE_BYTES:
            head, size = [], 0
            while buffers and size < _COALESCE_BYTES:
                chunk = buffers.popleft()
                head.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(head))
        produce(self)

    _produce.coalescing = True
    transport._produce = _produce



class RabbitPublisher(Publisher):
    """pika ``SelectConnection`` with asynchronous confirms, its ioloop in a daemon thread.

    The only cross-thread call is ``ioloop.add_callback_threadsafe``: publish() appends chunks
    to an outbox and schedules one drain callback if none is pending, so small transactions
    coalesce into one callback while the I/O thread is busy.
    """

    def __init__(self, url: str, exchange: str, on_confirmed: OnConfirmed, max_in_flight: int = 5_000,
                 confirm_timeout_s: float = 60.0, connect_timeout_s: float = 10.0,
                 batch_size: int = DEFAULT_BATCH) -> None:
        super().__init__(on_confirmed, max_in_flight, confirm_timeout_s, batch_size)
        self._url = url
        self._safe_url = redact_url(url, "<unparseable broker URL>")
        self._secrets = url_secrets(url)
        self._exchange = exchange
        self._dead_exchange = reader_dead_exchange(exchange)
        self._connect_timeout_s = connect_timeout_s
        self._connection: Any = None
        self._channel: Any = None
        self._thread: threading.Thread | None = None
        self._ready_event = threading.Event()
        self._open_error: str | None = None
        self._outbox: list[tuple[list[OutMessage], bool, Any]] = []
        self._drain_scheduled = False
        self._shutting_down = False
        self._props_cls: Any = None
        try:
            parts = urllib.parse.urlsplit(url)
            self._where = f"{parts.hostname}:{parts.port or 5672}"
        except ValueError:
            self._where = self._safe_url

    @property
    def where(self) -> str:
        """host:port of the broker (for messages)."""
        return self._where

    def _scrub(self, text: str) -> str:
        return redact_text(text, self._secrets)

    # -- lifecycle (caller thread) ---------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            Publisher._raise_if_unusable(self)
            if self._thread is not None:
                return
        try:
            params = amqp_parameters(self._url)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise TransientError(f"invalid broker URL {self._safe_url}: {self._scrub(str(exc))}") from None
        params.connection_attempts = 1
        params.socket_timeout = self._connect_timeout_s
        params.stack_timeout = self._connect_timeout_s
        self._props_cls = _FastProperties
        self._thread = threading.Thread(target=self._run, args=(params,), name="cdc-publisher-io", daemon=True)
        self._thread.start()
        if not self._ready_event.wait(self._connect_timeout_s + 2.0):
            self._open_error = f"no open confirm channel within {self._connect_timeout_s:g}s"
        if self._open_error is not None or self._error is not None:
            reason = self._open_error or str(self._error)
            self.close()
            raise TransientError(
                f"cannot publish to RabbitMQ at {self._where} ({self._safe_url}): {self._scrub(reason)}"
            ) from None
        log.info("publisher connected to %s, exchange %s", self._safe_url, self._exchange)

    def close(self) -> None:
        with self._cond:
            already = self._closed
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return
        if not already and thread.is_alive():
            conn = self._connection
            if conn is not None:
                try:
                    conn.ioloop.add_callback_threadsafe(self._shutdown)
                except Exception:  # noqa: BLE001 - ioloop already gone
                    pass
        if thread is not threading.current_thread():
            thread.join(self._connect_timeout_s + 5.0)
            if thread.is_alive():
                log.warning("publisher I/O thread did not stop within %.0fs", self._connect_timeout_s + 5.0)

    # -- I/O thread ----------------------------------------------------------------------
    def _run(self, params: Any) -> None:
        try:
            conn = pika.SelectConnection(
                params,
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_open_error,
                on_close_callback=self._on_connection_closed,
            )
            self._connection = conn
            if self._closed:  # close() raced start(): nobody could schedule _shutdown yet
                conn.ioloop.add_callback_threadsafe(self._shutdown)
            conn.ioloop.start()
        except BaseException as exc:  # noqa: BLE001
            self._open_error = self._open_error or f"I/O thread crashed: {exc!r}"
            self._fail(TransientError(f"publisher I/O thread crashed: {self._scrub(repr(exc))}"))
        finally:
            if not self._closed:
                self._fail(TransientError(f"publisher connection to {self._where} is closed"))
            with self._cond:
                self._cond.notify_all()
            self._ready_event.set()
            try:
                if self._connection is not None:
                    self._connection.ioloop.close()
            except Exception:  # noqa: BLE001
                pass

    def _on_connection_open(self, conn: Any) -> None:
        conn.add_on_connection_blocked_callback(
            lambda _c, frame: log.warning("broker blocked the connection: %s", getattr(frame.method, "reason", "")))
        conn.add_on_connection_unblocked_callback(lambda _c, _f: log.info("broker unblocked the connection"))
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, conn: Any, err: BaseException) -> None:
        self._open_error = str(err) or repr(err)
        self._fail(TransientError(f"cannot connect to RabbitMQ at {self._where}: {self._scrub(self._open_error)}"))
        self._ready_event.set()
        conn.ioloop.stop()

    def _on_connection_closed(self, conn: Any, reason: BaseException) -> None:
        if not self._ready_event.is_set():
            self._open_error = self._open_error or f"connection closed while opening: {reason}"
        if not self._closed:  # a close() we asked for is not a failure
            self._fail(TransientError(f"connection to RabbitMQ at {self._where} lost: {self._scrub(str(reason))}"))
        self._ready_event.set()
        conn.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        declare_exchange(channel, self._exchange)  # RPCs on a channel are ordered: Select-Ok implies Declare-Ok
        declare_exchange(channel, self._dead_exchange)
        channel.confirm_delivery(ack_nack_callback=self._on_ack_nack, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._ready_event.set()
        self._schedule_timeout_check()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if not self._ready_event.is_set():
            self._open_error = f"channel closed while opening: {reason}"
        if self._closed:
            return
        detail = ""
        if "larger than configured max size" in str(reason):
            detail = (" -- the broker's max_message_size is lower than broker.max_message_bytes: set broker.max_message_bytes "
                      "to at most the broker's limit, so that larger change events go to the reader DLQ instead")
        self._fail(TransientError(f"publisher channel closed by RabbitMQ at {self._where}: {reason}{detail}"))
        self._close_connection()

    def _on_return(self, _channel: Any, method: Any, props: Any, _body: bytes) -> None:
        self._fail(TransientError(
            f"RabbitMQ returned message {getattr(props, 'message_id', None)} as unroutable: exchange "
            f"{method.exchange!r}, routing key {method.routing_key!r} ({method.reply_code} {method.reply_text}); "
            "is a queue bound for it?"))
        self._close_connection()

    def _on_ack_nack(self, frame: Any) -> None:
        method = frame.method
        if method.NAME == "Basic.Ack":
            self._on_ack(method.delivery_tag, method.multiple)
        else:
            self._fail(TransientError(
                f"RabbitMQ at {self._where} nacked delivery tag {method.delivery_tag}"
                f"{' (and earlier)' if method.multiple else ''}"))
            self._close_connection()

    def _schedule_timeout_check(self) -> None:
        conn = self._connection
        if conn is None or self._error is not None or self._confirm_timeout_s is None:
            return
        conn.ioloop.call_later(min(1.0, self._confirm_timeout_s / 4), self._timeout_tick)

    def _timeout_tick(self) -> None:
        if self.check_confirm_timeout():
            self._close_connection()
            return
        self._schedule_timeout_check()

    def _close_connection(self) -> None:
        conn = self._connection
        if conn is None:
            return
        try:
            if conn.is_open or conn.is_opening:
                conn.close()
            elif conn.is_closed:
                conn.ioloop.stop()
        except Exception:  # noqa: BLE001
            conn.ioloop.stop()

    def _shutdown(self) -> None:
        self._shutting_down = True
        self._close_connection()

    # -- publishing ------------------------------------------------------------------------
    def _raise_if_unusable(self) -> None:
        super()._raise_if_unusable()
        if self._channel is None or not self._ready_event.is_set():
            raise TransientError("publisher is not started: call start() first")

    def _submit(self, chunk: list[OutMessage], last: bool, token: Any) -> None:
        with self._cond:
            self._raise_if_unusable()
            self._outbox.append((chunk, last, token))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            self._connection.ioloop.add_callback_threadsafe(self._drain)
        except Exception as exc:  # noqa: BLE001 - ioloop closed under us
            self._fail(TransientError(f"publisher I/O loop is gone: {exc!r}"))
            with self._cond:
                self._raise_if_unusable()

    def _drain(self) -> None:
        """Publish the outbox (I/O thread). Each message is marshalled straight into its frames
        (:func:`marshal_publish`, what pika would write, without its per-frame objects: they were
        most of the I/O thread's time); anything off that path goes through pika's basic_publish."""
        with self._cond:
            items = self._outbox
            self._outbox = []
            self._drain_scheduled = False
        if self._error is not None:
            return
        channel, conn = self._channel, self._connection
        exchange, dead = self._exchange, self._dead_exchange
        try:
            if not channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("Channel is closed.")
            output = conn._output_marshaled_frames  # pika's own frame writer
            number, body_max = channel.channel_number, conn._body_max_length
            exchange_bytes, dead_bytes = short_string(exchange), short_string(dead)
            for chunk, last, token in items:
                frames: list[bytes] = []
                for m in chunk:
                    to_dead = m.routing_key.startswith(_DEAD_PREFIX)  # a reader dead letter: not to subscribers
                    props = encode_properties(m.message_id, m.timestamp_ms // 1000, m.headers)
                    data = None if props is None else marshal_publish(number, dead_bytes if to_dead else exchange_bytes,
                                                                      m.routing_key, props, m.body, body_max,
                                                                      m.mandatory)
                    if data is not None:
                        frames.append(data)
                        continue
                    output(frames)  # keep the order
                    frames = []
                    channel.basic_publish(dead if to_dead else exchange, m.routing_key, m.body,
                                          self._props_cls(content_type="application/json", delivery_mode=2,
                                                          message_id=m.message_id, timestamp=m.timestamp_ms // 1000,
                                                          headers=m.headers),
                                          mandatory=m.mandatory)
                output(frames)
                self._record_published(chunk, last, token)
        except Exception as exc:  # noqa: BLE001
            self._fail(TransientError(f"publish to RabbitMQ at {self._where} failed: {exc!r}"))
            self._close_connection()
            return
        self._dispatch()
