"""Secrets never appear in logs, error messages, status output or metrics.

A real run with known secrets in every place a secret can be configured (the source password,
the broker URL, the CRM URL; PostgreSQL here trusts local connections, so any password works),
then every byte the processes printed, and the /metrics page, are searched for them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

from e2e_support import Daemon

from cdc.demo.seed import seed
from cdc.state.store import SqlStateStore

PG_SECRET = "pg-S3cret-7f1e"
WRONG_SOURCE_SECRET = "wrong-S3cret-90ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_secret_in_any_output_of_a_run(world_factory, wait_until, pg_url):
    from sqlalchemy.engine import make_url

    port = free_port()
    secret_pg = make_url(pg_url).set(password=PG_SECRET).render_as_string(hide_password=False)
    world = world_factory(f"snapshot: {{mode: initial}}\nmetrics: {{enabled: true, port: {port}}}")
    # The world's config disables metrics and names the CRM URL without a password: override both.
    text = world["config"].read_text().replace("metrics: {enabled: false}\n", "")
    world["config"].write_text(text.replace(f'url: "{pg_url}"', f'url: "{secret_pg}"'))
    secrets = [world["source"]["password"], PG_SECRET, "guest:guest"]

    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    daemon.start()
    try:
        wait_until(lambda: state.load_checkpoint("e2e"), timeout=60, message=f"the first checkpoint\n{daemon.logs()}")
        seed(world["params"], members=20, rng_seed=61)
        metrics_page = wait_until(lambda: _get(f"http://127.0.0.1:{port}/metrics"), timeout=30, message="the metrics page")
        status = subprocess.run([sys.executable, "-m", "cdc.cli", "status", "--json", "-c", str(world["config"])],
                                capture_output=True, text=True, timeout=60, env=daemon.env())
        assert daemon.terminate() == 0
    finally:
        daemon.stop_if_running()

    # An operator mistake: a wrong source password. The error must name the setting, not the secret.
    bad = subprocess.run([sys.executable, "-m", "cdc.cli", "status", "-c", str(world["config"])], capture_output=True,
                         text=True, timeout=60, env=dict(daemon.env(), CDC_SOURCE__PASSWORD=WRONG_SOURCE_SECRET))
    assert "source.password" in bad.stdout + bad.stderr

    everything = "\n".join([daemon.logs(0), metrics_page, status.stdout, status.stderr, bad.stdout, bad.stderr])
    assert "cdc_reader_events_total" in metrics_page and '"checkpoint"' in status.stdout
    for secret in secrets + [WRONG_SOURCE_SECRET]:
        assert secret not in everything, f"a secret leaked into the output: {secret[:3]}..."


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None
