"""The samples behind the status page's charts, kept in bounded memory by the daemon.

Each sample (every ``admin.sample_interval_s``) carries gauges (lag per sink, the source's lag) and
counters (events read, events applied per sink: cumulative, as Prometheus counts them). They are
kept in three rings of fixed capacity, each at its own resolution:

    tier   step                        capacity              covers
    fine   the sample interval (>= 1 s)  ceil(600 s / step)    the last 10 minutes
    mid    10 s                          360                   the last hour
    coarse 120 s                         720                   the last 24 hours

A sample goes into every tier; within one step of a tier it is merged into that tier's last point
(a gauge keeps the largest value of the step, so a spike is never averaged away; a counter keeps
its last value). Memory is therefore bounded by the capacities times the number of series, however
long the daemon runs. ``window(seconds)`` answers from the finest tier that covers the window and
folds its points into at most ``max_points`` (largest gauge, last counter per fold); rates are the
counter's increase between consecutive points divided by their time apart (never negative: a
counter that went down, a restarted process, counts from zero again).
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

WINDOWS = {"5m": 300, "1h": 3600, "24h": 86400}


@dataclass
class Point:
    t: float  # time of the last sample merged into this point
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)

    def merge(self, t: float, gauges: Mapping[str, float], counters: Mapping[str, float]) -> None:
        self.t = max(self.t, t)
        for name, value in gauges.items():
            self.gauges[name] = max(value, self.gauges.get(name, value))
        self.counters.update(counters)


class _Tier:
    def __init__(self, step: float, capacity: int) -> None:
        self.step = step
        self.capacity = capacity
        self.points: collections.deque[Point] = collections.deque(maxlen=capacity)

    @property
    def span(self) -> float:
        return self.step * self.capacity

    def add(self, t: float, gauges: Mapping[str, float], counters: Mapping[str, float]) -> None:
        if self.points and math.floor(self.points[-1].t / self.step) == math.floor(t / self.step) and t >= self.points[-1].t:
            self.points[-1].merge(t, gauges, counters)
        elif self.points and t < self.points[-1].t:
            self.points[-1].merge(self.points[-1].t, gauges, counters)  # a clock that stepped back: fold, never reorder
        else:
            self.points.append(Point(t, dict(gauges), dict(counters)))


class SampleRing:
    """Thread-safe: the monitor adds, HTTP requests read."""

    def __init__(self, interval_s: float, tiers: Iterable[tuple[float, int]] | None = None) -> None:
        fine = max(1.0, float(interval_s))
        if tiers is None:
            tiers = ((fine, math.ceil(600 / fine)), (10.0, 360), (120.0, 720))
        self.tiers = [_Tier(step, capacity) for step, capacity in tiers]
        self._lock = threading.Lock()

    def add(self, t: float, gauges: Mapping[str, float | None] | None = None, counters: Mapping[str, float | None] | None = None) -> None:
        g = {k: float(v) for k, v in (gauges or {}).items() if v is not None}
        c = {k: float(v) for k, v in (counters or {}).items() if v is not None}
        with self._lock:
            for tier in self.tiers:
                tier.add(t, g, c)

    def size(self) -> int:
        """Points held in all tiers (what bounds the memory)."""
        with self._lock:
            return sum(len(t.points) for t in self.tiers)

    def capacity(self) -> int:
        return sum(t.capacity for t in self.tiers)

    def window(self, seconds: float, now: float, max_points: int = 300) -> dict:
        """The last ``seconds`` up to ``now``, as columns: ``t``, ``gauges`` and ``rates`` (per second) by name.

        ``step_s`` is the time one point stands for (the tier's step, or the fold's width)."""
        max_points = max(2, int(max_points))
        with self._lock:
            tier = next((t for t in self.tiers if t.span >= seconds), self.tiers[-1])
            start = now - seconds
            points = [p for p in tier.points if p.t <= now]
            # One point before the window: the first rate of the window needs the counter before it.
            first = next((i for i, p in enumerate(points) if p.t >= start), len(points))
            before = points[first - 1] if first > 0 else None
            inside = [Point(p.t, dict(p.gauges), dict(p.counters)) for p in points[first:]]
            step = tier.step
        if len(inside) > max_points:
            step = max(step, seconds / max_points)
            folded: list[Point] = []
            for p in inside:
                slot = math.floor((p.t - start) / step)
                if folded and math.floor((folded[-1].t - start) / step) == slot:
                    folded[-1].merge(p.t, p.gauges, p.counters)
                else:
                    folded.append(p)
            inside = folded
            while len(inside) > max_points:  # float edges can leave one fold too many
                inside[-2].merge(inside[-1].t, inside[-1].gauges, inside[-1].counters)
                inside.pop()
        gauge_names = sorted({n for p in inside for n in p.gauges})
        counter_names = sorted({n for p in inside for n in p.counters})
        rates: dict[str, list[float | None]] = {n: [] for n in counter_names}
        previous = before
        for p in inside:
            for name in counter_names:
                now_value, then = p.counters.get(name), previous.counters.get(name) if previous else None
                if previous is None or now_value is None or then is None or p.t <= previous.t:
                    rates[name].append(None)
                else:
                    rates[name].append(round(max(0.0, now_value - then) / (p.t - previous.t), 3))
            previous = p
        return {"window_s": seconds, "step_s": step, "now": now, "t": [p.t for p in inside],
                "gauges": {n: [p.gauges.get(n) for p in inside] for n in gauge_names},
                "rates": rates}
