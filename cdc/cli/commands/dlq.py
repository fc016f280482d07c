"""`cdc dlq list | show | replay | purge --sink NAME` (or --reader for rows the mapper refused)."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError

SinkOpt = Annotated[str | None, typer.Option("--sink", help="The sink whose DLQ to use.")]
ReaderOpt = Annotated[bool, typer.Option("--reader", help="The reader's DLQ (rows the mapper could not convert).")]
LimitOpt = Annotated[int, typer.Option(help="At most this many messages.")]


def register(app: typer.Typer) -> None:
    dlq = typer.Typer(no_args_is_help=True, help="Dead letters: inspect, replay after a fix, purge.")
    dlq.command("list")(list_)
    dlq.command("show")(show)
    dlq.command("replay")(replay)
    dlq.command("purge")(purge)
    app.add_typer(dlq, name="dlq")


def _which(settings, sink: str | None, reader: bool) -> str | None:
    from cdc.admin import EXIT_USAGE, sink_config

    if reader == (sink is not None):
        fail("name the queue: --sink NAME, or --reader", EXIT_USAGE)
    if sink is not None:
        sink_config(settings, sink)
    return sink


def list_(sink: SinkOpt = None, reader: ReaderOpt = False, limit: LimitOpt = 100, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Dead letters in version order: id, reason, entity, key, version, source position."""
    from cdc.admin import exit_code
    from cdc.admin.dlq import list_letters

    try:
        settings = load(config)
        letters = list_letters(settings.broker.url.get_secret_value(), _which(settings, sink, reader), limit)
    except CdcError as exc:
        fail(exc, exit_code(exc))
    rows = [d.summary() for d in letters]
    if as_json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title=f"dead letters of {'sink ' + sink if sink else 'the reader'} ({len(rows)} shown)")
    for col in ("id", "entity", "key", "op", "version", "source position", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["id"], r["entity"] or "", r["key"] or "", r["op"] or "", str(r["version"] or ""), r["source_position"] or "", r["reason"])
    Console().print(table)


def show(message_id: Annotated[str, typer.Argument(help="The id `cdc dlq list` shows.")], sink: SinkOpt = None, reader: ReaderOpt = False,
         limit: LimitOpt = 100_000, config: ConfigOpt = None) -> None:
    """One dead letter in full: reason, headers and body."""
    from cdc.admin import exit_code
    from cdc.admin.dlq import list_letters

    try:
        settings = load(config)
        letters = [d for d in list_letters(settings.broker.url.get_secret_value(), _which(settings, sink, reader), limit) if d.id == message_id]
        if not letters:
            from cdc.domain.errors import ConfigError

            raise ConfigError(f"no dead letter with id {message_id!r}; see `cdc dlq list`")
    except CdcError as exc:
        fail(exc, exit_code(exc))
    letter = letters[0]
    body = letter.event.model_dump(mode="json") if letter.event else (letter.raw or letter.body.decode(errors="replace"))
    out = {**letter.summary(), "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in letter.headers.items()}, "body": body}
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def replay(sink: Annotated[str, typer.Option("--sink", help="The sink to re-apply its dead letters to.")],
           ids: Annotated[list[str] | None, typer.Argument(help="Only these ids (default: all).")] = None,
           limit: LimitOpt = 100_000, config: ConfigOpt = None) -> None:
    """Re-apply dead letters (after fixing their cause) in version order; those refused again stay, with the new reason."""
    from cdc.admin import exit_code, sink_config
    from cdc.admin.dlq import replay_letters
    from cdc.admin.offsets import who
    from cdc.runtime.bootstrap import build_mapper, build_sink, build_state

    try:
        settings = load(config)
        sink_config(settings, sink)
        target = build_sink(sink, settings, build_mapper(settings))
        target.open()
        try:
            result = replay_letters(settings.broker.url.get_secret_value(), target, ids, limit)
        finally:
            target.close()
        build_state(settings).record_audit(who(), f"dlq:{sink}", None, None,
                                           f"cdc dlq replay: {len(result.applied)} applied, {len(result.rejected_again)} refused again")
    except CdcError as exc:
        fail(exc, exit_code(exc))
    typer.echo(f"sink {sink}: {len(result.applied)} dead letters applied, {len(result.rejected_again)} refused again "
               f"(back in the DLQ), {result.left} left untouched")
    for message_id, reason in result.rejected_again[:20]:
        typer.echo(f"  {message_id}: {reason}")
    if result.rejected_again:
        raise typer.Exit(1)


def purge(sink: SinkOpt = None, reader: ReaderOpt = False,
          ids: Annotated[list[str] | None, typer.Argument(help="Only these ids (default: all).")] = None,
          yes: Annotated[bool, typer.Option("--yes", help="Confirm deleting every dead letter.")] = False,
          config: ConfigOpt = None) -> None:
    """Delete dead letters for good (all of them needs --yes)."""
    from cdc.admin import EXIT_USAGE, exit_code
    from cdc.admin.dlq import purge as run_purge
    from cdc.admin.dlq import queue_of
    from cdc.admin.offsets import who
    from cdc.runtime.bootstrap import build_state

    try:
        settings = load(config)
        which = _which(settings, sink, reader)
        if not ids and not yes:
            fail(f"this deletes every message of {queue_of(which)}: add --yes, or name the ids to delete", EXIT_USAGE)
        n = run_purge(settings.broker.url.get_secret_value(), which, ids)
        build_state(settings).record_audit(who(), f"dlq:{queue_of(which)}", None, None, f"cdc dlq purge: {n} deleted")
    except CdcError as exc:
        fail(exc, exit_code(exc))
    typer.echo(f"{n} dead letters deleted from {queue_of(which)}")
