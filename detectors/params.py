"""Detector parameters: every threshold in one typed place, with the reason for its default.

The reasons are summarised here and argued in ``docs/detectors.md``. Configuration files set them
under ``[detectors.<section>]`` (see :mod:`eldercare.config`); nothing else reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from detectors.fall import FallParams

_WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


def _check_window(name: str, value: str) -> None:
    if not _WINDOW.match(value):
        raise ValueError(f"{name} must be a local-time window HH:MM-HH:MM, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AlarmParams:
    """SOS presses, device-reported falls and home alarms."""

    #: Presses this close to the previous one join its event (the issue's 2 minutes: a frightened
    #: person presses again and again; each press must not page the duty officer anew).
    sos_window_s: float = 120.0
    #: A device re-reporting the same fall (some watches repeat until answered).
    fall_window_s: float = 120.0
    #: Smoke, gas and water sensors repeat while the condition lasts (typically every 1-5 min);
    #: reports closer than this, with no "cleared" report between, are one alarm.
    home_window_s: float = 600.0
    #: A device's own alarm of one kind (a watch's low-battery or fence bit, a tracker's power
    #: cut) re-reported closer than this is one alarm: watches repeat an unanswered alarm every
    #: few seconds and set state bits in every position report.
    device_alarm_window_s: float = 600.0
    #: Local-time window in which bed-exit and door sensors alarm (``HH:MM-HH:MM``); outside it
    #: getting up or opening the door is daily life.
    night: str = "22:00-06:00"

    def __post_init__(self) -> None:
        _check_window("night", self.night)


@dataclass(frozen=True, kw_only=True, slots=True)
class GeofenceParams:
    """Anti-wandering: exits from and returns to the wearer's safe zones."""

    #: Outside by more than max(margin, accuracy) counts as outside. 50 m is about twice the
    #: 95th-percentile error of a consumer GPS fix in a city (multipath), so a fix at the door
    #: of a 100 m zone is not an exit.
    margin_m: float = 50.0
    #: Consecutive outside fixes that declare an exit: one wild fix is never enough.
    exit_fixes: int = 2
    #: ...or this long outside, whichever comes first (fixes every 10-60 s: within a minute).
    exit_after_s: float = 60.0
    #: A return needs the fix this far inside: with the exit margin it forms a hysteresis band of
    #: margin + return_margin (70 m) that GPS jitter along the boundary does not cross.
    return_margin_m: float = 20.0

    def __post_init__(self) -> None:
        if self.margin_m < 0 or self.return_margin_m < 0 or self.exit_fixes < 1 \
                or self.exit_after_s <= 0:
            raise ValueError("geofence margins must be >= 0, exit_fixes >= 1, exit_after_s > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisionParams:
    """Supervision: battery, wear, vitals, connectivity, inactivity."""

    #: Below this a bracelet has about a day left at typical drain; family can still charge it.
    low_battery_pct: float = 20.0
    #: Re-armed when the battery is back above this (it has been charged).
    rearm_battery_pct: float = 40.0
    #: Heart rate outside [low, high] for this many consecutive readings: one spike is motion
    #: artefact; three readings (minutes apart on watches) is sustained.
    heart_rate_low_bpm: float = 45.0
    heart_rate_high_bpm: float = 120.0
    heart_rate_readings: int = 3
    #: No reading for this long declares a device offline, per registry device kind. Bracelets
    #: report at least every few minutes, so 15 min is three missed reports; home sensors only
    #: send daily heartbeats.
    offline_after_s: dict[str, float] = field(default_factory=lambda: {
        "bracelet": 900.0, "watch": 1800.0, "pendant": 1800.0, "fall_sensor": 1800.0,
        "home_sensor": 26 * 3600.0,
    })
    #: Devices not in the registry (or of another kind).
    offline_default_s: float = 1800.0
    #: No steps and no motion for this long within the daytime window raises ``inactivity``:
    #: the "proactive care" check (an elder who has not moved since morning may need a call).
    inactivity_after_s: float = 4 * 3600.0
    daytime: str = "08:00-20:00"
    #: A step counter increase or accelerometer spread above this (g, standard deviation of the
    #: magnitude over a chunk) or a fix this far from the last still position is activity.
    motion_std_g: float = 0.05
    motion_distance_m: float = 100.0

    def __post_init__(self) -> None:
        _check_window("daytime", self.daytime)
        if self.heart_rate_readings < 1 or self.rearm_battery_pct < self.low_battery_pct:
            raise ValueError("heart_rate_readings must be >= 1 and rearm_battery_pct >= "
                             "low_battery_pct")


@dataclass(frozen=True, kw_only=True, slots=True)
class DetectorParams:
    """All detector parameters."""

    alarms: AlarmParams = AlarmParams()
    geofence: GeofenceParams = GeofenceParams()
    supervision: SupervisionParams = SupervisionParams()
    fall: FallParams = field(default_factory=FallParams)
    #: Default time zone of wearers the registry does not know (the registry sets one per wearer).
    timezone: str = "Asia/Shanghai"
    #: Registry device kinds whose raw accelerometer streams go through our fall detector. Trunk
    #: worn only: on UMAFall the detector reaches 94% sensitivity / 99.5% specificity at the
    #: waist but raises 30 false alarms per hour of daily activity at the wrist, which would bury
    #: real alarms. Wrist devices (bracelets, watches) report their own ``fall`` readings, which
    #: are always raised; their accelerometer still counts as motion for inactivity.
    accel_fall_kinds: tuple[str, ...] = ("fall_sensor", "pendant")
    #: Devices missing from the registry: their position on the body is unknown, so a fall that
    #: may be real is not ignored; register wrist devices to keep their streams out.
    accel_fall_unregistered: bool = True
    #: Devices whose accelerometer stream state the fall detector keeps (about 4 KB each, so
    #: 0.4 GB at the default); beyond it the least recently fed is evicted, its pending
    #: candidate decided on the evidence available (docs/fall-detector.md).
    max_accel_devices: int = 100_000
