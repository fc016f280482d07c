"""Bad input, end to end through the real daemon: a 500-column table, and rows of many megabytes.

Source MariaDB -> binlog reader -> RabbitMQ -> CRM (PostgreSQL) and cache (Redis) sink workers, all in
the daemon process; each sink must end equal to the source row by row (``converge``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import random
import time

import pika
import pymysql
import pytest
from e2e_support import Daemon, converge, crm_rows, diff

from cdc.admin import dlq
from cdc.mapping import Mapper, load_mappings
from cdc.sinks.base import SinkContext
from cdc.sinks.cache import CacheSink, CacheSinkConfig
from cdc.state.store import SqlStateStore

pytestmark = pytest.mark.e2e

# (DDL, mapping type, value maker) for the 499 non-key columns, in turn.
WIDE_TYPES = [
    ("INT", "integer", lambda r: r.randint(-2**31, 2**31 - 1)),
    ("BIGINT", "integer", lambda r: r.randint(-2**63, 2**63 - 1)),
    ("DECIMAL(14,4)", "decimal", lambda r: decimal.Decimal(r.randint(-10**13, 10**13)) / 10_000),
    ("DOUBLE", "float", lambda r: r.uniform(-1e9, 1e9)),
    ("DATETIME(6)", "datetime", lambda r: dt.datetime(2000, 1, 1) + dt.timedelta(seconds=r.randint(0, 10**9), microseconds=r.randint(0, 999_999))),
    ("DATE", "date", lambda r: dt.date(1990, 1, 1) + dt.timedelta(days=r.randint(0, 20_000))),
    ("TEXT", "string", lambda r: "".join(r.choice("aé😀中 ,'\"\\") for _ in range(r.randint(0, 30)))),
    ("TINYINT(1)", "boolean", lambda r: r.randint(0, 1)),
    ("JSON", "json", lambda r: json.dumps({"n": r.randint(0, 9), "s": "é😀", "l": [1.5, None, True]})),
]
WIDE_COLUMNS = [(f"c{i:03d}", *WIDE_TYPES[i % len(WIDE_TYPES)]) for i in range(1, 500)]


def _admin(world):
    return pymysql.connect(host=world["source"]["host"], port=world["source"]["port"], user="root", database=world["db"],
                           autocommit=True, charset="utf8mb4")


def _run(world_factory, redis_url, wait_until, ddl: str, mappings: list[str], entities: dict, write, timeout: float = 180):
    """Create the table and its mappings (YAML, ``DB`` for the database), start the daemon (CRM and cache sinks),
    ``write(admin connection)``, wait until both sinks equal the source; returns (world, source rows, seconds)."""
    uid_hint = random.randint(0, 10**9)
    cache_name, prefix = f"cache_{uid_hint}", f"e2e{uid_hint}"
    world = world_factory("snapshot: {mode: never}",
                          extra_sinks=f'  {cache_name}: {{type: cache, url: "{redis_url}", key_prefix: {prefix}, batch_size: 50}}\n')
    with _admin(world) as admin, admin.cursor() as cur:
        cur.execute(ddl)
    for i, text in enumerate(mappings):
        (world["mappings"] / f"zz_test_{i}.yaml").write_text(text.replace("DB", world["db"]))
    mapper = Mapper(load_mappings(world["mappings"]))
    cache = CacheSink(cache_name, CacheSinkConfig(url=redis_url, key_prefix=prefix), SinkContext(entities=mapper.schemas()))
    daemon = Daemon(world)
    daemon.start()
    try:
        cache.open()
        wait_until(lambda: SqlStateStore(world["state_url"]).load_checkpoint("e2e"), timeout=60,
                   message=f"the first checkpoint\n{daemon.logs()}")
        started = time.monotonic()
        with _admin(world) as admin:
            write(admin)
        source = converge(world, mapper, wait_until, daemon.logs, {"cache": cache}, timeout=timeout, entities=entities)
        elapsed = time.monotonic() - started
        assert diff(source, {e: cache.fetch_rows(e) for e in entities}) == []  # every field, not a projection
        assert daemon.terminate() == 0, daemon.logs()
        return world, source, elapsed
    finally:
        daemon.stop_if_running()
        try:
            cache.reset()
            cache.close()
        finally:
            with pika.BlockingConnection(pika.URLParameters(world["amqp_url"])) as conn:
                ch = conn.channel()
                ch.queue_delete(f"cdc.sink.{cache_name}")
                ch.queue_delete(f"cdc.sink.{cache_name}.dlq")


def test_a_500_column_table_arrives_whole_in_every_sink(world_factory, redis_url, wait_until):
    columns = ", ".join(f"{name} {ddl} NULL" for name, ddl, _, _ in WIDE_COLUMNS)
    ddl = f"CREATE TABLE wide (id INT PRIMARY KEY, {columns}) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4"
    fields = "\n".join(f"  {name}: {{column: {name}, type: {ftype}}}" for name, _, ftype, _ in WIDE_COLUMNS)
    # Two entities from the one table: every column a typed field, and every column passed through as JSON.
    typed = f"entity: wide\nsource: {{db: DB, table: wide}}\nkey: [id]\nfields:\n  id: {{column: id, type: integer}}\n{fields}\n"
    passed = ("entity: wide_extra\nsource: {db: DB, table: wide}\nkey: [id]\nunmapped_columns: pass_through\n"
              "fields:\n  id: {column: id, type: integer}\n")
    rng = random.Random(500)
    names = [name for name, *_ in WIDE_COLUMNS]

    def row(i: int) -> list:
        return [i, *(None if rng.random() < 0.05 else make(rng) for _, _, _, make in WIDE_COLUMNS)]

    def write(admin) -> None:
        placeholders = ", ".join(["%s"] * (len(names) + 1))
        with admin.cursor() as cur:
            cur.execute("BEGIN")
            cur.executemany(f"INSERT INTO wide (id, {', '.join(names)}) VALUES ({placeholders})", [row(i) for i in range(1, 41)])
            cur.execute("COMMIT")
            for i in range(1, 41, 3):  # every column of some rows changes
                values = row(i)[1:]
                cur.execute(f"UPDATE wide SET {', '.join(f'{n} = %s' for n in names)} WHERE id = %s", [*values, i])
            cur.execute("DELETE FROM wide WHERE id IN (2, 20, 39)")

    entities = {"wide": ("wide", "id"), "wide_extra": ("wide", "id")}
    _, source, elapsed = _run(world_factory, redis_url, wait_until, ddl, [typed, passed], entities, write)
    assert len(source["wide"]) == 37 and len(next(iter(source["wide"].values()))) == 500
    assert len(next(iter(source["wide_extra"].values()))["extra"]) == 499
    print(f"500-column table: 40 inserts, 14 full-row updates, 3 deletes equal in CRM and cache in {elapsed:.1f}s")


MB = 1024 * 1024
BIG_DDL = "CREATE TABLE big (id INT PRIMARY KEY, label VARCHAR(20), txt LONGTEXT, blb LONGBLOB, doc JSON) DEFAULT CHARSET=utf8mb4"
BIG_MAPPING = """entity: big
source: {db: DB, table: big}
key: [id]
fields:
  id: {column: id, type: integer}
  label: {column: label, type: string}
  txt: {column: txt, type: string}
  blb: {column: blb, type: bytes}
  doc: {column: doc, type: json}
"""


def big_text(rng: random.Random, size: int) -> str:
    """About ``size`` bytes of UTF-8 text with 1-, 2-, 3- and 4-byte characters."""
    alphabet = "abc xyz\n\"'\\éüßЖж中文字😀🎉"
    chunk = "".join(rng.choices(alphabet, k=64 * 1024))
    text = (chunk * (size // len(chunk.encode()) + 1))
    return text[: len(text) * size // len(text.encode())]


def big_doc(rng: random.Random, size: int) -> str:
    items, length = [], 0
    while length < size:
        item = {"id": len(items), "name": "élément 😀 " + str(rng.random()), "n": rng.randint(-10**12, 10**12),
                "x": rng.random(), "ok": rng.random() < 0.5, "tags": ["a", "ü", None], "deep": {"k": [1, {"z": "中"}]}}
        items.append(item)
        length += len(json.dumps(item, ensure_ascii=False).encode())
    return json.dumps({"items": items, "count": len(items)}, ensure_ascii=False)


def test_rows_of_many_megabytes_arrive_byte_exact(world_factory, redis_url, wait_until):
    rng = random.Random(8)
    values = {name: (big_text(rng, 8 * MB), rng.randbytes(8 * MB), big_doc(rng, 4 * MB)) for name in ("a", "b")}

    def set_blob(cur, row_id: int, blob: bytes) -> None:
        # A statement must fit MariaDB's max_allowed_packet (16 MiB here), and PyMySQL sends bytes as hex:
        # the blob goes in two halves (two binlog updates of the row).
        half = len(blob) // 2
        cur.execute("UPDATE big SET blb = %s WHERE id = %s", (blob[:half], row_id))
        cur.execute("UPDATE big SET blb = CONCAT(blb, %s) WHERE id = %s", (blob[half:], row_id))

    def write(admin) -> None:
        txt, blb, doc = values["a"]
        with admin.cursor() as cur:
            cur.execute("INSERT INTO big (id, label, txt) VALUES (1, 'one', %s)", (txt,))
            set_blob(cur, 1, blb)
            cur.execute("UPDATE big SET doc = %s WHERE id = 1", (doc,))
            cur.execute("INSERT INTO big (id, label, doc) VALUES (2, 'two', %s)", (values["b"][2],))
            set_blob(cur, 2, values["b"][1])
            cur.execute("INSERT INTO big (id, label, txt) VALUES (3, 'three', %s)", (values["b"][0],))
            cur.execute("UPDATE big SET txt = %s WHERE id = 1", (values["b"][0][::-1],))  # every large field changed since
            set_blob(cur, 1, values["b"][1][::-1])
            cur.execute("UPDATE big SET label = 'small change' WHERE id = 1")  # a small change of a large row
            cur.execute("DELETE FROM big WHERE id = 2")

    world, source, elapsed = _run(world_factory, redis_url, wait_until, BIG_DDL, [BIG_MAPPING], {"big": ("big", "id")}, write,
                                  timeout=300)
    rows = source["big"]
    assert sorted(rows) == ["1", "3"]
    # Byte-exact, independently of the mapping: the source's own bytes against the CRM's.
    import psycopg

    with psycopg.connect(world["pg_url"]) as conn:
        crm = {r[0]: r[1:] for r in conn.execute(f'SELECT id, txt, blb, doc::text FROM "{world["schema"]}".big WHERE NOT _deleted')}
    assert hashlib.sha256(crm[1][0].encode()).hexdigest() == hashlib.sha256(values["b"][0][::-1].encode()).hexdigest()
    assert bytes(crm[1][1]) == values["b"][1][::-1]
    assert json.loads(crm[1][2]) == json.loads(values["a"][2])
    assert crm[3][0] == values["b"][0] and crm[3][1] is None
    sizes = (len(values["b"][0].encode()), len(values["b"][1]), len(values["a"][2].encode()))
    print(f"large rows: text {sizes[0]:,} B, blob {sizes[1]:,} B, JSON {sizes[2]:,} B; 14 statements equal in CRM and cache "
          f"in {elapsed:.1f}s")


def test_a_change_event_over_the_broker_limit_goes_to_the_reader_dlq_and_the_rest_flows(world_factory, wait_until, monkeypatch):
    limit = 12 * MB  # RabbitMQ's own default max_message_size is 128 MiB; a lower limit is reachable here
    monkeypatch.setenv("CDC_BROKER__MAX_MESSAGE_BYTES", str(limit))
    world = world_factory("snapshot: {mode: never}")
    with _admin(world) as admin, admin.cursor() as cur:
        cur.execute(BIG_DDL)
    (world["mappings"] / "zz_big.yaml").write_text(BIG_MAPPING.replace("DB", world["db"]))
    mapper = Mapper(load_mappings(world["mappings"]))
    rng = random.Random(12)
    text, blob = big_text(rng, 8 * MB), rng.randbytes(4 * MB)
    daemon = Daemon(world)
    daemon.start()
    letters = []
    try:
        wait_until(lambda: SqlStateStore(world["state_url"]).load_checkpoint("e2e"), timeout=60,
                   message=f"the first checkpoint\n{daemon.logs()}")
        with _admin(world) as admin, admin.cursor() as cur:
            cur.execute("INSERT INTO big (id, label, txt) VALUES (1, 'fits', %s)", (text,))  # ~9 MB of JSON: published
            cur.execute("UPDATE big SET blb = %s WHERE id = 1", (blob,))  # before + after ~25 MB: over the limit
            cur.execute("INSERT INTO big (id, label) VALUES (2, 'after it')")

        def crm_holds_the_rest():
            rows = crm_rows(world, mapper, {"big": ("big", "id")})["big"]
            return set(rows) == {"1", "2"} and rows["1"]["txt"] == text and rows["1"]["blb"] is None

        wait_until(crm_holds_the_rest, timeout=120, interval=1, message=f"the events around the large one\n{daemon.logs()}")
        letters = [d for d in dlq.list_letters(world["amqp_url"], None, limit=1000) if (d.raw or {}).get("db") == world["db"]]
        assert len(letters) == 1, [d.summary() for d in letters]
        letter = letters[0]
        assert "broker.max_message_bytes" in letter.reason and "max_message_size" in letter.reason
        assert f"{limit:,}" in letter.reason and "blb" in letter.reason
        raw = letter.raw
        assert (raw["entity"], raw["key"], raw["op"]) == ("big", {"id": 1}, "u")
        assert raw["bytes"] > limit and raw["field_bytes"]["after"]["blb"] > 5_000_000
        assert raw["before"] is None and raw["after"] is None and len(letter.body) < 10_000  # no values in the dead letter
        assert daemon.proc.poll() is None, "the reader must go on"
        assert "change event dead-lettered" in daemon.logs()
        assert daemon.terminate() == 0
    finally:
        daemon.stop_if_running()
        if letters:
            dlq.purge(world["amqp_url"], None, ids=[d.id for d in letters])
