"""`cdc config check`: validate configuration and mappings without connecting."""

from __future__ import annotations

import typer

from cdc.cli.commands._common import ConfigOpt, fail, load
from cdc.domain.errors import CdcError, ConfigError


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(no_args_is_help=True, help="Validate configuration.")
    config_app.command("check")(config_check)
    app.add_typer(config_app, name="config")


def config_check(config: ConfigOpt = None) -> None:
    """Validate the config and the mappings without connecting to anything."""
    from cdc.runtime.bootstrap import build_mapper

    try:
        settings = load(config)
        mapper = build_mapper(settings)
        for name, sink in settings.sinks.items():
            unknown = [e for e in sink.entities if e != "*" and e not in mapper.schemas()]
            if unknown:
                raise ConfigError(f"sinks.{name}.entities names unknown entities {unknown}; mapped: {sorted(mapper.schemas())}")
    except CdcError as exc:
        fail(exc, 2)
    tables = ", ".join(f"{db}.{t}" for db, t in sorted(mapper.tables()))
    typer.echo(f"config ok: source {settings.source.name} ({settings.source.host}:{settings.source.port}), "
               f"{len(mapper.mappings)} entities from {tables}; sinks: {', '.join(settings.sinks) or 'none'}")
