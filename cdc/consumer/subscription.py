"""What a downstream team subscribes to, and the broker objects that subscription owns.

    exchange cdc.events --<entity>.<op> for the chosen entities and ops--> queue cdc.consumer.<name>
        (quorum, durable: events wait there while the consumer is down)
        --x-delivery-limit (a message that keeps crashing the process)--> cdc.dlx --> cdc.consumer.<name>.dlq
    handler failures after max_attempts and unparseable messages are published to the same DLQ by the
    consumer itself, with the reason in the x-cdc-reason header.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdc.broker.topology import DLX, declare_exchange
from cdc.domain.boundary import HEARTBEAT_KEY, TXN_BEGIN_KEY, TXN_END_KEY
from cdc.domain.envelope import Op

_OPS = [o.value for o in Op]


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Your team's name for this subscription; names the queues.")
    entities: list[str] = Field(default_factory=lambda: ["*"], description="Canonical entities ('*' for all).")
    ops: list[str] = Field(default_factory=lambda: list(_OPS), description="c, u, d, r (snapshot reads), t (truncates: every row of the entity below the event's version "
                               "is gone). Leave t in unless the handler keeps no rows.")
    transactions: bool = Field(False, description="Also receive the transaction boundaries (TransactionEvent BEGIN and END, "
                               "routing keys cdc.transaction.begin/end), in order with the change events; the reader "
                               "publishes them with events.transactions: true.")
    heartbeats: bool = Field(False, description="Also receive the reader's heartbeats (HeartbeatEvent, routing key "
                             "cdc.heartbeat.reader); the reader publishes them with events.heartbeats.enabled.")
    exchange: str = "cdc.events"
    max_attempts: int = Field(5, ge=1, description="Handler attempts of one event before it is dead-lettered.")
    retry_initial_s: float = Field(0.5, gt=0, description="First backoff between attempts; doubles up to retry_max_s.")
    retry_max_s: float = Field(30.0, gt=0)
    prefetch: int = Field(50, ge=1, le=65_535)
    delivery_limit: int = Field(
        10, ge=1, description="Deliveries of one message (process crashes included) before the broker dead-letters it.")

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: list[str]) -> list[str]:
        unknown = [o for o in ops if o not in _OPS]
        if unknown or not ops:
            raise ValueError(f"ops must be among {_OPS} (got {ops})")
        return ops

    @property
    def queue(self) -> str:
        return f"cdc.consumer.{self.name}"

    @property
    def dlq(self) -> str:
        return f"{self.queue}.dlq"

    def binding_keys(self) -> list[str]:
        entities = ["*"] if "*" in self.entities else self.entities
        keys = [f"{e}.{op}" for e in entities for op in self.ops]
        if self.transactions:
            keys += [TXN_BEGIN_KEY, TXN_END_KEY]
        if self.heartbeats:
            keys.append(HEARTBEAT_KEY)
        return keys

    def matches(self, routing_key: str) -> bool:
        """Whether an event routed as ``<entity>.<op>`` belongs to this subscription (the event log holds all)."""
        entity, _, op = routing_key.partition(".")
        return op in self.ops and ("*" in self.entities or entity in self.entities)


def declare(channel: Any, sub: Subscription) -> None:
    """Declare (idempotently) the subscription's queue, its DLQ and bindings on a pika channel.

    Bindings are only ever added: after removing an entity from ``entities``, unbind it by hand
    (``rabbitmqadmin delete binding``) or use a new subscription name.
    """
    declare_exchange(channel, sub.exchange)
    channel.exchange_declare(exchange=DLX, exchange_type="direct", durable=True)
    channel.queue_declare(queue=sub.dlq, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(queue=sub.dlq, exchange=DLX, routing_key=sub.queue)
    channel.queue_declare(queue=sub.queue, durable=True, arguments={
        "x-queue-type": "quorum",
        "x-delivery-limit": sub.delivery_limit,
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": sub.queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    })
    for key in sub.binding_keys():
        channel.queue_bind(queue=sub.queue, exchange=sub.exchange, routing_key=key)


def delete(channel: Any, sub: Subscription) -> None:
    """Remove the subscription's queues (events waiting in them are lost: for decommissioning and tests)."""
    channel.queue_delete(queue=sub.queue)
    channel.queue_delete(queue=sub.dlq)


@dataclass(frozen=True)
class StartFrom:
    """A point in the event log (the RabbitMQ stream ``<exchange>.log``) to start from.

    ``offset``: the stream offset (each delivery's ``x-stream-offset`` header); ``timestamp``: events
    emitted at or after that instant; ``first``: everything the log still retains.
    """

    offset: int | None = None
    timestamp: dt.datetime | None = None
    first: bool = False

    def __post_init__(self) -> None:
        if sum([self.offset is not None, self.timestamp is not None, self.first]) != 1:
            raise ValueError("StartFrom takes exactly one of offset, timestamp, first")
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise ValueError("StartFrom(timestamp=...) needs an aware datetime (e.g. tzinfo=timezone.utc)")

    def argument(self) -> Any:
        """The ``x-stream-offset`` consumer argument (pika encodes a datetime as an AMQP timestamp)."""
        if self.first:
            return "first"
        if self.offset is not None:
            return self.offset
        return self.timestamp

    def min_ts_ms(self) -> int | None:
        # The stream starts at the chunk holding the timestamp: earlier events of that chunk are skipped here.
        return None if self.timestamp is None else int(self.timestamp.timestamp() * 1000)
