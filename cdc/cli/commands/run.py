"""`cdc run`: the replication daemon."""

from __future__ import annotations

from typing import Annotated

import typer

from cdc.cli.commands._common import ConfigOpt, fail, load
from cdc.domain.errors import CdcError, ConfigError


def register(app: typer.Typer) -> None:
    app.command()(run)


def run(
    config: ConfigOpt = None,
    role: Annotated[list[str], typer.Option(help="all, reader, sinks or sink:NAME; repeatable.")] = ["all"],
    log_format: Annotated[str | None, typer.Option(help="console or json (overrides log.format).")] = None,
    worker_index: Annotated[int | None, typer.Option(help="This worker's number among --workers (sharded sinks).")] = None,
    workers: Annotated[int | None, typer.Option(help="Workers sharing each sharded sink (worker.count).")] = None,
) -> None:
    """Run the replication daemon until SIGTERM/SIGINT."""
    from cdc.runtime.daemon import run_daemon
    from cdc.runtime.logs import setup_logging

    try:
        settings = load(config)
        if worker_index is not None or workers is not None:
            worker = settings.worker.model_copy(update={k: v for k, v in (("index", worker_index), ("count", workers)) if v is not None})
            settings = settings.model_copy(update={"worker": worker})
        setup_logging(log_format or settings.log.format, settings.log.level)
        code = run_daemon(settings, role)
    except ConfigError as exc:
        fail(exc, 2)
    except CdcError as exc:
        fail(exc, 1)
    raise typer.Exit(code)
