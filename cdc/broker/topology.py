"""Names and declarations of the broker objects, in one place.

    exchange cdc.events (topic)  --<entity>.<op>-->  queue cdc.sink.<name> (quorum, delivery limit)
                                                          |  dead letters
    exchange cdc.dlx (direct)    --<name>----------->  queue cdc.sink.<name>.dlq (quorum)

A sink with ``shards: N > 1`` (scale-out with per-key order) gets instead:

    exchange cdc.events --<entity>.<c|u|d|r>--> exchange cdc.sink.<name>.hash (x-consistent-hash on the x-cdc-key header)
        --> queues cdc.sink.<name>.0 .. N-1 (quorum, single-active-consumer, delivery limit, same DLQ)
    exchange cdc.events --<entity>.t--> each of the queues cdc.sink.<name>.0 .. N-1

A truncate (op ``t``) concerns every key, so it cannot go by the hash of one: every shard queue is
bound to it directly and each shard's worker applies it (idempotently; the first one removes the rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pika.exceptions

from cdc.domain.errors import QueueArgumentsChanged

DLX = "cdc.dlx"
HEADER_VERSION = "x-cdc-version"
HEADER_KEY = "x-cdc-key"
HEADER_ENTITY = "x-cdc-entity"
HEADER_REASON = "x-cdc-reason"
HEADER_COUNT = "x-cdc-count"  # on a batch message (broker.batch_events > 1): how many events it holds
HEADER_DELIVERIES = "x-cdc-deliveries"  # on a dead letter: deliveries without an ack before it was dead-lettered


def unbatched(headers: Any) -> dict[str, Any]:
    """A message's headers for one event taken out of it: without a batch's count or the broker's
    delivery count."""
    return {k: v for k, v in headers.items() if k not in (HEADER_COUNT, "x-delivery-count")} if headers else {}


def event_headers(entity: str, key: str, version: int, base: Any = None) -> dict[str, Any]:
    """The headers of a message holding one change event: its version, key (text) and entity, over
    ``base`` (the headers it came with, :func:`unbatched`)."""
    headers = unbatched(base)
    headers[HEADER_VERSION], headers[HEADER_KEY], headers[HEADER_ENTITY] = version, key, entity
    return headers


def sink_queue(sink: str) -> str:
    return f"cdc.sink.{sink}"


def sink_dlq(sink: str) -> str:
    return f"cdc.sink.{sink}.dlq"


def sink_hash_exchange(sink: str) -> str:
    return f"cdc.sink.{sink}.hash"


def _shard_queue(sink: str, index: int) -> str:
    return f"cdc.sink.{sink}.{index}"


def sink_queues(sink: str, shards: int = 1) -> list[str]:
    """The queues a sink consumes: one, or one per shard."""
    return [sink_queue(sink)] if shards <= 1 else [_shard_queue(sink, i) for i in range(shards)]


ROW_OPS = ("c", "u", "d", "r")
TRUNCATE_OP = "t"
OPS = (*ROW_OPS, TRUNCATE_OP)
READER_DLQ = "cdc.reader.dlq"
READER_DEAD_PREFIX = "dead.reader"


def hashed_binding_keys(entities: list[str]) -> list[str]:
    """Binding keys of a sharded sink's hash exchange: the row changes only (a truncate goes to every shard)."""
    names = ["*"] if not entities or "*" in entities else entities
    return [f"{e}.{op}" for e in names for op in ROW_OPS]


def truncate_binding_keys(entities: list[str]) -> list[str]:
    """Binding keys of the truncates (op t) of these entities ('*' means all)."""
    names = ["*"] if not entities or "*" in entities else entities
    return [f"{e}.{TRUNCATE_OP}" for e in names]


def binding_keys(entities: list[str]) -> list[str]:
    """Topic binding keys for the entities a sink consumes ('*' means all).

    Change events are routed as ``<entity>.<op>`` (two words), so ``*.c`` matches every entity
    but not the reader's dead letters (``dead.reader.<entity>``).
    """
    if not entities or "*" in entities:
        return [f"*.{op}" for op in OPS]
    return [f"{e}.*" for e in entities]


def declare_queue(channel: Any, queue: str, arguments: dict[str, Any], setting: str | None = None,
                  note: str | None = None) -> None:
    """``queue_declare`` of a durable queue. One that exists with other arguments (RabbitMQ never changes
    them) raises QueueArgumentsChanged naming ``setting``, the configuration key behind the argument,
    and the ways out; ``note``: what deleting the queue costs and how to get it back."""
    try:
        channel.queue_declare(queue=queue, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:  # PRECONDITION_FAILED
            raise
        back = f"set {setting} back to the queue's value, or " if setting else ""
        raise QueueArgumentsChanged(
            f"broker queue {queue!r} exists with other arguments than the configuration gives ({exc.reply_text}), and "
            f"RabbitMQ never changes a queue's arguments. To go on: {back}let the queue drain, stop every process "
            f"that uses it and delete it (`rabbitmqctl delete_queue {queue}`); the next start declares it anew"
            + (f" ({note})." if note else ".")
        ) from None


def reader_dead_exchange(exchange: str) -> str:
    """Where the reader publishes its dead letters (``dead.reader.<entity>``): not ``exchange``, whose
    subscribers get change events only. A dead letter carries the source row as it was, unmapped
    columns and fields the mappings hash, mask or drop (``pii``) included."""
    return f"{exchange}.dead"


def declare_reader_dlq(channel: Any, exchange: str) -> None:
    """The queue that keeps rows the mapper could not convert, with their reasons, and its exchange."""
    declare_exchange(channel, exchange)
    dead = reader_dead_exchange(exchange)
    declare_exchange(channel, dead)
    declare_queue(channel, READER_DLQ, {"x-queue-type": "quorum"},
                  note="its dead letters go with it: `cdc dlq list --reader` shows them first")
    channel.queue_bind(queue=READER_DLQ, exchange=dead, routing_key=f"{READER_DEAD_PREFIX}.#")
    # Before, dead letters went through the events exchange, where a subscriber bound to '#' got them too.
    channel.queue_unbind(queue=READER_DLQ, exchange=exchange, routing_key=f"{READER_DEAD_PREFIX}.#")


def event_log(exchange: str) -> str:
    """The stream keeping every change event for replay: ``cdc.events.log`` for the default exchange."""
    return f"{exchange}.log"


def declare_event_log(channel: Any, exchange: str, max_age: str) -> None:
    """The event-log stream, bound like a sink consuming every entity (not the reader's dead letters)."""
    declare_exchange(channel, exchange)
    declare_queue(channel, event_log(exchange), {"x-queue-type": "stream", "x-max-age": max_age},
                  setting="broker.event_log_max_age",
                  note="deleting it loses the replay history; a RabbitMQ policy with max-age changes the retention "
                         "of the existing stream instead")
    for key in binding_keys(["*"]):
        channel.queue_bind(queue=event_log(exchange), exchange=exchange, routing_key=key)


def declare_exchange(channel: Any, exchange: str) -> None:
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)


def declare_sink_queues(
    channel: Any, exchange: str, sink: str, entities: list[str], delivery_limit: int, shards: int = 1
) -> None:
    """Declare (idempotently) a sink's quorum queue(s), its DLQ and their bindings, on a pika channel."""
    declare_exchange(channel, exchange)
    channel.exchange_declare(exchange=DLX, exchange_type="direct", durable=True)
    declare_queue(channel, sink_dlq(sink), {"x-queue-type": "quorum"})
    channel.queue_bind(queue=sink_dlq(sink), exchange=DLX, routing_key=sink)
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": sink,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    setting = f"sinks.{sink}.delivery_limit"
    replay = f"events it still held come back with `cdc replay --sink {sink} --from <time>`"  # from the event log
    if shards <= 1:
        declare_queue(channel, sink_queue(sink), arguments, setting, replay)
        for key in binding_keys(entities):
            channel.queue_bind(queue=sink_queue(sink), exchange=exchange, routing_key=key)
        return
    # Every event of one key hashes to the same shard, and one consumer at a time reads a shard:
    # per-key order holds with several workers.
    hashed = sink_hash_exchange(sink)
    channel.exchange_declare(exchange=hashed, exchange_type="x-consistent-hash", durable=True,
                             arguments={"hash-header": HEADER_KEY})
    for key in hashed_binding_keys(entities):
        channel.exchange_bind(destination=hashed, source=exchange, routing_key=key)
    # Before truncates existed, an entity list was bound as '<entity>.*', which would also hash a truncate
    # to one shard; per-op bindings replace it.
    if entities and "*" not in entities:
        for key in binding_keys(entities):
            channel.exchange_unbind(destination=hashed, source=exchange, routing_key=key)
    for queue in sink_queues(sink, shards):
        declare_queue(channel, queue, {**arguments, "x-single-active-consumer": True}, setting, replay)
        channel.queue_bind(queue=queue, exchange=hashed, routing_key="1")  # equal weights
        for key in truncate_binding_keys(entities):
            channel.queue_bind(queue=queue, exchange=exchange, routing_key=key)


class _NoProbeNotFound(logging.Filter):
    """pika logs every channel the broker closes; a probe for a sink queue that does not exist is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NOT_FOUND - no queue 'cdc.sink." not in record.getMessage()


logging.getLogger("pika.channel").addFilter(_NoProbeNotFound())


def _queue_state(connection: Any, queue: str) -> Any:
    """The passive declare-ok of ``queue`` (its message and consumer counts), or None where it does not
    exist; on a channel of its own, since the broker closes the channel of a passive declare that fails."""
    channel = connection.channel()
    try:
        return channel.queue_declare(queue=queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    finally:
        if channel.is_open:
            channel.close()


def stale_sink_queues(connection: Any, sink: str, shards: int) -> list[str]:
    """This sink's queues of another ``shards`` setting that still exist (on a pika BlockingConnection).

    Events routed to them before the change are applied by nobody while they stay there: see
    :func:`move_stale_sink_queues`."""

    def exists(queue: str) -> bool:
        return _queue_state(connection, queue) is not None

    found = [sink_queue(sink)] if shards > 1 and exists(sink_queue(sink)) else []
    index = shards if shards > 1 else 0
    while exists(_shard_queue(sink, index)):
        found.append(_shard_queue(sink, index))
        index += 1
    return found


def move_stale_sink_queues(connection: Any, exchange: str, sink: str, entities: list[str],
                           shards: int) -> tuple[list[str], int]:
    """Move the events left in this sink's queues of another ``shards`` setting into its queues of
    this one, then delete them: (those queues, the number of messages moved).

    Changing ``shards`` declares a new layout of queues; the old ones stayed bound, kept receiving
    every event, and were consumed by nobody. They are first cut off from routing (the bindings of
    the entities the sink consumes now), then emptied message by message (published to this layout,
    confirmed, then acked), then deleted. Their events are older than or duplicates of those in the
    new queues; every sink keeps a row's highest version, so their late arrival changes nothing but
    what was missing. Several workers may do it at once, and processes still on the old setting
    (a rolling restart) move them back: every move is confirmed before its ack, so none is lost, and
    it ends once all run with one setting."""
    stale = stale_sink_queues(connection, sink, shards)
    if not stale:
        return stale, 0
    channel = connection.channel()
    channel.confirm_delivery()
    hashed = sink_hash_exchange(sink)
    for queue in stale:  # no more events into them
        if queue == sink_queue(sink):
            for key in dict.fromkeys(binding_keys(["*"]) + binding_keys(entities)):
                channel.queue_unbind(queue=queue, exchange=exchange, routing_key=key)
        else:
            channel.queue_unbind(queue=queue, exchange=hashed, routing_key="1")
            for key in dict.fromkeys(truncate_binding_keys(["*"]) + truncate_binding_keys(entities)):
                channel.queue_unbind(queue=queue, exchange=exchange, routing_key=key)
    if shards <= 1:
        channel.exchange_delete(exchange=hashed)  # and with it its bindings to the events exchange
    # Into this layout: the hash exchange spreads by the key header as for new events.
    target_exchange, target_key = (hashed, "1") if shards > 1 else ("", sink_queue(sink))
    moved = 0
    channel.basic_qos(prefetch_count=500)
    for queue in stale:
        # Consumed, not basic.get (refused on single-active-consumer queues). Where a worker still
        # running with the old setting is the active consumer, nothing comes, and that worker drains it.
        for method, properties, body in channel.consume(queue, inactivity_timeout=1.0):
            if method is None:
                break
            channel.basic_publish(target_exchange, target_key, body, properties, mandatory=True)  # raises unless confirmed
            channel.basic_ack(method.delivery_tag)
            moved += 1
        channel.cancel()
        # Quorum queues refuse if_empty deletes: delete it only while empty and not consumed (a worker
        # still running with the old setting drains it instead; a later start deletes it). Deleting a
        # queue already gone (another worker) succeeds.
        state = _queue_state(connection, queue)
        if state is not None and state.message_count == 0 and state.consumer_count == 0:
            channel.queue_delete(queue=queue)
    channel.close()
    return stale, moved


def stop_stream_consumer(channel: Any, consumer_tag: str | None = None) -> None:
    """Cancel a consumer of a stream queue (or close its channel) on a pika BlockingChannel.

    pika rejects the deliveries it still buffers when a consumer is cancelled; a stream refuses
    basic.reject and closes the whole connection (540 NOT_IMPLEMENTED). For a stream an ack is
    only flow credit, so the buffered deliveries are acked instead.
    """
    impl = channel._impl  # noqa: SLF001 - the one place that needs pika's channel implementation
    impl.basic_reject = lambda delivery_tag=0, requeue=True: impl.basic_ack(delivery_tag)
    if consumer_tag is None:
        channel.close()
    else:
        channel.basic_cancel(consumer_tag)


def declare_reader_topology(url: str, exchange: str, event_log_max_age: str,
                            sinks: list[tuple[str, list[str], int, int]],
                            also: tuple[Callable[[Any, str], None], ...] = ()) -> None:
    """What the reader needs before its first publish, on a connection of its own: the reader's dead-letter
    queue, the event log, each of ``sinks`` (name, entities, delivery_limit, shards) with its queues, so no
    event is unroutable while a sink worker is still starting, and ``also`` (say, the schema-history queue).
    A broker that does not answer, or refuses, is a :class:`TransientError`."""
    import ssl

    import pika

    from cdc.domain.errors import TransientError
    from cdc.runtime.tls import amqp_parameters

    try:
        params = amqp_parameters(url)
        with pika.BlockingConnection(params) as conn:
            channel = conn.channel()
            declare_reader_dlq(channel, exchange)
            for declare in also:
                declare(channel, exchange)
            declare_event_log(channel, exchange, event_log_max_age)
            for name, entities, delivery_limit, shards in sinks:
                declare_sink_queues(channel, exchange, name, entities, delivery_limit, shards)
    except pika.exceptions.AMQPError as exc:
        raise TransientError(f"cannot declare broker topology: {exc.__class__.__name__}") from None
    except ssl.SSLError as exc:  # the broker's certificate refused (broker.url tls_* parameters)
        raise TransientError(f"cannot declare broker topology: TLS: {exc}") from None
