"""`cdc mappings check`: the mappings against the source's live schema, with an exit status for CI.

Exit status: 0 all mapped columns exist with compatible types (unmapped columns are only reported),
1 a problem was found (or an unmapped column with --strict), 2 the config, the mappings or the
connection to the source is wrong.
"""

from __future__ import annotations

import json

import typer

from cdc.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.errors import CdcError


def register(app: typer.Typer) -> None:
    mappings_app = typer.Typer(no_args_is_help=True, help="Check the mappings.")
    mappings_app.command("check")(mappings_check)
    app.add_typer(mappings_app, name="mappings")


def mappings_check(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    strict: bool = typer.Option(False, "--strict", help="Unmapped source columns fail the check too."),
) -> None:
    """Compare every mapping with the source's information_schema: missing tables and columns,
    type mismatches, unmapped columns."""
    from cdc.bootstrap import build_mapper
    from cdc.mapping.check import check

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


def _source_columns(source, databases: list[str]):
    import pymysql

    from cdc.mapping.check import SourceColumn
    from cdc.reader import source_tls

    try:
        conn = pymysql.connect(host=source.host, port=source.port, user=source.user,
                               password=source.password.get_secret_value(), connect_timeout=int(source.connect_timeout_s),
                               charset="utf8mb4", **source_tls(source))
    except pymysql.err.OperationalError as exc:
        raise CdcError(f"cannot connect to source {source.host}:{source.port} as {source.user!r}: {exc.args[-1]} "
                       "(check source.host, source.port, source.user and CDC_SOURCE__PASSWORD)") from None
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA IN ({', '.join(['%s'] * len(databases))}) ORDER BY ORDINAL_POSITION",
            databases,
        )
        return [SourceColumn(*row) for row in cur.fetchall()]
