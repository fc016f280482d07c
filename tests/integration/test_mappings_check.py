"""`cdc mappings check` against the live binlog MariaDB: what it reports and its exit status."""

from __future__ import annotations

import json
import uuid

import pymysql
import pytest
import yaml
from typer.testing import CliRunner

from cdc.cli.root import app

pytestmark = pytest.mark.integration


@pytest.fixture
def source_db(source_server):
    db = f"cdc_mcheck_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.people (id BIGINT UNSIGNED PRIMARY KEY, email VARCHAR(100), score FLOAT, "
                    "seen DATETIME, notes TEXT)")
    yield db
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {db}")
    admin.close()


def run(tmp_path, source_server, db, fields, *args):
    mappings = tmp_path / "mappings"
    mappings.mkdir(exist_ok=True)
    (mappings / "person.yaml").write_text(yaml.safe_dump(
        {"entity": "person", "source": {"db": db, "table": "people"}, "key": ["person_id"], "fields": fields}))
    config = tmp_path / "cdc.yaml"
    config.write_text(yaml.safe_dump({"source": {"host": source_server["host"], "port": source_server["port"],
                                                 "user": source_server["user"], "databases": [db]},
                                      "mappings": {"dir": str(mappings)}}))
    env = {"CDC_SOURCE__PASSWORD": source_server["password"]}
    return CliRunner().invoke(app, ["mappings", "check", "-c", str(config), *args], env=env)


def test_reports_missing_columns_and_type_mismatches_and_fails(tmp_path, source_server, source_db):
    result = run(tmp_path, source_server, source_db, {
        "person_id": {"column": "id", "type": "integer"},
        "email": {"column": "email", "type": "string"},
        "phone": {"column": "phone", "type": "string"},
        "score": {"column": "score", "type": "float"},
        "seen_at": {"column": "seen", "type": "timestamp"},
    })
    assert result.exit_code == 1, result.output
    out = result.output
    assert f"missing_column   entity person, field phone: column {source_db}.people.phone does not exist" in out
    assert "BIGINT UNSIGNED exceeds a signed 64-bit integer: use type bigint_unsigned" in out
    assert "FLOAT column needs column_type: float" in out
    assert "DATETIME is wall time" in out
    assert f"column {source_db}.people.notes (text) is not mapped" in out


def test_a_clean_mapping_passes_unless_strict_about_unmapped_columns(tmp_path, source_server, source_db):
    fields = {"person_id": {"column": "id", "type": "bigint_unsigned"}, "email": {"column": "email", "type": "string"},
              "score": {"column": "score", "type": "float", "column_type": "float"},
              "seen_at": {"column": "seen", "type": "datetime"}}
    result = run(tmp_path, source_server, source_db, fields, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and [f["column"] for f in report["findings"]] == ["notes"]
    assert run(tmp_path, source_server, source_db, fields, "--strict").exit_code == 1


def test_an_unreachable_source_is_a_clear_error(tmp_path, source_server, source_db):
    result = run(tmp_path, dict(source_server, port=1), source_db, {"person_id": {"column": "id", "type": "bigint_unsigned"}})
    assert result.exit_code == 2 and "cannot connect to source" in result.output and "Traceback" not in result.output
