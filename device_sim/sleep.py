"""A night in bed for a sensor worn at night (pendant-style): rolls, and getting up.

:func:`night` plans ``[t0, t1)`` from standing to standing: a few minutes up, lying down, sleep
with rolls in bed and trips to the toilet, and rising in the morning, gap-free, so it joins the
day plans on either side. It also returns what happened when (``marks``), so a benchmark can
tell which activity a false alarm came from.

* **Rolls**: position shifts average 2.1 per hour at 65-80 years (De Koninck et al., Sleep
  1992, video of 4 nights) and 1.6 per hour in a working population measured with
  accelerometers (Skarpsno et al., Nat Sci Sleep 2017); each wearer's night draws a rate of
  1.5-2.5 per hour. A roll goes from the back to a side or from a side back
  (:func:`device_sim.activities.roll_in_bed`, 85-120 deg each); people over 65 lie on a side
  more than on the back, which the alternation roughly keeps.
* **Getting up**: 0-3 toilet trips a night (nocturia is common at this age; 1-2 is typical):
  rising (3-5 s), 15-40 s of walking, 1-5 min sitting, walking back and lying down again, on
  the back.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from device_sim.activities import roll_in_bed
from device_sim.signals import Body, F, Segment, still, transition, walk


class Mark(NamedTuple):
    """One thing that happened in a plan: what (``roll_in_bed``, ``night_toilet``...) and when
    (true ms ``[t0, t1)``)."""

    kind: str
    t0: int
    t1: int


def _rise(t: int, u: F, body: Body, rng: random.Random) -> Segment:
    """Getting up from lying at ``u`` (whatever side) to standing."""
    return Segment("turn", t, t + rng.randint(3000, 5000), u, body.upright,
                   peak=rng.uniform(0.1, 0.2), amp=rng.uniform(0.02, 0.06))


def _toilet(body: Body, rng: random.Random, t: int, u: F) -> list[Segment]:
    """Out of bed, to the toilet and back into bed (on the back)."""
    segs = [_rise(t, u, body, rng)]
    segs.append(walk(segs[-1].t1, segs[-1].t1 + int(rng.uniform(15, 40) * 1000), body, rng))
    sit = transition("stand", "sit", segs[-1].t1, body, rng)
    assert sit is not None
    segs.append(sit)
    up_at = sit.t1 + int(rng.uniform(60, 300) * 1000)
    segs.append(still(sit.t1, up_at, body.sitting, rng))
    stand = transition("sit", "stand", up_at, body, rng)
    assert stand is not None
    segs.append(stand)
    segs.append(walk(stand.t1, stand.t1 + int(rng.uniform(15, 40) * 1000), body, rng))
    lie = transition("stand", "lie", segs[-1].t1, body, rng)
    assert lie is not None
    segs.append(lie)
    return segs


def night(body: Body, rng: random.Random, t0: int, t1: int) -> tuple[list[Segment], list[Mark]]:
    """The night ``[t0, t1)``, standing at both ends; returns the segments and the marks."""
    if t1 - t0 < 120_000:   # too short to go to bed: stand by it
        return [still(t0, t1, body.upright, rng)], []
    segs = [still(t0, t0 + int(rng.uniform(30, 120) * 1000), body.upright, rng)]
    down = transition("stand", "lie", segs[-1].t1, body, rng)
    assert down is not None
    segs.append(down)
    wake = t1 - rng.randint(3000, 5000)
    rate_per_ms = rng.uniform(1.5, 2.5) / 3.6e6
    trips = sorted(rng.uniform(down.t1, wake) for _ in range(rng.choice((0, 1, 1, 2, 2, 3))))
    marks: list[Mark] = []
    t, u, angle = down.t1, body.lying, 0.0
    next_roll = t + int(rng.expovariate(rate_per_ms))
    while True:
        toilet = trips[0] if trips else None
        at = max(int(toilet) if toilet is not None and toilet < next_roll else next_roll,
                 t + 60_000)
        if at >= wake - 600_000:   # nothing starts in the last 10 min: a trip takes < 7 min
            break
        segs.append(still(t, at, u, rng))
        if toilet is not None and toilet < next_roll:
            trips.pop(0)
            more = _toilet(body, rng, at, u)
            marks.append(Mark("night_toilet", at, more[-1].t1))
            u, angle = body.lying, 0.0
        else:
            # From the back to either side; from a side back towards the back.
            turn = rng.uniform(85, 120)
            step = rng.choice((1, -1)) * turn if abs(angle) < 45 else -turn * (
                1 if angle > 0 else -1)
            ep = roll_in_bed(body, rng, at, u, step)
            more = list(ep.segments)
            marks.append(Mark("roll_in_bed", at, ep.t1))
            u, angle = more[-1].u1, angle + step
            next_roll = ep.t1 + int(rng.expovariate(rate_per_ms))
        segs += more
        t = more[-1].t1
    segs.append(still(t, wake, u, rng))
    segs.append(Segment("turn", wake, t1, u, body.upright, peak=rng.uniform(0.1, 0.2),
                        amp=rng.uniform(0.02, 0.06)))
    return segs, marks
