"""`cdc status`: checkpoint, binlog head, sink offsets."""

from __future__ import annotations

import sys


import orjson
import typer
from rich.console import Console
from rich.table import Table

from cdc.commands._common import ConfigOpt, JsonOpt, fail, load
from cdc.errors import CdcError


def register(app: typer.Typer) -> None:
    app.command()(status)


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show the source checkpoint, the binlog head and each sink's offset."""
    from cdc.bootstrap import build_mapper, build_sink, build_state
    from cdc.reader import BinlogReader

    try:
        settings = load(config)
        mapper = build_mapper(settings)
        state = build_state(settings)
        checkpoint = state.load_checkpoint(settings.source.name)
        report: dict = {"source": {"name": settings.source.name, "checkpoint": checkpoint.model_dump() if checkpoint else None}}
        try:
            head = BinlogReader(settings.source).head_position()
            report["source"]["head"] = head.model_dump()
        except CdcError as exc:
            report["source"]["head_error"] = str(exc)
        report["sinks"] = {}
        for name in settings.sinks:
            try:
                sink = build_sink(name, settings, mapper)
                sink.open()
                offset = sink.read_offset()
                sink.close()
                report["sinks"][name] = {"offset": offset.model_dump() if offset else None}
            except CdcError as exc:
                report["sinks"][name] = {"error": str(exc)}
    except CdcError as exc:
        fail(exc, 1)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title="cdc status")
    for col in ("what", "position", "detail"):
        table.add_column(col)
    cp = report["source"]["checkpoint"]
    table.add_row(f"source {settings.source.name} checkpoint", f"{cp['file']}:{cp['pos']}" if cp else "none", (cp or {}).get("gtid") or "")
    head = report["source"].get("head")
    table.add_row("binlog head", f"{head['file']}:{head['pos']}" if head else "?", report["source"].get("head_error", (head or {}).get("gtid") or ""))
    for name, info in report["sinks"].items():
        off = info.get("offset")
        table.add_row(f"sink {name}", f"{off['file']}:{off['pos']}" if off else "none", info.get("error", f"version {off['version']}" if off else ""))
    Console().print(table)
