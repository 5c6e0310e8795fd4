"""Device behaviour models: the base every kind of device builds on, and the run they share.

One model object per device. :meth:`DeviceModel.readings` is a fresh generator each call, in
the device's true-time order, built only from generators seeded by (scenario seed, device id,
purpose): calling it twice, or adding other devices to the fleet, gives the same readings. Plans
are drawn per local day from that day's own generator (so a day looks the same whatever the run
around it); walks and outings are a few legs per device-day, made when the generator starts,
and the fall sensor's posture plans, the heavy ones, one worn interval at a time.

This module holds the local clock and the plumbing every model shares (skew, sequence numbers,
labels). The kinds build on it in their own modules: :mod:`device_sim.wearables` (bracelets and
watches), :mod:`device_sim.home` (home sensors) and :mod:`device_sim.fall_sensor` (fall sensors;
their signals are :mod:`device_sim.signals`), with :mod:`device_sim.battery` and
:mod:`device_sim.motion` (where a wearer is: tracks, walks, the wander path, position fixes).
:func:`device_sim.stream.make_model` picks a device's model by kind.

Labels are known before any reading is produced. Most follow from the plan (the SOS press, the
impact, the moment the wander path crosses the zone boundary); three depend on the readings
themselves (the first reported battery under 20 %, the first high heart-rate reading, the last
reading before an outage), and :meth:`DeviceModel.labels` finds those with one dry run of this
device's own generator. Realism choices and their sources: ``docs/simulator.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from detectors.params import SupervisionParams
from device_sim.fleet import DeviceSpec, py_rng
from device_sim.scenario import FleetSpec, Incident, OutageIncident, incident_type
from device_sim.types import Label, LabelType, SimReading

#: The detectors' supervision thresholds: models predict from them when a label shows.
SUPERVISION: Final = SupervisionParams()
DAY_MS: Final = 86_400_000
#: Later than any run: "not any more" for a time-ordered event queue.
NEVER: Final = 2**62


class LocalClock:
    """Local time in the scenario's time zone (offsets cached per hour: DST moves on hours)."""

    def __init__(self, tz: str) -> None:
        self._tz = ZoneInfo(tz)
        self._cache: dict[int, int] = {}
        self._hour, self._off = -1, 0

    def offset_ms(self, t_ms: int) -> int:
        """UTC offset at ``t_ms``."""
        hour = t_ms // 3_600_000
        if hour == self._hour:
            return self._off
        off = self._cache.get(hour)
        if off is None:
            u = datetime.fromtimestamp(hour * 3600, UTC).astimezone(self._tz).utcoffset()
            off = self._cache[hour] = int(u.total_seconds() * 1000) if u is not None else 0
        self._hour, self._off = hour, off
        return off

    def minute(self, t_ms: int) -> int:
        """Local minute of day, 0-1439."""
        return ((t_ms + self.offset_ms(t_ms)) // 60_000) % 1440

    def day(self, t_ms: int) -> int:
        """Local day number (days since 1970-01-01 in local time)."""
        return (t_ms + self.offset_ms(t_ms)) // DAY_MS

    def at(self, day: int, minute: float) -> int:
        """True ms of ``minute`` after local midnight of ``day``."""
        guess = day * DAY_MS
        return guess - self.offset_ms(guess - self.offset_ms(guess)) + int(minute * 60_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """What every model of one run shares."""

    seed: int
    start_ms: int
    end_ms: int
    clock: LocalClock
    fleet: FleetSpec
    skew_fraction: float
    skew_max_s: float

    def days(self) -> range:
        """Local days touching the run, with the day before (plans that started earlier)."""
        return range(self.clock.day(self.start_ms) - 1, self.clock.day(self.end_ms) + 1)


class Planned(NamedTuple):
    """An incident bound to one device, at true time ``at_ms``."""

    incident: Incident
    at_ms: int
    source: Literal["scenario", "random"]


class _Pending(NamedTuple):
    planned: Planned
    type: LabelType
    how: Literal["known", "first", "last_before"]
    start_ms: int                                   # true time, when ``how == "known"``
    match: Callable[[SimReading], bool] | None
    detail: dict[str, Any]


class Emitter:
    """Builds wire bodies: device clock (skew), sequence numbers, routing."""

    __slots__ = ("_gw", "_id", "_region", "_seq", "_skew")

    def __init__(self, spec: DeviceSpec, skew_ms: int, seq0: int) -> None:
        self._id, self._region, self._gw = spec.id, spec.region, spec.gateway_id
        self._skew, self._seq = skew_ms, seq0

    def __call__(self, t_ms: int, kind: str, fields: dict[str, Any]) -> SimReading:
        body = {"device_id": self._id, "ts": t_ms + self._skew, "seq": self._seq, "type": kind}
        body.update(fields)
        self._seq += 1
        return SimReading(t_ms, self._id, self._region, self._gw, body)

    def accel(self, t_ms: int, rate: int, x: list[float], y: list[float],
              z: list[float]) -> SimReading:
        """An accelerometer chunk: the same as ``self(t_ms, "accel", ...)``, faster."""
        self._seq += 1
        return SimReading(t_ms, self._id, self._region, self._gw, {
            "device_id": self._id, "ts": t_ms + self._skew, "seq": self._seq - 1,
            "type": "accel", "rate_hz": rate, "x": x, "y": y, "z": z})


class DeviceModel:
    """Plumbing every model shares: clock skew, labels, the reading generator."""

    def __init__(self, run: Run, spec: DeviceSpec, incidents: Sequence[Planned]) -> None:
        self.run = run
        self.spec = spec
        self.incidents = sorted(incidents, key=lambda p: p.at_ms)
        rng = py_rng(run.seed, spec.id, "clock")
        skewed, skew = rng.random() < run.skew_fraction, rng.uniform(-1.0, 1.0)
        self.skew_ms = int(skew * run.skew_max_s * 1000) if skewed else 0
        self._pending: list[_Pending] = []
        for p in self.incidents:
            if isinstance(p.incident, OutageIncident) and p.incident.duration_s > (
                    SUPERVISION.offline_after_s.get(spec.kind, 1800.0)):
                self._pend(p, "offline", "last_before")

    def readings(self) -> Iterator[SimReading]:
        """Every reading of this device in true-time order (a fresh generator each call)."""
        seq0 = py_rng(self.run.seed, self.spec.id, "seq").randrange(100_000)
        return self._stream(Emitter(self.spec, self.skew_ms, seq0))

    def _stream(self, emit: Emitter) -> Iterator[SimReading]:
        raise NotImplementedError

    def _pend(self, p: Planned, kind: LabelType, how: Literal["known", "first", "last_before"],
              start_ms: int = 0, match: Callable[[SimReading], bool] | None = None,
              **detail: Any) -> None:
        self._pending.append(_Pending(p, kind, how, start_ms, match, detail))

    def labels(self) -> list[Label]:
        """Ground truth for this device's incidents, in device time (see the module doc)."""
        found: dict[int, int] = {}
        todo = [i for i, q in enumerate(self._pending) if q.how != "known"]
        if todo:
            last: dict[int, int] = {}
            for r in self.readings():
                for i in todo:
                    q = self._pending[i]
                    if i in found:
                        continue
                    if q.how == "last_before":
                        if r.t_ms < q.planned.at_ms:
                            last[i] = r.body["ts"]
                        else:
                            found[i] = last.get(i, q.planned.at_ms + self.skew_ms)
                    elif r.t_ms >= q.planned.at_ms and q.match is not None and q.match(r):
                        found[i] = r.body["ts"]
                if len(found) == len(todo):
                    break
            for i in todo:
                if i not in found and i in last:
                    found[i] = last[i]
        out = []
        for i, q in enumerate(self._pending):
            start = q.start_ms + self.skew_ms if q.how == "known" else found.get(i)
            if start is None or start - self.skew_ms >= self.run.end_ms:
                continue  # the condition never showed within the run
            out.append(Label(device_id=self.spec.id, type=q.type, start_ms=start,
                             incident=incident_type(q.planned.incident),
                             wearer_id=self.spec.person.id,
                             detail={**q.detail, "source": q.planned.source}))
        return out
