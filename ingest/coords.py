"""Positions of GCJ-02 devices back to WGS-84, before storing and detection (docs/registry.md).

Some device models report the coordinates of Chinese maps (GCJ-02, up to several hundred metres
from WGS-84 inside China) instead of GPS's. The registry says which (``coord_system: gcj02`` on
the device); every position such a device sends (a location fix, an SOS's, a fall's, a device
alarm's) is converted here, in the pipeline thread right after decoding, so the readings table,
the geofences and the console hold WGS-84 only. Readings of other devices pass untouched, at the
cost of one set lookup each when any GCJ-02 device is registered, none otherwise.

The conversion (:func:`schemas.gcj02.gcj02_to_wgs84`) inverts the published forward transform
iteratively, to about 0.1 mm. A device re-registered from ``gcj02`` to ``wgs84`` takes effect at
the next registry reload (``ingest/registry_watch.py``), like any registry change: readings
already stored stay as they were converted.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schemas.gcj02 import gcj02_to_wgs84
from schemas.readings import DeviceAlarm, Fall, Location, Reading, Sos
from schemas.registry import Registry

_POSITIONED = (Location, Sos, Fall, DeviceAlarm)


def gcj02_devices(registry: Registry | None) -> frozenset[str]:
    """The ids of the registry's devices that report GCJ-02."""
    if registry is None:
        return frozenset()
    return frozenset(d.id for w in registry.wearers for d in w.devices
                     if d.coord_system == "gcj02")


def to_wgs84(readings: Iterable[Reading], gcj02: frozenset[str]) -> list[Reading]:
    """``readings`` with the positions of ``gcj02`` devices converted to WGS-84."""
    out = list(readings)
    if not gcj02:
        return out
    for i, r in enumerate(out):
        if (r.device_id in gcj02 and isinstance(r, _POSITIONED)
                and r.lat is not None and r.lon is not None):
            lat, lon = gcj02_to_wgs84(r.lat, r.lon)
            out[i] = msgspec.structs.replace(r, lat=lat, lon=lon)
    return out
