"""The README's demo commands, as written, in a new shell: no variable set, nothing evaluated first.

A fresh directory laid out like a checkout (deploy/, mappings/ and .venv linked to this one's, no .dev/)
is the working directory, and the environment holds only PATH and HOME. `cdc status -c deploy/demo.yaml`
must reach the source (the demo config carries the dev services' password), and `cdc demo console`
must give the status page's address and a token that the daemon then accepts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
from test_metrics_e2e import get

from cdc.runtime.config import load_settings
from cdc.runtime.health import Health
from cdc.runtime.http import AdminApp, serve
from cdc.runtime.monitor import Monitor

REPO = Path(__file__).resolve().parents[2]


def readme_demo_commands() -> list[str]:
    """The `cdc ... -c deploy/demo.yaml` lines of the README's "Running it" block."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Running it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip().startswith(("cdc ", ". "))]


def fresh_shell(tmp_path: Path, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    work = tmp_path / "checkout"
    if not work.exists():
        work.mkdir()
        for name in ("deploy", "mappings"):
            (work / name).symlink_to(REPO / name)
        (work / ".venv").symlink_to(Path(sys.prefix))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_shows_no_environment_step_for_the_demo():
    commands = readme_demo_commands()
    assert ". .venv/bin/activate" in commands
    assert "cdc status -c deploy/demo.yaml [--json]" in commands
    block = (REPO / "README.md").read_text().split("## Running it", 1)[1].split("```", 2)[1]
    assert "dev-services.sh env" not in block, "the README's demo commands must not need an environment step"


def test_cdc_status_works_as_written_in_a_new_shell(tmp_path):
    done = fresh_shell(tmp_path, ". .venv/bin/activate && cdc status -c deploy/demo.yaml --json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    assert report["source"]["name"] == "legacy" and report["source"]["head"]["pos"] > 0, report
    assert "password" not in done.stdout + done.stderr
    assert set(report["sinks"]) == {"crm", "cache"}

    done = fresh_shell(tmp_path, ". .venv/bin/activate && cdc status -c deploy/demo.yaml && cdc config check -c deploy/demo.yaml "
                                 "&& cdc snapshot status -c deploy/demo.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "binlog head" in done.stdout and "config ok" in done.stdout


def test_the_demo_console_prints_the_address_and_a_token_the_daemon_takes(tmp_path):
    done = fresh_shell(tmp_path, ". .venv/bin/activate && cdc demo console -c deploy/demo.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status page: http://127.0.0.1:9108/status" in done.stdout
    token = re.search(r"admin token: (\S+)", done.stdout).group(1)
    token_file = tmp_path / "checkout" / ".dev" / "admin-token"
    assert token_file.read_text().strip() == token and oct(token_file.stat().st_mode & 0o777) == "0o600"
    again = fresh_shell(tmp_path, ". .venv/bin/activate && cdc demo console -c deploy/demo.yaml")
    assert re.search(r"admin token: (\S+)", again.stdout).group(1) == token  # made once, then the same

    # A daemon started with the demo config in that directory accepts it (port 0 here: 9108 may be in use).
    cwd = os.getcwd()
    os.chdir(tmp_path / "checkout")
    try:
        settings = load_settings("deploy/demo.yaml", metrics={"port": 0}, state={"url": f"sqlite:///{tmp_path}/state.db"})
    finally:
        os.chdir(cwd)
    assert settings.admin.named_tokens() == {"admin": token} and settings.admin.read_only is False
    server = serve(AdminApp(settings, Health(), Monitor(settings, None, None, [], False)), "127.0.0.1", 0)
    try:
        assert get(server.server_port, "/api/status", token)[0] == 200
        assert get(server.server_port, "/api/status", "wrong")[0] == 401
    finally:
        server.shutdown()
