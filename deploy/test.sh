#!/usr/bin/env bash
# Set up (venv, services) and run the whole test suite. Extra arguments go to pytest.
#   deploy/test.sh                 everything (unit, integration, e2e)
#   deploy/test.sh tests/unit      just the unit tests
set -Eeuo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CDC_VENV:-$REPO_ROOT/.venv}"
bash "$REPO_ROOT/deploy/setup.sh"
cd "$REPO_ROOT"
exec "$VENV/bin/python" -m pytest -q "$@"
