"""The simulated fleet: where people live, their safe zones, their devices, and the registry.

Pure and deterministic. Every random choice about a person or a device draws from a generator
seeded by (scenario seed, that person's or device's id, purpose), never from one shared sequence,
so adding a bracelet leaves every other wearer's home, zones and readings as they were.

Geography: homes cluster in ``area.villages`` settlements (a town in the centre and villages
around it, each a gaussian blob of houses), not uniformly over the disc. Positions are worked in
metres in a local tangent plane (east, north) centred on each person's home; over the few km a
person walks, the flat-earth error is centimetres, and because the map to (lat, lon) is affine,
polygon edges straight in metres are straight in degrees, as the registry and detectors draw them.

Ids and topics (``docs/simulator.md``): bracelets ``BR-00001``, watches ``WT-00001`` and fall
sensors ``FS-00001`` publish on their own device topics; home kit ``k`` has gateway ``GW-0000k``
and sensors ``HS-0000k-smoke`` (``gas``, ``water``, ``door``, ``bed_exit``) that publish through
it. Wearers are ``W-B-*`` (bracelet wearers), ``W-W-*`` (watch wearers) and ``W-H-*`` (home
residents: resident ``k`` has home kit ``k`` and fall sensor ``k`` when those exist).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from device_sim.scenario import (
    INCIDENT_KINDS,
    DeviceIndex,
    FleetKind,
    Incident,
    Scenario,
    incident_type,
)
from foundation.errors import ConfigError
from schemas.registry import Contact, Device, Point, Registry, Wearer, Zone

RegistryKind = Literal["bracelet", "watch", "fall_sensor", "home_sensor"]

HOME_SENSORS: Final = ("smoke", "gas", "water", "door", "bed_exit")
_PREFIX: Final[dict[str, str]] = {"bracelet": "BR", "watch": "WT", "fall_sensor": "FS"}
_WGS84_A: Final = 6_378_137.0
_WGS84_E2: Final = 6.694379990141317e-3

_SURNAMES: Final = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹"
_GIVEN_F: Final = ("秀英", "桂英", "玉兰", "秀兰", "凤英", "淑珍", "桂兰", "玉珍", "凤兰", "淑英",
                   "秀珍", "玉梅", "桂芝", "素芬", "翠花")
_GIVEN_M: Final = ("建国", "国华", "志强", "德明", "振华", "文华", "明德", "福生", "长发", "国庆",
                   "志明", "庆林", "宝山", "德胜", "树林")
_RELATIONS: Final = ("son", "daughter", "son", "daughter", "spouse", "neighbour",
                     "grandson", "granddaughter")


# -- seeding ----------------------------------------------------------------------------------

def substream(seed: int, *parts: str | float) -> int:
    """A 64-bit seed for one purpose, stable across runs and Python versions (not ``hash()``)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def py_rng(seed: int, *parts: str | float) -> random.Random:
    """A ``random.Random`` for scalar draws of one purpose (faster than numpy per draw)."""
    return random.Random(substream(seed, *parts))


def np_rng(seed: int, *parts: str | float) -> np.random.Generator:
    """A numpy Generator for vectorized draws of one purpose."""
    return np.random.default_rng(substream(seed, *parts))


# -- geometry ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LocalFrame:
    """Metres east (x) and north (y) of an origin, WGS-84 radii of curvature at the origin."""

    lat0: float
    lon0: float
    m_per_deg_lat: float
    m_per_deg_lon: float

    @classmethod
    def at(cls, lat: float, lon: float) -> LocalFrame:
        """The frame centred on (lat, lon)."""
        s2 = math.sin(math.radians(lat)) ** 2
        w = math.sqrt(1.0 - _WGS84_E2 * s2)
        meridian = _WGS84_A * (1.0 - _WGS84_E2) / w**3
        normal = _WGS84_A / w
        rad = math.pi / 180.0
        return cls(lat, lon, meridian * rad, normal * math.cos(math.radians(lat)) * rad)

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        """(lat, lon) of the point ``x`` m east and ``y`` m north of the origin."""
        return self.lat0 + y / self.m_per_deg_lat, self.lon0 + x / self.m_per_deg_lon

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        """Inverse of :meth:`to_latlon`."""
        return (lon - self.lon0) * self.m_per_deg_lon, (lat - self.lat0) * self.m_per_deg_lat


@dataclass(frozen=True, slots=True)
class ZoneShape:
    """A safe zone in its wearer's frame: a circle round the origin or a polygon (x, y)."""

    id: str
    radius_m: float | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    #: Local-time window (start, end) in minutes of day, may wrap midnight; None: always.
    window: tuple[int, int] | None = None

    def active(self, minute: int) -> bool:
        """Whether the zone applies at this local minute of day."""
        if self.window is None:
            return True
        start, end = self.window
        return start <= minute < end if start < end else (minute >= start or minute < end)

    def contains(self, x: float, y: float) -> bool:
        """Whether the point lies inside (even-odd rule for the polygon)."""
        if self.radius_m is not None:
            return x * x + y * y <= self.radius_m * self.radius_m
        assert self.polygon is not None
        inside = False
        pts = self.polygon
        xj, yj = pts[-1]
        for xi, yi in pts:
            if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
                inside = not inside
            xj, yj = xi, yi
        return inside


@dataclass(frozen=True, slots=True)
class Person:
    """A wearer: home (the origin of ``frame``), safe zones, and how far walks may go."""

    id: str
    frame: LocalFrame
    zones: tuple[ZoneShape, ...]
    #: Ordinary walks stay within this distance of home (well inside every day zone).
    walk_radius_m: float

    def outside_all(self, x: float, y: float, minute: int) -> bool:
        """True when the point is outside every zone active at ``minute`` (the exit rule)."""
        active = [z for z in self.zones if z.active(minute)]
        return bool(active) and not any(z.contains(x, y) for z in active)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device: identity, routing, and whom it belongs to."""

    id: str
    kind: RegistryKind
    fleet_kind: FleetKind
    index: int
    region: str
    gateway_id: str | None
    person: Person
    sensor: str | None = None  # home sensors: smoke, gas, water, door, bed_exit


@dataclass(frozen=True, slots=True)
class Fleet:
    """Devices in a stable order (bracelets, watches, fall sensors, home sensors) and the
    registry that describes them."""

    devices: dict[str, DeviceSpec]
    registry: Registry


# -- ids --------------------------------------------------------------------------------------

def device_id(kind: Literal["bracelet", "watch", "fall_sensor"], index: int) -> str:
    """``BR-00001`` for bracelet 0, and so on."""
    return f"{_PREFIX[kind]}-{index + 1:05d}"


def gateway_id(home: int) -> str:
    """The gateway of home kit ``home``."""
    return f"GW-{home + 1:05d}"


def home_sensor_id(home: int, sensor: str) -> str:
    """``HS-00001-smoke`` for the smoke sensor of home kit 0."""
    return f"HS-{home + 1:05d}-{sensor}"


# -- places -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Village:
    x: float
    y: float
    spread_m: float
    weight: float


def _villages(s: Scenario) -> list[_Village]:
    """A town at the centre, villages around it: fixed by seed and area, not by fleet size."""
    rng = py_rng(s.seed, "villages")
    radius = s.area.radius_km * 1000.0
    out = [_Village(0.0, 0.0, 0.12 * radius, 4.0)]
    min_sep = min(1200.0, radius / 3)
    while len(out) < s.area.villages:
        for _ in range(50):
            r = radius * 0.85 * math.sqrt(rng.random())
            a = rng.uniform(0, 2 * math.pi)
            x, y = r * math.cos(a), r * math.sin(a)
            if all(math.hypot(x - v.x, y - v.y) >= min_sep for v in out):
                break
        out.append(_Village(x, y, rng.uniform(150.0, 500.0), rng.lognormvariate(0.0, 0.6)))
    return out


def _home(s: Scenario, villages: Sequence[_Village], rng: random.Random) -> tuple[float, float]:
    """A house in a village drawn by size, within the area."""
    radius = s.area.radius_km * 1000.0
    v = rng.choices(villages, weights=[v.weight for v in villages])[0]
    x, y = v.x, v.y
    for _ in range(10):
        x, y = v.x + rng.gauss(0, v.spread_m), v.y + rng.gauss(0, v.spread_m)
        if math.hypot(x, y) <= radius:
            break
    area = LocalFrame.at(s.area.lat, s.area.lon)
    return area.to_latlon(x, y)


def _name(rng: random.Random) -> str:
    given = _GIVEN_F if rng.random() < 0.55 else _GIVEN_M
    return rng.choice(_SURNAMES) + rng.choice(given)


def _contacts(rng: random.Random, surname: str) -> list[Contact]:
    out = []
    for _ in range(rng.randint(1, 3)):
        phone = (f"+86 1{rng.choice('3589')}{rng.randint(0, 9)} {rng.randint(0, 9999):04d} "
                 f"{rng.randint(0, 9999):04d}")
        name = surname + rng.choice(_GIVEN_M + _GIVEN_F)
        out.append(Contact(name=name, phone=phone, relation=rng.choice(_RELATIONS)))
    return out


def _bracelet_zones(rng: random.Random) -> tuple[ZoneShape, ...]:
    """Home circle 150-300 m; half also a neighbourhood polygon; 3 in 10 a night zone.

    A night zone only means something if the day zones do not also cover the night, so wearers
    with one have their day zones active 06:00-20:00 and the small night circle 20:00-06:00.
    """
    r = rng.uniform(150.0, 300.0)
    night = rng.random() < 0.3
    day = (6 * 60, 20 * 60) if night else None
    zones = [ZoneShape("home", radius_m=r, window=day)]
    if rng.random() < 0.5:
        k = rng.randint(5, 8)
        pts = []
        for j in range(k):
            a = 2 * math.pi * (j + rng.uniform(-0.25, 0.25)) / k
            rho = rng.uniform(1.8, 3.0) * r
            pts.append((rho * math.cos(a), rho * math.sin(a)))
        zones.append(ZoneShape("neighbourhood", polygon=tuple(pts), window=day))
    if night:
        zones.append(ZoneShape("night", radius_m=rng.uniform(60.0, 100.0),
                               window=(20 * 60, 6 * 60)))
    return tuple(zones)


def _registry_zone(z: ZoneShape, frame: LocalFrame) -> Zone:
    active = None if z.window is None else (
        f"{z.window[0] // 60:02d}:{z.window[0] % 60:02d}-{z.window[1] // 60:02d}:"
        f"{z.window[1] % 60:02d}")
    if z.radius_m is not None:
        return Zone(id=z.id, kind="circle", center=Point(frame.lat0, frame.lon0),
                    radius_m=round(z.radius_m, 1), active=active)
    assert z.polygon is not None
    pts = [frame.to_latlon(x, y) for x, y in z.polygon]
    return Zone(id=z.id, kind="polygon", points=[(round(a, 7), round(b, 7)) for a, b in pts],
                active=active)


_CONDITIONS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "B": (("dementia",), ("dementia", "hypertension"), ("alzheimer's disease",)),
    "W": ((), ("hypertension",), ("diabetes",), ("heart disease",)),
    "H": (("lives alone",), ("lives alone", "osteoporosis"), ("parkinson's disease",)),
}


def _wearer(s: Scenario, villages: Sequence[_Village], group: str, index: int,
            devices: list[Device]) -> tuple[Wearer, Person]:
    wid = f"W-{group}-{index + 1:05d}"
    rng = py_rng(s.seed, wid)
    lat, lon = _home(s, villages, rng)
    lat, lon = round(lat, 7), round(lon, 7)
    frame = LocalFrame.at(lat, lon)
    zones = _bracelet_zones(rng) if group == "B" else ()
    day = [z for z in zones if z.radius_m is not None and z.id == "home"]
    walk = 0.6 * day[0].radius_m if day and day[0].radius_m is not None else 1500.0
    name = _name(rng)
    wearer = Wearer(
        id=wid, name=name, region=s.region, birth_year=rng.randint(1930, 1955),
        conditions=list(rng.choice(_CONDITIONS[group])), timezone=s.timezone,
        home=Point(lat, lon), devices=devices, contacts=_contacts(rng, name[0]),
        zones=[_registry_zone(z, frame) for z in zones])
    return wearer, Person(wid, frame, zones, walk)


def build_fleet(s: Scenario) -> Fleet:
    """Wearers, devices and the registry of a scenario."""
    villages = _villages(s)
    f = s.fleet
    wearers: list[Wearer] = []
    specs: dict[str, DeviceSpec] = {}
    groups: list[tuple[str, int, Literal["bracelet", "watch"] | None]] = [
        ("B", f.bracelets, "bracelet"), ("W", f.watches, "watch"),
        ("H", max(f.homes, f.fall_sensors), None)]
    home_specs: list[DeviceSpec] = []
    for group, n, kind in groups:
        for i in range(n):
            devs: list[tuple[str, RegistryKind, FleetKind, str | None, str | None]] = []
            if kind is not None:
                devs.append((device_id(kind, i), kind, kind, None, None))
            else:
                if i < f.fall_sensors:
                    devs.append((device_id("fall_sensor", i), "fall_sensor", "fall_sensor",
                                 None, None))
                if i < f.homes:
                    devs += [(home_sensor_id(i, sensor), "home_sensor", "home", gateway_id(i),
                              sensor) for sensor in HOME_SENSORS]
            wearer, person = _wearer(s, villages, group, i, [
                Device(id=d, kind=k, model=_MODELS[k]) for d, k, _, _, _ in devs])
            wearers.append(wearer)
            for d, k, fk, gw, sensor in devs:
                spec = DeviceSpec(d, k, fk, i, s.region, gw, person, sensor)
                if k == "home_sensor":
                    home_specs.append(spec)
                else:
                    specs[d] = spec
    # Fall sensors and home kits share residents; list all fall sensors first (stable order).
    specs.update({h.id: h for h in home_specs})
    return Fleet(specs, Registry(wearers))


_MODELS: Final[dict[str, str]] = {
    "bracelet": "sim-bracelet-1", "watch": "sim-watch-1", "fall_sensor": "sim-waist-1",
    "home_sensor": "sim-home-kit-1"}


# -- incident targets -------------------------------------------------------------------------

def incident_devices(fleet: Fleet, s: Scenario, inc: Incident, where: str) -> tuple[str, ...]:
    """The device ids an incident happens to (all sensors of a kit for a kit-wide outage).

    ``where`` is the incident's ``$.incidents[i]`` path, for the error message.
    """
    itype = incident_type(inc)
    kinds = INCIDENT_KINDS[itype]
    ref = inc.device
    if isinstance(ref, str):
        return _by_id(fleet, itype, kinds, ref, where)
    kind, index = (kinds[0], ref) if isinstance(ref, int) else DeviceIndex.kind_index(ref)
    if kind == "home":
        return _kit(index, itype)
    return (device_id(kind, index),)


def _kit(home: int, itype: str) -> tuple[str, ...]:
    if itype == "outage":
        return tuple(home_sensor_id(home, sensor) for sensor in HOME_SENSORS)
    return (home_sensor_id(home, itype),)


def _by_id(fleet: Fleet, itype: str, kinds: tuple[FleetKind, ...], ref: str,
           where: str) -> tuple[str, ...]:
    if ref.startswith("GW-") and "home" in kinds:
        home = next((d.index for d in fleet.devices.values() if d.gateway_id == ref), None)
        if home is not None:
            return _kit(home, itype)
    spec = fleet.devices.get(ref)
    if spec is None:
        raise ConfigError(f"invalid scenario: no device {ref!r} in the fleet - at "
                          f"`{where}.device`")
    if spec.fleet_kind not in kinds or (spec.sensor is not None and itype != "outage"
                                        and spec.sensor != itype):
        raise ConfigError(f"invalid scenario: a {itype} incident cannot happen to {ref!r} - at "
                          f"`{where}.device`")
    return (ref,)
