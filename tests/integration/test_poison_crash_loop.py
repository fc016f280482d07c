"""A poison message that kills the sink worker PROCESS on every delivery, through a real crash loop.

The worker runs the CRM sink on PostgreSQL as a subprocess whose ``apply`` calls ``os._exit`` when a
batch holds one key, as a segfault or an out-of-memory kill would end it; the test restarts it each
time, as a supervisor (Kubernetes, systemd) would. After ``delivery_limit`` deliveries the poison
message must be in the sink's DLQ, with its reason and delivery count visible through cdc.admin.dlq,
and every other event applied: none dead-lettered with it, although each crash sent every message
the worker held back to the queue.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import pytest
from pydantic import SecretStr
from sink_broker import Broker
from test_sink_worker import CUSTOMER, customers

from cdc.admin import dlq
from cdc.broker.topology import HEADER_REASON
from cdc.domain.envelope import Op
from cdc.sinks.base import SinkContext
from cdc.sinks.crm import CrmSink, CrmSinkConfig

pytestmark = pytest.mark.integration

POISON_KEY = 999  # no other event has this key
CRASH_CODE = 17
WORKER = """
import logging, os, signal, sys, threading
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
logging.getLogger("pika").setLevel(logging.WARNING)
from cdc.domain.entity_schema import EntitySchema, FieldType
from pydantic import SecretStr
from cdc.sinks.base import SinkContext
from cdc.sinks.crm import CrmSink, CrmSinkConfig
from cdc.sinks.worker import SinkWorker

name, exchange, amqp_url, poison, pg_url, config_json = sys.argv[1:7]

class PoisonedCrm(CrmSink):
    def apply(self, events):
        logging.info("apply %s", [(e.key_str, e.version) for e in events][:5])
        if any(e.key_str == poison for e in events):
            os._exit({crash})  # no cleanup, no ack: the process is gone
        return super().apply(events)

config = CrmSinkConfig.model_validate_json(config_json).model_copy(update={{"url": SecretStr(pg_url)}})
schema = EntitySchema(name="customer", key=("id",), fields={{"id": FieldType.INTEGER, "name": FieldType.STRING,
                                                             "balance": FieldType.DECIMAL}})
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
SinkWorker(name, PoisonedCrm(name, config, SinkContext(entities={{"customer": schema}})), config, amqp_url, exchange, stop,
           retry_initial_s=0.05).run()
""".replace("{crash}", str(CRASH_CODE)).replace("{{", "{").replace("}}", "}")


@pytest.mark.parametrize("batch_events", [1, 10], ids=["one-event-a-message", "batch-messages"])
def test_a_message_that_kills_the_worker_process_is_dead_lettered_and_the_rest_applied(
        amqp_url, pg_url, unique_name, event_factory, wait_until, tmp_path, batch_events):
    limit = 3
    # A batch holding the poison kills the worker once; redelivered, it is split into single events,
    # and the poison alone then takes the delivery limit's crashes.
    crashes = limit + (1 if batch_events > 1 else 0)
    config = CrmSinkConfig(url=SecretStr(pg_url), schema_name=unique_name, batch_size=20, batch_wait_ms=20, prefetch=200,
                           delivery_limit=limit)
    broker = Broker(amqp_url, f"{unique_name}.events", unique_name, config)
    events, expected = customers(event_factory, 300)
    poison = event_factory("customer", POISON_KEY, 10_000, Op.CREATE, after={"id": POISON_KEY, "name": "poison", "balance": "1"})
    # Behind the poison: more than a batch and less than the prefetch, all held by the worker when it dies.
    broker.publish_batches([*events[:60], poison, *events[60:]], batch_events)
    sink = CrmSink(unique_name, config, SinkContext(entities={"customer": CUSTOMER}))
    exits: list[int] = []
    proc = None
    started = time.monotonic()
    try:
        sink.open()
        while True:
            with open(tmp_path / f"worker-{len(exits)}.log", "wb") as log:
                proc = subprocess.Popen([sys.executable, "-c", WORKER, unique_name, broker.exchange, amqp_url, str(POISON_KEY),
                                         pg_url, config.model_dump_json()], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
            try:
                exits.append(proc.wait(timeout=6))  # crashed: restart it, as a supervisor would
            except subprocess.TimeoutExpired:
                break  # still running: the poison is out of its way
            assert exits[-1] == CRASH_CODE, _logs(tmp_path)
            assert len(exits) <= crashes, f"still crashing after {len(exits)} starts\n{_logs(tmp_path)}"
        # The poison (key 999) never lands.
        wait_until(lambda: sink.fetch_rows("customer") == expected, timeout=30,
                   message=f"every other event applied\n{_logs(tmp_path)}")
        wait_until(lambda: broker.depth() == 0, timeout=10, message="the queue drained")
        elapsed = time.monotonic() - started

        letters = dlq.list_letters(amqp_url, unique_name)
        assert [(d.event.key_str, d.event.version) for d in letters] == [(str(POISON_KEY), 10_000)], \
            [d.summary() for d in letters]
        summary = letters[0].summary()
        assert summary["deliveries"] == limit and len(exits) == crashes
        assert "delivery_limit is 3" in summary["reason"] and "crashed" in summary["reason"]
        assert letters[0].headers[HEADER_REASON] == summary["reason"]
        print(f"poison dead-lettered after {len(exits)} crashes; {len(expected)} other rows applied in {elapsed:.1f}s")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        sink.close()
        broker.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')


def _logs(tmp_path) -> str:
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(tmp_path.glob("worker-*.log")))


def test_a_message_the_broker_dead_lettered_by_itself_shows_the_broker_reason(amqp_url, unique_name, event_factory, wait_until):
    """A consumer that never gets to dead-letter the message itself (here: it never acks): RabbitMQ's
    own delivery limit dead-letters it, and cdc.admin.dlq tells why from ``x-death``."""
    import pika

    from cdc.broker.topology import sink_queue
    from cdc.sinks.memory import MemorySinkConfig

    broker = Broker(amqp_url, f"{unique_name}.events", unique_name, MemorySinkConfig(delivery_limit=1))
    try:
        broker.publish_events([event_factory("customer", 5, 500)])
        for _ in range(2):  # the first delivery and the one more the limit allows, neither acked
            with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
                method, _, _ = conn.channel().basic_get(sink_queue(unique_name), auto_ack=False)
                assert method is not None
        letters = wait_until(lambda: dlq.list_letters(amqp_url, unique_name), timeout=10, message="the dead letter")
        reason = letters[0].summary()["reason"]
        assert letters[0].event.key_str == "5"
        assert "delivery limit of queue" in reason and sink_queue(unique_name) in reason, reason
    finally:
        broker.close()
