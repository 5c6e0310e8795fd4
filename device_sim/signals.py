"""Trunk accelerometer synthesis for fall sensors: posture plans and their signals.

A wearer's day while the sensor is worn is a plan of :class:`Segment` s in absolute time:
standing, walking, sitting, napping, the transitions between them, and scripted falls. Each
segment is a function of time, so :class:`Renderer` can evaluate any block of sample times,
vectorized, and a block boundary or a different sampling rate never changes the motion.

The signal is ``gravity direction x magnitude (+ lateral sway) + sensor noise`` in g, in the
sensor's own axes (each device is clipped on at its own angle). The shapes follow the trunk
signals the detector was designed on (``docs/fall-detector.md``): walking oscillates ~0.2-0.35 g
at 1.6-2 Hz and stays under 1.5 g; sitting down tilts the pelvis 15-25 deg with a landing under
2 g; lying down for a nap turns 80-90 deg without impact. A fall is a 0.5-0.8 s descent whose
magnitude dips to 0.1-0.4 g while the body turns 70-100 deg, a 60-100 ms impact of 3-6 g with a
bounce, then lying still (breathing only) or getting up after a few seconds. Noise is 0.01 g per
axis (MEMS noise plus tremor). Everyday segments never reach the 2 g impact threshold, so they
cannot raise a fall whatever else they look like.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
SegmentKind = Literal["still", "walk", "turn", "fall", "move", "gait"]
Posture = Literal["stand", "walk", "sit", "lie"]

NOISE_G: Final = 0.01
#: Standard gravity, m/s^2: speeds and radii in the shapes below are turned into g with it.
G: Final = 9.81
_AXES: Final = np.eye(3)


def _unit(v: F) -> F:
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def _rotate(u: F, axis: F, deg: float) -> F:
    """Rodrigues rotation of ``u`` about unit ``axis``."""
    a = math.radians(deg)
    return _unit(u * math.cos(a) + np.cross(axis, u) * math.sin(a)
                 + axis * float(np.dot(axis, u)) * (1 - math.cos(a)))


@dataclass(frozen=True, slots=True)
class Body:
    """Gravity direction in the sensor's axes per posture, and a horizontal axis for sway."""

    upright: F
    sitting: F
    lying: F
    lateral: F

    @classmethod
    def draw(cls, rng: random.Random) -> Body:
        """A sensor clipped on at its own angle: one axis roughly vertical, tilted <= 15 deg."""
        axis = _AXES[rng.randrange(3)] * rng.choice((1.0, -1.0))
        lateral = _unit(np.cross(axis, _AXES[(int(np.argmax(np.abs(axis))) + 1) % 3]))
        forward = _unit(np.cross(axis, lateral))
        upright = _rotate(axis, lateral, rng.uniform(-15, 15))
        sitting = _rotate(upright, forward, rng.uniform(15, 25))   # pelvis tilts back
        lying = _rotate(upright, forward, rng.choice((1, -1)) * rng.uniform(80, 90))
        return cls(upright, sitting, lying, _unit(np.cross(upright, forward)))

    def tilted(self, deg: float) -> F:
        """Upright tilted ``deg`` the way sitting tilts it (negative: the other way)."""
        return _rotate(self.upright, _unit(np.cross(self.upright, self.sitting)), deg)

    def rolled(self, u: F, deg: float) -> F:
        """``u`` turned ``deg`` about the body's long axis (the upright direction, fixed in the
        sensor's axes, taken square to ``u``: lying is 80-90 deg from upright, and the bed
        keeps the long axis level): what rolling over does to a lying wearer's gravity
        direction."""
        axis = self.upright - u * float(np.dot(self.upright, u))
        return _rotate(u, _unit(axis), deg)

    def fallen(self, rng: random.Random) -> F:
        """Lying where a fall left the body: 70-100 deg from upright, any direction."""
        axis = _rotate(self.lateral, self.upright, rng.uniform(0, 360))
        return _rotate(self.upright, axis, rng.uniform(70, 100))


@dataclass(frozen=True, slots=True)
class Move:
    """The physical shape of a ``move`` segment; times in s from the segment's start.

    The orientation turns ``u0 -> u1`` over ``turn`` (``ease`` ``smooth``: a smoothstep, as in
    a controlled movement; ``in``: ``x^3``, slow at first and fastest when it stops, as a body
    toppling under gravity). The magnitude dips by ``dip_g`` under 1 g over ``dip`` = (start,
    length, ramp) (raised-cosine ramps; a ramp of half the length is a smooth bump, a short one
    a flat free fall): the speed gained is ``G * dip_g * (length - ramp)``. An impact of
    ``peak_g`` (magnitude at its top) is a half-sine of ``width_s`` centred on ``impact_s``;
    stopping a speed ``v`` that way takes ``width = v * pi / (2 G (peak - 1))`` (the area of the
    pulse is the speed lost), so :func:`impact_width` ties the two. ``bounce`` adds a second
    contact of that fraction of the excess 0.15 s later; ``ring_g`` a damped 7 Hz ringing (soft
    tissue, mattress). ``radius_m``: the sensor's distance from the axis the body turns about;
    the turn then adds the centripetal ``w^2 r`` (towards the axis) and tangential ``dw/dt r``
    accelerations of a rigid body, computed from the same turning profile.
    """

    turn: tuple[float, float]
    ease: Literal["smooth", "in"] = "smooth"
    dip: tuple[float, float, float] = (0.0, 0.0, 0.0)
    dip_g: float = 0.0
    impact_s: float = 0.0
    peak_g: float = 0.0
    width_s: float = 0.1
    bounce: float = 0.0
    ring_g: float = 0.0
    radius_m: float = 0.0


@dataclass(frozen=True, slots=True)
class Gait:
    """The shape of a ``gait`` segment (jogging, brisk walking, going downstairs fast).

    Steps at ``freq`` Hz. Each step is a stance of ``T - flight_s`` (``T = 1 / freq``) and a
    flight of ``flight_s`` during which the trunk reads ``floor_g`` (0.2-0.5 g while running:
    the body is airborne, arm swing and trunk rotation keep it off 0 g). The stance is an
    active half-sine plus a heel-strike transient of ``heel_s`` at its start; their heights are
    solved so the step's mean magnitude is 1 g (over a step the ground carries the body weight
    on average: the vertical impulse balances gravity) and the transient tops out at
    ``peak_g``. ``sway_g``: lateral sway at half the step rate.
    """

    freq: float
    flight_s: float
    floor_g: float
    peak_g: float
    heel_s: float = 0.04
    sway_g: float = 0.1


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of motion on ``[t0, t1)`` (true ms), turning from ``u0`` to ``u1``.

    ``amp``/``freq``: breathing (still), step oscillation (walk) or struggling (turn), g and Hz.
    ``depth``: how far the magnitude dips below 1 g while descending; ``peak``: the landing bump
    above 1 g (turn) or the impact peak in g (fall); ``descent_s``: fall time to the impact.
    ``move`` and ``gait`` segments take their whole shape from ``shape``
    (:class:`Move`, :class:`Gait`).
    """

    kind: SegmentKind
    t0: int
    t1: int
    u0: F
    u1: F
    amp: float = 0.0
    freq: float = 0.0
    depth: float = 0.0
    peak: float = 0.0
    descent_s: float = 0.0
    lateral: F | None = None
    shape: Move | Gait | None = None


def _pulse(s: F, start: float, width: float) -> F:
    """Half-sine bump of height 1 on [start, start + width]."""
    x = (s - start) / width
    return np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0.0, 1.0)), 0.0)


def _smooth(x: F) -> F:
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x * x * (3 - 2 * x), dtype=np.float64)


def _turning(u0: F, u1: F, frac: F) -> F:
    d = (1 - frac)[:, None] * u0 + frac[:, None] * u1
    return np.asarray(d / np.linalg.norm(d, axis=1, keepdims=True), dtype=np.float64)


def impact_width(speed_mps: float, peak_g: float) -> float:
    """Width (s) of a half-sine impact of ``peak_g`` that stops ``speed_mps``: its area above
    1 g is the speed lost, ``(peak - 1) G width 2 / pi = v``."""
    return speed_mps * math.pi / (2 * G * (peak_g - 1.0))


def _window(s: F, start: float, length: float, ramp: float) -> F:
    """1 on [start + ramp, start + length - ramp], raised-cosine ramps, 0 outside; area
    ``length - ramp``."""
    if length <= 0:
        return np.zeros_like(s)
    r = max(min(ramp, length / 2), 1e-6)
    up = np.clip((s - start) / r, 0.0, 1.0)
    down = np.clip((start + length - s) / r, 0.0, 1.0)
    return np.asarray(0.25 * (1 - np.cos(np.pi * up)) * (1 - np.cos(np.pi * down)),
                      dtype=np.float64)


def _render_move(seg: Segment, m: Move, s: F) -> F:
    a, b = m.turn
    span = max(b - a, 1e-6)
    x = np.clip((s - a) / span, 0.0, 1.0)
    inside = (s > a) & (s < b)
    if m.ease == "in":
        frac, dfrac, ddfrac = x**3, 3 * x**2, 6 * x
    else:
        frac, dfrac, ddfrac = _smooth(x), 6 * x * (1 - x), 6 - 12 * x
    d = _turning(seg.u0, seg.u1, frac)
    mag = 1.0 - m.dip_g * _window(s, *m.dip)
    if m.peak_g > 0:
        mag = (mag + (m.peak_g - 1.0) * _pulse(s, m.impact_s - m.width_s / 2, m.width_s)
               + m.bounce * (m.peak_g - 1.0) * _pulse(s, m.impact_s + 0.15, m.width_s))
        after = np.clip(s - m.impact_s - m.width_s / 2, 0.0, None)
        mag = mag + m.ring_g * np.exp(-after / 0.15) * np.sin(2 * np.pi * 7 * after)
    out = d * mag[:, None]
    axis = np.cross(seg.u0, seg.u1)
    if m.radius_m > 0 and float(np.linalg.norm(axis)) > 1e-6:
        axis = _unit(axis)
        theta = math.acos(float(np.clip(np.dot(seg.u0, seg.u1), -1.0, 1.0)))
        w = np.where(inside, theta * dfrac / span, 0.0)          # rad/s
        alpha = np.where(inside, theta * ddfrac / span**2, 0.0)  # rad/s^2
        inward = -seg.u0   # the axis lies below the sensor at the start (worn on the front)
        tangent = np.cross(axis, inward)
        out = out + (np.outer(w**2, inward) + np.outer(alpha, tangent)) * (m.radius_m / G)
    return np.asarray(out, dtype=np.float64)


def gait_heights(g: Gait) -> tuple[float, float]:
    """Heights (g above the floor) of the active stance half-sine and the heel transient that
    give a mean of 1 g per step and a top of ``peak_g`` (the transient never negative)."""
    period = 1.0 / g.freq
    contact = period - g.flight_s
    a = 2 / math.pi * contact / period          # mean of the active half-sine per unit height
    b = 2 / math.pi * g.heel_s / period         # ... of the transient
    c = math.sin(math.pi * g.heel_s / (2 * contact))  # active height at the transient's top
    heel = max(0.0, (g.peak_g - g.floor_g - c * (1 - g.floor_g) / a) / (1 - c * b / a))
    return (1 - g.floor_g - heel * b) / a, heel


def _render_gait(seg: Segment, g: Gait, s: F, dur: float) -> F:
    active, heel = gait_heights(g)
    contact = 1.0 / g.freq - g.flight_s
    tau = np.mod(s, 1.0 / g.freq)
    stance = tau < contact
    mag = g.floor_g + np.where(stance, active * np.sin(np.pi * np.clip(tau / contact, 0, 1)), 0.0)
    mag = mag + heel * _pulse(tau, 0.0, g.heel_s)
    env = np.clip(s, 0.0, 1.0) * np.clip(dur - s, 0.0, 1.0)   # starts and stops over 1 s
    mag = 1.0 + env * (mag - 1.0)
    out = seg.u0 * mag[:, None]
    if seg.lateral is not None:
        out = out + seg.lateral * (env * g.sway_g * np.sin(np.pi * g.freq * s))[:, None]
    return np.asarray(out, dtype=np.float64)


def render_segment(seg: Segment, t_ms: I64) -> F:
    """Acceleration (n, 3) in g of one segment at the given sample times (noise-free)."""
    s = (t_ms - seg.t0) / 1000.0
    dur = (seg.t1 - seg.t0) / 1000.0
    if isinstance(seg.shape, Move):
        return _render_move(seg, seg.shape, s)
    if isinstance(seg.shape, Gait):
        return _render_gait(seg, seg.shape, s, dur)
    if seg.kind == "still":
        mag = 1.0 + seg.amp * np.sin(2 * np.pi * seg.freq * s)
        return np.asarray(seg.u0 * mag[:, None], dtype=np.float64)
    if seg.kind == "walk":
        env = np.clip(s, 0.0, 1.0) * np.clip(dur - s, 0.0, 1.0)  # gait starts and stops
        w = 2 * np.pi * seg.freq * s
        mag = 1.0 + env * seg.amp * (np.sin(w) + 0.3 * np.sin(2 * w + 0.7))
        out = seg.u0 * mag[:, None]
        if seg.lateral is not None:
            out = out + seg.lateral * (env * 0.35 * seg.amp * np.sin(w / 2))[:, None]
        return np.asarray(out, dtype=np.float64)
    if seg.kind == "turn":
        d = _turning(seg.u0, seg.u1, _smooth(s / dur))
        mag = (1.0 - seg.depth * _pulse(s, 0.0, 0.6 * dur) + seg.peak * _pulse(s, 0.7 * dur, 0.15)
               + seg.amp * np.sin(2 * np.pi * 1.3 * s) * np.sin(np.pi * np.clip(s / dur, 0, 1)))
        return np.asarray(d * mag[:, None], dtype=np.float64)
    # fall: the impact peak is at s == descent_s exactly (a sample instant, see fall_segments)
    t_imp = seg.descent_s
    width = 0.08
    d = _turning(seg.u0, seg.u1, _smooth(s / t_imp))
    after = np.clip(s - t_imp, 0.0, None)
    mag = (1.0 - seg.depth * _pulse(s, 0.0, t_imp)
           + (seg.peak - 1.0) * _pulse(s, t_imp - width / 2, width)
           + 0.35 * seg.peak * _pulse(s, t_imp + 0.15, 0.06)            # bounce
           + 0.15 * np.exp(-after / 0.15) * np.sin(2 * np.pi * 7 * after))  # ringing
    return np.asarray(d * mag[:, None], dtype=np.float64)


class Renderer:
    """Evaluates a sorted, gap-free plan over consecutive blocks of sample times."""

    def __init__(self, segments: Sequence[Segment], rng: np.random.Generator) -> None:
        self._segs = list(segments)
        self._t0 = np.array([g.t0 for g in self._segs], dtype=np.int64)
        self._rng = rng
        self._i = 0

    def block(self, t_ms: I64) -> F:
        """Acceleration (n, 3) in g, with sensor noise, at times ``t_ms`` (ascending, and
        not before the previous block)."""
        out = np.empty((len(t_ms), 3))
        segs = self._segs
        while self._i + 1 < len(segs) and segs[self._i + 1].t0 <= t_ms[0]:
            self._i += 1
        lo = 0
        j = self._i
        while lo < len(t_ms):
            hi = (len(t_ms) if j + 1 >= len(segs)
                  else int(np.searchsorted(t_ms, segs[j + 1].t0, side="left")))
            if hi > lo:
                out[lo:hi] = render_segment(segs[j], t_ms[lo:hi])
            lo = hi
            j += 1
        out += self._rng.standard_normal(out.shape, dtype=np.float32) * NOISE_G
        return out


# -- plans ------------------------------------------------------------------------------------

def still(t0: int, t1: int, u: F, rng: random.Random) -> Segment:
    """Resting at ``u``: breathing only."""
    return Segment("still", t0, t1, u, u, amp=rng.uniform(0.003, 0.008),
                   freq=rng.uniform(0.2, 0.3))


def walk(t0: int, t1: int, body: Body, rng: random.Random) -> Segment:
    """Ordinary walking (well under 2 g)."""
    return Segment("walk", t0, t1, body.upright, body.upright, amp=rng.uniform(0.2, 0.35),
                   freq=rng.uniform(1.6, 2.0), lateral=body.lateral)


def transition(frm: Posture, to: Posture, t: int, body: Body,
                rng: random.Random) -> Segment | None:
    """Sit down, stand up, lie down or rise; None between standing and walking."""
    u = {"stand": body.upright, "walk": body.upright, "sit": body.sitting, "lie": body.lying}
    if frm in ("stand", "walk") and to in ("stand", "walk"):
        return None
    ms = {"sit": (1200, 2000), "lie": (2500, 4000)}.get(to, (1500, 2500) if frm == "sit"
                                                        else (3000, 5000))
    dur = rng.randint(*ms)
    if to == "sit":   # lowering onto a chair; one in ten drops heavily (still < 2 g)
        peak = rng.uniform(0.7, 0.85) if rng.random() < 0.1 else rng.uniform(0.3, 0.6)
        return Segment("turn", t, t + dur, u[frm], u[to], depth=rng.uniform(0.2, 0.35),
                       peak=peak)
    if to == "lie":
        return Segment("turn", t, t + dur, u[frm], u[to], depth=0.1, peak=0.1)
    return Segment("turn", t, t + dur, u[frm], u[to], peak=rng.uniform(0.1, 0.2),
                   amp=rng.uniform(0.02, 0.06))


def _dwell(posture: Posture, rng: random.Random) -> int:
    lo, hi = {"stand": (10, 90), "walk": (30, 480), "sit": (300, 2700),
              "lie": (1200, 3600)}[posture]
    return int(rng.uniform(lo, hi) * 1000)


def _next(posture: Posture, rng: random.Random, nap: bool) -> Posture:
    if posture != "stand":
        return "stand"
    u = rng.random()
    if nap and u < 0.5:
        return "lie"
    return "walk" if u < 0.55 else "sit" if u < 0.97 else "lie"


def ordinary(body: Body, rng: random.Random, t0: int, t1: int, posture: Posture,
             nap: tuple[int, int] | None = None) -> tuple[list[Segment], Posture]:
    """Everyday activity on ``[t0, t1)`` starting in ``posture``; returns the plan and the
    posture it ends in. ``nap`` (true ms): when a lie-down on the bed is likely."""
    u = {"stand": body.upright, "walk": body.upright, "sit": body.sitting, "lie": body.lying}
    segs: list[Segment] = []
    t = t0
    while t < t1:
        end = min(t1, t + _dwell(posture, rng))
        segs.append(walk(t, end, body, rng) if posture == "walk"
                    else still(t, end, u[posture], rng))
        t = end
        if t >= t1:
            break
        nxt = _next(posture, rng, nap is not None and nap[0] <= t < nap[1])
        tr = transition(posture, nxt, t, body, rng)
        if tr is not None:
            if tr.t1 >= t1:  # no half transitions: stay put until the end instead
                segs[-1] = replace(segs[-1], t1=t1)
                break
            segs.append(tr)
            t = tr.t1
        posture = nxt
    return segs, posture


def fall_segments(body: Body, rng: random.Random, impact_ms: int, *, get_up: bool,
                  lying_s: float | None, peak_g: float | None) -> tuple[list[Segment],
                                                                        dict[str, Any]]:
    """A fall whose impact peak lands on ``impact_ms`` (a sample instant), through getting
    up; starts at ``impact_ms - descent`` upright and ends standing. Returns the segments and
    the label detail."""
    descent_ms = rng.randint(500, 800)
    peak = peak_g if peak_g is not None else rng.uniform(3.0, 6.0)
    fallen = body.fallen(rng)
    t0 = impact_ms - descent_ms
    settle = impact_ms + 1000
    lie_ms = int(1000 * (rng.uniform(4, 10) if get_up else
                         (lying_s if lying_s is not None else rng.uniform(120, 600))))
    rise = rng.randint(3000, 5000) if get_up else rng.randint(5000, 8000)  # helped up: slower
    segs = [
        Segment("fall", t0, settle, body.upright, fallen, depth=rng.uniform(0.6, 0.9),
                peak=peak, descent_s=descent_ms / 1000.0),
        still(settle, impact_ms + lie_ms, fallen, rng),
        Segment("turn", impact_ms + lie_ms, impact_ms + lie_ms + rise, fallen, body.upright,
                peak=0.15, amp=rng.uniform(0.1, 0.2)),
    ]
    detail = {"peak_g": round(peak, 2), "descent_ms": descent_ms, "get_up": get_up,
              "lying_s": lie_ms / 1000.0}
    return segs, detail


def lead_in(body: Body, rng: random.Random, posture: Posture, t1: int) -> tuple[int,
                                                                                  list[Segment]]:
    """What comes before a fall ending at ``t1``: rising if needed, then 3-8 s of standing or
    walking (a trip). Returns when the lead-in starts and its segments."""
    upright = rng.randint(3000, 8000)
    start = t1 - upright
    segs: list[Segment] = []
    tr = transition(posture, "stand", 0, body, rng)
    if tr is not None:
        dur = tr.t1 - tr.t0
        start -= dur
        segs.append(replace(tr, t0=start, t1=start + dur))
    walking = rng.random() < 0.6
    segs.append(walk(t1 - upright, t1, body, rng) if walking
                else still(t1 - upright, t1, body.upright, rng))
    return start, segs
