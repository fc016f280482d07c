"""`cdc mappings check`: the mappings against the source's live schema, with an exit status for CI;
`cdc mappings init`: mapping files written from the source's information_schema.

check's exit status: 0 all mapped columns exist with compatible types (unmapped columns are only
reported), 1 a problem was found (or an unmapped column with --strict), 2 the config, the mappings or
the connection to the source is wrong. init's: 0 every file written or unchanged, 1 a file differs
from the source and --update was not given, or a table has no usable key, 2 as check.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError


def register(app: typer.Typer) -> None:
    mappings_app = typer.Typer(no_args_is_help=True, help="Check the mappings.")
    mappings_app.command("check")(mappings_check)
    mappings_app.command("init")(mappings_init)
    app.add_typer(mappings_app, name="mappings")


def mappings_check(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    strict: bool = typer.Option(False, "--strict", help="Unmapped source columns fail the check too."),
) -> None:
    """Compare every mapping with the source's information_schema: missing tables and columns,
    type mismatches, unmapped columns."""
    from cdc.mapping.check import check
    from cdc.runtime.bootstrap import build_mapper

    try:
        settings = load(config)
        mapper = build_mapper(settings)
        columns = _source_columns(settings.source, sorted({db for db, _ in mapper.tables()}))
    except CdcError as exc:
        fail(exc, 2)
    findings = check(mapper.mappings, columns)
    failed = [f for f in findings if f.is_error or strict]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            typer.echo(f"{'ERROR' if f.is_error or strict else 'note '} {f.kind:16} {f.message}")
        typer.echo(f"{len(mapper.mappings)} mappings checked against {settings.source.host}:{settings.source.port}: "
                   f"{len(failed)} problem(s), {len(findings) - len(failed)} note(s)")
    raise typer.Exit(1 if failed else 0)


def _connect(source):
    import pymysql

    from cdc.source.binlog_stream import source_tls

    try:
        return pymysql.connect(host=source.host, port=source.port, user=source.user,
                               password=source.password.get_secret_value(), connect_timeout=int(source.connect_timeout_s),
                               charset="utf8mb4", **source_tls(source))
    except pymysql.err.OperationalError as exc:
        raise CdcError(f"cannot connect to source {source.host}:{source.port} as {source.user!r}: {exc.args[-1]} "
                       "(check source.host, source.port, source.user and CDC_SOURCE__PASSWORD)") from None


def _source_columns(source, databases: list[str]):
    from cdc.mapping.check import SourceColumn

    with _connect(source) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA IN ({', '.join(['%s'] * len(databases))}) ORDER BY ORDINAL_POSITION",
            databases,
        )
        return [SourceColumn(*row) for row in cur.fetchall()]


def mappings_init(
    config: ConfigOpt = None,
    databases: list[str] = typer.Option([], "--database", "-d", help="Every table of this database (default: source.databases)."),
    tables: list[str] = typer.Option([], "--table", "-t", help="Only this table, as db.table (repeatable)."),
    out: Path | None = typer.Option(None, "--out", help="Where the files go (default: mappings.dir)."),
    sinks: str | None = typer.Option(None, "--sinks", help="Sink projections to write, e.g. crm,cache,search "
                                        "(default: the types of the configured sinks)."),
    update: bool = typer.Option(False, "--update", help="Apply what differs: rewrite files left as generated; "
                                "add the new columns to hand-edited ones."),
    as_json: JsonOpt = False,
) -> None:
    """Write one mapping file per source table from information_schema; on a later run, show what the
    source changed (a diff per file) and apply it only with --update, never over hand edits."""
    import difflib

    import yaml

    from cdc.mapping import generate as gen

    try:
        settings = load(config)
        where = [t.split(".", 1) for t in tables]
        bad = [t for t, w in zip(tables, where) if len(w) != 2]
        if bad:
            fail(f"--table {bad[0]!r}: give the table as db.table", 2)
        dbs = sorted({db for db, _ in where} or set(databases) or set(settings.source.databases))
        if not dbs:
            fail("no database to read: give --database DB or --table DB.TABLE, or set source.databases", 2)
        described = _describe_tables(settings.source, dbs)
    except CdcError as exc:
        fail(exc, 2)
    if where:
        missing = [f"{db}.{t}" for db, t in where if (db, t) not in described]
        if missing:
            fail(f"table(s) {missing} do not exist on {settings.source.host}:{settings.source.port}", 2)
        described = {k: v for k, v in described.items() if list(k) in where}
    directory = out or settings.mappings.dir
    directory.mkdir(parents=True, exist_ok=True)
    existing: dict[tuple[str, str], Path] = {}
    entities: dict[str, tuple[str, str]] = {}
    for path in sorted(directory.glob("*.y*ml")):
        raw = yaml.safe_load(path.read_text()) or {}
        src = raw.get("source") or {}
        existing[(src.get("db"), src.get("table"))] = path
        entities[raw.get("entity")] = (src.get("db"), src.get("table"))
    projections = [s.strip() for s in sinks.split(",") if s.strip()] if sinks is not None else sorted(
        {s.type for s in settings.sinks.values()} & {"crm", "cache", "search"})
    report, failed = [], False
    for (db, table), info in sorted(described.items()):
        path = existing.get((db, table))
        name = gen.entity_name(table)
        if path is None and entities.get(name, (db, table)) != (db, table):
            name = gen.snake_case(f"{db}_{name}")  # another table already has the plain name
        try:
            generated = gen.generate(info, projections, entity=None if path else name)
        except gen.NoUsableKey as exc:
            report.append({"table": f"{db}.{table}", "status": "no_key", "reason": str(exc)})
            failed = True
            continue
        entities[generated.entity] = (db, table)
        path = path or directory / generated.filename
        entry = {"table": f"{db}.{table}", "file": str(path), "notes": generated.notes}
        if not path.exists():
            path.write_text(generated.text)
            report.append(entry | {"status": "written"})
            continue
        current = path.read_text()
        if gen.split(current)[1] == gen.split(generated.text)[1]:
            report.append(entry | {"status": "unchanged"})
            continue
        hand_edited = gen.edited(current)
        proposed, notes = gen.merge(current, generated) if hand_edited else (generated.text, [])
        diff = "".join(difflib.unified_diff(current.splitlines(True), proposed.splitlines(True), str(path), str(path)))
        entry |= {"edited": hand_edited, "diff": diff, "notes": generated.notes + notes}
        if not update:
            failed = failed or bool(diff)
            report.append(entry | {"status": "differs" if diff else "edited"})
            continue
        if proposed != current:
            path.write_text(proposed)
        report.append(entry | {"status": "updated" if proposed != current else "edited"})
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "tables": report}, indent=2))
    else:
        for r in report:
            typer.echo(f"{r['status']:9} {r['table']}" + (f" -> {r['file']}" if "file" in r else "") +
                       (f": {r['reason']}" if "reason" in r else "") +
                       (" (edited by hand: only new columns are added)" if r.get("edited") and r["status"] != "edited" else ""))
            for note in r.get("notes", ()):
                typer.echo(f"          note: {note}")
            if r.get("diff") and r["status"] == "differs":
                typer.echo(r["diff"].rstrip("\n"))
        if any(r["status"] == "differs" for r in report):
            typer.echo("run again with --update to apply what differs (hand edits are kept)")
    raise typer.Exit(1 if failed else 0)


def _describe_tables(source, databases: list[str]):
    """(db, table) -> TableInfo for every base table of ``databases``."""
    import re

    import pymysql

    from cdc.mapping.generate import ColumnInfo, TableInfo

    marks = ", ".join(["%s"] * len(databases))
    with _connect(source) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
                    f"AND TABLE_SCHEMA IN ({marks})", databases)
        names = [tuple(row) for row in cur.fetchall()]
        cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE "
                    f"FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({marks}) "
                    "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION", databases)
        columns = cur.fetchall()
        cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                    f"WHERE NON_UNIQUE = 0 AND TABLE_SCHEMA IN ({marks}) "
                    "ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX", databases)
        indexes = cur.fetchall()
        json_columns: set[tuple[str, str, str]] = set()
        try:  # MariaDB's JSON: a LONGTEXT with CHECK (json_valid(`col`)); MySQL's table has no TABLE_NAME
            cur.execute("SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                        f"WHERE CONSTRAINT_SCHEMA IN ({marks})", databases)
            for db, table, clause in cur.fetchall():
                for column in re.findall(r"json_valid\(`((?:[^`]|``)+)`\)", clause or "", re.I):
                    json_columns.add((db, table, column.replace("``", "`")))
        except pymysql.err.MySQLError:
            pass
    by_table: dict[tuple[str, str], list] = {t: [] for t in names}
    for db, table, name, data_type, column_type, nullable in columns:
        if (db, table) in by_table:
            by_table[db, table].append(ColumnInfo(name, data_type, column_type, nullable == "YES", (db, table, name) in json_columns))
    keys: dict[tuple[str, str], dict[str, list[str]]] = {}
    for db, table, index, column in indexes:
        keys.setdefault((db, table), {}).setdefault(index, []).append(column)
    out = {}
    for t, cols in by_table.items():
        unique = keys.get(t, {})
        out[t] = TableInfo(t[0], t[1], tuple(cols), tuple(unique.pop("PRIMARY", ())),
                           tuple((name, tuple(c)) for name, c in sorted(unique.items())))
    return out
