"""Fall sensors: a waist-worn accelerometer streaming raw 1 s chunks, and its heartbeats.

Worn by day and charged at night. Postures are planned one worn interval at a time (the heavy
part of the simulator), scripted falls spliced in, and rendered lazily by
:mod:`device_sim.signals`, ``_BLOCK_CHUNKS`` chunks at a time, as the generator is consumed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np

from device_sim import signals
from device_sim.battery import battery_low, make_battery
from device_sim.devices import DeviceModel, Emitter, Planned, Run
from device_sim.fleet import DeviceSpec, np_rng, py_rng
from device_sim.scenario import FallIncident, LowBatteryIncident
from device_sim.types import SimReading

_BLOCK_CHUNKS: Final = 60


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
        self._falls: list[list[signals.Segment]] = []
        for p in self.incidents:
            inc = p.incident
            if isinstance(inc, FallIncident):
                impact = self.sample_at(p.at_ms)
                rng = py_rng(run.seed, spec.id, "incident", p.at_ms)
                segs, detail = signals.fall_segments(self.body, rng, impact, get_up=inc.get_up,
                                                     lying_s=inc.lying_s, peak_g=inc.peak_g)
                self._falls.append(segs)
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
        clock, run = self.run.clock, self.run
        spans = []
        for day in run.days():
            rng = py_rng(run.seed, self.spec.id, "day", day)
            spans.append((clock.at(day, self._wake + rng.uniform(-20, 20)),
                          clock.at(day, self._bed + rng.uniform(-20, 20))))
        spans += [(f[0].t0 - 600_000, f[-1].t1 + 900_000) for f in self._falls]
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def _plan(self, a: int, b: int) -> list[signals.Segment]:
        """Postures over the worn interval ``[a, b)``, falls spliced in."""
        rng = py_rng(self.run.seed, self.spec.id, "plan", a)
        day = self.run.clock.day(a)
        nap = (self.run.clock.at(day, 12.5 * 60), self.run.clock.at(day, 14.5 * 60))
        segs: list[signals.Segment] = []
        t = a
        posture: signals.Posture = "stand"
        for fall in (f for f in self._falls if a <= f[0].t0 < b):
            more, posture = signals.ordinary(self.body, rng, t, max(t, fall[0].t0 - 14_000),
                                             posture, nap)
            segs += more
            lead_start, lead = signals.lead_in(self.body, rng, posture, fall[0].t0)
            if segs:
                segs[-1] = _until(segs[-1], lead_start)
            segs += lead + fall
            t, posture = fall[-1].t1, "stand"
        more, _ = signals.ordinary(self.body, rng, t, b, posture, nap)
        return segs + more

    def _chunks(self, a: int, b: int) -> Iterator[tuple[int, list[list[float]]]]:
        """(true ms, [x, y, z]) of the chunks in ``[a, b)`` within the run, lazily by block."""
        run = self.run
        lo, hi = max(a, run.start_ms), min(b, run.end_ms)
        first = lo + (self._phase - lo) % 1000
        starts = np.arange(first, hi - 999, 1000, dtype=np.int64)
        if not len(starts):
            return
        renderer = signals.Renderer(self._plan(a, b), np_rng(run.seed, self.spec.id, "noise", a))
        r = self.rate
        for k in range(0, len(starts), _BLOCK_CHUNKS):
            block = starts[k:k + _BLOCK_CHUNKS]
            t = (block[:, None] + self._offsets[None, :]).ravel()
            xyz = np.round(renderer.block(t), 3).reshape(len(block), r, 3).transpose(0, 2, 1)
            # Python floats are made chunk by chunk, as they are consumed: a whole block of
            # them alive per device (20 devices interleaved) doubled the cost in allocation.
            for i, c in enumerate(block.tolist()):
                yield c, xyz[i].tolist()

    def _stream(self, emit: Emitter) -> Iterator[SimReading]:
        run = self.run
        rng = py_rng(run.seed, self.spec.id, "readings")
        battery = make_battery(run, self.spec, self.incidents, days=(3.0, 5.0),
                               charge_minute=(self._bed + 5, self._bed + 30), charge_h=3.0)
        hb_ms = int(run.fleet.heartbeat_s * 1000)
        t_hb = run.start_ms + int(rng.uniform(0, hb_ms))
        rssi = rng.uniform(-95.0, -65.0)
        rate = self.rate
        chunks = itertools.chain.from_iterable(
            self._chunks(a, b) for a, b in self.worn() if a < run.end_ms and b > run.start_ms)
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


def _until(seg: signals.Segment, t1: int) -> signals.Segment:
    return signals.Segment(seg.kind, seg.t0, t1, seg.u0, seg.u1, seg.amp, seg.freq, seg.depth,
                           seg.peak, seg.descent_s, seg.lateral)
