"""Where a wearer is: tracks of legs, walks, the wander path, and position fixes with errors.

A wearer is at home (indoors, at the origin of their local frame, in metres) except during
legs: trips away from home, polylines with a true time at every vertex. :class:`Track` answers
"where at ``t``" with a cursor (queries never go back). :func:`leg_through` and
:func:`loop_walk` build the day's walks and outings; :func:`wander_leg` builds a scripted
wander and finds the instant it leaves every active safe zone. :class:`Receiver` turns a true
position into a GPS, Wi-Fi or cell fix whose error matches the accuracy it reports
(docs/simulator.md).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from device_sim.devices import LocalClock, Planned
from device_sim.fleet import Person
from device_sim.scenario import WanderIncident

#: GPS/Wi-Fi/cell errors are drawn so that ``accuracy_m`` is about their 95th percentile
#: (2-D gaussian: radius r95 = 2.45 sigma).
_R95: Final = 2.45
_WILD_FIX: Final = 0.005


class Leg(NamedTuple):
    """A trip away from home: vertices at true times ``t`` (ms), positions in metres."""

    t: list[int]
    x: list[float]
    y: list[float]


class Track:
    """Where the wearer is: at home (indoors) except during legs (outdoors).

    :meth:`at` must be queried at non-decreasing times (one cursor per consumer).
    """

    def __init__(self, legs: Sequence[Leg]) -> None:
        self._legs = sorted(legs, key=lambda g: g.t[0])
        self._i = 0

    def at(self, t: int) -> tuple[float, float, float, bool]:
        """(x, y, speed m/s, outdoors) at ``t``."""
        legs = self._legs
        while self._i < len(legs) and legs[self._i].t[-1] <= t:
            self._i += 1
        if self._i == len(legs) or t < legs[self._i].t[0]:
            return 0.0, 0.0, 0.0, False
        g = legs[self._i]
        j = bisect.bisect_right(g.t, t) - 1
        dt = g.t[j + 1] - g.t[j]
        f = (t - g.t[j]) / dt
        dx, dy = g.x[j + 1] - g.x[j], g.y[j + 1] - g.y[j]
        return g.x[j] + f * dx, g.y[j] + f * dy, math.hypot(dx, dy) * 1000.0 / dt, True


def leg_through(t0: int, pts: Sequence[tuple[float, float]], speed: float,
                pauses: dict[int, float] | None = None) -> Leg:
    """A leg through ``pts`` at ``speed``, pausing ``pauses[i]`` s at vertex i."""
    ts, xs, ys = [t0], [pts[0][0]], [pts[0][1]]
    for i in range(1, len(pts)):
        d = math.hypot(pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1])
        ts.append(ts[-1] + max(1000, int(d / speed * 1000)))
        xs.append(pts[i][0])
        ys.append(pts[i][1])
        if pauses and i in pauses:
            ts.append(ts[-1] + int(pauses[i] * 1000))
            xs.append(pts[i][0])
            ys.append(pts[i][1])
    return Leg(ts, xs, ys)


def loop_walk(rng: random.Random, t0: int, radius: float) -> Leg:
    """A stroll from home through 3-6 points within ``radius`` and back, at 0.7-1.0 m/s."""
    pts = [(0.0, 0.0)]
    for _ in range(rng.randint(3, 6)):
        r, a = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        pts.append((r * math.cos(a), r * math.sin(a)))
    pts.append((0.0, 0.0))
    return leg_through(t0, pts, rng.uniform(0.7, 1.0))


def wander_leg(person: Person, clock: LocalClock, rng: random.Random, p: Planned,
               inc: WanderIncident) -> tuple[Leg, int, dict[str, Any]]:
    """The wander leg, the true time its path leaves every active zone, and label detail.

    The path heads out from home on a bearing with mean-reverting heading noise (straight-ish,
    as reported for wandering with dementia: lapping and pacing happen indoors; the dangerous
    exits are walks that keep going), keeps walking ``duration_s`` after the crossing, and is
    then brought home by car (8 m/s).
    """
    v = inc.speed_mps if inc.speed_mps is not None else rng.uniform(1.0, 1.3)
    base = math.radians(inc.heading_deg if inc.heading_deg is not None else rng.uniform(0, 360))
    step_s = 5.0
    h, x, y = base, 0.0, 0.0
    xs, ys = [0.0], [0.0]
    n = int((6000.0 / v + inc.duration_s) / step_s) + 2
    for _ in range(n):
        h = base + 0.8 * (h - base) + rng.gauss(0.0, math.radians(6.0))
        x, y = x + v * step_s * math.sin(h), y + v * step_s * math.cos(h)
        xs.append(x)
        ys.append(y)
    minute = clock.minute(p.at_ms)
    k = next((i for i in range(len(xs)) if person.outside_all(xs[i], ys[i], minute)), len(xs) - 1)
    lead_s = 0.0
    if inc.from_edge_m is not None:
        lead_s = max(0.0, k * step_s - inc.from_edge_m / v)
    t0 = p.at_ms - int(lead_s * 1000)
    ts = [t0 + int(i * step_s * 1000) for i in range(len(xs))]
    cross = _crossing(person, clock, ts, xs, ys)
    end = cross + int(inc.duration_s * 1000)
    j = bisect.bisect_right(ts, end)
    ts, xs, ys = ts[:j], xs[:j], ys[:j]
    home_ms = int(math.hypot(xs[-1], ys[-1]) / 8.0 * 1000) + 1000
    leg = Leg(ts + [ts[-1] + home_ms], xs + [0.0], ys + [0.0])
    detail = {"speed_mps": round(v, 2), "heading_deg": round(math.degrees(base) % 360, 1),
              "boundary_m": round(math.hypot(*_interp(ts, xs, ys, cross)), 1)}
    return leg, cross, detail


def _interp(ts: Sequence[int], xs: Sequence[float], ys: Sequence[float],
            t: int) -> tuple[float, float]:
    j = max(0, min(len(ts) - 2, bisect.bisect_right(ts, t) - 1))
    f = (t - ts[j]) / (ts[j + 1] - ts[j])
    return xs[j] + f * (xs[j + 1] - xs[j]), ys[j] + f * (ys[j + 1] - ys[j])


def _crossing(person: Person, clock: LocalClock, ts: Sequence[int], xs: Sequence[float],
              ys: Sequence[float]) -> int:
    """First true ms (to 10 ms) at which the path is outside every zone active then."""
    def out(t: int) -> bool:
        x, y = _interp(ts, xs, ys, t)
        return person.outside_all(x, y, clock.minute(t))
    k = next((i for i in range(len(ts)) if out(ts[i])), len(ts) - 1)
    lo, hi = ts[max(0, k - 1)], ts[k]
    while hi - lo > 10:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if out(mid) else (mid, hi)
    return hi


class Receiver:
    """Position fixes with errors consistent with the reported accuracy."""

    def __init__(self, rng: random.Random, person: Person) -> None:
        self._rng, self._frame = rng, person.frame
        self._wild = False

    def fix(self, x: float, y: float, speed: float, outdoors: bool) -> dict[str, Any]:
        """A location fix near the true position (x, y); see docs/simulator.md."""
        rng = self._rng
        if outdoors:
            source, acc = "gps", rng.uniform(4.0, 15.0)
        else:
            x, y = x + rng.uniform(-8.0, 8.0), y + rng.uniform(-8.0, 8.0)  # rooms of a house
            source, acc = ("wifi", rng.uniform(30.0, 80.0)) if rng.random() < 0.8 else (
                "cell", rng.uniform(150.0, 500.0))
        if not self._wild and rng.random() < _WILD_FIX:  # multipath / wrong cell: far off
            d, a = rng.uniform(300.0, 2000.0), rng.uniform(0.0, 2 * math.pi)
            ex, ey = d * math.cos(a), d * math.sin(a)
            self._wild = True
        else:
            sigma = acc / _R95
            ex, ey = rng.gauss(0.0, sigma), rng.gauss(0.0, sigma)
            self._wild = False
        lat, lon = self._frame.to_latlon(x + ex, y + ey)
        out: dict[str, Any] = {"lat": round(lat, 6), "lon": round(lon, 6),
                               "accuracy_m": round(acc, 1)}
        if source == "gps":
            out["speed_mps"] = round(max(0.0, speed + rng.gauss(0.0, 0.15)), 2)
        out["source"] = source
        return out
