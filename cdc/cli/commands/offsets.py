"""`cdc offsets show | set | reset | audit`: the source's checkpoint and each sink's replay start.

    cdc offsets set --source --timestamp 2024-05-01T12:00:00Z --dry-run
    cdc offsets set --source --gtid 0-1-4711          (or --position mysql-bin.000042:1234, --earliest, --latest)
    cdc offsets set --sink crm --timestamp -2h         (then: cdc replay --sink crm)
    cdc offsets reset --sink crm                       (nothing left to replay)
    cdc offsets set --source --timestamp -10m --via-daemon   (the running reader moves itself)

Exit codes: 0 done (or dry run), 1 with --via-daemon: no running reader, or it did not apply the request in
time (cancelled), 2 bad usage, 4 a running process owns the position, 5 bad position (also when the running
reader refused it).
"""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError

SourceOpt = Annotated[bool, typer.Option("--source", help="The source's checkpoint (the reader's position).")]
SinkOpt = Annotated[str | None, typer.Option("--sink", help="A sink's replay start in the event log.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit table).")]
EarliestOpt = Annotated[bool, typer.Option("--earliest", help="Oldest binlog still on the server / first event of the log.")]
LatestOpt = Annotated[bool, typer.Option("--latest", help="Binlog head / nothing to replay.")]
ViaDaemonOpt = Annotated[bool, typer.Option(
    "--via-daemon", help="Instead of refusing while the daemon runs: --source asks the running reader to move its own "
                         "checkpoint (at a transaction boundary, then it streams from there); --sink asks the daemon "
                         "running the sink's worker to replay it from there. Waits for the answer.")]
WaitOpt = Annotated[float, typer.Option("--wait", help="With --via-daemon: seconds to wait for the reader to apply it.")]


def register(app: typer.Typer) -> None:
    offsets = typer.Typer(no_args_is_help=True, help="Show and move the source checkpoint and sink replay starts.")
    offsets.command("show")(show)
    offsets.command("set")(set_)
    offsets.command("reset")(reset)
    offsets.command("audit")(audit)
    app.add_typer(offsets, name="offsets")


def show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Current positions and the processes that own them."""
    from cdc.admin import exit_code
    from cdc.admin import offsets as ops
    from cdc.runtime.bootstrap import build_mapper, build_sink, build_state

    try:
        settings = load(config)
        state, mapper = build_state(settings), build_mapper(settings)
        sink_offsets = {}
        for name in settings.sinks:
            try:
                sink = build_sink(name, settings, mapper)
                sink.open()
                sink_offsets[name] = sink.read_offset()
                sink.close()
            except CdcError as exc:
                sink_offsets[name] = str(exc)
        report = ops.show(settings, state, sink_offsets)
    except CdcError as exc:
        fail(exc, exit_code(exc))
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title="offsets")
    for col in ("what", "position", "replay from", "owned by"):
        table.add_column(col)
    src = report["source"]
    cp = src["checkpoint"]
    position = f"{cp['file']}:{cp['pos']}" + (f" gtid={cp['gtid']}" if cp.get("gtid") else "") if cp else "none"
    table.add_row(f"source {src['name']}", position, "", src["owner"] or "-")
    for r in src["requests"]:  # asked of the running reader (--via-daemon), not applied yet
        table.add_row(f"  request {r['id']} by {r['who']}", f"{r['status']}: to {r['to']}", "", r["applied_by"] or "-")
    for name, s in report["sinks"].items():
        off = s["offset"]
        table.add_row(f"sink {name}", f"{off['file']}:{off['pos']} (version {off['version']})" if off else (s["error"] or "none"),
                      s["replay_from"] or "-", ", ".join(s["owners"]) or "-")
    Console().print(table)


def set_(
    source: SourceOpt = False,
    sink: SinkOpt = None,
    gtid: Annotated[str | None, typer.Option(help="GTID set, e.g. 0-1-4711 (source only).")] = None,
    position: Annotated[str | None, typer.Option(help="Binlog FILE:POS, a transaction boundary.")] = None,
    timestamp: Annotated[str | None, typer.Option(help="ISO 8601 (UTC if no zone) or relative: -30m, -2h, -1d.")] = None,
    offset: Annotated[str | None, typer.Option(help="Event-log offset (sinks only).")] = None,
    earliest: EarliestOpt = False,
    latest: LatestOpt = False,
    dry_run: DryRunOpt = False,
    reason: ReasonOpt = "",
    via_daemon: ViaDaemonOpt = False,
    wait: WaitOpt = 120.0,
    config: ConfigOpt = None,
) -> None:
    """Move the source checkpoint, or record where a sink's replay starts."""
    from cdc.admin.offsets import Target

    _move(config, source, sink, Target(gtid, position, timestamp, offset, earliest, latest), dry_run,
          reason or "cdc offsets set", via_daemon, wait)


def reset(
    source: SourceOpt = False,
    sink: SinkOpt = None,
    earliest: EarliestOpt = False,
    latest: LatestOpt = False,
    dry_run: DryRunOpt = False,
    reason: ReasonOpt = "",
    via_daemon: ViaDaemonOpt = False,
    wait: WaitOpt = 120.0,
    config: ConfigOpt = None,
) -> None:
    """Reset to --latest (default: the binlog head / no pending replay) or --earliest."""
    from cdc.admin.offsets import Target

    _move(config, source, sink, Target(earliest=earliest, latest=latest or not earliest), dry_run,
          reason or "cdc offsets reset", via_daemon, wait)


def _move(config, source: bool, sink: str | None, target, dry_run: bool, reason: str, via_daemon: bool = False,
          wait: float = 120.0) -> None:
    from cdc.admin import EXIT_USAGE, exit_code
    from cdc.admin import offsets as ops
    from cdc.runtime.bootstrap import build_state

    if source == (sink is not None):
        fail("name what to move: --source, or --sink NAME", EXIT_USAGE)
    if via_daemon and sink is not None:
        _replay_via_daemon(config, sink, target, dry_run, reason, wait)
        return
    if via_daemon:
        _move_via_daemon(config, target, dry_run, reason, wait)
        return
    try:
        settings = load(config)
        state = build_state(settings)
        if source:
            change, checkpoint = ops.plan_source(settings, state, target)
        else:
            change, start = ops.plan_sink(settings, state, sink, target)
        _print_change(change, dry_run)
        if dry_run and change.changes:
            _owned_hint(settings, state, source, sink)
        if dry_run or not change.changes:
            return
        if source:
            ops.apply_source(settings, state, change, checkpoint, reason)
        else:
            ops.apply_sink(settings, state, sink, change, start, reason)
    except CdcError as exc:
        fail(exc, exit_code(exc))
    typer.echo(f"{change.target}: done (recorded in the audit table)")


def _owned_hint(settings, state, source: bool, sink: str | None) -> None:
    """On a dry run: say that the real run would be refused while a running process owns the position."""
    from cdc.admin import offsets as ops
    from cdc.state.lease import Leases, reader_lease

    leases = Leases(state)
    names = [reader_lease(settings.source.name)] if source else ops.sink_leases(settings, sink)
    holder = next((h for h in map(leases.holder, names) if h is not None), None)
    if holder is None:
        return
    way = ("--via-daemon lets it move itself" if source
           else f"--via-daemon lets that daemon replay it, or `cdc replay --sink {sink} --from T` while the worker runs")
    typer.echo(f"  (owned by the running process {holder.owner}: this would be refused; {way})")


def _move_via_daemon(config, target, dry_run: bool, reason: str, wait: float) -> None:
    """Ask the running reader to move the source checkpoint; wait for its answer."""
    from cdc.admin import EXIT_BAD_POSITION, EXIT_FAILED, exit_code
    from cdc.admin import offsets as ops
    from cdc.runtime.bootstrap import build_state
    from cdc.state.lease import Leases, reader_lease

    try:
        settings = load(config)
        state = build_state(settings)
        owner = Leases(state).holder(reader_lease(settings.source.name))
        if dry_run:
            change, _ = ops.plan_source(settings, state, target)
            _print_change(change, True)
            if change.changes:
                typer.echo(f"  the running reader {owner.owner} would apply it at a transaction boundary, after the broker "
                           "confirmed what it published, and stream from there" if owner else
                           "  no reader is running: without --via-daemon the checkpoint would be moved directly")
            return
        request_id = ops.request_source_move(settings, state, target, ops.who(), reason)
        typer.echo(f"source:{settings.source.name}: request {request_id} ({ops.describe_spec(ops.request_spec(target))}) "
                   f"sent to the running reader {owner.owner if owner else ''}; waiting up to {wait:g}s")
        row = ops.wait_for_request(state, request_id, wait)
    except CdcError as exc:
        fail(exc, exit_code(exc))
    status = row["status"]
    if status == "done":
        typer.echo(f"source:{settings.source.name}: moved by the running reader {row['applied_by']}\n"
                   f"  from: {row['from_value'] or 'none'}\n  to:   {row['to_value']}\n"
                   "  (recorded in the audit table; the reader streams from there)")
        return
    if status == "failed":
        code = EXIT_BAD_POSITION if row["error_kind"] == "position" else EXIT_FAILED
        fail(f"the running reader refused request {request_id}: {row['error']}; it streams on from "
             f"{row['from_value'] or 'where it was'}, nothing was changed", code)
    if status == "cancelled":
        fail(f"the running reader did not take request {request_id} within {wait:g}s (is it stalled? see `cdc status` "
             "and its logs); the request was cancelled, nothing was changed", EXIT_FAILED)
    fail(f"the running reader {row['applied_by']} is applying request {request_id} but did not finish within {wait:g}s; "
         "see `cdc offsets audit` for the outcome", EXIT_FAILED)


def _replay_via_daemon(config, sink: str, target, dry_run: bool, reason: str, wait: float) -> None:
    """Ask the daemon running the sink's worker to replay it from the target; wait for its answer."""
    from cdc.admin import EXIT_BAD_POSITION, EXIT_FAILED, exit_code
    from cdc.admin import offsets as ops
    from cdc.runtime.bootstrap import build_state
    from cdc.state.lease import Leases

    try:
        settings = load(config)
        state = build_state(settings)
        change, _ = ops.plan_sink(settings, state, sink, target)
        if dry_run:
            leases = Leases(state)
            owner = next((h.owner for h in map(leases.holder, ops.sink_leases(settings, sink)) if h), None)
            typer.echo(f"{change.target}: would replay from {change.after or 'nothing'}")
            typer.echo(f"  the running worker {owner} would replay it beside its work (versions make that safe)" if owner
                       else "  no worker is running: without --via-daemon the start would be recorded for `cdc replay`")
            return
        request_id = ops.request_sink_replay(settings, state, sink, target, ops.who(), reason)
        typer.echo(f"{change.target}: request {request_id} (replay from {change.after}) sent to the running worker; "
                   f"waiting up to {wait:g}s")
        row = ops.wait_for_request(state, request_id, wait)
    except CdcError as exc:
        fail(exc, exit_code(exc))
    if row["status"] == "done":
        typer.echo(f"{change.target}: replayed by the running worker {row['applied_by']}\n  from: {row['from_value']}\n"
                   f"  to:   {row['to_value']}\n  (recorded in the audit table)")
        return
    if row["status"] == "failed":
        fail(f"the running worker could not replay (request {request_id}): {row['error']}",
             EXIT_BAD_POSITION if row["error_kind"] == "position" else EXIT_FAILED)
    if row["status"] == "cancelled":
        fail(f"no running worker took request {request_id} within {wait:g}s; it was cancelled, nothing was replayed",
             EXIT_FAILED)
    fail(f"the running worker {row['applied_by']} is replaying (request {request_id}) but did not finish within "
         f"{wait:g}s; see `cdc offsets audit` for the outcome", EXIT_FAILED)


def _print_change(change, dry_run: bool) -> None:
    verb = "would move" if dry_run else "moving"
    if not change.changes:
        typer.echo(f"{change.target}: already at {change.after or 'nothing'}; nothing to change")
        return
    typer.echo(f"{change.target}: {verb}\n  from: {change.before or 'none'}\n  to:   {change.after or 'none'}\n  ({change.detail})")


def audit(config: ConfigOpt = None, limit: Annotated[int, typer.Option(help="Newest entries.")] = 20, as_json: JsonOpt = False) -> None:
    """Who moved which position when, from where to where."""
    from cdc.runtime.bootstrap import build_state

    try:
        rows = build_state(load(config)).audit_log(limit)
    except CdcError as exc:
        fail(exc, 1)
    if as_json:
        sys.stdout.write(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title="offset changes")
    for col in ("when", "who", "what", "from", "to", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["at"])[:19], r["who"], r["target"], r["from_value"] or "", r["to_value"] or "", r["reason"] or "")
    Console().print(table)
