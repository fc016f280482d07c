#!/usr/bin/env bash
# Install the project into a virtual environment (default .venv) and start the local services.
#   deploy/setup.sh            venv + package with test extras + services up
# Environment: CDC_VENV (path of the venv), PYTHON (interpreter to build it with, python3).
set -Eeuo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CDC_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup: creating virtual environment $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
# pip install -e builds the C row decoder in place: a changed source installs again
stamp="$VENV/.installed-$(cat "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/setup.py" "$REPO_ROOT/cdc/source/_rowdecode.c" | sha1sum | cut -c1-12)"
if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
    # mysqlclient (the snapshot's chunk reader) compiles against the MariaDB client library
    echo "setup: installing libmariadb-dev and pkg-config" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null
fi
if ! "$VENV/bin/python" -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then
    # the C row decoder (cdc/source/_rowdecode.c) compiles against the interpreter's headers
    echo "setup: installing python3-dev and gcc" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev gcc >/dev/null
fi
if [[ ! -f "$stamp" ]]; then
    echo "setup: installing the project and its test dependencies" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
    # setuptools' "Editable installation" notice warns of a folder named like the package in the working
    # directory; here that folder is the package itself (cdc/, with sinks/ and state/ mapped into it)
    PYTHONWARNINGS="ignore:Editable installation" \
        "$VENV/bin/python" -m pip install --quiet -e "$REPO_ROOT[test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -c "import cdc.cli, cdc.sinks.crm, cdc.source._rowdecode, MySQLdb" || { echo "setup: installation failed" >&2; exit 1; }
    touch "$stamp"
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    # the status page's tests run it headless, through chromedriver (selenium is given both paths: no download)
    echo "setup: installing chromium and chromium-driver" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash "$REPO_ROOT/deploy/dev-services.sh" up --quiet
