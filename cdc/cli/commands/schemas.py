"""`cdc schemas export`: the published contracts (JSON Schemas + AsyncAPI) generated from the mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdc.cli.commands._common import ConfigOpt, console, fail, load
from cdc.domain.errors import CdcError

schemas_app = typer.Typer(no_args_is_help=True, help="Published event contracts for downstream consumers.")


def register(app: typer.Typer) -> None:
    app.add_typer(schemas_app, name="schemas")


@schemas_app.command("export")
def export(
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write (created if missing).")] = Path("schemas"),
    mappings: Annotated[Path | None, typer.Option("--mappings", help="Mappings directory (default: mappings.dir).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the files under --out are stale.")] = False,
) -> None:
    """Write envelope.json, entities/<entity>.json, events/<entity>.json and asyncapi.yaml."""
    from cdc.mapping import contracts, load_mappings

    try:
        settings = load(config)
        loaded = load_mappings(mappings or settings.mappings.dir, pii_salt="-")  # the salt only matters for rows
        exchange = settings.broker.exchange
        if check:
            outdated = contracts.stale(loaded, out, exchange)
            if outdated:
                fail(f"contracts under {out} are stale ({', '.join(outdated)}): run `cdc schemas export --out {out}`")
            console.print(f"contracts under {out} are up to date")
            return
        written = contracts.export(loaded, out, exchange)
    except CdcError as exc:
        fail(exc)
    console.print(f"wrote {len(written)} files under {out}")
