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

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

# A fixed, known-green seed by default, so that CI stays a check of regressions; CDC_CHAOS_SEED=random
# draws a new one (how new bugs are found), any number replays that seed. Seed 570148774 is an open
# divergence (docs/chaos.md, "Open"): CDC_CHAOS_SEED=570148774 reproduces it.
_SEED = os.environ.get("CDC_CHAOS_SEED", "1956198221")
SEED = random.randrange(2**31) if _SEED == "random" else int(_SEED)
OPS = int(os.environ.get("CDC_CHAOS_OPS", 200))
FAULTS = ["kill", "postgres", "mariadb", "redis", "rabbitmq"]


def test_random_tables_operations_and_faults_leave_every_sink_equal_to_the_source():
    # One run within the suite's budget (1-3 minutes on a 2-core machine): batch_events alternates by
    # seed (even: one event a message, odd: batches of 50), one fault of each kind.
    seed = SEED
    ops = chaos.plan(seed, OPS, FAULTS, len(FAULTS), big_rows=600)
    kinds = [op["what"] for op in ops if op["t"] == "fault"]
    opts = chaos.options_for(seed, converge_s=150)
    print(f"chaos seed {seed}, {OPS} operations, faults {kinds}, batch_events {opts.batch_events}")
    result = chaos.run(ops, opts)
    print(result.summary())
    if not result.ok:
        path = Path(tempfile.gettempdir()) / f"chaos-{seed}.json"
        path.write_text(json.dumps({"seed": seed, "batch_events": opts.batch_events, "roles": opts.roles, "ops": ops}))
        pytest.fail(f"seed {seed}: " + "\n".join(result.problems)[:6000]
                    + f"\nwork directory: {result.workdir}\nreplay and shrink: python bench/chaos.py --replay {path}")
    assert result.stats["faults"] == len(FAULTS)
    assert result.stats["ops"] == OPS


CASES = sorted((REPO / "bench" / "chaos_cases").glob("*.json"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_every_case_the_harness_found_stays_fixed(case: Path):
    # Each file is an operation list a failing run left behind (shrunk), kept as a regression test:
    # composite-key-pipe-collision.json made ('z','x|y') and ('y|z','x') one key before keys were escaped.
    saved = json.loads(case.read_text())
    opts = chaos.options_for(saved.get("seed", 0), batch_events=saved.get("batch_events"), roles=saved.get("roles", False),
                               converge_s=150)
    result = chaos.run(saved["ops"], opts)
    print(result.summary())
    assert result.ok, (f"{case.name} fails again: " + "\n".join(result.problems)[:6000]
                       + f"\nreplay: python bench/chaos.py --replay {case}")
