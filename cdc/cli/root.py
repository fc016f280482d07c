"""The `cdc` command line: one module per subcommand in :mod:`cdc.cli.commands`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import cdc.cli.commands

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Change-data-capture from a legacy MySQL/MariaDB binlog.")

for _info in sorted(pkgutil.iter_modules(cdc.cli.commands.__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"cdc.cli.commands.{_info.name}").register(app)


def main() -> None:
    from cdc.runtime import patches

    patches.install()  # the libraries' patches, explicitly at start-up (importing changes nothing)
    app()


if __name__ == "__main__":
    main()
