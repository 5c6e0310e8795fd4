"""GCJ-02 to WGS-84: Chinese map services' coordinates back to the wire contract's.

Positions from Chinese providers (Amap among them) are in GCJ-02, the datum Chinese law requires
of published maps: WGS-84 shifted by a deterministic, non-linear offset of up to several hundred
metres inside China, and identical to WGS-84 outside it. The wire contract, the geofences and
the duty console's map links are WGS-84, so a GCJ-02 position taken as is would put a wearer
hundreds of metres from where they are, enough to cross a home geofence.

:func:`wgs84_to_gcj02` is the published forward transform (the Krasovsky-ellipsoid formula
every open implementation shares: eviltransform, prcoords, coordtransform); it has no closed
inverse, so :func:`gcj02_to_wgs84` inverts it by fixed-point iteration to within 1e-9 degrees
(about 0.1 mm), a few steps from the start. The forward transform applies inside a rough
bounding box of China, as those implementations do; outside it both functions are the identity.
No library is used: the candidates on PyPI are unmaintained and untyped, and this is thirty
lines checked against published values (tests/test_gateway_geolocate.py,
tests/test_registry_live.py).

In ``schemas``, below both users: the gateway converts Amap's answers with it, ingest the
positions of devices registered with ``coord_system: gcj02`` (docs/registry.md).
"""

from __future__ import annotations

import math
from typing import Final

#: Krasovsky 1940 semi-major axis (m) and first eccentricity squared, as GCJ-02 uses them.
_A: Final = 6378245.0
_EE: Final = 0.00669342162296594323
#: Iterations of the inverse; it converges in about five inside China.
_MAX_STEPS: Final = 30
_EPSILON_DEG: Final = 1e-9


def in_china(lat: float, lon: float) -> bool:
    """Whether GCJ-02 shifts this point (the rough bounding box the transform is applied in)."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """``(lat, lon)`` in GCJ-02 of a WGS-84 point, degrees."""
    if not in_china(lat, lon):
        return lat, lon
    d_lat, d_lon = _offset(lat, lon)
    return lat + d_lat, lon + d_lon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """``(lat, lon)`` in WGS-84 of a GCJ-02 point, degrees: the WGS-84 point whose forward
    transform is ``(lat, lon)``."""
    if not in_china(lat, lon):
        return lat, lon
    w_lat, w_lon = lat, lon
    for _ in range(_MAX_STEPS):
        g_lat, g_lon = wgs84_to_gcj02(w_lat, w_lon)
        e_lat, e_lon = g_lat - lat, g_lon - lon
        w_lat, w_lon = w_lat - e_lat, w_lon - e_lon
        if abs(e_lat) < _EPSILON_DEG and abs(e_lon) < _EPSILON_DEG:
            break
    return w_lat, w_lon


def _offset(lat: float, lon: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    d_lat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
             + 0.2 * math.sqrt(abs(x)) + _waves(x, y, (160.0, 320.0), (12.0, 30.0)))
    d_lon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y
             + 0.1 * math.sqrt(abs(x)) + _waves(x, x, (150.0, 300.0), (12.0, 30.0)))
    rad = math.radians(lat)
    magic = 1.0 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = d_lat * 180.0 / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = d_lon * 180.0 / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return d_lat, d_lon


def _waves(x: float, v: float, amplitudes: tuple[float, float],
           periods: tuple[float, float]) -> float:
    """The transform's sinusoidal terms: two on ``x`` shared by both axes, two pairs on ``v``
    (the latitude offset's on y, the longitude's on x)."""
    pi = math.pi
    out = (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    out += (20.0 * math.sin(v * pi) + 40.0 * math.sin(v / 3.0 * pi)) * 2.0 / 3.0
    out += (amplitudes[0] * math.sin(v / periods[0] * pi)
            + amplitudes[1] * math.sin(v / periods[1] * pi)) * 2.0 / 3.0
    return out
