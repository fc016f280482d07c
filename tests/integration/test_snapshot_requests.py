"""Snapshot requests against the real source (issue 19, 6 and 11): a `--where` holding `%`, quotes or
backslashes reaches the server as written, through the request's checks and every chunk query; a bad
condition, a table missing from the source, a source that cannot be reached are refused at once, the
CLI with exit 2 (1 for the source) and one line, `POST /api/snapshots` with 400 (503), never a traceback
or a 500. The where-clauses are generated from a printed seed (CDC_TEST_SEED repeats a run)."""

from __future__ import annotations

import os
import random
import urllib.error
import urllib.request
import uuid

import orjson
import pymysql
import pytest
from typer.testing import CliRunner

from cdc.cli import app
from cdc.config import load_settings
from cdc.health import Health
from cdc.http import AdminApp, serve
from cdc.mapping import Mapper, load_mappings
from cdc.monitor import Monitor
from cdc.publisher import MemoryPublisher
from cdc.reader import BinlogReader
from cdc.snapshot import Snapshotter
from cdc.state.store import SqlStateStore

runner = CliRunner()
TOKEN = "where-token"
ALPHABET = "ab%_'\\\"@.x%"  # what breaks naive SQL building: %-directives, quotes, backslashes, LIKE wildcards


@pytest.fixture
def rng():
    seed = int(os.environ.get("CDC_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed} (CDC_TEST_SEED={seed} repeats this run)")
    return random.Random(seed)


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def _literal(text: str) -> str:
    """``text`` as a MariaDB string literal (default sql_mode: backslash escapes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@pytest.fixture
def world(tmp_path, source_server, monkeypatch, rng):
    db = f"cdc_where_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    emails = [_text(rng, rng.randint(0, 8)) + rng.choice(["@x.org", "%@x.org", "@y.org", "\\@x.org", "'@x.org"])
              for _ in range(60)]
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.people (id INT PRIMARY KEY, email VARCHAR(100))")
        cur.executemany(f"INSERT INTO {db}.people VALUES (%s, %s)", list(enumerate(emails, 1)))
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for entity, table in (("person", "people"), ("ghost", "not_created_yet")):
        (mappings / f"{entity}.yaml").write_text(
            f"entity: {entity}\nsource: {{db: {db}, table: {table}}}\nkey: [{entity}_id]\n"
            f"fields:\n  {entity}_id: {{column: id, type: integer}}\n  email: {{column: email, type: string}}\n")
    config = tmp_path / "cdc.yaml"
    config.write_text(f"source: {{host: {source_server['host']}, port: {source_server['port']}, user: {source_server['user']}, "
                      f"databases: [{db}], replica_server_id: {random.randint(10_000, 2**31)}}}\n"
                      f"state: {{url: \"sqlite:///{tmp_path}/state.db\"}}\nmappings: {{dir: {mappings}}}\n"
                      "snapshot: {chunk_size: 7, workers: 0}\nmetrics: {enabled: false}\n")
    monkeypatch.setenv("CDC_SOURCE__PASSWORD", source_server["password"])
    yield dict(db=db, config=config, admin=admin, mappings=mappings, tmp=tmp_path)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
    admin.close()


def _clauses(rng: random.Random, count: int) -> list[str]:
    out = ["email LIKE '%@x.org'", "email LIKE '%%@x.org'", "email LIKE '\\\\%%' OR email LIKE '%\\'%'"]
    for _ in range(count):
        pattern = _text(rng, rng.randint(0, 6))
        out.append(rng.choice([f"email LIKE {_literal(pattern)}", f"email NOT LIKE {_literal(pattern)} AND id % 3 = 1",
                               f"email = {_literal(pattern)} OR email LIKE {_literal('%' + pattern + '%')}",
                               f"CONCAT(email, {_literal(pattern)}) LIKE '%%%'"]))
    return out


def _bad_clauses(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        pattern = _text(rng, rng.randint(1, 6)).replace("'", "")
        out.append(rng.choice([f"email LIKE '{pattern}", f"nope_column LIKE {_literal(pattern)}",
                               f"email LIKE {_literal(pattern)} AND", f"%{pattern}% = 1"]))
    return out


def _snapshot_keys(world, where: str) -> tuple[list[int], list[int]]:
    """Run the requested snapshot (the latest one) to its end, chunk queries and all: (the keys published,
    the keys the server itself selects for ``where``)."""
    settings = load_settings(world["config"])
    mapper = Mapper(load_mappings(world["mappings"]))
    state = SqlStateStore(settings.state.url)
    reader = BinlogReader(settings.source, mapper.tables())
    reader.preflight()
    snapshotter = Snapshotter(settings, state, mapper, reader)
    publisher = MemoryPublisher(lambda token: snapshotter.on_confirmed(token) if token else None)
    publisher.start()
    try:
        head = reader.head_position()
        # Passed every watermark (others write to the shared server meanwhile): each chunk goes out at once.
        snapshotter.pump(head.model_copy(update={"file": head.file.rsplit(".", 1)[0] + ".999999"}), publisher)
        snapshotter.persist()
    finally:
        snapshotter.close()
        state.close()
    published = sorted(e["key"]["person_id"] for m in publisher.messages for e in _events(m.body))
    with world["admin"].cursor() as cur:
        cur.execute(f"SELECT id FROM {world['db']}.people WHERE ({where}) ORDER BY id")  # no args: `%` as written
        expected = [r[0] for r in cur.fetchall()]
    return published, expected


def _events(body: bytes) -> list[dict]:
    decoded = orjson.loads(body)
    return decoded if isinstance(decoded, list) else [decoded]


def test_where_clauses_with_percent_quotes_and_backslashes_are_taken_as_written(world, rng):
    for where in _clauses(rng, 12):
        result = runner.invoke(app, ["snapshot", "start", f"{world['db']}.people", "--where", where, "-c", str(world["config"])])
        assert result.exit_code == 0, (where, result.output)
        state = SqlStateStore(load_settings(world["config"]).state.url)
        row = state.snapshot_list()[-1]
        state.close()
        assert row["where_clause"] == where and row["status"] == "requested"
        published, expected = _snapshot_keys(world, where)
        assert published == expected, where
        state = SqlStateStore(load_settings(world["config"]).state.url)
        row = next(r for r in state.snapshot_list() if r["id"] == row["id"])
        state.close()
        assert row["status"] == "done" and row["rows_done"] == row["rows_total"] == len(expected), (where, row)


def test_a_bad_where_clause_or_a_missing_table_is_refused_by_the_cli_in_one_line(world, rng):
    for where in _bad_clauses(rng, 8):
        result = runner.invoke(app, ["snapshot", "start", f"{world['db']}.people", "--where", where, "-c", str(world["config"])])
        assert result.exit_code == 2, (where, result.output)
        text = " ".join(result.output.split())
        assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
        assert f"{world['db']}.people" in text and "refuses --where" in text and "fix the condition" in text, text
        assert len(result.output.strip().splitlines()) <= 3, result.output  # one message (the console wraps it)
    result = runner.invoke(app, ["snapshot", "start", f"{world['db']}.not_created_yet", "-c", str(world["config"])])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{world['db']}.not_created_yet is mapped but does not exist in the source" in text
    assert "create it there, or remove its mapping" in text and "no primary key" not in text
    state = SqlStateStore(load_settings(world["config"]).state.url)
    assert state.snapshot_list() == []  # nothing was requested
    state.close()


def test_a_source_that_cannot_be_reached_is_exit_1_not_a_traceback(world, monkeypatch):
    monkeypatch.setenv("CDC_SOURCE__PORT", "1")
    result = runner.invoke(app, ["snapshot", "start", f"{world['db']}.people", "-c", str(world["config"])])
    assert result.exit_code == 1 and "Traceback" not in result.output and "127.0.0.1:1" in result.output, result.output


def _post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/snapshots", data=orjson.dumps(body))
    req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


@pytest.fixture
def api(world):
    """api(**source overrides) -> port of an admin API (writes allowed) over the world's source."""
    servers = []

    def start(**source):
        settings = load_settings(world["config"], admin={"token": TOKEN, "read_only": False}, **({"source": source} if source else {}))
        state = SqlStateStore(settings.state.url)
        mapper = Mapper(load_mappings(world["mappings"]))
        server = serve(AdminApp(settings, Health(), Monitor(settings, state, mapper, sinks=[], watch_source=False), state, mapper),
                       "127.0.0.1", 0)
        servers.append((server, state))
        return server.server_port, state

    yield start
    for server, state in servers:
        server.shutdown()
        state.close()


def test_the_api_takes_generated_where_clauses_and_refuses_bad_ones_with_400_never_500(world, api, rng):
    port, state = api()
    for where in _clauses(rng, 6):
        status, body = _post(port, {"table": f"{world['db']}.people", "where": where})
        assert status == 202, (where, body)
        assert next(r for r in state.snapshot_list() if r["id"] == body["id"])["where_clause"] == where
    requested = len(state.snapshot_list())
    for where in _bad_clauses(rng, 6):
        status, body = _post(port, {"table": f"{world['db']}.people", "where": where})
        assert status == 400, (where, body)
        assert f"{world['db']}.people" in body["error"] and "refuses --where" in body["error"], body
    status, body = _post(port, {"table": f"{world['db']}.not_created_yet"})
    assert status == 400 and "does not exist in the source" in body["error"], body
    status, body = _post(port, {"table": f"{world['db']}.people", "where": 42})
    assert status == 400 and "must be a string" in body["error"]
    assert len(state.snapshot_list()) == requested  # none of the refused ones was requested


def test_the_api_answers_503_when_the_source_cannot_be_reached(world, api, source_server):
    port, state = api(host=source_server["host"], port=1)
    status, body = _post(port, {"table": f"{world['db']}.people", "where": "email LIKE '%@x.org'"})
    assert status == 503 and "127.0.0.1:1" in body["error"] and source_server["password"] not in body["error"], body
    assert state.snapshot_list() == []
