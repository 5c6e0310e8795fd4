"""Fall sensors: a waist-worn accelerometer streaming raw 1 s chunks, and its heartbeats.

Worn by day and charged at night; a fleet fraction (``night_wear``) is worn at night too,
pendant-style, and charged for an hour after getting up. Postures are planned one worn span at a
time (the heavy part of the simulator) by :mod:`device_sim.plans`: ordinary days or nights in
bed, scripted falls (:mod:`device_sim.falls`) and everyday activities
(:mod:`device_sim.activities`, at the fleet's ``activities`` rates) spliced in; rendered lazily
by :mod:`device_sim.signals`, ``_BLOCK_CHUNKS`` chunks at a time, as the generator is consumed.
An activity that switches the sensor off leaves a hole in the accelerometer stream (heartbeats
go on): the last chunk before it is cut short, right after a step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Final, Literal

import numpy as np

from device_sim import falls, plans, signals
from device_sim.battery import battery_low, make_battery
from device_sim.devices import DeviceModel, Emitter, Planned, Run
from device_sim.fleet import DeviceSpec, np_rng, py_rng
from device_sim.scenario import FallIncident, LowBatteryIncident
from device_sim.types import SimReading

_BLOCK_CHUNKS: Final = 60
_HOUR_MS: Final = 3_600_000
Span = tuple[int, int, Literal["day", "night"]]


class FallSensor(DeviceModel):
    """A waist-worn fall sensor streaming raw accelerometer chunks (1 s each).

    Worn from getting up (06:30-07:30) to bedtime (21:00-22:00), charged at night off the body
    (heartbeats only); signals from :mod:`device_sim.signals`. A scripted fall at night puts the
    sensor on for the incident (the wearer got up to go to the toilet). Chunks sit on a 1 s grid
    with a per-device phase; the impact of a scripted fall lands on a sample instant.
    """

    def __init__(self, run: Run, spec: DeviceSpec, incidents: Sequence[Planned]) -> None:
        super().__init__(run, spec, incidents)
        self.rate = run.fleet.accel_rate_hz
        self._offsets = np.rint(np.arange(self.rate) * (1000.0 / self.rate)).astype(np.int64)
        self._phase = py_rng(run.seed, spec.id, "phase").randrange(1000)
        traits = py_rng(run.seed, spec.id, "traits")
        self.body = signals.Body.draw(traits)
        self._wake = traits.uniform(6.5 * 60, 7.5 * 60)
        self._bed = traits.uniform(21 * 60, 22 * 60)
        wear = run.fleet.night_wear
        self.night_worn = wear > 0 and py_rng(run.seed, spec.id, "night_wear").random() < wear
        self._falls: list[plans.Insert] = []
        for p in self.incidents:
            inc = p.incident
            if isinstance(inc, FallIncident):
                impact = self.sample_at(p.at_ms)
                rng = py_rng(run.seed, spec.id, "incident", p.at_ms)
                segs, detail = falls.fall_of_kind(inc.kind, self.body, rng, impact,
                                                  get_up=inc.get_up, lying_s=inc.lying_s,
                                                  peak_g=inc.peak_g)
                self._falls.append(plans.Insert(inc.kind, segs, falls.START[inc.kind]))
                self._pend(p, "fall", "known", impact, **detail)
            elif isinstance(inc, LowBatteryIncident):
                self._pend(p, "low_battery", "first", match=battery_low, drain_s=inc.drain_s)

    def sample_at(self, t: int) -> int:
        """The sample instant nearest ``t`` on this device's chunk grid (earlier on a tie)."""
        c = t - (t - self._phase) % 1000
        candidates = np.append(c + self._offsets, c + 1000)
        return int(candidates[int(np.argmin(np.abs(candidates - t)))])

    def worn(self) -> list[tuple[int, int]]:
        """True-time intervals the sensor is on the body (unclipped)."""
        return [(a, b) for a, b, _ in self.spans()]

    def spans(self) -> list[Span]:
        """Worn spans ``(a, b, "day" | "night")`` in time order; a night-worn sensor's spans
        are contiguous but for the hour it charges after its wearer gets up."""
        if self.night_worn:
            return self._night_worn_spans()
        clock, run = self.run.clock, self.run
        spans = []
        for day in run.days():
            rng = py_rng(run.seed, self.spec.id, "day", day)
            spans.append((clock.at(day, self._wake + rng.uniform(-20, 20)),
                          clock.at(day, self._bed + rng.uniform(-20, 20))))
        spans += [(f.t0 - 600_000, f.t1 + 900_000) for f in self._falls]
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return [(a, b, "day") for a, b in merged]

    def _night_worn_spans(self) -> list[Span]:
        clock, run = self.run.clock, self.run
        days = [*run.days(), run.days()[-1] + 1]
        times = []
        for day in days:
            rng = py_rng(run.seed, self.spec.id, "day", day)
            times.append((clock.at(day, self._wake + rng.uniform(-20, 20)),
                          clock.at(day, self._bed + rng.uniform(-20, 20))))
        starts = [wake + _HOUR_MS for wake, _ in times]
        for f in self._falls:   # a fall while charging: it was back on already
            for i, (wake, _) in enumerate(times):
                if wake - _HOUR_MS <= f.t0 < starts[i]:
                    starts[i] = min(starts[i], f.t0 - 600_000)
        out: list[Span] = []
        for i in range(len(days) - 1):
            bed, nxt = times[i][1], min(times[i + 1][0], starts[i + 1])
            out.append((starts[i], bed, "day"))
            if nxt > bed:
                out.append((bed, nxt, "night"))
        return out

    def _plan(self, a: int, b: int, mode: Literal["day", "night"] = "day",
              ) -> tuple[list[signals.Segment], list[tuple[int, int]]]:
        """Postures over the worn span ``[a, b)``, falls and activities spliced in; and the
        windows in which the sensor sends nothing."""
        rng = py_rng(self.run.seed, self.spec.id, "plan", a)
        if mode == "night":
            segs, _ = plans.night(self.body, rng, a, b, self._falls)
            return segs, []
        day = self.run.clock.day(a)
        nap = (self.run.clock.at(day, 12.5 * 60), self.run.clock.at(day, 14.5 * 60))
        inserts = list(self._falls)
        rates = self.run.fleet.activities.rates()
        if rates:
            inserts += plans.draw_activities(
                self.body, py_rng(self.run.seed, self.spec.id, "activities", a), a, b,
                rates, [(f.t0 - 200_000, f.t1) for f in self._falls])
        segs, _ = plans.day(self.body, rng, a, b, inserts, nap)
        return segs, [i.off for i in inserts if i.off is not None]

    def _chunks(self, a: int, b: int, mode: Literal["day", "night"],
                ) -> Iterator[tuple[int, list[list[float]]]]:
        """(true ms, [x, y, z]) of the chunks in ``[a, b)`` within the run, lazily by block."""
        run = self.run
        lo, hi = max(a, run.start_ms), min(b, run.end_ms)
        first = lo + (self._phase - lo) % 1000
        starts = np.arange(first, hi - 999, 1000, dtype=np.int64)
        if not len(starts):
            return
        plan, offs = self._plan(a, b, mode)
        cut: dict[int, int] = {}   # chunk start -> samples it keeps (the stream stops mid-chunk)
        for x, y in offs:
            inside = (starts + 1000 > x) & (starts < y)
            for c in starts[inside & (starts < x)].tolist():
                cut[c] = int(np.searchsorted(c + self._offsets, x))
            starts = starts[~inside | (starts < x)]
        renderer = signals.Renderer(plan, np_rng(run.seed, self.spec.id, "noise", a))
        r = self.rate
        for k in range(0, len(starts), _BLOCK_CHUNKS):
            block = starts[k:k + _BLOCK_CHUNKS]
            t = (block[:, None] + self._offsets[None, :]).ravel()
            xyz = np.round(renderer.block(t), 3).reshape(len(block), r, 3).transpose(0, 2, 1)
            # Python floats are made chunk by chunk, as they are consumed: a whole block of
            # them alive per device (20 devices interleaved) doubled the cost in allocation.
            for i, c in enumerate(block.tolist()):
                n = cut.get(c, r)
                if n:
                    yield c, xyz[i, :, :n].tolist()

    def _stream(self, emit: Emitter) -> Iterator[SimReading]:
        run = self.run
        rng = py_rng(run.seed, self.spec.id, "readings")
        charge = ((self._wake - 5, self._wake + 5) if self.night_worn
                  else (self._bed + 5, self._bed + 30))
        battery = make_battery(run, self.spec, self.incidents, days=(3.0, 5.0),
                               charge_minute=charge, charge_h=1.0 if self.night_worn else 3.0)
        hb_ms = int(run.fleet.heartbeat_s * 1000)
        t_hb = run.start_ms + int(rng.uniform(0, hb_ms))
        rssi = rng.uniform(-95.0, -65.0)
        rate = self.rate
        chunks = itertools.chain.from_iterable(
            self._chunks(a, b, mode) for a, b, mode in self.spans()
            if a < run.end_ms and b > run.start_ms)
        # The hot loop of the whole simulator: one pass per second of accelerometer data.
        for t, (x, y, z) in chunks:
            while t_hb <= t:
                yield emit(t_hb, "heartbeat", {"battery_pct": int(battery.level(t_hb)),
                                               "rssi_dbm": round(rssi + rng.gauss(0, 3))})
                t_hb += hb_ms
            yield emit.accel(t, rate, x, y, z)
        while t_hb < run.end_ms:
            yield emit(t_hb, "heartbeat", {"battery_pct": int(battery.level(t_hb)),
                                           "rssi_dbm": round(rssi + rng.gauss(0, 3))})
            t_hb += hb_ms

