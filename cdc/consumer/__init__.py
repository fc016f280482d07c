"""Subscribing to change events: typed, acknowledged after your handler, retried, dead-lettered, replayable.

    from cdc.consumer import Consumer, Subscription, SqlIdempotencyStore, run_until_signalled
    from cdc.mapping.contracts import EventModels

    def on_registration(event):              # an EventRegistrationEvent; event.after.fee_paid is a Decimal
        ...                                  # raise Reject("why") to dead-letter at once; any other error retries

    sub = Subscription(name="notifier", entities=["event_registration"], ops=["c"])
    consumer = Consumer("amqp://guest:guest@127.0.0.1:5672/%2F", sub, on_registration,
                        models=EventModels.from_dir("mappings"),
                        idempotency=SqlIdempotencyStore("sqlite:///notifier.db", namespace=sub.name))
    run_until_signalled(consumer)            # SIGTERM / Ctrl-C: finish the event in hand, then stop

Guarantees: at-least-once (ack only after the handler returned; a crash redelivers), per-key order
while one consumer reads the queue, duplicates and stale versions skipped by the idempotency store,
bounded attempts then the DLQ ``cdc.consumer.<name>.dlq`` with the reason in ``x-cdc-reason``.
Transaction boundaries and heartbeats (published by the reader with ``events.transactions`` and
``events.heartbeats``): ``Subscription(..., transactions=True, heartbeats=True)`` hands the handler
:class:`TransactionEvent` (BEGIN before a transaction's change events, END after them with the counts)
and :class:`HeartbeatEvent` as well, in queue order; they bypass the idempotency store.
Replay: ``Consumer(..., start=StartFrom(offset=N) | StartFrom(timestamp=t) | StartFrom(first=True))``.
"""

from __future__ import annotations

import signal

from cdc.consumer.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    SqlIdempotencyStore,
)
from cdc.consumer.runner import Consumer, Handler, Reject
from cdc.consumer.subscription import StartFrom, Subscription, declare, delete
from cdc.domain.boundary import HeartbeatEvent, TransactionEvent


def run_until_signalled(consumer: Consumer) -> None:
    """Run in the main thread until SIGTERM or SIGINT, then stop gracefully."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.stop())
    consumer.run()


__all__ = [
    "Consumer", "Handler", "HeartbeatEvent", "IdempotencyStore", "MemoryIdempotencyStore", "Reject", "SqlIdempotencyStore", "StartFrom",
    "Subscription", "TransactionEvent", "declare", "delete", "run_until_signalled",
]
