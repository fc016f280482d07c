"""The `cdc` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer
from rich.console import Console
from rich.table import Table

from cdc.errors import CdcError, ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Change-data-capture from a legacy MySQL/MariaDB binlog.")
config_app = typer.Typer(no_args_is_help=True, help="Validate configuration.")
demo_app = typer.Typer(no_args_is_help=True, help="The demo legacy source: schema, seed data, workload.")
app.add_typer(config_app, name="config")
app.add_typer(demo_app, name="demo")

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", envvar="CDC_CONFIG", help="YAML config file; CDC_<SECTION>__<KEY> variables override it."),
]
console = Console(stderr=True)


def _settings(path: Optional[Path]):
    from cdc.config import load_settings

    return load_settings(path)


def _fail(exc: Exception, code: int) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    config: ConfigOpt = None,
    role: Annotated[list[str], typer.Option(help="all, reader, sinks or sink:NAME; repeatable.")] = ["all"],
    log_format: Annotated[Optional[str], typer.Option(help="console or json (overrides log.format).")] = None,
) -> None:
    """Run the replication daemon until SIGTERM/SIGINT."""
    from cdc.daemon import run_daemon
    from cdc.logs import setup_logging

    try:
        settings = _settings(config)
        setup_logging(log_format or settings.log.format, settings.log.level)
        code = run_daemon(settings, role)
    except ConfigError as exc:
        _fail(exc, 2)
    except CdcError as exc:
        _fail(exc, 1)
    raise typer.Exit(code)


@config_app.command("check")
def config_check(config: ConfigOpt = None) -> None:
    """Validate the config and the mappings without connecting to anything."""
    from cdc.bootstrap import build_mapper

    try:
        settings = _settings(config)
        mapper = build_mapper(settings)
        for name, sink in settings.sinks.items():
            unknown = [e for e in sink.entities if e != "*" and e not in mapper.schemas()]
            if unknown:
                raise ConfigError(f"sinks.{name}.entities names unknown entities {unknown}; mapped: {sorted(mapper.schemas())}")
    except CdcError as exc:
        _fail(exc, 2)
    tables = ", ".join(f"{db}.{t}" for db, t in sorted(mapper.tables()))
    typer.echo(f"config ok: source {settings.source.name} ({settings.source.host}:{settings.source.port}), "
               f"{len(mapper.mappings)} entities from {tables}; sinks: {', '.join(settings.sinks) or 'none'}")


@app.command()
def status(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show the source checkpoint, the binlog head and each sink's offset."""
    from cdc.bootstrap import build_mapper, build_sink, build_state
    from cdc.reader import BinlogReader

    try:
        settings = _settings(config)
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
        _fail(exc, 1)
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


@demo_app.command("reset")
def demo_reset(config: ConfigOpt = None) -> None:
    """Start the demo afresh: empty sinks and queues, source checkpoint at the binlog head."""
    import pika

    from cdc.bootstrap import build_mapper, build_sink, build_state
    from cdc.reader import BinlogReader
    from cdc.topology import sink_dlq, sink_queue

    try:
        settings = _settings(config)
        mapper = build_mapper(settings)
        state = build_state(settings)
        for name in settings.sinks:
            sink = build_sink(name, settings, mapper)
            sink.open()
            sink.reset()
            sink.close()
        with pika.BlockingConnection(pika.URLParameters(settings.broker.url.get_secret_value())) as conn:
            channel = conn.channel()
            for name in settings.sinks:
                channel.queue_delete(sink_queue(name))
                channel.queue_delete(sink_dlq(name))
        reader = BinlogReader(settings.source)
        reader.preflight()
        head = reader.head_position()
        old = state.load_checkpoint(settings.source.name)
        state.save_checkpoint(settings.source.name, head)
        state.record_audit("cdc demo reset", f"source:{settings.source.name}", old.describe() if old else None, head.describe(), "demo reset")
    except CdcError as exc:
        _fail(exc, 1)
    typer.echo(f"demo reset: sinks {', '.join(settings.sinks)} emptied, checkpoint at {head.describe()}")


@demo_app.command("seed")
def demo_seed(
    members: Annotated[int, typer.Option(help="Members to create.")] = 1000,
    rng_seed: Annotated[int, typer.Option(help="Random seed (deterministic data).")] = 42,
) -> None:
    """(Re)create the demo legacy schema and fill it with seed data."""
    from cdc.demo import seed as demo

    params = demo.params_from_env()
    demo.create_schema(params)
    counts = demo.seed(params, members=members, rng_seed=rng_seed)
    typer.echo(f"seeded legacy database: {counts}")


@demo_app.command("workload")
def demo_workload(
    rate: Annotated[Optional[float], typer.Option(help="Operations per second (default: as fast as possible).")] = None,
    duration: Annotated[Optional[float], typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
    max_ops: Annotated[Optional[int], typer.Option(help="Stop after this many operations.")] = None,
) -> None:
    """Make realistic changes in the demo legacy database."""
    from cdc.demo import seed as demo
    from cdc.demo.workload import Workload

    counts = Workload(demo.params_from_env(), rate=rate, duration=duration, max_ops=max_ops).run()
    typer.echo(f"workload done: {counts}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
