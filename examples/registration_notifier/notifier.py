"""A downstream consumer: tells members that their event registration was received.

    python examples/registration_notifier/notifier.py --amqp-url amqp://guest:guest@127.0.0.1:5672/%2F

It subscribes to new event registrations (``event_registration.c``) with its own durable queue,
gets typed events, skips registrations created already cancelled, and "sends" one notification per
registration as a JSON line on stdout (replace ``print_notification`` with your mailer). A
notification is sent once per registration version even across restarts and redeliveries (SQLite
idempotency store); a mailer that fails is retried with backoff, then the event goes to the DLQ
``cdc.consumer.registration-notifier.dlq``. SIGTERM / Ctrl-C stop it after the event in hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cdc.consumer import (
    Consumer,
    Reject,
    SqlIdempotencyStore,
    StartFrom,
    Subscription,
    run_until_signalled,
)
from cdc.mapping.contracts import EventModels

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Notification:
    registration_id: int
    member_id: int
    event_id: int
    status: str
    fee_paid: str | None
    text: str


def notification_for(event) -> Notification | None:
    """What to tell the member about one new registration (None: nothing to say)."""
    reg = event.after
    if reg is None or reg.status == "cancelled":
        return None
    if reg.member_id is None or reg.event_id is None:
        raise Reject(f"registration {reg.registration_id} has no member or event")  # no retry can fix that
    fee = f", fee paid {reg.fee_paid}" if reg.fee_paid else ""
    text = f"Your registration {reg.registration_id} for event {reg.event_id} is {reg.status}{fee}."
    return Notification(reg.registration_id, reg.member_id, reg.event_id, reg.status,
                        None if reg.fee_paid is None else str(reg.fee_paid), text)


def print_notification(notification: Notification) -> None:
    print(json.dumps(asdict(notification)), flush=True)


def build(args: argparse.Namespace, send: Callable[[Notification], None] = print_notification) -> Consumer:
    sub = Subscription(name=args.name, entities=["event_registration"], ops=["c"], exchange=args.exchange)

    def handle(event) -> None:
        notification = notification_for(event)
        if notification is not None:
            send(notification)

    start = None
    if args.since:
        start = StartFrom(timestamp=dt.datetime.fromisoformat(args.since).astimezone(dt.UTC))
    return Consumer(args.amqp_url, sub, handle, models=EventModels.from_dir(args.mappings),
                    idempotency=SqlIdempotencyStore(f"sqlite:///{args.state}", namespace=sub.name), start=start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--exchange", default="cdc.events")
    parser.add_argument("--name", default="registration-notifier", help="Subscription name (queue cdc.consumer.<name>).")
    parser.add_argument("--mappings", default=str(REPO / "mappings"), help="Where the entity contracts come from.")
    parser.add_argument("--state", default="notifier-seen.db", help="SQLite file of versions already notified.")
    parser.add_argument("--since", help="Also notify registrations from the event log since this ISO time (replay).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_until_signalled(build(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
