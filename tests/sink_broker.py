"""A test-side publisher and inspector of one sink's queues, on a unique exchange and sink name."""

from __future__ import annotations

import pika

from cdc.broker.topology import HEADER_ENTITY, declare_sink_queues, sink_dlq, sink_queue
from cdc.domain.envelope import encode


class Broker:
    """Test-side publisher and inspector on a unique exchange and sink name."""

    def __init__(self, url: str, exchange: str, sink: str, config) -> None:
        self.exchange, self.sink = exchange, sink
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        declare_sink_queues(self.channel, exchange, sink, config.entities, config.delivery_limit)

    def publish(self, body: bytes, routing_key: str = "customer.u", headers: dict | None = None) -> None:
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=headers)
        self.channel.basic_publish(self.exchange, routing_key, body, props, mandatory=True)

    def publish_events(self, events) -> None:
        for event in events:
            self.publish(encode(event), event.routing_key, {HEADER_ENTITY: event.entity})

    def publish_batches(self, events, batch_events: int) -> int:
        """Publish as the reader does with ``broker.batch_events``: runs of one routing key as batch messages.
        Returns how many messages that took."""
        from cdc.broker.publisher import OutMessage, group_events

        messages = group_events([OutMessage.from_event(e) for e in events], batch_events, 1 << 20)
        for m in messages:
            self.publish(m.body, m.routing_key, m.headers)
        return len(messages)

    def dead_letters(self) -> list[tuple[bytes, dict]]:
        found = []
        while True:
            method, props, body = self.channel.basic_get(sink_dlq(self.sink), auto_ack=True)
            if method is None:
                return found
            found.append((body, props.headers or {}))

    def consumers(self) -> int:
        return self.channel.queue_declare(sink_queue(self.sink), passive=True).method.consumer_count

    def depth(self) -> int:
        return self.channel.queue_declare(sink_queue(self.sink), passive=True).method.message_count

    def close(self) -> None:
        self.channel.queue_delete(sink_queue(self.sink))
        self.channel.queue_delete(sink_dlq(self.sink))
        self.channel.exchange_delete(self.exchange)
        self.connection.close()
