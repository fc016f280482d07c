"""`cdc replay --sink NAME [--from first|OFFSET|TIMESTAMP] [--until OFFSET|TIMESTAMP] [--repair]`.

Re-applies a sink from the event-log stream, straight through the sink, without touching the binlog
reader; safe while the sink's worker runs (versions). Without --from it starts where
`cdc offsets set --sink NAME ...` put it, and clears that start when done.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Annotated

import orjson
import typer

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError


def register(app: typer.Typer) -> None:
    app.command()(replay)


def replay(
    sink: Annotated[str, typer.Option("--sink", help="The sink to re-apply.")],
    from_: Annotated[str | None, typer.Option("--from", help="first, an event-log offset, or a timestamp (ISO 8601, -2h).")] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this event-log offset or commit time.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Re-write rows damaged behind the sink's back (see docs/runbook.md).")] = False,
    batch_size: Annotated[int, typer.Option(help="Events per apply.")] = 500,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Re-apply a sink from the event log (point-in-time recovery, rebuilds)."""
    from cdc.admin import EXIT_USAGE, exit_code, sink_config
    from cdc.admin.offsets import describe_start, who
    from cdc.admin.replay import parse_from
    from cdc.admin.replay import replay as run_replay
    from cdc.runtime.bootstrap import build_mapper, build_sink, build_state

    try:
        settings = load(config)
        sink_config(settings, sink)
        state = build_state(settings)
        pending = state.load_sink_rewind(sink)
        start = parse_from(from_) if from_ else pending
        if start is None:
            fail(f"no start for sink {sink!r}: give --from (first, an offset or a timestamp), or record one with "
                 f"`cdc offsets set --sink {sink} --timestamp ...`", EXIT_USAGE)
        target = build_sink(sink, settings, build_mapper(settings))
        target.open()
        try:
            result = run_replay(settings, target, start, until, repair, batch_size)
        finally:
            target.close()
        if pending is not None and from_ is None:
            state.save_sink_rewind(sink, None)
        state.record_audit(who(), f"sink:{sink}", describe_start(start), f"replayed to event-log offset {result.last_offset}",
                           f"cdc replay ({result.mode}): {result.applied} applied, {result.rejected} dead-lettered")
    except CdcError as exc:
        fail(exc, exit_code(exc))
    if as_json:
        sys.stdout.write(orjson.dumps({**asdict(result), "rate": result.rate}, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        span = f"offsets {result.first_offset}..{result.last_offset}" if result.read else "nothing to replay"
        typer.echo(f"sink {sink}: replayed {result.read} events ({span}) in {result.seconds:.1f}s, {result.rate:,.0f}/s, "
                   f"mode {result.mode}: {result.applied} applied, {result.skipped} skipped, {result.malformed} malformed, "
                   f"{result.rejected} dead-lettered")
        for reason in result.rejections:
            typer.echo(f"  dead-lettered: {reason}")
