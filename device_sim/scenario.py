"""The scenario file: what to simulate, for how long, and which incidents to script.

YAML or JSON, decoded once by :mod:`foundation.documents` (encoding, size, nesting and alias
limits) into frozen msgspec structs (unknown keys are errors: a misspelt
incident option must not silently fall back to its default). Incidents are a tagged union on
``type``, one struct per incident with its own options. Checks that need more than one field
(a device index within the fleet, an incident within the run, a bed exit at night) run in
:func:`check_scenario`, so a file fails at load time with the ``$.path`` of the bad field, never
halfway through a run. Every field, its default and the reason for it: ``docs/simulator.md``.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from detectors.params import AlarmParams
from device_sim.types import DeliveryParams
from foundation.documents import decode_document, format_of, read_document
from foundation.errors import ConfigError
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN, Latitude, Longitude

#: Fleet kinds an incident can name by index (``home`` is a home sensor kit behind a gateway).
FleetKind = Literal["bracelet", "watch", "fall_sensor", "home"]

IncidentType = Literal["sos", "wander", "fall", "device_fall", "smoke", "gas", "water",
                       "bed_exit", "strap_removed", "low_battery", "tachycardia", "outage"]

#: Which device kinds each incident can happen to; the first is what a bare index means.
INCIDENT_KINDS: Final[dict[str, tuple[FleetKind, ...]]] = {
    "sos": ("watch", "bracelet"),
    "wander": ("bracelet",),
    "fall": ("fall_sensor",),
    "device_fall": ("watch",),
    "smoke": ("home",), "gas": ("home",), "water": ("home",), "bed_exit": ("home",),
    "strap_removed": ("bracelet", "watch"),
    "low_battery": ("bracelet", "watch", "fall_sensor"),
    "tachycardia": ("watch",),
    "outage": ("bracelet", "watch", "fall_sensor", "home"),
}

#: A fixed start, so a file without one is still reproducible: a Monday morning in Weihai.
DEFAULT_START: Final = datetime(2026, 3, 2, 7, 55, tzinfo=timezone(timedelta(hours=8)))
_MIN_START: Final = datetime(2020, 1, 2, tzinfo=UTC)
_MAX_END: Final = datetime(2099, 12, 1, tzinfo=UTC)

#: Fall models (:mod:`device_sim.falls`): ``trip`` is the original forward fall from standing.
FallKind = Literal["trip", "backward_sit", "faint_seated", "table_cushioned", "out_of_bed"]

Seconds = Annotated[float, Meta(ge=0.0, le=30 * 86400.0)]
Count = Annotated[int, Meta(ge=0, le=1_000_000)]
Rate = Annotated[float, Meta(ge=0.0, le=100.0)]


class Area(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the fleet lives: a disc, with homes clustered in ``villages``."""

    lat: Latitude = 37.5131
    lon: Longitude = 122.1204
    radius_km: Annotated[float, Meta(gt=0.0, le=200.0)] = 8.0
    villages: Annotated[int, Meta(ge=1, le=1000)] = 12


class ActivityRates(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everyday activities that look like falls to a waist sensor (:mod:`device_sim.activities`),
    expected per fall-sensor wearer and worn day. All 0 by default: ordinary life as before."""

    lie_down_fast: Rate = 0.0
    jog: Rate = 0.0
    hard_sit: Rate = 0.0
    collapse_chair: Rate = 0.0
    stairs_fast: Rate = 0.0
    switched_off: Rate = 0.0

    def rates(self) -> dict[str, float]:
        """Non-zero rates by activity."""
        return {k: getattr(self, k) for k in self.__struct_fields__ if getattr(self, k) > 0}


class FleetSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many devices of each kind, and how often they report."""

    bracelets: Count = 0
    watches: Count = 0
    fall_sensors: Count = 0
    #: Home sensor kits: smoke, gas, water, door and bed-exit sensors behind one gateway.
    homes: Count = 0
    bracelet_fix_still_s: Annotated[float, Meta(ge=5.0, le=3600.0)] = 60.0
    bracelet_fix_moving_s: Annotated[float, Meta(ge=5.0, le=600.0)] = 15.0
    #: Bracelet and fall-sensor keep-alives (with battery and signal strength).
    heartbeat_s: Annotated[float, Meta(ge=10.0, le=3600.0)] = 300.0
    watch_vitals_s: Annotated[float, Meta(ge=10.0, le=3600.0)] = 300.0
    watch_fix_s: Annotated[float, Meta(ge=10.0, le=3600.0)] = 600.0
    accel_rate_hz: Annotated[int, Meta(ge=20, le=100)] = 50
    home_heartbeat_s: Annotated[float, Meta(ge=60.0, le=86400.0)] = 86400.0
    #: Fraction of fall sensors also worn at night (pendant-style), with rolls in bed and trips
    #: to the toilet; they charge for an hour after getting up instead. 0: all charge at night.
    night_wear: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    #: Everyday activities of fall-sensor wearers beyond walking, sitting and lying down.
    activities: ActivityRates = msgspec.field(default_factory=ActivityRates)


class ClockSkew(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``fraction`` of devices whose clocks are off by up to ``max_s`` either way."""

    fraction: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    max_s: Annotated[float, Meta(ge=0.0, le=7 * 86400.0)] = 0.0


class DeviceIndex(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A device by kind and 0-based index in the fleet, e.g. ``{bracelet: 3}``."""

    bracelet: Count | None = None
    watch: Count | None = None
    fall_sensor: Count | None = None
    home: Count | None = None

    def kind_index(self) -> tuple[FleetKind, int]:
        """The one (kind, index) given; ValueError unless exactly one is."""
        given = [(k, v) for k, v in (("bracelet", self.bracelet), ("watch", self.watch),
                                     ("fall_sensor", self.fall_sensor), ("home", self.home))
                 if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of bracelet, watch, fall_sensor, home")
        kind, index = given[0]
        return kind, index  # type: ignore[return-value]


#: An index into the incident's default kind, ``{kind: index}``, or an explicit device id
#: (``BR-00004``; ``GW-00002`` for a whole home kit).
DeviceRef = int | Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)] | DeviceIndex


class IncidentBase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                   tag_field="type"):
    """Fields of every incident: when (``at_s`` after the start) and on which device."""

    at_s: Seconds
    device: DeviceRef = 0


class SosIncident(IncidentBase, frozen=True, tag="sos"):
    """SOS button pressed; ``presses`` (default: 1, sometimes 2-3) and ``fix`` (default: a fix
    four times in five) are drawn when not given."""

    presses: Annotated[int, Meta(ge=1, le=10)] | None = None
    fix: bool | None = None


class WanderIncident(IncidentBase, frozen=True, tag="wander"):
    """Walks out of the safe zones and keeps going ``duration_s`` after crossing the boundary.

    ``at_s`` is when the walk leaves home, or, with ``from_edge_m``, when it is that far inside
    the boundary (the walk then began earlier, possibly before the run). A night wander is just
    an ``at_s`` at night.
    """

    duration_s: Annotated[float, Meta(ge=600.0, le=86400.0)] = 1200.0
    speed_mps: Annotated[float, Meta(ge=0.5, le=2.0)] | None = None
    from_edge_m: Annotated[float, Meta(ge=0.0, le=5000.0)] | None = None
    heading_deg: Annotated[float, Meta(ge=0.0, lt=360.0)] | None = None


class FallIncident(IncidentBase, frozen=True, tag="fall"):
    """A fall seen by a trunk accelerometer; ``at_s`` is the impact; ``kind`` the fall model
    (:mod:`device_sim.falls`; ``trip``, the default, is the forward fall from standing)."""

    get_up: bool = False
    lying_s: Annotated[float, Meta(ge=10.0, le=7200.0)] | None = None
    peak_g: Annotated[float, Meta(ge=2.5, le=8.0)] | None = None
    kind: FallKind = "trip"


class DeviceFallIncident(IncidentBase, frozen=True, tag="device_fall"):
    """The watch's own fall detection sends a ``fall`` reading."""

    confidence: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None


class HomeAlarmIncident(IncidentBase, frozen=True):
    """A home sensor alarms at ``at_s`` and clears ``duration_s`` later."""

    duration_s: Annotated[float, Meta(ge=30.0, le=86400.0)] = 300.0


class SmokeIncident(HomeAlarmIncident, frozen=True, tag="smoke"):
    """Smoke alarm."""


class GasIncident(HomeAlarmIncident, frozen=True, tag="gas"):
    """Gas leak alarm."""


class WaterIncident(HomeAlarmIncident, frozen=True, tag="water"):
    """Water leak alarm."""


class BedExitIncident(HomeAlarmIncident, frozen=True, tag="bed_exit"):
    """Out of bed at night; back in bed ``duration_s`` later."""


class StrapRemovedIncident(IncidentBase, frozen=True, tag="strap_removed"):
    """The strap is opened; the device lies where it was taken off for ``off_s``."""

    off_s: Annotated[float, Meta(ge=60.0, le=86400.0)] = 1800.0


class LowBatteryIncident(IncidentBase, frozen=True, tag="low_battery"):
    """The battery drains fast (a fault, the cold) to 15 % over ``drain_s``."""

    drain_s: Annotated[float, Meta(ge=60.0, le=86400.0)] = 1800.0


class TachycardiaIncident(IncidentBase, frozen=True, tag="tachycardia"):
    """Heart rate above 120 bpm for ``readings`` consecutive vitals readings."""

    readings: Annotated[int, Meta(ge=1, le=100)] = 4
    bpm: Annotated[float, Meta(ge=121.0, le=220.0)] | None = None


class OutageIncident(IncidentBase, frozen=True, tag="outage"):
    """The device's link is down for ``duration_s``: readings are buffered, then sent at once."""

    duration_s: Annotated[float, Meta(gt=0.0, le=7 * 86400.0)] = 1800.0


Incident = (SosIncident | WanderIncident | FallIncident | DeviceFallIncident | SmokeIncident
            | GasIncident | WaterIncident | BedExitIncident | StrapRemovedIncident
            | LowBatteryIncident | TachycardiaIncident | OutageIncident)


class RandomIncidents(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Expected incidents per device-day, for every device of the incident's kinds."""

    sos: Rate = 0.0
    wander: Rate = 0.0
    fall: Rate = 0.0
    device_fall: Rate = 0.0
    smoke: Rate = 0.0
    gas: Rate = 0.0
    water: Rate = 0.0
    bed_exit: Rate = 0.0
    strap_removed: Rate = 0.0
    low_battery: Rate = 0.0
    tachycardia: Rate = 0.0
    outage: Rate = 0.0

    def rates(self) -> dict[str, float]:
        """Non-zero rates by incident type."""
        return {k: getattr(self, k) for k in self.__struct_fields__ if getattr(self, k) > 0}


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole scenario file."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    seed: int = 0
    start: Annotated[datetime, Meta(tz=True)] = DEFAULT_START
    duration_s: Annotated[float, Meta(gt=0.0, le=30 * 86400.0)] = 3600.0
    region: Annotated[str, Meta(pattern=REGION_PATTERN)] = "371002"
    timezone: str = "Asia/Shanghai"
    area: Area = msgspec.field(default_factory=Area)
    fleet: FleetSpec = msgspec.field(default_factory=FleetSpec)
    clock_skew: ClockSkew = msgspec.field(default_factory=ClockSkew)
    delivery: DeliveryParams = msgspec.field(default_factory=DeliveryParams)
    incidents: list[Incident] = []
    random_incidents: RandomIncidents = msgspec.field(default_factory=RandomIncidents)
    #: Relative weights of the fall kinds random falls are drawn from; empty: all ``trip``
    #: (and no extra draw, so existing scenarios are unchanged).
    random_fall_kinds: dict[FallKind, Annotated[float, Meta(ge=0.0)]] = {}

    @property
    def start_ms(self) -> int:
        """Start as Unix ms."""
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """End (exclusive) as Unix ms."""
        return self.start_ms + int(self.duration_s * 1000)

    def count(self, kind: FleetKind) -> int:
        """How many devices (kits, for ``home``) of a fleet kind."""
        f = self.fleet
        return {"bracelet": f.bracelets, "watch": f.watches, "fall_sensor": f.fall_sensors,
                "home": f.homes}[kind]


def incident_type(incident: Incident) -> IncidentType:
    """The ``type`` tag of an incident."""
    return incident.__struct_config__.tag  # type: ignore[return-value]


def check_scenario(s: Scenario) -> None:
    """Checks across fields that the struct types cannot express; raises ConfigError."""
    try:
        tz = zoneinfo.ZoneInfo(s.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a directory ("Asia") or a name too long for the file system.
        raise ConfigError(f"invalid scenario: unknown timezone {s.timezone!r} - at "
                          "`$.timezone`") from exc
    # Compared as start > latest start: start + duration overflows for a start in year 9999.
    if s.start < _MIN_START or s.start > _MAX_END - timedelta(seconds=s.duration_s):
        raise ConfigError("invalid scenario: the run must lie within 2020-2099 (the wire "
                          "contract's timestamp range) - at `$.start`")
    for i, inc in enumerate(s.incidents):
        where = f"`$.incidents[{i}]"
        if inc.at_s >= s.duration_s:
            raise ConfigError(f"invalid scenario: at_s {inc.at_s:g} is not before the end of "
                              f"the run ({s.duration_s:g} s) - at {where}.at_s`")
        kind_index = _kind_index(inc, where)
        if kind_index is not None:
            kind, index = kind_index
            if index >= s.count(kind):
                raise ConfigError(f"invalid scenario: {kind} {index} does not exist (the fleet "
                                  f"has {s.count(kind)}) - at {where}.device`")
        if isinstance(inc, BedExitIncident):
            local = (s.start + timedelta(seconds=inc.at_s)).astimezone(tz)
            minute = local.hour * 60 + local.minute
            if not is_night(minute):
                raise ConfigError(
                    f"invalid scenario: a bed exit at {local:%H:%M} local time is outside the "
                    f"detectors' night window {AlarmParams().night}, so nothing would be "
                    f"raised - at {where}.at_s`")


def _kind_index(inc: Incident, where: str) -> tuple[FleetKind, int] | None:
    """The (kind, index) an incident names, checked against its allowed kinds; None for ids."""
    kinds = INCIDENT_KINDS[incident_type(inc)]
    ref = inc.device
    if isinstance(ref, str):
        return None
    if isinstance(ref, int):
        return kinds[0], ref
    try:
        kind, index = ref.kind_index()
    except ValueError as exc:
        raise ConfigError(f"invalid scenario: {exc} - at {where}.device`") from exc
    if kind not in kinds:
        raise ConfigError(f"invalid scenario: a {incident_type(inc)} incident needs a device of "
                          f"kind {' or '.join(kinds)}, not {kind} - at {where}.device`")
    return kind, index


def is_night(minute: int) -> bool:
    """Whether a local minute of day lies in the detectors' night window (bed exits alarm)."""
    start, end = (int(part[:2]) * 60 + int(part[3:]) for part in AlarmParams().night.split("-"))
    if start == end:
        return True
    return start <= minute < end if start < end else (minute >= start or minute < end)


def parse_scenario(data: bytes, *, fmt: Literal["yaml", "json"]) -> Scenario:
    """Decode and check a scenario document; ConfigError names the bad field.

    ``start`` may be a YAML timestamp or a quoted RFC 3339 string: both mean the same.
    """
    scenario = decode_document(data, fmt=fmt, type=Scenario, error=ConfigError,
                               label="invalid scenario")
    check_scenario(scenario)
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read a ``.yaml``/``.yml``/``.json`` scenario file."""
    p = Path(path)
    fmt = format_of(p)
    if fmt != "yaml" and fmt != "json":
        raise ConfigError(f"scenario {p}: expected a .yaml, .yml or .json file")
    data = read_document(p, error=ConfigError, label=f"cannot read scenario {p}")
    try:
        return parse_scenario(data, fmt=fmt)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
