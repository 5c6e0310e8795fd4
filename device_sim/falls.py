"""Falls by kind: the trip the simulator always had, and the kinds detectors tend to miss.

:func:`fall_of_kind` builds a fall whose impact lands on ``impact_ms`` (a sample instant), from
the posture the kind starts in (:data:`START`) through lying (or sitting) on the floor to getting
up, and the label detail (``fall_kind`` among it). Shapes follow the same physics as
:mod:`device_sim.activities`: the speed gained in the descent is ``9.81 x`` the area of the dip
under 1 g, and the impact's width is what stops that speed at the drawn peak
(:func:`device_sim.signals.impact_width`). Trunk falls onto a floor give 3-6 g (Kangas et al.
2008) after a descent that reaches 2-3 m/s from standing (Bourke et al., Med Eng Phys 2008:
every fall passed 1.3 m/s); the kinds below start lower or are partly supported, and land softer.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any, Final

import numpy as np

from device_sim.scenario import FallKind
from device_sim.signals import (
    Body,
    F,
    G,
    Move,
    Posture,
    Segment,
    fall_segments,
    impact_width,
    still,
)

FALL_KINDS: Final[tuple[FallKind, ...]] = ("trip", "backward_sit", "faint_seated",
                                           "table_cushioned", "out_of_bed")
#: The posture each kind starts from (the plan's lead-in brings the wearer there).
START: Final[dict[FallKind, Posture]] = {
    "trip": "stand", "backward_sit": "stand", "faint_seated": "sit",
    "table_cushioned": "stand", "out_of_bed": "lie"}


def _tipped(body: Body, rng: random.Random, lo: float, hi: float) -> F:
    """Upright turned ``lo``-``hi`` deg about a random horizontal axis."""
    axis = body.rolled(body.lateral, rng.uniform(0, 360))
    a = math.radians(rng.uniform(lo, hi))
    u = body.upright
    out = u * math.cos(a) + np.cross(axis, u) * math.sin(a) + axis * float(
        np.dot(axis, u)) * (1 - math.cos(a))
    return np.asarray(out / np.linalg.norm(out), dtype=np.float64)


def _peak(rng: random.Random, speed: float, peak_g: float | None, lo: float,
          hi: float) -> tuple[float, float]:
    """The impact peak (drawn in ``lo``-``hi`` unless given) and the width that stops
    ``speed`` with it, kept within 40-300 ms (the peak then follows from the width)."""
    p = peak_g if peak_g is not None else rng.uniform(lo, hi)
    w = impact_width(speed, p)
    if not 0.04 <= w <= 0.3:
        w = min(max(w, 0.04), 0.3)
        p = 1.0 + speed * math.pi / (2 * G * w)
    return p, w


def _backward_sit(body: Body, rng: random.Random, peak_g: float | None) -> tuple[F, F, Move]:
    """Falling backwards while trying to sit down: the seat is missed (or slides away).

    The trunk starts lowering as in sitting, then goes backwards: 50-90 deg from upright at
    the end (sitting or half-lying on the floor, back against the chair or the floor). The hips
    drop the rest of a seat height (~0.4 m) partly braked: 1.5-2.5 m/s at contact (free fall
    from 0.4 m would be 2.8 m/s), gained over 0.35-0.6 s with the magnitude down to 0.1-0.6 g.
    Impact on the buttocks 2.5-5 g (soft tissue: 50-150 ms), then a bounce of 20-35 %. The
    sensor turns about the hips, 0.15-0.3 m away.
    """
    end = body.tilted(rng.uniform(50, 90))
    speed = rng.uniform(1.5, 2.5)
    peak, width = _peak(rng, speed, peak_g, 2.5, 5.0)
    depth, ramp = rng.uniform(0.4, 0.9), 0.1
    length = speed / (G * depth) + ramp
    impact = length + width / 2 + rng.uniform(0.2, 0.4)    # a slow start: lowering to sit
    return body.upright, end, Move(
        turn=(0.0, impact), dip=(impact - width / 2 - length, length, ramp), dip_g=depth,
        impact_s=impact, peak_g=peak, width_s=width, bounce=rng.uniform(0.2, 0.35),
        ring_g=rng.uniform(0.1, 0.2), radius_m=rng.uniform(0.15, 0.3))


def _faint_seated(body: Body, rng: random.Random, peak_g: float | None) -> tuple[F, F, Move]:
    """Fainting while seated: the trunk slumps from sitting to lying, slowly.

    Postural tone fades over seconds in a syncope, so the trunk topples over 2-4 s (``x^3``:
    slow at first, fastest when it lands, as a body falling over under gravity) to 70-100 deg
    from upright, sliding off the seat or across a sofa. The pelvis is carried, not dropped:
    0.5-1.2 m/s at most, gained over 0.6-1.0 s (the magnitude stays above ~0.75 g, no free
    fall). Impact 1.5-3 g (the trunk and shoulder land, the waist sensor near the pivot), then
    lying still (unconscious). Peaks given by the scenario (>= 2.5 g) are used as they are.
    """
    end = body.fallen(rng)
    slump = rng.uniform(2.0, 4.0)
    speed = rng.uniform(0.5, 1.2)
    peak, width = _peak(rng, speed, peak_g, 1.5, 3.0)
    length = rng.uniform(0.6, 1.0)
    ramp = length / 3
    depth = speed / (G * (length - ramp))
    return body.sitting, end, Move(
        turn=(0.0, slump), ease="in", dip=(slump - width / 2 - length, length, ramp),
        dip_g=depth, impact_s=slump, peak_g=peak, width_s=width, bounce=rng.uniform(0.05, 0.15),
        ring_g=rng.uniform(0.03, 0.08), radius_m=rng.uniform(0.08, 0.15))


def _table_cushioned(body: Body, rng: random.Random, peak_g: float | None,
                     ) -> tuple[F, F, Move]:
    """A fall broken by the hands on a table: the arms take part of the weight on the way down.

    The magnitude dips only to 0.6-0.8 g for 0.5-0.9 s (partial descent: 0.8-2.2 m/s gained,
    ``9.81 x`` the dip's area), the body ends kneeling, sitting or half-lying on the floor
    45-85 deg from upright, and lands at 1.8-2.5 g (knees and hands first: a long, soft
    contact of up to 300 ms).
    """
    end = _tipped(body, rng, 45, 85)
    depth = rng.uniform(0.2, 0.32)   # the turn's centripetal part takes up to ~0.05 g more
    length = rng.uniform(0.5, 0.9)
    ramp = 0.2 * length
    speed = G * depth * (length - ramp)
    peak, width = _peak(rng, speed, peak_g, 1.8, 2.5)
    impact = length + width / 2 + rng.uniform(0.05, 0.2)
    return body.upright, end, Move(
        turn=(0.0, impact), dip=(impact - width / 2 - length, length, ramp), dip_g=depth,
        impact_s=impact, peak_g=peak, width_s=width, bounce=rng.uniform(0.1, 0.2),
        ring_g=rng.uniform(0.05, 0.1), radius_m=rng.uniform(0.05, 0.12))


def _out_of_bed(body: Body, rng: random.Random, peak_g: float | None) -> tuple[F, F, Move]:
    """Rolling out of bed: lying -> lying on the floor.

    A roll to the edge (0.6-1.2 s), then real free fall from the mattress, 0.40-0.55 m:
    ``t = sqrt(2 h / g)`` = 0.29-0.33 s at 0.05-0.15 g (the roll's centripetal acceleration,
    ``w^2 r`` <= ~0.1 g, on top), reaching ``v = g t`` ~3 m/s. The body keeps turning about its
    long axis, 90-150 deg in all (side or face down on the floor), the sensor 0.10-0.15 m from
    that axis. Impact on
    the floor 3-6 g (Kangas et al. 2008's floor impacts; 100-250 ms at that speed), bounce.
    """
    height = rng.uniform(0.40, 0.55)
    fall_s = math.sqrt(2 * height / G)
    depth = rng.uniform(0.85, 0.95)
    ramp = 0.04
    speed = G * depth * fall_s
    peak, width = _peak(rng, speed, peak_g, 3.0, 6.0)
    edge = rng.uniform(0.6, 1.2)
    impact = edge + fall_s + ramp + width / 2
    end = body.rolled(body.lying, rng.choice((1, -1)) * rng.uniform(90, 150))
    return body.lying, end, Move(
        turn=(0.0, impact), dip=(edge, fall_s + ramp, ramp), dip_g=depth, impact_s=impact,
        peak_g=peak, width_s=width, bounce=rng.uniform(0.2, 0.35), ring_g=rng.uniform(0.1, 0.2),
        radius_m=rng.uniform(0.10, 0.15))


_SHAPES: Final = {"backward_sit": _backward_sit, "faint_seated": _faint_seated,
                  "table_cushioned": _table_cushioned, "out_of_bed": _out_of_bed}


def fall_of_kind(kind: FallKind, body: Body, rng: random.Random, impact_ms: int, *,
                 get_up: bool, lying_s: float | None,
                 peak_g: float | None) -> tuple[list[Segment], dict[str, Any]]:
    """A fall of ``kind`` whose impact peak lands on ``impact_ms``; it starts in
    ``START[kind]`` and ends standing (got up after 4-10 s with ``get_up``, else helped up after
    ``lying_s``, default 2-10 min). Returns the segments and the label detail."""
    if kind == "trip":   # the original model, draw for draw: existing scenarios are unchanged
        segs, detail = fall_segments(body, rng, impact_ms, get_up=get_up, lying_s=lying_s,
                                     peak_g=peak_g)
        return segs, {**detail, "fall_kind": kind}
    u0, u1, move = _SHAPES[kind](body, rng, peak_g)
    lead_ms = round(move.impact_s * 1000)
    move = replace(move, impact_s=lead_ms / 1000.0)   # the peak exactly on the sample instant
    t0 = impact_ms - lead_ms
    settle = impact_ms + 1000
    lie_ms = int(1000 * (rng.uniform(4, 10) if get_up else
                         (lying_s if lying_s is not None else rng.uniform(120, 600))))
    rise = rng.randint(3000, 5000) if get_up else rng.randint(5000, 8000)
    segs = [Segment("move", t0, settle, u0, u1, shape=move),
            still(settle, impact_ms + lie_ms, u1, rng),
            Segment("turn", impact_ms + lie_ms, impact_ms + lie_ms + rise, u1, body.upright,
                    peak=0.15, amp=rng.uniform(0.1, 0.2))]
    detail = {"peak_g": round(move.peak_g, 2), "descent_ms": impact_ms - t0, "get_up": get_up,
              "lying_s": lie_ms / 1000.0, "fall_kind": kind}
    return segs, detail
