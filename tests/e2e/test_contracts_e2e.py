"""Every event the real reader publishes for the demo workload validates against the published contract
(schemas/events/<entity>.json and schemas/envelope.json) and parses into the typed models."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import jsonschema
import orjson
import pika
import pymysql
import pytest

from cdc.broker.topology import binding_keys
from cdc.demo.seed import seed
from cdc.demo.workload import Workload
from cdc.mapping import Mapper, load_mappings
from cdc.mapping.contracts import EventModels
from cdc.runtime.bootstrap import build_pipeline
from cdc.runtime.config import load_settings
from cdc.state.store import SqlStateStore

pytestmark = pytest.mark.e2e
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _validator(path: Path) -> jsonschema.Validator:
    return jsonschema.Draft202012Validator(orjson.loads(path.read_bytes()))


@pytest.mark.parametrize("batch_events", [1, 20], ids=["one-event-a-message", "batch-messages"])
def test_every_event_of_the_workload_matches_its_published_schema(world_factory, wait_until, batch_events):
    world = world_factory("snapshot: {mode: never}", broker=f"batch_events: {batch_events}")
    settings = load_settings(world["config"], source={"password": world["source"]["password"]})
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    queue = f"contracts.{world['uid']}"
    conn = pika.BlockingConnection(pika.URLParameters(world["amqp_url"]))
    channel = conn.channel()
    channel.exchange_declare(settings.broker.exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    for key in binding_keys(["*"]):
        channel.queue_bind(queue, settings.broker.exchange, routing_key=key)
    stop = threading.Event()
    pipeline = build_pipeline(settings, state, mapper)
    reader = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    reader.start()
    try:
        wait_until(lambda: state.load_checkpoint(settings.source.name), timeout=60, message="the reader's first checkpoint")
        seed(world["params"], members=40, rng_seed=31)
        Workload(world["params"], max_ops=300, rng_seed=32).run()
        sentinel = _touch_a_member(world)

        bodies: list[bytes] = []

        def drain() -> bool:
            while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
                bodies.append(got[2])
                if sentinel.encode() in got[2]:
                    return True  # published after every workload event: the queue holds them all
            return False

        wait_until(drain, timeout=90, message="the sentinel update to arrive")
    finally:
        stop.set()
        reader.join(30)
        channel.queue_delete(queue)
        conn.close()

    envelope = _validator(SCHEMAS / "envelope.json")
    per_entity = {p.stem: _validator(p) for p in (SCHEMAS / "events").glob("*.json")}
    models = EventModels(mapper.mappings)
    problems, seen = [], set()
    payloads = [orjson.loads(body) for body in bodies]
    events = [e for payload in payloads for e in (payload if isinstance(payload, list) else [payload])]
    assert any(isinstance(p, list) for p in payloads) == (batch_events > 1)  # a batch is an array of events
    for event in events:
        seen.add((event["entity"], event["op"]))
        validator = per_entity.get(event["entity"])
        if validator is None:
            problems.append(f"{event['entity']}: no published schema")
            continue
        for error in [*envelope.iter_errors(event), *validator.iter_errors(event)]:
            problems.append(f"{event['entity']} {event['op']} {event['key']}: {'/'.join(map(str, error.path))}: {error.message[:200]}")
        models.parse(orjson.dumps(event))  # the typed models accept what the contract accepts
    assert not problems, f"{len(problems)} contract violations, e.g.:\n" + "\n".join(problems[:10])
    assert len(events) > 300 and {"c", "u", "d"} <= {op for _, op in seen}, sorted(seen)
    assert {"member", "event_registration"} <= {entity for entity, _ in seen}


def _touch_a_member(world) -> str:
    sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                           database=world["db"], autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE members SET city = %s WHERE deleted = 0 ORDER BY id LIMIT 1", (sentinel,))
        assert cur.rowcount == 1
    return sentinel
