"""cdc.runtime.samples.SampleRing: bounded memory whatever is fed in, and windows folded faithfully.

Generated inputs (hypothesis): sample intervals, run lengths, jittered clocks, counter increments,
gauge values; checked against a brute-force computation over every sample kept.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.runtime.samples import WINDOWS, SampleRing

intervals = st.sampled_from([1.0, 2.0, 5.0, 10.0])


@settings(max_examples=25, deadline=None)
@given(interval=intervals, n=st.integers(0, 20_000), sinks=st.integers(1, 3))
def test_memory_stays_bounded_whatever_the_run_length(interval, n, sinks):
    ring = SampleRing(interval)
    t = 1_700_000_000.0
    for i in range(n):
        ring.add(t + i * interval, {f"lag:s{k}": i % 7 for k in range(sinks)}, {f"applied:s{k}": i for k in range(sinks)})
    assert ring.size() <= ring.capacity()
    for tier in ring.tiers:
        assert len(tier.points) <= tier.capacity
    # The coarse tier reaches back 24 hours once the run is that long.
    if n * interval >= 86_400 + 240:
        assert ring.tiers[-1].points[-1].t - ring.tiers[-1].points[0].t >= 86_400 - 240


@settings(max_examples=80, deadline=None)
@given(interval=intervals,
       steps=st.lists(st.tuples(st.floats(0.5, 1.5), st.integers(0, 500), st.floats(0, 900)), min_size=3, max_size=400),
       window=st.sampled_from(list(WINDOWS.values())), max_points=st.integers(2, 300))
def test_a_window_folds_to_at_most_max_points_keeping_peaks_and_totals(interval, steps, window, max_points):
    ring = SampleRing(interval)
    t, total, kept = 1_700_000_000.0, 0.0, []
    for jitter, increment, lag in steps:
        t += interval * jitter
        total += increment
        ring.add(t, {"lag:crm": lag}, {"applied:crm": total})
        kept.append((t, lag, total))
    out = ring.window(window, now=t, max_points=max_points)

    assert len(out["t"]) <= max_points
    assert out["t"] == sorted(out["t"]) and all(out["now"] - window <= x <= out["now"] for x in out["t"])
    assert len(out["gauges"]["lag:crm"]) == len(out["rates"]["applied:crm"]) == len(out["t"])
    # Largest lag of the window, whatever the folding (the tier used covers the window here).
    inside = [lag for (ts, lag, _) in kept if ts >= t - window]
    tier = next(x for x in ring.tiers if x.span >= window)
    if len(tier.points) < tier.capacity:  # nothing of the window has left the ring yet
        # A tier point starting before the window may have merged lags from before it: those do not count.
        assert max(out["gauges"]["lag:crm"]) >= max(inside) - 1e-9 or out["t"][0] > t - window
        assert max(out["gauges"]["lag:crm"]) <= max(lag for (_, lag, _) in kept) + 1e-9
    # Rates times their spans add up to the counter's increase over the points shown.
    rates = out["rates"]["applied:crm"]
    ts = out["t"]
    summed = sum(r * (ts[i] - ts[i - 1]) for i, r in enumerate(rates) if i > 0 and r is not None)
    by_time = {a: c for (a, _, c) in kept}
    if len(ts) >= 2 and ts[0] in by_time and ts[-1] in by_time:
        assert math.isclose(summed, by_time[ts[-1]] - by_time[ts[0]], rel_tol=1e-2, abs_tol=2.0)
    assert all(r is None or r >= 0 for r in rates)


@settings(max_examples=40, deadline=None)
@given(interval=intervals, rate=st.floats(0.5, 5000), minutes=st.integers(6, 180))
def test_a_steady_rate_reads_as_that_rate_in_every_window(interval, rate, minutes):
    ring = SampleRing(interval)
    t0 = 1_700_000_000.0
    n = int(minutes * 60 / interval)
    for i in range(n + 1):
        ring.add(t0 + i * interval, {"lag:source": 0.5}, {"read": rate * i * interval})
    now = t0 + n * interval
    for window in WINDOWS.values():
        out = ring.window(window, now=now, max_points=120)
        values = [r for r in out["rates"]["read"] if r is not None]
        assert values, out
        for value in values:
            assert math.isclose(value, rate, rel_tol=1e-3, abs_tol=1e-3)
        assert len(out["t"]) <= 120


def test_a_counter_that_restarts_never_gives_a_negative_rate():
    ring = SampleRing(1)
    for i, value in enumerate([0, 10, 20, 3, 13]):
        ring.add(1000.0 + i, {}, {"read": value})
    out = ring.window(300, now=1004.0)
    assert out["rates"]["read"] == [None, 10.0, 10.0, 0.0, 10.0]


def test_gauges_keep_the_peak_of_a_step_and_series_appear_when_they_start():
    ring = SampleRing(1)
    ring.add(1000.0, {"lag:source": 1.0}, {})
    ring.add(1001.0, {"lag:source": 9.0, "lag:crm": 2.0}, {"applied:crm": 0})
    ring.add(1002.0, {"lag:source": 3.0, "lag:crm": 1.0}, {"applied:crm": 5})
    out = ring.window(3600, now=1002.0)  # the 10 s tier: one point of the three samples
    assert out["step_s"] == 10.0 and len(out["t"]) == 1
    assert out["gauges"] == {"lag:crm": [2.0], "lag:source": [9.0]}
    fine = ring.window(300, now=1002.0)
    assert fine["gauges"]["lag:crm"] == [None, 2.0, 1.0]
    assert fine["rates"]["applied:crm"] == [None, None, 5.0]


def test_a_clock_that_steps_back_is_folded_not_reordered():
    ring = SampleRing(1)
    ring.add(1000.0, {"lag:source": 1.0}, {"read": 1})
    ring.add(1005.0, {"lag:source": 2.0}, {"read": 2})
    ring.add(1003.0, {"lag:source": 7.0}, {"read": 3})
    out = ring.window(300, now=1010.0)
    assert out["t"] == sorted(out["t"]) and out["gauges"]["lag:source"][-1] == 7.0
