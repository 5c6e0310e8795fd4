"""Home sensors: the door, smoke, gas, water and bed-exit sensors of a home kit.

Each sensor of a kit is its own model, reporting through the kit's gateway: a daily heartbeat,
ordinary door openings by day, and alarms for scripted incidents, each planned up front from
the sensor's own generators (the whole run's alarms are one short sorted list).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from device_sim.devices import NEVER, DeviceModel, Emitter, Planned, Run
from device_sim.fleet import DeviceSpec, py_rng
from device_sim.scenario import HomeAlarmIncident
from device_sim.types import SimReading


class HomeSensor(DeviceModel):
    """One sensor of a home kit, reporting through the kit's gateway.

    A daily heartbeat (coin cell, no low battery); the door sensor reports 2-8 openings a day
    between 07:30 and 20:30 (never at night, where the detectors alarm on doors); alarms on
    scripted incidents: smoke, gas and water repeat ``active: true`` every 1-3 min while the
    condition lasts (as detectors do) and clear with ``active: false``; a bed exit is one
    ``active: true`` and an ``active: false`` when the person is back in bed.
    """

    def __init__(self, run: Run, spec: DeviceSpec, incidents: Sequence[Planned]) -> None:
        super().__init__(run, spec, incidents)
        for p in self.incidents:
            if isinstance(p.incident, HomeAlarmIncident):
                self._pend(p, "home_alarm", "known", p.at_ms, sensor=spec.sensor,
                           duration_s=p.incident.duration_s)

    def _alarms(self) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        run = self.run
        if self.spec.sensor == "door":
            for day in run.days():
                rng = py_rng(run.seed, self.spec.id, "day", day)
                for _ in range(rng.randint(2, 8)):
                    t = run.clock.at(day, rng.uniform(7.5 * 60, 20.5 * 60))
                    out += [(t, True), (t + int(rng.uniform(5, 120) * 1000), False)]
        for p in self.incidents:
            inc = p.incident
            if not isinstance(inc, HomeAlarmIncident):
                continue
            end = p.at_ms + int(inc.duration_s * 1000)
            rng = py_rng(run.seed, self.spec.id, "incident", p.at_ms)
            t = p.at_ms
            while t < end:
                out.append((t, True))
                if self.spec.sensor == "bed_exit":
                    break
                t += int(rng.uniform(60, 180) * 1000)
            out.append((end, False))
        return sorted(e for e in out if run.start_ms <= e[0] < run.end_ms)

    def _stream(self, emit: Emitter) -> Iterator[SimReading]:
        run = self.run
        rng = py_rng(run.seed, self.spec.id, "readings")
        hb_ms = int(run.fleet.home_heartbeat_s * 1000)
        level = rng.uniform(60.0, 100.0)
        t_hb = run.start_ms + int(rng.uniform(0, min(300_000, hb_ms)))
        alarms, k = self._alarms(), 0
        while True:
            t_al = alarms[k][0] if k < len(alarms) else NEVER
            t = min(t_hb, t_al)
            if t >= run.end_ms:
                return
            if t == t_al:
                yield emit(t, "home_alarm", {"sensor": self.spec.sensor,
                                             "active": alarms[k][1]})
                k += 1
            else:
                level = max(30.0, level - 0.02 * run.fleet.home_heartbeat_s / 86400)
                yield emit(t, "heartbeat", {"battery_pct": int(level),
                                            "rssi_dbm": round(rng.gauss(-75.0, 5.0))})
                t_hb += int(hb_ms * rng.uniform(0.99, 1.01))
