"""What the two consume loops share: the sink worker's (:mod:`cdc.sinks.worker`, batches to a sink) and
the consumer library's (:mod:`cdc.consumer.runner`, one event at a time to a handler).

* :func:`open_channel` -- a blocking connection named for the broker's UI, its channel in confirm mode
  (a dead letter is confirmed before the original is acked);
* :func:`close_quietly` -- close a connection that may be broken already;
* :func:`lost_connection_errors` -- the exceptions that mean "reconnect with backoff";
* :func:`reconnect_delay` -- the capped exponential backoff both loops use between connections;
* :func:`service_for` -- wait while keeping heartbeats flowing (deliveries queue up meanwhile);
* :func:`dead_letter_properties`, :func:`publish_to_dlq`, :func:`split_into_queue` -- dead letters;
* :func:`short_error` -- a decoding error in a few words, for a dead letter's reason.

The loops themselves (batching, delivery limits, acks after apply) stay with their owners.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from cdc.broker.topology import DLX, HEADER_DELIVERIES, HEADER_REASON, event_headers, unbatched
from cdc.domain.envelope import decode, split_batch
from cdc.runtime.tls import amqp_parameters

MAX_REASON = 2000  # characters of x-cdc-reason


def open_channel(url: str, connection_name: str) -> tuple[Any, Any]:
    """(connection, channel): a ``pika.BlockingConnection`` to ``url`` and its channel in confirm mode."""
    import pika

    params = amqp_parameters(url)
    params.client_properties = {"connection_name": connection_name}
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.confirm_delivery()
    return connection, channel


def close_quietly(connection: Any, log: logging.Logger, label: str) -> None:
    """Close ``connection`` if it is open; a broken one has nothing left to save (logged at debug)."""
    if connection is not None and connection.is_open:
        try:
            connection.close()
        except Exception as err:  # noqa: BLE001 - closing a broken connection
            log.debug("%s: closing the connection: %s", label, err)


def lost_connection_errors() -> tuple[type[Exception], ...]:
    """The exceptions of a lost or refused broker connection: the loops reconnect with backoff."""
    import pika.exceptions

    return (pika.exceptions.AMQPError, ConnectionError, ssl.SSLError)


def channel_closed_by_broker() -> type[Exception]:
    import pika.exceptions

    return pika.exceptions.ChannelClosedByBroker


def reconnect_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Seconds before the next connection after ``failures`` in a row (1, 2, ...)."""
    return min(max_s, initial_s * 2 ** min(failures - 1, 16))


def service_for(connection: Any, stop: threading.Event, seconds: float, tick_s: float = 0.2) -> bool:
    """Wait ``seconds`` while keeping heartbeats flowing on ``connection`` (none or closed: a plain wait);
    False if ``stop`` was set meanwhile."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        if connection is not None and connection.is_open:
            connection.process_data_events(time_limit=min(remaining, tick_s))
        else:
            stop.wait(min(remaining, tick_s))
    return False


def dead_letter_properties(headers: Mapping[str, Any], message_id: str | None = None) -> Any:
    """Persistent JSON message properties with ``headers``."""
    import pika

    return pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=dict(headers),
                                message_id=message_id)


def publish_to_dlq(channel: Any, sink: str, body: bytes, headers: Mapping[str, Any] | None, reason: str,
                   deliveries: int | None = None) -> None:
    """Publish a message to ``sink``'s dead-letter queue, persistent, with ``reason`` in ``x-cdc-reason``."""
    import pika

    merged = dict(headers or {})
    merged[HEADER_REASON] = reason[:MAX_REASON]
    merged.pop("x-delivery-count", None)  # the DLQ counts its own deliveries
    if deliveries is not None:
        merged[HEADER_DELIVERIES] = deliveries
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=merged)
    channel.basic_publish(exchange=DLX, routing_key=sink, body=body, properties=properties, mandatory=True)


def split_into_queue(channel: Any, queue: str, body: bytes, headers: Mapping[str, Any] | None) -> bool:
    """Publish each event of a batch body to ``queue`` as its own message (its own key, version and
    entity headers), persistent and confirmed when ``channel`` is in confirm mode. The caller then
    acks the batch. False, and nothing published, if the body is not a JSON array."""
    import pika

    try:
        bodies = split_batch(body)
    except ValueError:
        return False
    for item in bodies:
        try:
            event = decode(item)
            own, message_id = event_headers(event.entity, event.key_str, event.version, headers), event.id
        except (ValidationError, ValueError):
            own, message_id = unbatched(headers), None
        channel.basic_publish("", queue, item, pika.BasicProperties(
            delivery_mode=2, content_type="application/json", headers=own, message_id=message_id), mandatory=True)
    return True


def short_error(err: Exception) -> str:
    """A decoding error in a few words: a validation error's first five problems (and how many more)."""
    if isinstance(err, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}" for e in err.errors()[:5]]
        more = f" (+{err.error_count() - 5} more)" if err.error_count() > 5 else ""
        return "; ".join(parts) + more
    return str(err)[:500]
