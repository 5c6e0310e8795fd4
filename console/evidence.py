"""What the duty console draws beside an alert (issue #6): ``GET /api/v1/alerts/{id}/evidence``.

One read-only snapshot (:func:`alerts.queries.reading`), every value a bound parameter:

- ``zones``: the wearer's safe zones as stored from the registry (circle centre and radius, or
  polygon points as ``[lat, lon]``; the local-time window in which each is active);
- ``track``: the device's location fixes in the 2 h before the alert's latest event, at most
  500 (the latest), oldest first: where the person walked before the alarm;
- ``position``: the alert's latest known position;
- ``event``: the detection event that opened the alert (``detection_events``: the same type, one
  of the wearer's devices, the nearest to ``first_ts`` within 2 minutes), with its evidence;
- ``accel``: for a fall, the acceleration magnitude ``sqrt(x² + y² + z²)`` (g) of the falling
  device from 10 s before to 10 s after ``first_ts``, reduced to at most 500 points for a small
  plot (:func:`magnitude_trace`); ``null`` for other types, empty arrays for a fall without raw
  samples (a watch that reports its own falls streams none).

A missing alert and an alert of another region both answer 404, as in ``alerts.api``: ids do not
reveal what happens in other districts. Coordinates are returned to authorised staff only and
never logged.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoints'
# ``Annotated[Principal, Depends(principal)]``, and ``principal`` is the factory's argument,
# which a postponed (string) annotation could not name.

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, JsonValue

from alerts import queries
from alerts.auth import Principal
from alerts.http_types import PrincipalDependency, UtcDatetime

PREFIX: Final = "/api/v1"
TRACK_WINDOW: Final = queries.POSITIONS_WINDOW
TRACK_MAX: Final = 500
ACCEL_BEFORE: Final = timedelta(seconds=10)
ACCEL_AFTER: Final = timedelta(seconds=10)
ACCEL_MAX_POINTS: Final = 500
#: Chunks read for one trace: 20 s in 1-sample chunks at 50 Hz is 1000; more is a broken device.
ACCEL_MAX_CHUNKS: Final = 2000
#: How far from ``first_ts`` the opening detection event may be (the alarms' 2 min windows).
EVENT_WINDOW: Final = timedelta(minutes=2)





class LatLon(BaseModel):
    """A WGS-84 position."""

    lat: float
    lon: float


class Zone(BaseModel):
    """A safe zone of the wearer."""

    zone_id: str
    kind: Literal["circle", "polygon"]
    center: LatLon | None
    radius_m: float | None
    points: list[tuple[float, float]] | None = Field(description="[lat, lon] pairs")
    active_from: str | None = Field(description="local time HH:MM; null: always active")
    active_to: str | None


class Fix(BaseModel):
    """A location fix of the device."""

    ts: UtcDatetime
    lat: float
    lon: float
    accuracy_m: float | None


class AccelTrace(BaseModel):
    """Acceleration magnitude around the fall, oldest first."""

    device_id: str
    t_ms: list[int] = Field(description="ms relative to the alert's first_ts")
    g: list[float] = Field(description="magnitude in g (1 at rest)")


class DetectionEvent(BaseModel):
    """The detection behind the alert and what the detector saw."""

    id: int
    device_id: str
    type: str
    ts: UtcDatetime
    severity: str
    evidence: dict[str, JsonValue]


class Evidence(BaseModel):
    """Everything the console plots beside one alert."""

    alert_id: int
    type: str
    position: LatLon | None
    zones: list[Zone]
    track: list[Fix]
    accel: AccelTrace | None = Field(description="falls only")
    event: DetectionEvent | None


# --- The trace: pure numerics ---------------------------------------------------------------

def magnitude_trace(chunks: Sequence[tuple[datetime, float, Sequence[float], Sequence[float],
                                           Sequence[float]]],
                    t0: datetime, *, before_ms: float, after_ms: float,
                    max_points: int = ACCEL_MAX_POINTS,
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The acceleration magnitude of raw chunks within [t0 - before_ms, t0 + after_ms].

    Parameters
    ----------
    chunks
        ``(ts, rate_hz, x, y, z)`` per chunk: the first sample's time, the sampling rate (Hz)
        and the axes (g, equal lengths n).
    t0
        The time the trace is relative to (the alert's first event).

    Returns
    -------
    t_ms, g
        Shape (m,) each, m <= ``max_points``: milliseconds relative to ``t0`` (ascending) and
        the magnitude in g. Longer traces keep each bucket's minimum and maximum, so the impact
        peak and the free-fall dip survive the reduction.
    """
    times: list[npt.NDArray[np.float64]] = []
    mags: list[npt.NDArray[np.float64]] = []
    for ts, rate_hz, x, y, z in chunks:
        xyz = np.asarray([x, y, z], dtype=np.float64)                    # (3, n)
        start_ms = (ts - t0).total_seconds() * 1000.0
        times.append(start_ms + np.arange(xyz.shape[1], dtype=np.float64) * (1000.0 / rate_hz))
        mags.append(np.sqrt((xyz * xyz).sum(axis=0)))
    if not times:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    t, g = np.concatenate(times), np.concatenate(mags)
    order = np.argsort(t, kind="stable")
    t, g = t[order], g[order]
    keep = (t >= -before_ms) & (t <= after_ms)
    t, g = t[keep], g[keep]
    if t.size > max_points:
        idx = _min_max_indices(g, max_points // 2)
        t, g = t[idx], g[idx]
    return np.rint(t).astype(np.int64), g


def _min_max_indices(g: npt.NDArray[np.float64], buckets: int) -> npt.NDArray[np.intp]:
    """Indices (ascending) of each of ``buckets`` contiguous buckets' minimum and maximum."""
    bucket = np.arange(g.size) * buckets // g.size                     # (n,), non-decreasing
    starts = np.r_[0, np.flatnonzero(np.diff(bucket)) + 1]              # first index per bucket
    by_max = np.lexsort((-g, bucket))       # within each bucket, largest first
    by_min = np.lexsort((g, bucket))        # within each bucket, smallest first
    return np.unique(np.concatenate([by_max[starts], by_min[starts]]))


# --- Queries --------------------------------------------------------------------------------

def _rows(conn: psycopg.Connection[Any], query: str,
          params: dict[str, Any]) -> list[dict[str, Any]]:
    # psycopg errors raised here become StorageError in queries.reading().
    with conn.cursor(row_factory=dict_row) as cur:
        rows: list[dict[str, Any]] = cur.execute(query, params).fetchall()
    return rows


def _hhmm(t: time | None) -> str | None:
    return None if t is None else t.strftime("%H:%M")


def _zones(conn: psycopg.Connection[Any], wearer_id: str | None) -> list[Zone]:
    if wearer_id is None:
        return []
    return [Zone(
        zone_id=r["zone_id"], kind=r["kind"], radius_m=r["radius_m"],
        center=(LatLon(lat=r["center_lat"], lon=r["center_lon"])
                if r["center_lat"] is not None and r["center_lon"] is not None else None),
        points=[(float(p[0]), float(p[1])) for p in r["polygon"]] if r["polygon"] else None,
        active_from=_hhmm(r["active_from"]), active_to=_hhmm(r["active_to"]),
    ) for r in _rows(conn,
        "SELECT zone_id, kind, center_lat, center_lon, radius_m, polygon, active_from, active_to"
        " FROM geofences WHERE wearer_id = %(w)s ORDER BY zone_id", {"w": wearer_id})]


def _track(conn: psycopg.Connection[Any], device_id: str, until: datetime) -> list[Fix]:
    return [Fix.model_validate(r) for r in _rows(conn,
        "SELECT ts, lat, lon, accuracy_m FROM ("
        " SELECT ts, lat, lon, accuracy_m FROM readings"
        " WHERE device_id = %(d)s AND type = 'location' AND ts > %(since)s AND ts <= %(until)s"
        " AND lat IS NOT NULL AND lon IS NOT NULL ORDER BY ts DESC LIMIT %(n)s) r ORDER BY ts",
        {"d": device_id, "since": until - TRACK_WINDOW, "until": until, "n": TRACK_MAX})]


def _event(conn: psycopg.Connection[Any], alert: dict[str, Any]) -> DetectionEvent | None:
    # By the wearer's devices (any of them may have raised it) and the identity index
    # (device_id, type, ts): a filter on wearer_id would scan the table.
    rows = _rows(conn,
        "SELECT id, device_id, type, ts, severity, evidence FROM detection_events"
        " WHERE device_id = ANY(array(SELECT device_id FROM devices WHERE wearer_id = %(w)s)"
        "                       || %(d)s::text)"
        " AND type = %(type)s AND ts BETWEEN %(t)s - %(win)s AND %(t)s + %(win)s"
        " ORDER BY abs(extract(epoch FROM ts - %(t)s)), (device_id = %(d)s) DESC, id LIMIT 1",
        {"w": alert["wearer_id"], "d": alert["device_id"], "type": alert["type"],
         "t": alert["first_ts"], "win": EVENT_WINDOW})
    return DetectionEvent.model_validate(rows[0]) if rows else None


def _accel(conn: psycopg.Connection[Any], device_id: str, t0: datetime) -> AccelTrace:
    lo, hi = t0 - ACCEL_BEFORE, t0 + ACCEL_AFTER
    # The chunk that contains `lo` is the last one starting at or before it (one backward
    # probe of the index), then those starting inside the window.
    rows = _rows(conn,
        "(SELECT ts, rate_hz, x, y, z FROM accel_chunks WHERE device_id = %(d)s AND ts <= %(lo)s"
        " ORDER BY ts DESC LIMIT 1)"
        " UNION ALL (SELECT ts, rate_hz, x, y, z FROM accel_chunks WHERE device_id = %(d)s"
        " AND ts > %(lo)s AND ts <= %(hi)s ORDER BY ts LIMIT %(n)s)",
        {"d": device_id, "lo": lo, "hi": hi, "n": ACCEL_MAX_CHUNKS})
    t_ms, g = magnitude_trace(
        [(r["ts"], r["rate_hz"], r["x"], r["y"], r["z"]) for r in rows], t0,
        before_ms=ACCEL_BEFORE.total_seconds() * 1000, after_ms=ACCEL_AFTER.total_seconds() * 1000)
    return AccelTrace(device_id=device_id, t_ms=t_ms.tolist(),
                      g=np.round(g, 4).tolist())


def alert_evidence(conn: psycopg.Connection[Any], alert: dict[str, Any]) -> Evidence:
    """The evidence of ``alert`` (a :func:`alerts.queries.get_alert` row)."""
    event = _event(conn, alert)
    accel = None
    if alert["type"] == "fall":
        accel = _accel(conn, event.device_id if event else alert["device_id"], alert["first_ts"])
    position = (LatLon(lat=alert["lat"], lon=alert["lon"])
                if alert["lat"] is not None and alert["lon"] is not None else None)
    return Evidence(alert_id=alert["id"], type=alert["type"], position=position,
                    zones=_zones(conn, alert["wearer_id"]),
                    track=_track(conn, alert["device_id"], alert["last_ts"]),
                    accel=accel, event=event)


def evidence_router(database_url: str, principal: PrincipalDependency) -> APIRouter:
    """``GET /api/v1/alerts/{alert_id}/evidence``, authenticated by ``principal``."""
    router = APIRouter(prefix=PREFIX)

    @router.get("/alerts/{alert_id}/evidence", tags=["console"], responses={
        401: {"description": "not authenticated"}, 404: {"description": "no such alert"},
        503: {"description": "database"}})
    def evidence(caller: Annotated[Principal, Depends(principal)],
                 alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Evidence:
        """Zones, recent track, position, the detection event and, for a fall, the
        acceleration trace of one alert."""
        with queries.reading(database_url) as conn:
            alert = queries.get_alert(conn, alert_id)
            # One answer for "missing" and "not yours".
            if alert is None or not caller.can_see(alert["region"]):
                raise HTTPException(404, f"alert {alert_id} not found")
            return alert_evidence(conn, alert)

    return router
