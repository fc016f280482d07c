"""`cdc status`: per source the checkpoint, binlog head and lag; per sink its offset, lag, queue and DLQ depth."""

from __future__ import annotations

import sys

import orjson
import typer
from rich.console import Console
from rich.table import Table

from cdc.cli.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.domain.errors import CdcError


def register(app: typer.Typer) -> None:
    app.command()(status)


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show the source checkpoint, binlog head and lag, and each sink's offset, lag, queue and DLQ depth."""
    from cdc.admin import exit_code
    from cdc.admin.broker import Broker
    from cdc.admin.status import event_log_status, sink_status, source_status
    from cdc.runtime.bootstrap import build_binlog_reader, build_mapper, build_sink, build_state

    try:
        settings = load(config)
        mapper = build_mapper(settings)
        state = build_state(settings)
        report: dict = {"source": source_status(settings, state, build_binlog_reader(settings)), "sinks": {}}
        try:
            broker = Broker(settings.broker.url.get_secret_value()).__enter__()
        except CdcError as exc:
            broker, report["broker_error"] = None, str(exc)
        for name in settings.sinks:
            try:
                sink = build_sink(name, settings, mapper)
                sink.open()
                offset = sink.read_offset()
                sink.close()
            except CdcError as exc:
                offset = str(exc)
            report["sinks"][name] = sink_status(settings, state, name, offset, broker)
        report["event_log"] = event_log_status(settings, broker)
        if broker is not None:
            broker.__exit__(None, None, None)
    except CdcError as exc:
        fail(exc, exit_code(exc))
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _print(report)


def _print(report: dict) -> None:
    from cdc.admin.positions import iso

    src = report["source"]
    table = Table(title=f"source {src['name']}")
    for col in ("", "position", "GTID", "commit time"):
        table.add_column(col)
    cp, head = src["checkpoint"], src["head"]
    table.add_row("checkpoint", f"{cp['file']}:{cp['pos']}" if cp else "none", (cp or {}).get("gtid") or "", iso((cp or {}).get("ts_ms")))
    table.add_row("binlog head", f"{head['file']}:{head['pos']}" if head else src.get("error", "?"), (head or {}).get("gtid") or "", "")
    lag = "?" if src["lag_bytes"] is None else f"{src['lag_bytes']:,} bytes, {src['lag_seconds']}s"
    table.add_row("lag", lag, "", "")
    table.add_row("reader", src["reader"] or "not running", "", "")
    console = Console()
    console.print(table)
    sinks = Table(title="sinks")
    for col in ("sink", "offset", "commit time", "lag", "queue", "DLQ", "replay from", "workers"):
        sinks.add_column(col)
    for name, s in report["sinks"].items():
        off = s["offset"]
        position = f"{off['file']}:{off['pos']}" if off else (s["error"] or "none")
        lag = "?" if s["lag_seconds"] is None else f"{s['lag_seconds']}s"
        sinks.add_row(name, position, iso((off or {}).get("ts_ms")), lag, _n(s["queue_depth"]), _n(s["dlq_depth"]),
                      s["replay_from"] or "", ", ".join(s["workers"]) or "not running")
    console.print(sinks)
    if report.get("broker_error"):
        console.print(f"broker: {report['broker_error']}")


def _n(value) -> str:
    return "?" if value is None else f"{value:,}"
