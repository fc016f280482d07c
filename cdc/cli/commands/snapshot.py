"""`cdc snapshot start | status | cancel | watch`: snapshots at run time, while streaming goes on.

The running daemon's reader picks requests up from the state store within a second or so and
runs them chunk by chunk between binlog transactions (see cdc.snapshot).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError, ConfigError

FINISHED = ("done", "cancelled", "failed")


def register(app: typer.Typer) -> None:
    snap = typer.Typer(no_args_is_help=True, help="Snapshots of source tables, while streaming continues.")
    snap.command("start")(start)
    snap.command("status")(status)
    snap.command("cancel")(cancel)
    snap.command("watch")(watch)
    app.add_typer(snap, name="snapshot")


def _parts(settings):
    from cdc.runtime.bootstrap import build_mapper, build_snapshotter, build_state

    mapper = build_mapper(settings)
    state = build_state(settings)
    return mapper, state, build_snapshotter(settings, state, mapper)


def _resolve(table: str, mapper) -> tuple[str, str]:
    if "." in table:
        db, name = table.split(".", 1)
        return db, name
    matches = sorted((db, t) for db, t in mapper.tables() if t == table)
    if len(matches) != 1:
        mapped = ", ".join(f"{d}.{t}" for d, t in sorted(mapper.tables()))
        raise ConfigError(f"table {table!r} is {'ambiguous' if matches else 'not mapped'}; name it as db.table (mapped: {mapped})")
    return matches[0]


def start(
    tables: Annotated[list[str] | None, typer.Argument(help="Tables (db.table or table); none with --all.")] = None,
    all_tables: Annotated[bool, typer.Option("--all", help="Every mapped table.")] = False,
    where: Annotated[str | None, typer.Option(help="SQL condition limiting the rows, e.g. \"id BETWEEN 1 AND 500\".")] = None,
    watch_: Annotated[bool, typer.Option("--watch", help="Show a progress bar until it finishes.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Request snapshots; the running daemon performs them while it keeps streaming."""
    try:
        settings = load(config)
        mapper, state, snapshotter = _parts(settings)
        if all_tables:
            targets = sorted(mapper.tables())
        elif tables:
            targets = [_resolve(t, mapper) for t in tables]
        else:
            raise ConfigError("name the tables to snapshot, or pass --all")
        try:
            # Every table checked first (exists, has a key, the condition is one the source accepts): a refused
            # one leaves no request behind for the others.
            planned = [snapshotter.plan(db, t, where) for db, t in targets]
        finally:
            snapshotter.close()
        ids = [state.snapshot_create(settings.source.name, *p) for p in planned]
    except CdcError as exc:
        fail(exc, 2 if isinstance(exc, ConfigError) else 1)
    for snapshot_id, (db, t) in zip(ids, targets):
        typer.echo(f"snapshot {snapshot_id}: {db}.{t} requested")
    if watch_:
        _watch(state, settings.source.name, ids)


def _rows(state, source: str, ids: list[int] | None = None) -> list[dict]:
    rows = state.snapshot_list(source)
    return [r for r in rows if ids is None or r["id"] in ids]


def _rate_eta(row: dict) -> tuple[float | None, float | None]:
    started, updated = row.get("started_at"), row.get("updated_at") or row.get("finished_at")
    if not started or not updated or not row["rows_done"]:
        return None, None
    started, updated = _aware(started), _aware(updated)
    seconds = max((updated - started).total_seconds(), 1e-3)
    rate = row["rows_done"] / seconds
    left = max((row["rows_total"] or 0) - row["rows_done"], 0)
    return rate, (left / rate if row["status"] not in FINISHED else 0.0)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def status(config: ConfigOpt = None, as_json: JsonOpt = False, all_: Annotated[bool, typer.Option("--all", help="Include finished snapshots.")] = False) -> None:
    """Snapshots with their progress, rate and ETA."""
    try:
        settings = load(config)
        from cdc.runtime.bootstrap import build_state

        rows = _rows(build_state(settings), settings.source.name)
    except CdcError as exc:
        fail(exc, 1)
    if not all_:
        rows = [r for r in rows if r["status"] not in FINISHED] or rows[-5:]
    if as_json:
        for r in rows:
            r["rate_rows_per_s"], r["eta_s"] = _rate_eta(r)
        sys.stdout.write(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
        return
    table = Table(title=f"snapshots of source {settings.source.name}")
    for col in ("id", "table", "status", "rows", "rate", "ETA", "note"):
        table.add_column(col)
    for r in rows:
        rate, eta = _rate_eta(r)
        total = r["rows_total"] if r["rows_total"] is not None else "?"
        table.add_row(str(r["id"]), f"{r['db']}.{r['tbl']}", r["status"], f"{r['rows_done']:,}/{total:,}" if total != "?" else str(r["rows_done"]),
                      f"{rate:,.0f}/s" if rate else "", f"{eta:,.0f}s" if eta else "", r.get("error") or (r.get("where_clause") or ""))
    Console().print(table)


def cancel(
    ids: Annotated[list[int] | None, typer.Argument(help="Snapshot ids; none with --all.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every unfinished snapshot.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Cancel snapshots; the reader stops them before its next chunk."""
    try:
        settings = load(config)
        from cdc.runtime.bootstrap import build_state

        state = build_state(settings)
        active = [r for r in _rows(state, settings.source.name) if r["status"] in ("requested", "running")]
        chosen = active if all_ else [r for r in active if r["id"] in (ids or [])]
        missing = set(ids or []) - {r["id"] for r in chosen}
        if missing:
            raise ConfigError(f"no unfinished snapshot with id {sorted(missing)}; see `cdc snapshot status`")
        for r in chosen:
            state.snapshot_update(r["id"], status="cancel_requested")
    except CdcError as exc:
        fail(exc, 2 if isinstance(exc, ConfigError) else 1)
    typer.echo(f"cancel requested for snapshots {[r['id'] for r in chosen]}")


def watch(ids: Annotated[list[int] | None, typer.Argument(help="Snapshot ids (default: unfinished ones).")] = None, config: ConfigOpt = None) -> None:
    """Progress bars (rows, rate, ETA) until the snapshots finish."""
    try:
        settings = load(config)
        from cdc.runtime.bootstrap import build_state

        state = build_state(settings)
        if not ids:
            ids = [r["id"] for r in _rows(state, settings.source.name) if r["status"] not in FINISHED]
    except CdcError as exc:
        fail(exc, 1)
    _watch(state, settings.source.name, ids)


def _watch(state, source: str, ids: list[int]) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=Console(stderr=True)) as progress:
        tasks = {}
        while True:
            rows = _rows(state, source, ids)
            for r in rows:
                if r["id"] not in tasks:
                    tasks[r["id"]] = progress.add_task(f"#{r['id']} {r['db']}.{r['tbl']}", total=r["rows_total"] or None, rate="", status="")
                rate, _ = _rate_eta(r)
                progress.update(tasks[r["id"]], completed=r["rows_done"], rate=f"{rate:,.0f} rows/s" if rate else "", status=r["status"])
            if all(r["status"] in FINISHED for r in rows):
                break
            time.sleep(0.5)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        fail("snapshot(s) failed: " + ", ".join(f"#{r['id']}: {r['error']}" for r in failed), 1)
