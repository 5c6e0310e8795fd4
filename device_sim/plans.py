"""A worn span as one gap-free plan: ordinary life or a night in bed, with inserts spliced in.

An :class:`Insert` is a scripted fall or an everyday activity (:mod:`device_sim.falls`,
:mod:`device_sim.activities`): fixed segments that start in a known posture and end standing.
:func:`day` fills the time around the inserts with ordinary activity
(:func:`device_sim.signals.ordinary`), :func:`night` with sleep (:mod:`device_sim.sleep`); each
insert gets a lead-in that brings the wearer into its starting posture (a trip: 3-8 s standing
or walking; a faint: sitting down and resting; a fall out of bed: lying down). Both plans start
and end standing, so spans of either kind join. Every plan also returns its :class:`Mark` s,
what happened when, for benchmarks that attribute false alarms to activities.

:func:`draw_activities` places everyday activities at random in a span, at expected rates per
worn day, away from the scripted falls and from each other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Final, NamedTuple

from device_sim import activities, sleep
from device_sim.activities import ADL_KINDS, AdlKind
from device_sim.signals import Body, Posture, Segment, lead_in, ordinary, still, transition
from device_sim.sleep import Mark

#: A worn day's length the activity rates are counted in (07:00-22:00, roughly).
WORN_DAY_MS: Final = 15 * 3_600_000
#: How long before an insert ordinary life stops, for its lead-in to fit: a trip's lead-in
#: (<= 13 s) as it always was; sitting or lying down first takes up to ~200 s.
_MARGIN_MS: Final[dict[Posture, int]] = {"stand": 14_000, "walk": 14_000, "sit": 200_000,
                                         "lie": 200_000}


#: What fills a plan between inserts: ``(t0, t1, posture) -> (segments, end posture, marks)``.
Fill = Callable[[int, int, Posture], tuple[list[Segment], Posture, list[Mark]]]


class Insert(NamedTuple):
    """Fixed segments spliced into a plan: ``kind`` (a fall or activity kind), starting in
    ``start``, ending standing; ``off``: when the sensor sends nothing (true ms)."""

    kind: str
    segments: Sequence[Segment]
    start: Posture
    off: tuple[int, int] | None = None

    @property
    def t0(self) -> int:
        """Start of the first segment."""
        return self.segments[0].t0

    @property
    def t1(self) -> int:
        """End of the last segment."""
        return self.segments[-1].t1


def _until(seg: Segment, t1: int) -> Segment:
    return replace(seg, t1=t1)


def settle_in(body: Body, rng: random.Random, posture: Posture, to: Posture,
              t1: int) -> tuple[int, list[Segment]]:
    """Into ``to`` (``sit``: a chair, ``lie``: the bed) by ``t1``, through standing, and resting
    there 30-180 s. Returns when the lead-in starts and its segments."""
    if to in ("stand", "walk"):
        return lead_in(body, rng, posture, t1)
    u = body.sitting if to == "sit" else body.lying
    t = t1 - rng.randint(30_000, 180_000)
    segs = [still(t, t1, u, rng)]
    if posture != to:
        down = transition("stand", to, 0, body, rng)
        assert down is not None
        dur = down.t1 - down.t0
        segs.insert(0, replace(down, t0=t - dur, t1=t))
        t -= dur
        stand = rng.randint(3000, 8000)
        segs.insert(0, still(t - stand, t, body.upright, rng))
        t -= stand
        up = transition(posture, "stand", 0, body, rng)
        if up is not None:
            dur = up.t1 - up.t0
            segs.insert(0, replace(up, t0=t - dur, t1=t))
            t -= dur
    return t, segs


def _splice(body: Body, rng: random.Random, a: int, b: int, inserts: Sequence[Insert],
            fill: Fill) -> tuple[list[Segment], list[Mark]]:
    segs: list[Segment] = []
    marks: list[Mark] = []
    t: int = a
    posture: Posture = "stand"
    for ins in sorted((i for i in inserts if a <= i.t0 < b), key=lambda i: i.t0):
        more, posture, more_marks = fill(t, max(t, ins.t0 - _MARGIN_MS[ins.start]), posture)
        segs += more
        marks += more_marks
        lead_start, lead = settle_in(body, rng, posture, ins.start, ins.t0)
        if segs:
            segs[-1] = _until(segs[-1], lead_start)
        segs += lead + list(ins.segments)
        marks.append(Mark(ins.kind, ins.t0, ins.t1))
        t, posture = ins.t1, "stand"
    more, _, more_marks = fill(t, b, posture)
    return segs + more, marks + more_marks


def day(body: Body, rng: random.Random, a: int, b: int, inserts: Sequence[Insert],
        nap: tuple[int, int] | None) -> tuple[list[Segment], list[Mark]]:
    """Ordinary activity on ``[a, b)`` from standing, ``inserts`` spliced in (those starting in
    the span). With only trip falls this is draw for draw the plan the simulator always made."""
    def fill(t0: int, t1: int, posture: Posture) -> tuple[list[Segment], Posture, list[Mark]]:
        segs, end = ordinary(body, rng, t0, t1, posture, nap)
        return segs, end, []
    return _splice(body, rng, a, b, inserts, fill)


def night(body: Body, rng: random.Random, a: int, b: int,
          inserts: Sequence[Insert]) -> tuple[list[Segment], list[Mark]]:
    """A night in bed on ``[a, b)`` (:func:`device_sim.sleep.night`), inserts spliced in."""
    def fill(t0: int, t1: int, posture: Posture) -> tuple[list[Segment], Posture, list[Mark]]:
        if t1 <= t0:
            return [], posture, []
        segs, marks = sleep.night(body, rng, t0, t1)
        return segs, "stand", marks
    return _splice(body, rng, a, b, inserts, fill)


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-min(lam, 500.0)), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def draw_activities(body: Body, rng: random.Random, a: int, b: int,
                    rates: Mapping[str, float], busy: Sequence[tuple[int, int]] = (),
                    ) -> list[Insert]:
    """Everyday activities on ``[a, b)``: per kind a Poisson number at ``rates`` (expected per
    worn day of :data:`WORN_DAY_MS`), at uniform times from 15 min after ``a`` to 30 min before
    ``b``; one that comes within 3 min of another or of a ``busy`` interval is left out."""
    taken = [(x - 180_000, y + 180_000) for x, y in busy]
    out: list[Insert] = []
    lo, hi = a + 900_000, b - 1_800_000
    if hi <= lo:
        return out
    for name, rate in rates.items():
        if name not in ADL_KINDS:
            raise ValueError(f"unknown activity {name!r} (known: {', '.join(ADL_KINDS)})")
        kind: AdlKind = name
        for _ in range(_poisson(rng, rate * (b - a) / WORN_DAY_MS)):
            ep = activities.daytime(kind, body, rng, int(rng.uniform(lo, hi)))
            lead = _MARGIN_MS["stand"]
            if ep.t1 >= b or any(ep.t0 - lead < y and x < ep.t1 for x, y in taken):
                continue
            taken.append((ep.t0 - lead - 180_000, ep.t1 + 180_000))
            out.append(Insert(kind, ep.segments, "stand", ep.off))
    return sorted(out, key=lambda i: i.t0)
