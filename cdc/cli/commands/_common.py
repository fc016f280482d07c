"""What every subcommand shares: the --config option, loading settings, failing clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CDC_CONFIG", help="YAML config file; CDC_<SECTION>__<KEY> variables override it."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
console = Console(stderr=True)


def load(path: Path | None):
    from cdc.runtime.config import load_settings

    return load_settings(path)


def fail(exc: Exception | str, code: int = 1) -> NoReturn:
    """Print an operator-facing error (no traceback) and exit with ``code``."""
    console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)
