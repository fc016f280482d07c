"""A DDL statement in the source, through the real daemon, reaches RabbitMQ as a schema-change message
and the schema history, and replication goes on around it."""

from __future__ import annotations

import orjson
import pika
import pymysql
from e2e_support import Daemon, crm_rows, diff, source_rows

from cdc.mapping import Mapper, load_mappings
from cdc.source.schema_history import SCHEMA_PREFIX, SchemaHistory
from cdc.state.store import SqlStateStore


def test_alter_table_is_published_and_recorded_while_rows_keep_flowing(world_factory, wait_until):
    world = world_factory("snapshot: {mode: never}")
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(world["state_url"])
    exchange, queue = f"cdc.e2e.{world['uid']}", f"schema-watch-{world['uid']}"
    with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(queue, exclusive=False, auto_delete=False)
        ch.queue_bind(queue, exchange, f"{SCHEMA_PREFIX}.{world['db']}.#")
    daemon = Daemon(world)
    daemon.start()
    try:
        wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{daemon.logs()}")
        admin = pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root",
                                database=world["db"], autocommit=True)
        with admin.cursor() as cur:
            cur.execute("SET SESSION sql_mode=''")
            cur.execute("INSERT INTO members (id, email, status, join_date) VALUES (1, 'a@x.org', 'A', '2020-01-01')")
            cur.execute("ALTER TABLE members ADD COLUMN nickname VARCHAR(40) NULL AFTER email")
            cur.execute("INSERT INTO members (id, email, nickname, status, join_date) VALUES (2, 'b@x.org', 'bee', 'A', '2020-01-01')")
            cur.execute("UPDATE members SET email = 'A@X.org ' WHERE id = 1")
        admin.close()

        def schema_message():
            with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
                method, _, body = conn.channel().basic_get(queue, auto_ack=True)
            return orjson.loads(body) if method else None

        message = wait_until(schema_message, timeout=30, message=f"the schema-change message\n{daemon.logs()}")
        assert "ADD COLUMN nickname" in str(message) and world["db"] in str(message)
        history = SchemaHistory(state).entries("e2e", db=world["db"], table="members")
        assert any("ADD COLUMN nickname" in h["ddl"] for h in history), history
        wait_until(lambda: not diff(source_rows(world, mapper), crm_rows(world, mapper)), timeout=60,
                   message=f"rows before and after the ALTER in the CRM\n{daemon.logs()}")
        assert crm_rows(world, mapper)["member"]["1"]["email"] == "a@x.org"
        assert daemon.terminate() == 0
    finally:
        daemon.stop_if_running()
        with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
            conn.channel().queue_delete(queue)
