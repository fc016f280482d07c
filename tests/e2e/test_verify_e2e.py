"""`cdc verify` with a sink that cannot list its rows (a webhook: the receivers hold them)."""

from __future__ import annotations

from e2e_support import run_cli

WEBHOOK = '  hooks: {type: webhook, endpoints: {crm_app: {url: "http://127.0.0.1:9/events", secret: s3cret}}}\n'


def test_verify_compares_the_sinks_it_can_and_names_the_one_it_cannot(world_factory):
    world = world_factory(extra_sinks=WEBHOOK)

    every = run_cli(world, "verify", "--entity", "member")
    assert every.returncode == 0, every.stdout + every.stderr
    assert f"member in sink {world['sink']}: source 0 rows, sink 0 rows" in every.stdout
    assert "sink 'hooks' (webhook) cannot list its rows, so it cannot be verified" in every.stderr

    named = run_cli(world, "verify", "--sink", "hooks")
    assert named.returncode == 2, named.stdout + named.stderr
    assert "sink 'hooks' (webhook) cannot list its rows" in named.stdout + named.stderr
    assert "Traceback" not in named.stdout + named.stderr
