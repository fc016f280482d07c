#!/usr/bin/env bash
# The main job on a development machine: services up, demo legacy database created and seeded,
# the daemon replicating it (and a live workload) into the CRM, with progress lines every few seconds.
# Ctrl-C stops the daemon cleanly (and the workload).
# Environment: CDC_DEMO_MEMBERS (1000), CDC_DEMO_RATE (workload ops/s, 50).
set -Eeuo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CDC_VENV:-$REPO_ROOT/.venv}"
bash "$REPO_ROOT/deploy/setup.sh"
cd "$REPO_ROOT"
eval "$(bash deploy/dev-services.sh env)"
export CDC_CONFIG="$REPO_ROOT/deploy/demo.yaml"
CDC="$VENV/bin/cdc"

"$CDC" config check
"$CDC" demo reset                       # empty CRM, fresh queues, checkpoint at the binlog head
"$CDC" demo seed --members "${CDC_DEMO_MEMBERS:-1000}"
"$CDC" demo workload --rate "${CDC_DEMO_RATE:-50}" >"$REPO_ROOT/.dev/workload.log" 2>&1 &
workload=$!
trap 'kill $workload 2>/dev/null || true' EXIT
echo "demo: workload running (log: .dev/workload.log); daemon starting; Ctrl-C to stop" >&2
# The status page's address and the token to type into it (made once into .dev/admin-token; printed
# again in any shell by `cdc demo console -c deploy/demo.yaml`).
"$CDC" demo console | sed 's/^/demo: /' >&2
"$CDC" run --role all
