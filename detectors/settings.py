"""The ``[detectors]`` section: detection in the service (on/off, timer period, time zone)
and the detector parameters, as the engine takes them (:meth:`DetectorsConfig.params`)."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from detectors.fall import FallParams
from detectors.params import AlarmParams, DetectorParams, GeofenceParams, SupervisionParams


class DetectorsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Detection in the service: on/off, timer period, and the detector parameters
    (sub-tables ``[detectors.alarms]``, ``.geofence``, ``.supervision``, ``.fall``; defaults and
    their reasons in ``detectors/params.py`` and ``docs/detectors.md``)."""

    enabled: bool = True
    #: How often offline, inactivity and silent-fall rules are evaluated.
    tick_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    timezone: str = "Asia/Shanghai"
    #: Device kinds whose accelerometer streams go through the fall detector (docs/detectors.md).
    accel_fall_kinds: tuple[
        Literal["bracelet", "watch", "fall_sensor", "home_sensor", "pendant"], ...
    ] = ("fall_sensor", "pendant")
    accel_fall_unregistered: bool = True
    alarms: AlarmParams = AlarmParams()
    geofence: GeofenceParams = GeofenceParams()
    supervision: SupervisionParams = SupervisionParams()
    fall: FallParams = FallParams()

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # OSError: a directory ("Asia") or a name too long for the file system.
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc

    def params(self) -> DetectorParams:
        """The parameters as the engine takes them."""
        return DetectorParams(alarms=self.alarms, geofence=self.geofence,
                              supervision=self.supervision, fall=self.fall,
                              timezone=self.timezone, accel_fall_kinds=self.accel_fall_kinds,
                              accel_fall_unregistered=self.accel_fall_unregistered)
