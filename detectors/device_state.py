"""Per-device detector state as columns: one row per device, one numpy array per field.

Detectors gather the rows of a batch's devices (``state[rows]``), compute, and scatter the new
values back. Arrays grow by doubling, so adding devices is amortised O(1). Memory is about 200
bytes per device plus the id and region strings: a million devices is a few hundred MB. Home
alarm state has one row per device × sensor (``row * 6 + sensor``).
"""

from __future__ import annotations

from typing import Any, Final, get_args

import numpy as np
import numpy.typing as npt

from schemas.readings import DeviceAlarmKind

_SENSORS: Final = 6

# name: (dtype, initial value). -1 marks "never" for times.
_FIELDS: Final[dict[str, tuple[Any, Any]]] = {
    "wearer": (np.int32, -1), "tz": (np.int16, 0), "accel_fall": (np.bool_, False), "zone_lo": (np.int64, 0),
    "zone_hi": (np.int64, 0), "offline_after_ms": (np.int64, 0),
    "seen_ms": (np.int64, -1), "heard": (np.bool_, False), "offline": (np.bool_, False),
    "sos_start": (np.int64, -1), "sos_end": (np.int64, -1),
    "fall_start": (np.int64, -1), "fall_end": (np.int64, -1),
    "fix_ts": (np.int64, -1), "fix_lat": (np.float64, np.nan), "fix_lon": (np.float64, np.nan),
    "geo_run": (np.int64, 0), "geo_run_start": (np.int64, -1), "geo_exited": (np.bool_, False),
    "bat_ts": (np.int64, -1), "bat_low": (np.bool_, False),
    "wear_ts": (np.int64, -1), "removed": (np.bool_, False),
    "hr_ts": (np.int64, -1), "hr_run": (np.int64, 0), "hr_run_start": (np.int64, -1),
    "hr_alarm": (np.bool_, False),
    "steps": (np.int64, -1), "active_ms": (np.int64, -1), "has_activity": (np.bool_, False),
    "inactive": (np.bool_, False),
    "still_lat": (np.float64, np.nan), "still_lon": (np.float64, np.nan),
}
_SENSOR_FIELDS: Final[dict[str, tuple[Any, Any]]] = {
    "home_start": (np.int64, -1), "home_end": (np.int64, -1), "home_open": (np.bool_, False),
}
#: Kinds of a device's own alarm, read off the wire contract, one episode state each.
DEVICE_ALARM_KINDS: Final[tuple[str, ...]] = get_args(DeviceAlarmKind)
_DEVICE_ALARM_FIELDS: Final[dict[str, tuple[Any, Any]]] = {
    "dev_alarm_start": (np.int64, -1), "dev_alarm_end": (np.int64, -1),
}


class DeviceTable:
    """Device id → row, and the state columns (attributes named as in ``_FIELDS``)."""

    wearer: npt.NDArray[np.int32]
    accel_fall: npt.NDArray[np.bool_]
    tz: npt.NDArray[np.int16]
    zone_lo: npt.NDArray[np.int64]
    zone_hi: npt.NDArray[np.int64]
    offline_after_ms: npt.NDArray[np.int64]
    seen_ms: npt.NDArray[np.int64]
    heard: npt.NDArray[np.bool_]
    offline: npt.NDArray[np.bool_]
    sos_start: npt.NDArray[np.int64]
    sos_end: npt.NDArray[np.int64]
    fall_start: npt.NDArray[np.int64]
    fall_end: npt.NDArray[np.int64]
    fix_ts: npt.NDArray[np.int64]
    fix_lat: npt.NDArray[np.float64]
    fix_lon: npt.NDArray[np.float64]
    geo_run: npt.NDArray[np.int64]
    geo_run_start: npt.NDArray[np.int64]
    geo_exited: npt.NDArray[np.bool_]
    bat_ts: npt.NDArray[np.int64]
    bat_low: npt.NDArray[np.bool_]
    wear_ts: npt.NDArray[np.int64]
    removed: npt.NDArray[np.bool_]
    hr_ts: npt.NDArray[np.int64]
    hr_run: npt.NDArray[np.int64]
    hr_run_start: npt.NDArray[np.int64]
    hr_alarm: npt.NDArray[np.bool_]
    steps: npt.NDArray[np.int64]
    active_ms: npt.NDArray[np.int64]
    has_activity: npt.NDArray[np.bool_]
    inactive: npt.NDArray[np.bool_]
    still_lat: npt.NDArray[np.float64]
    still_lon: npt.NDArray[np.float64]
    home_start: npt.NDArray[np.int64]
    home_end: npt.NDArray[np.int64]
    home_open: npt.NDArray[np.bool_]
    dev_alarm_start: npt.NDArray[np.int64]
    dev_alarm_end: npt.NDArray[np.int64]

    def __init__(self, *, offline_default_ms: int, accel_fall_default: bool = True,
                 capacity: int = 1024) -> None:
        self.offline_default_ms = offline_default_ms
        self.accel_fall_default = accel_fall_default
        self.ids: list[str] = []
        self.regions: list[str] = []
        self._index: dict[str, int] = {}
        self._capacity = 0
        for name, (dtype, init) in _FIELDS.items():
            setattr(self, name, np.empty(0, dtype=dtype))
        for name, (dtype, init) in (_SENSOR_FIELDS | _DEVICE_ALARM_FIELDS).items():
            setattr(self, name, np.empty(0, dtype=dtype))
        self._grow(capacity)

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, device_id: str, region: str) -> int:
        """The row of ``device_id``, created on first sight. The latest region is kept."""
        row = self._index.get(device_id)
        if row is None:
            row = len(self.ids)
            if row >= self._capacity:
                self._grow(2 * self._capacity)
            self._index[device_id] = row
            self.ids.append(device_id)
            self.regions.append(region)
            self.offline_after_ms[row] = self.offline_default_ms
            self.accel_fall[row] = self.accel_fall_default
        elif region and self.regions[row] != region:
            self.regions[row] = region
        return row

    def bind(self, row: int, *, wearer: int, tz: int, zone_lo: int, zone_hi: int,
             offline_after_ms: int, accel_fall: bool) -> None:
        """Attach registry facts to a device row."""
        self.wearer[row], self.tz[row], self.accel_fall[row] = wearer, tz, accel_fall
        self.zone_lo[row], self.zone_hi[row] = zone_lo, zone_hi
        self.offline_after_ms[row] = offline_after_ms

    def _grow(self, capacity: int) -> None:
        for fields, per_row in ((_FIELDS, 1), (_SENSOR_FIELDS, _SENSORS),
                                (_DEVICE_ALARM_FIELDS, len(DEVICE_ALARM_KINDS))):
            for name, (dtype, init) in fields.items():
                old = getattr(self, name)
                new = np.full(capacity * per_row, init, dtype=dtype)
                new[:len(old)] = old
                setattr(self, name, new)
        self._capacity = capacity
