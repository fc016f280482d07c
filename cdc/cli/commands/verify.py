"""`cdc verify [--entity E] [--sink NAME] [--repair]`: compare the source with each sink.

Exit codes: 0 no differences, 3 differences found (also when --repair re-emitted them, so cron
notices), 1 a service failed, 2 bad usage.
"""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError, ConfigError


def register(app: typer.Typer) -> None:
    app.command()(verify)


def verify(
    entity: Annotated[list[str] | None, typer.Option("--entity", help="Entities to compare (default: all a sink consumes).")] = None,
    sink: Annotated[list[str] | None, typer.Option("--sink", help="Sinks to compare (default: all).")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Re-emit exactly the differing rows into the sink.")] = False,
    chunk_size: Annotated[int, typer.Option(help="Keys per checksum chunk.")] = 1000,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Compare entities in the source with each sink: counts, chunk checksums, differing keys."""
    from cdc.admin import EXIT_DIFFERENCES, exit_code, sink_config
    from cdc.admin import verify as ops
    from cdc.admin.offsets import who
    from cdc.runtime.bootstrap import build_binlog_reader, build_mapper, build_sink, build_state

    reports = []
    try:
        settings = load(config)
        mapper = build_mapper(settings)
        reader = build_binlog_reader(settings)
        server = reader.preflight()
        names = sink or list(settings.sinks)
        for name in names:
            config_ = sink_config(settings, name)
            target = build_sink(name, settings, mapper)
            if not hasattr(target, "fetch_rows"):
                problem = f"sink {name!r} ({config_.type}) cannot list its rows, so it cannot be verified"
                if sink:  # named on the command line
                    raise ConfigError(problem)
                typer.echo(f"{problem}: skipped", err=True)  # a webhook: the receivers hold the rows
                continue
            consumed = [m.entity for m in mapper.mappings if "*" in config_.entities or m.entity in config_.entities]
            entities = entity or consumed
            target.open()
            try:
                for ent in entities:
                    if ent not in consumed:
                        raise CdcError(f"sink {name!r} does not consume entity {ent!r} (it consumes {', '.join(consumed)})")
                    head = reader.head_position()  # before reading the source: see cdc.admin.verify
                    source_rows = ops.source_rows(reader, mapper, ent)
                    sink_rows = target.fetch_rows(ent)
                    report = ops.compare(ent, name, source_rows, sink_rows, chunk_size)
                    if repair and report.differences:
                        events = ops.repair_events(report, mapper, source_rows, sink_rows, head, settings.source.name, server.server_id)
                        rejections = target.apply(events)
                        report.repaired = len(events) - len(rejections)
                        report.repair_rejected = [r.reason for r in rejections]
                        build_state(settings).record_audit(who(), f"sink:{name}", None, None,
                                                           f"cdc verify --repair {ent}: {report.repaired} rows re-emitted")
                    reports.append(report)
            finally:
                target.close()
    except CdcError as exc:
        fail(exc, exit_code(exc))
    if as_json:
        sys.stdout.write(orjson.dumps([r.as_dict() for r in reports], option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for r in reports:
            state = "equal" if not r.differences else f"{r.differences} differences"
            typer.echo(f"{r.entity} in sink {r.sink}: source {r.source_rows} rows, sink {r.sink_rows} rows, "
                       f"{r.chunks} chunks, {len(r.differing_chunks)} differ: {state}")
            for label, keys in (("missing in sink", r.missing), ("not in source", r.extra), ("different", r.different)):
                if keys:
                    typer.echo(f"  {label} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}")
            if r.repaired or r.repair_rejected:
                typer.echo(f"  repaired: {r.repaired} rows re-emitted; refused: {len(r.repair_rejected)}")
    if any(r.differences for r in reports):
        raise typer.Exit(EXIT_DIFFERENCES)
