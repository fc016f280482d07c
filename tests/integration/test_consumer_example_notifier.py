"""examples/registration_notifier as a real process against the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pika
import pytest
from test_consumer import dead_letters, depth, publish, typed

from cdc.consumer import Subscription, declare, delete

pytestmark = pytest.mark.integration
NOTIFIER = Path(__file__).resolve().parents[2] / "examples" / "registration_notifier" / "notifier.py"


@pytest.fixture
def subscription(amqp_url, unique_name):
    sub = Subscription(name=unique_name, entities=["event_registration"], ops=["c"], exchange=f"x.{unique_name}")
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        declare(conn.channel(), sub)  # as the notifier does: events published before it starts wait for it
    yield sub
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        delete(conn.channel(), sub)
        conn.channel().exchange_delete(sub.exchange)


def test_the_notifier_tells_each_new_registration_once_and_stops_on_sigterm(amqp_url, subscription, event_factory, tmp_path, wait_until):
    confirmed = typed(event_factory, "event_registration", 1, member_id=10, event_id=7, status="confirmed", fee_paid="25.00")
    publish(amqp_url, subscription.exchange,
            confirmed,
            typed(event_factory, "event_registration", 2, member_id=11, event_id=7, status="cancelled"),
            typed(event_factory, "event_registration", 1, op="u", member_id=10, event_id=7, status="waitlisted"),
            typed(event_factory, "member", 10),
            typed(event_factory, "event_registration", 3, member_id=None, event_id=7, status="pending"),
            typed(event_factory, "event_registration", 4, member_id=12, event_id=8, status="pending"),
            confirmed)  # a redelivery
    process = subprocess.Popen(
        [sys.executable, str(NOTIFIER), "--amqp-url", amqp_url, "--exchange", subscription.exchange,
         "--name", subscription.name, "--state", str(tmp_path / "seen.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: depth(amqp_url, subscription.queue) == 0 and len(lines) >= 2, timeout=30,
                   message="the notifications")
        notifications = [json.loads(line) for line in lines]
        assert [(n["registration_id"], n["status"], n["fee_paid"]) for n in notifications] == [
            (1, "confirmed", "25.00"), (4, "pending", None)]
        assert notifications[0]["text"] == "Your registration 1 for event 7 is confirmed, fee paid 25.00."
        [(_, headers)] = dead_letters(amqp_url, subscription)
        assert headers["x-cdc-reason"] == "rejected by the handler: registration 3 has no member or event"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, process.stderr.read()[-2000:]
    reader.join(5)
    assert len(lines) == 2  # nothing sent twice
