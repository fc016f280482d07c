"""`cdc mappings init` against the live binlog MariaDB: one mapping per table with the field types the
type-fidelity test proves exact, names in the canonical style, tables without a key listed with the
reason; a later run shows what the source changed and applies it only with --update, never over hand
edits."""

from __future__ import annotations

import json
import uuid

import pymysql
import pytest
import yaml
from test_types_fidelity import CASES  # tests/integration: the specs that replicate every type exactly
from typer.testing import CliRunner

from cdc.cli.root import app

pytestmark = pytest.mark.integration

# Columns whose fidelity case maps them otherwise than the default choice (which the comment names)
CHOSEN_OTHERWISE = {"dtz": "DATETIME read as wall time", "pt": "GeoJSON with its SRID"}


@pytest.fixture
def source(source_server, tmp_path):
    db = f"cdc_minit_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=source_server["host"], port=source_server["port"], user="root", autocommit=True,
                            charset="utf8mb4")
    columns = ", ".join(f"{name} {ddl}" for name, ddl, *_ in CASES)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.every_types (id INT PRIMARY KEY, {columns}) DEFAULT CHARSET=utf8mb4")
        cur.execute(f"CREATE TABLE {db}.`Member Logins` (`Member ID` BINARY(16), `loginAt` DATETIME(3), `e-mail` VARCHAR(80),"
                    " `2fa` TINYINT(1), `userName` VARCHAR(20), `user_name` VARCHAR(20), PRIMARY KEY (`Member ID`, `loginAt`))")
        cur.execute(f"CREATE TABLE {db}.tags (code VARCHAR(10) NOT NULL, label VARCHAR(40), UNIQUE KEY uq_code (code))")
        cur.execute(f"CREATE TABLE {db}.audit_log (at DATETIME, what TEXT, UNIQUE KEY uq_at (at))")
    config = tmp_path / "cdc.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"host": source_server["host"], "port": source_server["port"], "user": source_server["user"],
                   "databases": [db]},
        "mappings": {"dir": str(tmp_path / "mappings")},
        "sinks": {"crm": {"type": "crm", "url": "postgresql://x@127.0.0.1/crm"}, "cache": {"type": "cache", "url": "redis://127.0.0.1:6379/15"}},
    }))
    env = {"CDC_SOURCE__PASSWORD": source_server["password"]}

    def cdc(*args):
        return CliRunner().invoke(app, [*args, "-c", str(config)], env=env)

    yield {"db": db, "admin": admin, "cdc": cdc, "dir": tmp_path / "mappings"}
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {db}")
    admin.close()


def test_one_mapping_per_table_with_the_types_that_replicate_exactly(source):
    result = source["cdc"]("mappings", "init", "--json")
    assert result.exit_code == 1, result.output  # audit_log has no usable key
    report = {t["table"].split(".", 1)[1]: t for t in json.loads(result.output)["tables"]}
    assert report["audit_log"]["status"] == "no_key"
    assert "unique index uq_at has nullable column(s) ['at']" in report["audit_log"]["reason"]
    assert {report[t]["status"] for t in ("every_types", "Member Logins", "tags")} == {"written"}

    every = yaml.safe_load((source["dir"] / "every_type.yaml").read_text())
    text = (source["dir"] / "every_type.yaml").read_text()
    for name, _ddl, spec, *_ in CASES:
        generated = {k: v for k, v in every["fields"][name].items() if k != "column"}
        if name in CHOSEN_OTHERWISE:
            line = next(line for line in text.splitlines() if line.startswith(f"  {name}:"))
            assert CHOSEN_OTHERWISE[name] in line
        else:
            assert generated == spec, name
    assert every["key"] == ["id"] and set(every["sinks"]) == {"crm", "cache"}

    logins = yaml.safe_load((source["dir"] / "member_login.yaml").read_text())
    assert logins["key"] == ["member_id", "login_at"]
    assert {f: s["column"] for f, s in logins["fields"].items()} == {
        "member_id": "Member ID", "login_at": "loginAt", "e_mail": "e-mail", "f_2fa": "2fa",
        "user_name": "userName", "user_name_": "user_name"}
    assert logins["fields"]["member_id"] == {"column": "Member ID", "type": "bytes", "column_type": "binary(16)"}
    assert yaml.safe_load((source["dir"] / "tag.yaml").read_text())["key"] == ["code"]

    check = source["cdc"]("mappings", "check")
    assert check.exit_code == 0, check.output
    assert "0 problem(s)" in check.output


def test_a_later_run_shows_the_change_and_applies_it_only_with_update_keeping_hand_edits(source):
    cdc, admin, db, folder = source["cdc"], source["admin"], source["db"], source["dir"]
    cdc("mappings", "init")
    again = cdc("mappings", "init")
    assert again.exit_code == 1 and again.output.count("unchanged") == 3, again.output  # 3 tables and audit_log
    with admin.cursor() as cur:
        cur.execute(f"ALTER TABLE {db}.tags ADD COLUMN color CHAR(7), DROP COLUMN label")
        cur.execute(f"ALTER TABLE {db}.`Member Logins` ADD COLUMN ip VARBINARY(16)")
    edited = (folder / "member_login.yaml").read_text().replace(
        "  e_mail: {column: e-mail, type: string}", "  email: {column: e-mail, type: string, transforms: [trim, lower]}")
    (folder / "member_login.yaml").write_text(edited)
    tags_before = (folder / "tag.yaml").read_text()

    shown = cdc("mappings", "init")
    assert shown.exit_code == 1, shown.output
    assert "+  color: {column: color, type: string}" in shown.output
    assert "-  label: {column: label, type: string}" in shown.output
    assert "+  ip: {column: ip, type: bytes}" in shown.output
    assert (folder / "tag.yaml").read_text() == tags_before  # nothing written without --update
    assert (folder / "member_login.yaml").read_text() == edited

    applied = cdc("mappings", "init", "--update")
    assert applied.exit_code == 1, applied.output  # audit_log still has no key
    tags = yaml.safe_load((folder / "tag.yaml").read_text())
    assert set(tags["fields"]) == {"code", "color"}  # left as generated: rewritten
    logins = (folder / "member_login.yaml").read_text()
    assert logins.startswith(edited.rstrip("\n").split("sinks:")[0])  # every hand edit kept
    assert "  ip: {column: ip, type: bytes}" in logins
    assert "email: {column: e-mail, type: string, transforms: [trim, lower]}" in logins
    assert cdc("mappings", "check").exit_code == 0
