"""Battery charge over a run: steady drain, nightly charging, a scripted fault.

A :class:`Battery` is piecewise closed-form: the mode (drain, charge, fault) is constant between
marks, so queries at non-decreasing times cross each mark once. :func:`make_battery` draws a
device's battery life and nightly charging windows from the device's own generators, and keeps
the charger away while a scripted low-battery fault drains it. :func:`battery_low` recognises
the reading that shows a ``low_battery`` label.
"""

from __future__ import annotations

from collections.abc import Sequence

from device_sim.devices import DAY_MS, NEVER, SUPERVISION, Planned, Run
from device_sim.fleet import DeviceSpec, py_rng
from device_sim.scenario import LowBatteryIncident
from device_sim.types import SimReading


class Battery:
    """Charge level (%) over true time, queried at non-decreasing times.

    Drains at ``drain_per_h``; charges at 60 %/h inside ``charging`` windows. From ``low_at``
    a fault drains it to 15 % over ``low_drain_s``, then power saving holds it above 10 % until
    the next charge. The mode is constant between marks (window edges, the fault), so a query
    evaluates one closed form; marks are crossed at most once.
    """

    def __init__(self, *, t0: int, level: float, drain_per_h: float,
                 charging: Sequence[tuple[int, int]], low_at: int | None = None,
                 low_drain_s: float = 1800.0) -> None:
        self._charging = list(charging)
        self._drain = drain_per_h
        self._low_at = low_at if low_at is not None else NEVER
        self._low_end = next((a for a, _ in self._charging if a > self._low_at), NEVER)
        self._low_drain_h = low_drain_s / 3600.0
        self._fast = 0.0
        marks = [a for w in self._charging for a in w] + [self._low_at, self._low_end]
        self._marks = sorted(m for m in marks if m > t0) + [NEVER]
        self._k = 0
        self._t0, self._level0 = t0, level
        self._mode = self._mode_at(t0)

    def charging(self, t: int) -> bool:
        """Whether ``t`` falls in a charging window (the device is off the body)."""
        return any(a <= t < b for a, b in self._charging)

    def level(self, t: int) -> float:
        """Charge at ``t`` (not before the previous query)."""
        while self._marks[self._k] <= t:
            mark = self._marks[self._k]
            self._level0 = self._at(mark)
            self._t0 = mark
            self._k += 1
            self._mode = self._mode_at(mark)
        return self._at(t)

    def _mode_at(self, t: int) -> str:
        if self.charging(t):
            return "charge"
        if self._low_at <= t < self._low_end:
            if self._fast == 0.0:
                self._fast = max(1.0, (self._level0 - 15.0) / self._low_drain_h)
            return "low"
        return "drain"

    def _at(self, t: int) -> float:
        hours = (t - self._t0) / 3.6e6
        level = self._level0
        if self._mode == "charge":
            return min(100.0, level + 60.0 * hours)
        if self._mode == "drain":
            return max(1.0, level - self._drain * hours)
        if level > 15.0:
            to_15 = (level - 15.0) / self._fast
            if hours <= to_15:
                return level - self._fast * hours
            level, hours = 15.0, hours - to_15
        return max(10.0, level - 0.5 * hours)


def _charging_windows(run: Run, device: str, minute: float, hours: float
                      ) -> list[tuple[int, int]]:
    """One charge a night, starting within 15 min of local ``minute``, every day of the run."""
    out = []
    for day in run.days():
        jitter = py_rng(run.seed, device, "charge", day).uniform(-15.0, 15.0)
        a = run.clock.at(day, minute + jitter)
        out.append((a, a + int(hours * 3.6e6)))
    return out


def make_battery(run: Run, spec: DeviceSpec, incidents: Sequence[Planned], *,
                 days: tuple[float, float], charge_minute: tuple[float, float],
                 charge_h: float) -> Battery:
    """A battery lasting ``days`` per charge, charged nightly, as full as the time since the
    last charge implies at the start of the run (never under 25 % then)."""
    rng = py_rng(run.seed, spec.id, "battery")
    drain = 100.0 / (24.0 * rng.uniform(*days))
    windows = _charging_windows(run, spec.id, rng.uniform(*charge_minute), charge_h)
    last_end = max((b for _, b in windows if b <= run.start_ms), default=run.start_ms - DAY_MS)
    if any(a <= run.start_ms < b for a, b in windows):
        last_end = run.start_ms
    level = 100.0 - drain * (run.start_ms - last_end) / 3.6e6 - rng.uniform(0.0, 3.0)
    low = next((p for p in incidents if isinstance(p.incident, LowBatteryIncident)), None)
    drain_s = low.incident.drain_s if low is not None and isinstance(
        low.incident, LowBatteryIncident) else 1800.0
    if low is not None:  # the charger is not connected while the fault drains the battery
        end = low.at_ms + int(drain_s * 1000)
        windows = [(a, b) for a, b in windows if not (a < end and b > low.at_ms)]
    return Battery(t0=run.start_ms, level=max(level, 25.0), drain_per_h=drain,
                   charging=windows, low_at=None if low is None else low.at_ms,
                   low_drain_s=drain_s)


def battery_low(r: SimReading) -> bool:
    """Whether ``r`` reports a battery under the detectors' low-battery threshold."""
    b = r.body.get("battery_pct")
    return b is not None and b < SUPERVISION.low_battery_pct
