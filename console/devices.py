"""The devices of the caller's regions for the duty console (issue #6): online or not, battery,
worn, last seen and last position, for ``GET /api/v1/devices``. The same router serves the
devices that published there *without* being registered (issue #7, ``console/unregistered.py``).

The registry (``devices``, ``wearers``) lists the devices; their state comes from their latest
readings, on a fresh read-only connection per request (:func:`alerts.queries.reading`), with
every value a bound parameter. A device is *online* when its latest reading (of any type, raw
accelerometer chunks included) is no older than its kind's ``offline_after_s``, by default the
offline supervision's thresholds (:class:`detectors.params.SupervisionParams`), so the list
agrees with the ``offline`` alerts. Times are device times, like the supervision's.

How it scales: ``readings`` has one index, ``(device_id, type, ts, seq)``, and no other on
purpose (it costs write throughput, ``ingest/sql/0001_readings.sql``). So the latest reading
per device is found per *type*: one backward index probe for each of the seven reading types,
plus one on ``accel_chunks``, one for the latest wear report, one for the latest fix and two
for the battery (the types that carry it), all in LATERAL subqueries; ``last_seen`` sits
behind an ``OFFSET 0`` fence so it is computed once per device. The cost is a dozen index
probes per device whatever the length of its history: ~0.2 ms per device measured with 600 000
readings (a page of 500 in ~0.1 s). ``max(ts)`` over all of a device's rows or ``DISTINCT ON
(device_id)`` over ``readings`` would read every row of every history instead. The battery
probe skips readings without a level, so it is bounded to the week before the device's last
reading: a device whose fixes never carry a level cannot make it scan months. Pages follow
``device_id`` (keyset, ``next_after``); without ``status`` a page computes only its own rows;
with it, rows are computed until the page is full (a district of 10 000 devices, ~2 s at worst).
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoints'
# ``Annotated[Principal, Depends(principal)]``, and ``principal`` is the factory's argument,
# which a postponed (string) annotation could not name.

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from alerts import queries
from alerts.auth import Principal
from alerts.http_boundary import StrictRoute
from alerts.http_types import PrincipalDependency, RegionCode, Text, UtcDatetime
from console.unregistered import unregistered_router
from detectors.params import SupervisionParams
from foundation.clock import Clock, SystemClock
from schemas.readings import TYPE_NAMES, Accel
from schemas.regions import sql_in_scope

PREFIX: Final = "/api/v1"
MAX_LIMIT: Final = 2000
DEFAULT_LIMIT: Final = 500
#: How far before its latest reading a device's battery level is looked for.
BATTERY_LOOKBACK: Final = timedelta(days=7)
#: Reading types stored in ``readings`` (raw accelerometer chunks live in ``accel_chunks``),
#: and those that may carry a battery level: from the wire schema, so a new type is not missed.
READING_TYPES: Final = tuple(name for cls, name in TYPE_NAMES.items() if cls is not Accel)
BATTERY_TYPES: Final = tuple(name for cls, name in TYPE_NAMES.items()
                             if "battery_pct" in cls.__struct_fields__)





class DeviceWearer(BaseModel):
    """Who wears the device (no contact details)."""

    id: str
    name: str


class DevicePosition(BaseModel):
    """The device's latest location fix."""

    lat: float
    lon: float
    ts: UtcDatetime


class DeviceState(BaseModel):
    """A registered device and what its latest readings say."""

    device_id: str
    kind: str
    region: str
    model: str | None
    wearer: DeviceWearer | None
    last_seen: UtcDatetime | None = Field(description="device time of its latest reading")
    online: bool
    offline_after_s: float = Field(description="silence after which this kind is offline")
    battery_pct: float | None
    battery_at: UtcDatetime | None
    worn: bool | None = Field(description="latest wear report; null if it never sent one")
    worn_at: UtcDatetime | None
    position: DevicePosition | None


class DevicePage(BaseModel):
    """A page of devices by id; pass ``next_after`` as ``after`` for the next page."""

    devices: list[DeviceState]
    next_after: str | None


#: A region covers the division codes below it (schemas.regions).
_IN_SCOPE: Final = sql_in_scope("d.region", "regions")
_DEVICES: Final = f"""
SELECT * FROM (
  SELECT d.device_id, d.kind, d.region, d.model, d.wearer_id, w.name AS wearer_name,
         seen.last_seen, th.after_s AS offline_after_s,
         coalesce(seen.last_seen >= %(now)s - make_interval(secs => th.after_s), false) AS online,
         bat.battery_pct, bat.ts AS battery_at, wear.worn, wear.ts AS worn_at,
         loc.lat, loc.lon, loc.ts AS position_at
  FROM devices d
  LEFT JOIN wearers w ON w.wearer_id = d.wearer_id
  CROSS JOIN LATERAL (SELECT coalesce(
      (SELECT k.s FROM unnest(%(kinds)s::text[], %(secs)s::float8[]) AS k(kind, s)
       WHERE k.kind = d.kind), %(default_s)s::float8) AS after_s) th
  CROSS JOIN LATERAL (SELECT greatest(
      (SELECT max(r.ts) FROM unnest(%(types)s::text[]) AS k(type) CROSS JOIN LATERAL
         (SELECT max(x.ts) AS ts FROM readings x
          WHERE x.device_id = d.device_id AND x.type = k.type) r),
      (SELECT max(c.ts) FROM accel_chunks c WHERE c.device_id = d.device_id)) AS last_seen
      OFFSET 0) seen   -- a fence: computed once per device, not again in each use below
  LEFT JOIN LATERAL (
      SELECT b.battery_pct, b.ts FROM unnest(%(battery_types)s::text[]) AS k(type)
      CROSS JOIN LATERAL (SELECT x.battery_pct, x.ts FROM readings x
          WHERE x.device_id = d.device_id AND x.type = k.type AND x.battery_pct IS NOT NULL
            AND x.ts > seen.last_seen - %(lookback)s
          ORDER BY x.ts DESC LIMIT 1) b
      ORDER BY b.ts DESC LIMIT 1) bat ON true
  LEFT JOIN LATERAL (SELECT x.worn, x.ts FROM readings x
      WHERE x.device_id = d.device_id AND x.type = 'wear' ORDER BY x.ts DESC LIMIT 1) wear ON true
  LEFT JOIN LATERAL (SELECT x.lat, x.lon, x.ts FROM readings x
      WHERE x.device_id = d.device_id AND x.type = 'location' ORDER BY x.ts DESC LIMIT 1
  ) loc ON true
  WHERE {_IN_SCOPE}
    AND (%(after)s::text IS NULL OR d.device_id > %(after)s)
) s
WHERE (%(online)s::boolean IS NULL OR s.online = %(online)s)
ORDER BY s.device_id LIMIT %(limit)s
"""


def list_devices(conn: psycopg.Connection[Any], *, regions: list[str] | None, now: datetime,
                 thresholds: Mapping[str, float], default_s: float, online: bool | None = None,
                 after: str | None = None, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Registered devices of ``regions`` (None: all) with their state, by ``device_id``.

    ``thresholds`` maps a device kind to its offline period (s); other kinds get
    ``default_s``. ``online`` True/False keeps only online/offline devices.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows: list[dict[str, Any]] = cur.execute(_DEVICES, {
            "now": now, "kinds": list(thresholds), "secs": list(thresholds.values()),
            "default_s": default_s, "types": list(READING_TYPES),
            "battery_types": list(BATTERY_TYPES), "lookback": BATTERY_LOOKBACK,
            "regions": regions, "after": after, "online": online, "limit": limit,
        }).fetchall()
    return rows


def _state(row: dict[str, Any]) -> DeviceState:
    wearer = (DeviceWearer(id=row["wearer_id"], name=row["wearer_name"])
              if row["wearer_id"] is not None and row["wearer_name"] is not None else None)
    position = (DevicePosition(lat=row["lat"], lon=row["lon"], ts=row["position_at"])
                if row["position_at"] is not None else None)
    return DeviceState(
        device_id=row["device_id"], kind=row["kind"], region=row["region"], model=row["model"],
        wearer=wearer, last_seen=row["last_seen"], online=row["online"],
        offline_after_s=row["offline_after_s"], battery_pct=row["battery_pct"],
        battery_at=row["battery_at"], worn=row["worn"], worn_at=row["worn_at"],
        position=position)


def devices_router(database_url: str, principal: PrincipalDependency, *,
                   offline_after_s: Mapping[str, float] | float | None = None,
                   clock: Clock | None = None) -> APIRouter:
    """``GET /api/v1/devices`` and ``GET /api/v1/unregistered-devices``, authenticated by the
    ``principal`` dependency.

    ``offline_after_s``: one period for every kind, or one per kind (others get the
    supervision's default); None: the offline supervision's own thresholds.
    """
    params = SupervisionParams()
    if offline_after_s is None:
        thresholds, default_s = dict(params.offline_after_s), params.offline_default_s
    elif isinstance(offline_after_s, Mapping):
        thresholds, default_s = dict(offline_after_s), params.offline_default_s
    else:
        thresholds, default_s = {}, float(offline_after_s)
    now_ms = (clock or SystemClock()).now_ms
    router = APIRouter(prefix=PREFIX, route_class=StrictRoute)

    @router.get("/devices", tags=["console"], responses={401: {"description": "not authenticated"},
                                                         503: {"description": "database"}})
    def devices(
        caller: Annotated[Principal, Depends(principal)],
        region: Annotated[list[RegionCode] | None,
                          Query(description="narrow to these regions")] = None,
        status: Annotated[Literal["online", "offline"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        after: Annotated[Text | None, Query(max_length=64, description="next_after of the "
                                                                       "previous page")] = None,
    ) -> DevicePage:
        """Registered devices of the caller's regions, by id, with their latest state."""
        regions = caller.narrowed(region)   # narrowing never widens what the caller may see
        now = datetime.fromtimestamp(now_ms() / 1000, UTC)
        with queries.reading(database_url) as conn:
            rows = list_devices(conn, regions=regions, now=now, thresholds=thresholds,
                                default_s=default_s, limit=limit, after=after,
                                online=None if status is None else status == "online")
        return DevicePage(devices=[_state(r) for r in rows],
                          next_after=rows[-1]["device_id"] if len(rows) == limit else None)

    router.include_router(unregistered_router(database_url, principal, clock=clock))
    return router
