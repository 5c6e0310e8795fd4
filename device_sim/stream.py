"""Assemble a run and stream it: fleet, incidents, device models, labels, merged readings.

:func:`build` does everything that must be known before the first reading: the fleet and its
registry, every incident bound to its device(s) (scripted ones from the file, random ones drawn
per device from ``random_incidents``), every label, and the outage windows. Readings are not
produced until :meth:`Simulation.readings` is iterated; it merges the devices' own time-ordered
generators with a heap, so memory holds one pending reading and one day's plans per device, and
a 10,000-device day streams through.

Outages are not marked on readings. A device keeps producing readings during an outage (it
buffers them); :attr:`Simulation.outages` lists each device's windows ``(start_ms, end_ms)`` in
true time, and the delivery stage (``device_sim.gateway``) holds that device's readings from
``start_ms`` and releases them in one burst at ``end_ms``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from typing import Final, NamedTuple

from device_sim.devices import DeviceModel, LocalClock, Planned, Run
from device_sim.fall_sensor import FallSensor
from device_sim.fleet import (
    DeviceSpec,
    Fleet,
    build_fleet,
    gateway_id,
    incident_devices,
    py_rng,
    substream,
)
from device_sim.gateway import deliver
from device_sim.home import HomeSensor
from device_sim.scenario import (
    INCIDENT_KINDS,
    BedExitIncident,
    DeviceFallIncident,
    FallIncident,
    FleetSpec,
    GasIncident,
    HomeAlarmIncident,
    Incident,
    LowBatteryIncident,
    OutageIncident,
    Scenario,
    SmokeIncident,
    SosIncident,
    StrapRemovedIncident,
    TachycardiaIncident,
    WanderIncident,
    WaterIncident,
    check_scenario,
    incident_type,
    is_night,
)
from device_sim.types import Label, Publication, SimReading
from device_sim.wearables import Bracelet, Watch
from foundation.errors import ConfigError
from schemas.registry import Registry

#: Incidents that cannot share a device at overlapping times (a bracelet left on the table
#: cannot also wander off with its wearer).
_EXCLUSIVE: Final = frozenset({"wander", "strap_removed"})


class SimDevice(NamedTuple):
    """How a device is known to the rest of the pipeline."""

    kind: str                 # registry kind: bracelet, watch, fall_sensor, home_sensor
    region: str
    gateway_id: str | None    # None: publishes on its own device topic
    wearer_id: str


class Simulation:
    """A built run: registry, labels and outages up front; readings on demand."""

    def __init__(self, *, scenario: Scenario, registry: Registry, labels: list[Label],
                 devices: dict[str, SimDevice], outages: dict[str, list[tuple[int, int]]],
                 models: Sequence[DeviceModel]) -> None:
        self.scenario = scenario
        self.registry = registry
        self.labels = labels
        self.devices = devices
        self.outages = outages
        self._models = list(models)

    @property
    def start_ms(self) -> int:
        """First instant of the run (true time, Unix ms)."""
        return self.scenario.start_ms

    @property
    def end_ms(self) -> int:
        """End of the run (exclusive)."""
        return self.scenario.end_ms

    def readings(self, devices: Collection[str] | None = None) -> Iterator[SimReading]:
        """Every reading of every device (or of ``devices`` only) in true-time order (ties: by
        device id), lazily. Each call starts afresh and yields the same sequence.
        """
        # SimReading is a tuple (t_ms, device_id, ...) and each device has one generator, so
        # heap entries never compare beyond the device id. (Merging in time slices, each
        # generator running for a whole slice, measured slower: the buffered readings go cold.)
        return heapq.merge(*(m.readings() for m in self._models
                             if devices is None or m.spec.id in devices))

    def publications(self, devices: Collection[str] | None = None) -> Iterator[Publication]:
        """The MQTT messages of :meth:`readings` as the scenario's gateways and network deliver
        them (:func:`device_sim.gateway.deliver`), from a seed of their own so delivery draws
        never mirror a device model's; lazily, and the same on every call. ``devices``: of
        those devices only (the rest of a run whose other devices go through vendor gateways)."""
        return deliver(self.readings(devices), params=self.scenario.delivery,
                       seed=substream(self.scenario.seed, "delivery"), outages=self.outages)


def build(scenario: Scenario) -> Simulation:
    """Build a run from a scenario (raises ConfigError for incidents the fleet cannot have)."""
    check_scenario(scenario)
    fleet = build_fleet(scenario)
    run = Run(seed=scenario.seed, start_ms=scenario.start_ms, end_ms=scenario.end_ms,
              clock=LocalClock(scenario.timezone), fleet=scenario.fleet,
              skew_fraction=scenario.clock_skew.fraction, skew_max_s=scenario.clock_skew.max_s)
    planned = _scripted(scenario, fleet)
    _add_random(scenario, fleet, run, planned)
    models = [make_model(run, spec, planned.get(dev, ())) for dev, spec in fleet.devices.items()]
    labels = sorted((lab for m in models for lab in m.labels()),
                    key=lambda lab: (lab.start_ms, lab.device_id, lab.type))
    outages = {dev: sorted((p.at_ms, p.at_ms + int(p.incident.duration_s * 1000))
                           for p in ps if isinstance(p.incident, OutageIncident))
               for dev, ps in planned.items()}
    devices = {d: SimDevice(s.kind, s.region, s.gateway_id, s.person.id)
               for d, s in fleet.devices.items()}
    return Simulation(scenario=scenario, registry=fleet.registry, labels=labels,
                      devices=devices, outages={d: w for d, w in outages.items() if w},
                      models=models)


def make_model(run: Run, spec: DeviceSpec, incidents: Sequence[Planned]) -> DeviceModel:
    """The model for a device of any kind."""
    kinds: dict[str, type[DeviceModel]] = {"bracelet": Bracelet, "watch": Watch,
                                           "fall_sensor": FallSensor, "home_sensor": HomeSensor}
    return kinds[spec.kind](run, spec, incidents)


def _span(inc: Incident, at: int, f: FleetSpec) -> tuple[int, int]:
    """True-time window an incident occupies its device, generously (for conflicts)."""
    before, after = 0.0, 60.0
    if isinstance(inc, WanderIncident):
        before, after = 1800.0, inc.duration_s + 1800.0   # walk to the edge; brought home
    elif isinstance(inc, FallIncident):   # sitting or lying down first takes up to 200 s
        before = 60.0 if inc.kind in ("trip", "backward_sit", "table_cushioned") else 240.0
        after = (inc.lying_s or 600.0) + 120.0
    elif isinstance(inc, StrapRemovedIncident):
        after = inc.off_s
    elif isinstance(inc, LowBatteryIncident):
        after = inc.drain_s
    elif isinstance(inc, OutageIncident | HomeAlarmIncident):
        after = inc.duration_s
    elif isinstance(inc, TachycardiaIncident):
        after = (inc.readings + 1) * f.watch_vitals_s
    return at - int(before * 1000), at + int(after * 1000)


def _scripted(s: Scenario, fleet: Fleet) -> dict[str, list[Planned]]:
    """Scripted incidents by device; same-kind overlaps on one device are errors."""
    placed: dict[str, list[tuple[Planned, str]]] = defaultdict(list)
    for i, inc in enumerate(s.incidents):
        path = f"$.incidents[{i}]"
        p = Planned(inc, s.start_ms + int(inc.at_s * 1000), "scenario")
        span = _span(inc, p.at_ms, s.fleet)
        for dev in incident_devices(fleet, s, inc, path):
            for q, q_path in placed[dev]:
                a, b = incident_type(inc), incident_type(q.incident)
                if (a == b or {a, b} <= _EXCLUSIVE) and _overlap(span, _span(
                        q.incident, q.at_ms, s.fleet)):
                    raise ConfigError(f"invalid scenario: {a} overlaps the {b} of "
                                      f"`{q_path}` on {dev} - at `{path}.at_s`")
            placed[dev].append((p, path))
    return {dev: [p for p, _ in ps] for dev, ps in placed.items()}


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


_FACTORIES: Final[dict[str, type[Incident]]] = {
    "sos": SosIncident, "wander": WanderIncident, "fall": FallIncident,
    "device_fall": DeviceFallIncident, "smoke": SmokeIncident, "gas": GasIncident,
    "water": WaterIncident, "bed_exit": BedExitIncident, "strap_removed": StrapRemovedIncident,
    "low_battery": LowBatteryIncident, "tachycardia": TachycardiaIncident,
    "outage": OutageIncident,
}


def _targets(fleet: Fleet, kind: str) -> list[str]:
    """Device refs of one kind a random incident can name (a home kit by its gateway)."""
    if kind == "home":
        kits = sorted({d.index for d in fleet.devices.values() if d.fleet_kind == "home"})
        return [gateway_id(k) for k in kits]
    return [d.id for d in fleet.devices.values() if d.fleet_kind == kind]


def _add_random(s: Scenario, fleet: Fleet, run: Run, out: dict[str, list[Planned]]) -> None:
    """Random incidents, drawn per device and type from their own generators.

    An incident that would not finish within the run, or that overlaps any incident already
    on the device, is dropped (scripted ones were placed first).
    """
    days = s.duration_s / 86400.0
    for itype, rate in s.random_incidents.rates().items():
        for kind in INCIDENT_KINDS[itype]:
            for ref in _targets(fleet, kind):
                rng = py_rng(s.seed, ref, "random", itype)
                for _ in range(_poisson(rng, rate * days)):
                    inc = _draw(s, run, rng, itype, ref)
                    if inc is None:
                        continue
                    p = Planned(inc, s.start_ms + int(inc.at_s * 1000), "random")
                    span = _span(inc, p.at_ms, s.fleet)
                    devs = incident_devices(fleet, s, inc, "random_incidents")
                    if span[1] >= s.end_ms or any(
                            _overlap(span, _span(q.incident, q.at_ms, s.fleet))
                            for d in devs for q in out.get(d, ())):
                        continue
                    for d in devs:
                        out.setdefault(d, []).append(p)


def _draw(s: Scenario, run: Run, rng: random.Random, itype: str, ref: str) -> Incident | None:
    """One random incident of ``itype`` on ``ref`` at a random time (bed exits: at night)."""
    at_s = rng.uniform(0.0, s.duration_s)
    if itype == "bed_exit":
        for _ in range(200):
            if is_night(run.clock.minute(s.start_ms + int(at_s * 1000))):
                break
            at_s = rng.uniform(0.0, s.duration_s)
        else:
            return None
    if itype == "fall":
        get_up = rng.random() < 0.3
        weights = s.random_fall_kinds
        if not weights or not sum(weights.values()) > 0:
            return FallIncident(at_s=at_s, device=ref, get_up=get_up)
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
        return FallIncident(at_s=at_s, device=ref, get_up=get_up, kind=kind)
    if itype == "outage":
        return OutageIncident(at_s=at_s, device=ref, duration_s=rng.uniform(300.0, 3 * 3600.0))
    return _FACTORIES[itype](at_s=at_s, device=ref)


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; fine for the small means of incidents per device."""
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-min(lam, 500.0)), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k

