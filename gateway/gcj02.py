"""GCJ-02 to WGS-84 (moved to :mod:`schemas.gcj02`, where ingest can use it too).

Kept as the gateway's name for it: :mod:`gateway.amap` and its tests import from here.
"""

from __future__ import annotations

from schemas.gcj02 import gcj02_to_wgs84, in_china, wgs84_to_gcj02

__all__ = ["gcj02_to_wgs84", "in_china", "wgs84_to_gcj02"]
