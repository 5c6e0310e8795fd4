"""Bracelets and watches: the wearables, on the wrist and carried along.

Both follow a :class:`~device_sim.motion.Track` of the day's walks plus any scripted wander,
run on a nightly-charged :class:`~device_sim.battery.Battery`, and turn scripted incidents into
events planned up front (SOS presses, device-detected falls, the strap taken off and put back)
or into labels found in the readings (low battery, high heart rate). A bracelet reports fixes,
more often when moving, and heartbeats; a watch reports fixes and vitals (heart rate, SpO2,
blood pressure, steps). Taken off, a wearable lies where it was removed until put back on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from device_sim.battery import Battery, battery_low, make_battery
from device_sim.devices import NEVER, SUPERVISION, DeviceModel, Emitter, Planned, Run
from device_sim.fleet import DeviceSpec, py_rng
from device_sim.motion import Leg, Receiver, Track, leg_through, loop_walk, wander_leg
from device_sim.scenario import (
    DeviceFallIncident,
    LowBatteryIncident,
    SosIncident,
    StrapRemovedIncident,
    TachycardiaIncident,
    WanderIncident,
    incident_type,
)
from device_sim.types import SimReading


class _StreamState:
    """Per-generator state of a wearable (a model can have several generators at once)."""

    __slots__ = ("frozen",)

    def __init__(self) -> None:
        self.frozen: tuple[float, float, float, bool] | None = None


class _Wearable(DeviceModel):
    """What bracelets and watches share: a track, a battery, button presses, wear events."""

    DAYS_PER_CHARGE: tuple[float, float] = (2.0, 3.0)
    CHARGE_MINUTE: tuple[float, float] = (20 * 60, 22 * 60)
    CHARGE_H: float = 2.0

    def __init__(self, run: Run, spec: DeviceSpec, incidents: Sequence[Planned]) -> None:
        super().__init__(run, spec, incidents)
        self._legs: list[Leg] = []
        self._busy: list[tuple[int, int]] = []
        events: list[tuple[int, int, str, dict[str, Any]]] = []
        for p in self.incidents:
            inc = p.incident
            rng = py_rng(run.seed, spec.id, "incident", incident_type(inc), p.at_ms)
            if isinstance(inc, SosIncident):
                presses = inc.presses or (1 if rng.random() < 0.6 else rng.randint(2, 3))
                fix = inc.fix if inc.fix is not None else rng.random() < 0.8
                t = p.at_ms
                for _ in range(presses):  # a frightened person presses again and again
                    events.append((t, len(events), "sos", {"fix": fix}))
                    t += rng.randint(3000, 10000)
                self._pend(p, "sos", "known", p.at_ms, presses=presses, fix=fix)
            elif isinstance(inc, WanderIncident):
                leg, cross, detail = wander_leg(spec.person, run.clock, rng, p, inc)
                self._legs.append(leg)
                self._busy.append((leg.t[0] - 600_000, leg.t[-1] + 600_000))
                self._pend(p, "geofence_exit", "known", cross, **detail)
            elif isinstance(inc, DeviceFallIncident):
                conf = inc.confidence if inc.confidence is not None else rng.uniform(0.7, 0.95)
                events.append((p.at_ms, len(events), "fall", {"confidence": round(conf, 2)}))
                self._pend(p, "fall", "known", p.at_ms, confidence=round(conf, 2))
            elif isinstance(inc, StrapRemovedIncident):
                events.append((p.at_ms, len(events), "wear", {"worn": False}))
                events.append((p.at_ms + int(inc.off_s * 1000), len(events), "wear",
                               {"worn": True}))
                self._pend(p, "device_removed", "known", p.at_ms, off_s=inc.off_s)
            elif isinstance(inc, LowBatteryIncident):
                self._pend(p, "low_battery", "first", match=battery_low, drain_s=inc.drain_s)
            elif isinstance(inc, TachycardiaIncident):
                self._pend(p, "heart_rate", "first", match=_high_hr, readings=inc.readings)
        self._events = sorted(events)
        traits = py_rng(run.seed, spec.id, "traits")
        self._rssi = traits.uniform(-105.0, -70.0)
        self._bed = traits.uniform(21.5 * 60, 22.5 * 60)
        self._wake = traits.uniform(5.5 * 60, 6.5 * 60)

    def _day_legs(self, day: int) -> list[Leg]:
        raise NotImplementedError

    def _scheduled(self, emit: Emitter, track: Track, rx: Receiver, st: _StreamState,
                   timers: list[int], on_timer: Callable[[int, int], Iterator[SimReading]]
                   ) -> Iterator[SimReading]:
        """The readings in time order: scripted events (presses, falls, wear) first at a tie,
        then ``timers`` in list order; ``on_timer(i, t)`` yields timer ``i``'s readings at
        ``t`` and moves ``timers[i]`` on."""
        events, k = self._events, 0
        while True:
            t_ev = events[k][0] if k < len(events) else NEVER
            t = min(*timers, t_ev)
            if t >= self.run.end_ms:
                return
            if t == t_ev:
                _, _, kind, fields = events[k]
                k += 1
                yield self._event(emit, t, kind, fields, self._where(track, t, st), rx, st)
            else:
                yield from on_timer(timers.index(t), t)

    def _track(self) -> list[Leg]:
        legs = list(self._legs)
        lo, hi = self.run.start_ms - 4 * 3_600_000, self.run.end_ms
        for day in self.run.days():
            for g in self._day_legs(day):
                if g.t[-1] < lo or g.t[0] > hi:
                    continue
                if not any(a < g.t[-1] and g.t[0] < b for a, b in self._busy):
                    legs.append(g)
        return legs

    def _battery(self) -> Battery:
        return make_battery(self.run, self.spec, self.incidents, days=self.DAYS_PER_CHARGE,
                            charge_minute=self.CHARGE_MINUTE, charge_h=self.CHARGE_H)

    def _asleep(self, t: int) -> bool:
        m = self.run.clock.minute(t)
        return m >= self._bed or m < self._wake

    def _where(self, track: Track, t: int, st: _StreamState) -> tuple[float, float, float, bool]:
        pos = track.at(t)
        return pos if st.frozen is None else st.frozen

    def _event(self, emit: Emitter, t: int, kind: str, fields: dict[str, Any],
               pos: tuple[float, float, float, bool], rx: Receiver,
               st: _StreamState) -> SimReading:
        """An SOS press, a device-detected fall, or a wear change."""
        if kind == "wear":
            # Taken off: the device lies where it was removed until it is put back on.
            st.frozen = (pos[0], pos[1], 0.0, pos[3]) if not fields["worn"] else None
            return emit(t, "wear", fields)
        fix = rx.fix(*pos)
        if kind == "sos":
            body = ({"lat": fix["lat"], "lon": fix["lon"], "accuracy_m": fix["accuracy_m"]}
                    if fields["fix"] else {})
            return emit(t, "sos", body)
        return emit(t, "fall", {"confidence": fields["confidence"], "lat": fix["lat"],
                                "lon": fix["lon"]})


def _high_hr(r: SimReading) -> bool:
    hr = r.body.get("heart_rate_bpm")
    return (r.body["type"] == "vitals" and hr is not None
            and hr > SUPERVISION.heart_rate_high_bpm)


class Bracelet(_Wearable):
    """A GPS bracelet for a person with dementia: fixes, heartbeats, wear, SOS.

    At home most of the day (indoor Wi-Fi/cell fixes), 0-3 strolls a day inside the home zone,
    fixes every ``bracelet_fix_still_s`` at rest and ``bracelet_fix_moving_s`` when moving,
    charged at the bedside every night (worn on the charger: no wear events then).
    """

    def _day_legs(self, day: int) -> list[Leg]:
        rng = py_rng(self.run.seed, self.spec.id, "day", day)
        clock = self.run.clock
        legs = []
        t = clock.at(day, rng.uniform(8.5 * 60, 10 * 60))
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
            leg = loop_walk(rng, t, self.spec.person.walk_radius_m)
            if leg.t[-1] > clock.at(day, 18 * 60):
                break
            legs.append(leg)
            t = leg.t[-1] + int(rng.uniform(60, 180) * 60_000)
        return legs

    def _stream(self, emit: Emitter) -> Iterator[SimReading]:
        f, run = self.run.fleet, self.run
        rng = py_rng(run.seed, self.spec.id, "readings")
        rx = Receiver(py_rng(run.seed, self.spec.id, "fixes"), self.spec.person)
        track, battery, st = Track(self._track()), self._battery(), _StreamState()
        timers = [run.start_ms + int(rng.uniform(0, f.bracelet_fix_still_s) * 1000),  # fix
                  run.start_ms + int(rng.uniform(0, f.heartbeat_s) * 1000)]          # heartbeat

        def on_timer(i: int, t: int) -> Iterator[SimReading]:
            if i == 0:
                x, y, v, outdoors = self._where(track, t, st)
                fix = rx.fix(x, y, v, outdoors)
                fix["battery_pct"] = int(battery.level(t))
                yield emit(t, "location", fix)
                step = (f.bracelet_fix_moving_s * rng.uniform(0.8, 1.2) if v > 0.2
                        else f.bracelet_fix_still_s * rng.uniform(0.9, 1.1))
                timers[0] = t + int(step * 1000)
            else:
                yield emit(t, "heartbeat", {"battery_pct": int(battery.level(t)),
                                            "rssi_dbm": round(self._rssi + rng.gauss(0, 3))})
                timers[1] += int(f.heartbeat_s * 1000)

        yield from self._scheduled(emit, track, rx, st, timers, on_timer)


class Watch(_Wearable):
    """A health watch for an independent elder: vitals, fixes, SOS, its own fall detection.

    Heart rate has a daily rhythm (about 7 bpm lower asleep, ~18 bpm higher walking), SpO2
    95-99 %, steps accumulate while awake and reset at local midnight; one outing most days
    (300-1500 m to a market or park, 20-60 min there). Charged for 1.5 h in the evening, off
    the wrist: no vitals then, fixes go on.
    """

    DAYS_PER_CHARGE = (1.5, 2.0)
    CHARGE_MINUTE = (19.5 * 60, 20.5 * 60)
    CHARGE_H = 1.5

    def __init__(self, run: Run, spec: DeviceSpec, incidents: Sequence[Planned]) -> None:
        super().__init__(run, spec, incidents)
        traits = py_rng(run.seed, spec.id, "vitals-traits")
        self._rest_hr = traits.uniform(60.0, 78.0)
        self._cadence = traits.uniform(90.0, 110.0)   # steps per minute walking
        self._systolic = traits.uniform(120.0, 145.0)
        #: [start, readings left, bpm] per tachycardia episode, copied by each generator.
        self._tachy: list[list[int]] = []
        for p in self.incidents:
            if isinstance(p.incident, TachycardiaIncident):
                bpm = p.incident.bpm or py_rng(run.seed, spec.id, "bpm", p.at_ms).uniform(125, 150)
                self._tachy.append([p.at_ms, p.incident.readings, round(bpm)])

    def _day_legs(self, day: int) -> list[Leg]:
        rng = py_rng(self.run.seed, self.spec.id, "day", day)
        clock = self.run.clock
        legs = []
        if rng.random() < 0.8:
            dist, a = rng.uniform(300.0, 1500.0), rng.uniform(0.0, 2 * math.pi)
            pts = [(0.0, 0.0)]
            for frac in (0.35, 0.7, 1.0):
                jx, jy = (rng.gauss(0.0, 40.0), rng.gauss(0.0, 40.0)) if frac < 1 else (0, 0)
                pts.append((frac * dist * math.cos(a) + jx, frac * dist * math.sin(a) + jy))
            pts += pts[-2::-1]
            legs.append(leg_through(clock.at(day, rng.uniform(8 * 60, 15 * 60)), pts,
                                    rng.uniform(0.9, 1.2), pauses={3: rng.uniform(1200, 3600)}))
        if rng.random() < 0.3:
            legs.append(loop_walk(rng, clock.at(day, rng.uniform(17 * 60, 18.5 * 60)), 200.0))
        return legs

    def _stream(self, emit: Emitter) -> Iterator[SimReading]:
        f, run = self.run.fleet, self.run
        rng = py_rng(run.seed, self.spec.id, "readings")
        rx = Receiver(py_rng(run.seed, self.spec.id, "fixes"), self.spec.person)
        legs = self._track()
        track, pedometer, battery = Track(legs), Track(legs), self._battery()
        st = _StreamState()
        timers = [run.start_ms + int(rng.uniform(0, f.watch_fix_s) * 1000),      # fix
                  run.start_ms + int(rng.uniform(0, f.watch_vitals_s) * 1000)]   # vitals
        steps = _Steps(run, pedometer, self._asleep, self._cadence)
        n_vit = 0
        tachy = [list(e) for e in self._tachy]

        def on_timer(i: int, t: int) -> Iterator[SimReading]:
            nonlocal n_vit
            if i == 0:
                fix = rx.fix(*self._where(track, t, st))
                fix["battery_pct"] = int(battery.level(t))
                yield emit(t, "location", fix)
                timers[0] = t + int(f.watch_fix_s * rng.uniform(0.95, 1.05) * 1000)
                return
            timers[1] += int(f.watch_vitals_s * 1000)
            count = steps.at(t)
            if st.frozen is not None or battery.charging(t):
                return  # off the wrist: nothing to measure
            moving = track.at(t)[2] > 0.3
            yield emit(t, "vitals", self._vitals(rng, t, moving, count, n_vit, tachy))
            n_vit += 1

        yield from self._scheduled(emit, track, rx, st, timers, on_timer)

    def _vitals(self, rng: random.Random, t: int, moving: bool, steps: int, n: int,
                tachy: list[list[int]]) -> dict[str, Any]:
        asleep = self._asleep(t)
        hr = self._rest_hr - (7.0 if asleep else 0.0) + (18.0 if moving else 0.0)
        hr = min(112.0, max(48.0, hr + rng.gauss(0.0, 2.5)))
        if tachy and t >= tachy[0][0]:
            hr = max(121.0, tachy[0][2] + rng.gauss(0.0, 3.0))
            tachy[0][1] -= 1
            if tachy[0][1] <= 0:
                tachy.pop(0)
        out: dict[str, Any] = {
            "heart_rate_bpm": round(hr),
            "spo2_pct": min(99, max(95, round(rng.gauss(96.6 if asleep else 97.3, 0.8)))),
            "steps": steps}
        if n % 6 == 0:
            out["body_temp_c"] = round(rng.gauss(36.5, 0.2), 1)
        if n % 24 == 0:
            out["systolic_mmhg"] = round(rng.gauss(self._systolic, 6.0))
            out["diastolic_mmhg"] = round(rng.gauss(self._systolic * 0.6, 4.0))
        return out


class _Steps:
    """The watch's pedometer: steps since local midnight, integrated minute by minute."""

    def __init__(self, run: Run, track: Track, asleep: Callable[[int], bool],
                 cadence: float) -> None:
        self._clock, self._track, self._asleep, self._cadence = run.clock, track, asleep, cadence
        day = self._clock.day(run.start_ms)
        self._t, self._n = self._clock.at(day, 0), 0.0
        self._midnight = self._clock.at(day + 1, 0)

    def at(self, t: int) -> int:
        """Steps counted today up to ``t`` (non-decreasing)."""
        track, asleep = self._track, self._asleep
        tt, n = self._t, self._n
        while tt < t:
            if tt >= self._midnight:
                n = 0.0
                self._midnight = self._clock.at(self._clock.day(tt) + 1, 0)
            nxt = min(t, tt + 60_000, self._midnight)
            if track.at(tt)[2] > 0.3:
                n += self._cadence * (nxt - tt) / 60_000
            elif not asleep(tt):
                n += 3.0 * (nxt - tt) / 60_000      # pottering about the house
            tt = nxt
        if tt >= self._midnight:
            n = 0.0
            self._midnight = self._clock.at(self._clock.day(tt) + 1, 0)
        self._t, self._n = tt, n
        return int(n)
