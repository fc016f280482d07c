"""The randomized differential harness (bench/chaos.py, issue 20) for a short run in the suite.

Private services only (tests/chaos/private_services.py): the faults restart them, never the machine's
shared ones. One seed per run (random, printed; ``CDC_CHAOS_SEED`` replays one), with its generated
tables, operations and faults; the sinks must end equal to the source with no difference that a DLQ
does not explain, and the reader must never have stopped on data. A failure names the seed and the
command that replays and shrinks it; the long runs are documented in docs/chaos.md.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import chaos  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

SEED = int(os.environ.get("CDC_CHAOS_SEED", random.randrange(2**31)))
OPS = int(os.environ.get("CDC_CHAOS_OPS", 250))
FAULTS = ["kill", "postgres", "mariadb", "redis", "rabbitmq"]


@pytest.mark.parametrize("batch_events", [1, 50], ids=["one-event-a-message", "batch-messages"])
def test_random_tables_operations_and_faults_leave_every_sink_equal_to_the_source(batch_events):
    seed = SEED + (batch_events != 1)
    # Five faults, one of each kind (a RabbitMQ node takes ~10 s to come back: one restart is enough here).
    ops = chaos.plan(seed, OPS, FAULTS, 5, big_rows=1500)
    kinds = [op["what"] for op in ops if op["t"] == "fault"]
    opts = chaos.Options(seed=seed, batch_events=batch_events, roles=seed % 3 == 0, converge_s=150)
    print(f"chaos seed {seed}, {OPS} operations, faults {kinds}, batch_events {batch_events}, roles {opts.roles}")
    result = chaos.run(ops, opts)
    print(result.summary())
    if not result.ok:
        path = Path(tempfile.gettempdir()) / f"chaos-{seed}.json"
        path.write_text(json.dumps({"seed": seed, "batch_events": batch_events, "roles": opts.roles, "ops": ops}))
        pytest.fail(f"seed {seed}: " + "\n".join(result.problems)[:6000]
                    + f"\nwork directory: {result.workdir}\nreplay and shrink: python bench/chaos.py --replay {path}")
    assert result.stats["faults"] == 5
    assert result.stats["ops"] == OPS
