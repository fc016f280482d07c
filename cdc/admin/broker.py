"""A short-lived RabbitMQ connection for operator commands (queue depths, DLQ reads, stream reads)."""

from __future__ import annotations

import ssl
from typing import Any

from cdc.domain.errors import TransientError
from cdc.runtime.tls import amqp_parameters


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._channel: Any = None

    def __enter__(self) -> Broker:
        import pika

        params = amqp_parameters(self.url)
        params.client_properties = {"connection_name": "cdc-ops"}
        try:
            self._conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as exc:
            raise TransientError(f"cannot connect to RabbitMQ at {params.host}:{params.port} ({exc.__class__.__name__}): "
                                 "check broker.url and that RabbitMQ runs") from None
        except ssl.SSLError as exc:
            raise TransientError(f"cannot connect to RabbitMQ at {params.host}:{params.port}: TLS: {exc} "
                                 "(check the tls_ca / tls_verify parameters of broker.url)") from None
        return self

    def __exit__(self, *_exc) -> None:
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    @property
    def connection(self) -> Any:
        return self._conn

    def channel(self) -> Any:
        if self._channel is None or not self._channel.is_open:
            self._channel = self._conn.channel()
        return self._channel

    def depth(self, queue: str) -> int | None:
        """Ready messages in ``queue``; None if it does not exist."""
        import pika

        try:
            return self.channel().queue_declare(queue=queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            self._channel = None  # a passive declare of a missing queue closes the channel
            return None
