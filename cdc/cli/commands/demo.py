"""`cdc demo`: the demo legacy source (schema, seed data, workload, reset)."""

from __future__ import annotations

from typing import Annotated

import typer

from cdc.cli.commands._common import ConfigOpt, fail, load
from cdc.domain.errors import CdcError
from cdc.runtime.tls import amqp_parameters


def register(app: typer.Typer) -> None:
    demo_app = typer.Typer(no_args_is_help=True, help="The demo legacy source: schema, seed data, workload.")
    demo_app.command("reset")(demo_reset)
    demo_app.command("seed")(demo_seed)
    demo_app.command("workload")(demo_workload)
    demo_app.command("console")(demo_console)
    app.add_typer(demo_app, name="demo")


def demo_reset(config: ConfigOpt = None) -> None:
    """Start the demo afresh: empty sinks and queues, source checkpoint at the binlog head."""
    import pika

    from cdc.broker.topology import sink_dlq, sink_queue
    from cdc.runtime.bootstrap import build_binlog_reader, build_mapper, build_sink, build_state

    try:
        settings = load(config)
        mapper = build_mapper(settings)
        state = build_state(settings)
        for name in settings.sinks:
            sink = build_sink(name, settings, mapper)
            sink.open()
            sink.reset()
            sink.close()
        with pika.BlockingConnection(amqp_parameters(settings.broker.url.get_secret_value())) as conn:
            channel = conn.channel()
            for name in settings.sinks:
                channel.queue_delete(sink_queue(name))
                channel.queue_delete(sink_dlq(name))
        reader = build_binlog_reader(settings)
        reader.preflight()
        head = reader.head_position()
        old = state.load_checkpoint(settings.source.name)
        state.save_checkpoint(settings.source.name, head)
        state.record_audit("cdc demo reset", f"source:{settings.source.name}", old.describe() if old else None, head.describe(), "demo reset")
    except CdcError as exc:
        fail(exc, 1)
    typer.echo(f"demo reset: sinks {', '.join(settings.sinks)} emptied, checkpoint at {head.describe()}")


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


def demo_workload(
    rate: Annotated[float | None, typer.Option(help="Operations per second (default: as fast as possible).")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
    max_ops: Annotated[int | None, typer.Option(help="Stop after this many operations.")] = None,
) -> None:
    """Make realistic changes in the demo legacy database."""
    from cdc.demo import seed as demo
    from cdc.demo.workload import Workload

    counts = Workload(demo.params_from_env(), rate=rate, duration=duration, max_ops=max_ops).run()
    typer.echo(f"workload done: {counts}")


def demo_console(config: ConfigOpt = None) -> None:
    """Print the status page's address and the admin token to type into it (made once, into admin.token_file)."""
    import secrets

    try:
        settings = load(config)
    except CdcError as exc:
        fail(exc, 2)
    admin = settings.admin
    if admin.token_file is None:
        fail("admin.token_file is not set: the demo console needs a file for the token it makes (deploy/demo.yaml sets "
             ".dev/admin-token)", 2)
    if "admin" not in admin.named_tokens():
        admin.token_file.parent.mkdir(parents=True, exist_ok=True)
        admin.token_file.touch(mode=0o600, exist_ok=True)
        admin.token_file.chmod(0o600)
        admin.token_file.write_text(secrets.token_urlsafe(24) + "\n")
    token = admin.named_tokens()["admin"]
    host = settings.metrics.host if settings.metrics.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    typer.echo(f"status page: http://{host}:{settings.metrics.port}/status")
    typer.echo(f"admin token: {token}   (type it into the page; kept in {admin.token_file}, readable by you only)")
    typer.echo("writes from the page (replay, purge, snapshots): " + ("refused, admin.read_only is true" if admin.read_only
                                                                      else "allowed, each one recorded in `cdc offsets audit`"))
