"""Unregistered devices for the duty console (issue #7): ids that published on the topics of the
caller's regions without being registered there, for ``GET /api/v1/unregistered-devices``.

With a registry configured, ingest refuses the readings of such a device and dead-letters them,
except alarms, which it stores and alerts all the same *and* dead-letters as a sighting
(``ingest/admission.py``, ``docs/registry.md``). So ``dead_letters`` holds every sighting, and
this module reads them back: the device id, the registered region and the reading type are
parsed out of the reason with :data:`schemas.admission.REASON_SQL_PATTERN`, the topic's region is
its third segment (the topic passed validation before admission ran). Rows are grouped by device
and topic region: readings in the window, alarms among them and their types, last receipt.
``registered_region`` is where the registry tables place the device *now*: a device registered
after its sightings shows its new region (ingest admits it once it has reloaded the registry,
i.e. after its restart).

Cost: one range scan of ``dead_letters`` by its ``received_at`` index over the window (24 h by
default), the region filter applied before the pattern. Refused readings are rare in a
configured fleet; a misconfigured one that floods the window makes this query slower, not
wrong, and the statement timeout of :func:`alerts.queries.reading` bounds it.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoint's
# ``Annotated[Principal, Depends(principal)]`` (see console/devices.py).

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from alerts import queries
from alerts.auth import Principal
from alerts.http_types import PrincipalDependency, RegionCode, UtcDatetime
from foundation.clock import Clock, SystemClock
from schemas.admission import REASON_SQL_PATTERN
from schemas.regions import sql_in_scope

PATH: Final = "/unregistered-devices"
DEFAULT_HOURS: Final = 24
MAX_HOURS: Final = 7 * 24
DEFAULT_LIMIT: Final = 200
MAX_LIMIT: Final = 1000


class UnregisteredDevice(BaseModel):
    """One device id seen on one region's topics without being registered there."""

    device_id: str
    region: str = Field(description="region of the topic it published on")
    registered_region: str | None = Field(
        description="where the registry places it now: null = not registered")
    readings: int = Field(description="its readings in the window, refused or (alarms) admitted")
    alarms: int = Field(description="alarm readings among them: stored and alerted anyway")
    alarm_types: list[str] = Field(description="wire types of those alarms (sos, fall, ...)")
    last_seen: UtcDatetime = Field(description="when the service received the latest")


class UnregisteredPage(BaseModel):
    """Unregistered devices, the most recently seen first."""

    devices: list[UnregisteredDevice]
    since: UtcDatetime = Field(description="start of the window")
    truncated: bool = Field(description="more devices were seen than ``limit``")


#: The topic's region, covering the division codes below it (schemas.regions).
_IN_SCOPE: Final = sql_in_scope("split_part(dl.topic, '/', 3)", "regions")
_UNREGISTERED: Final = f"""
SELECT s.device_id, s.region, d.region AS registered_region, s.readings, s.alarms,
       s.alarm_types, s.last_seen
FROM (
  SELECT coalesce(x.m[1], x.m[2]) AS device_id, x.region, count(*) AS readings,
         count(*) FILTER (WHERE x.m[5] = 'alarm admitted') AS alarms,
         coalesce(array_agg(DISTINCT x.m[4] ORDER BY x.m[4])
                  FILTER (WHERE x.m[5] = 'alarm admitted'), '{{}}') AS alarm_types,
         max(x.received_at) AS last_seen
  FROM (SELECT dl.received_at, split_part(dl.topic, '/', 3) AS region,
               regexp_match(dl.reason, %(pattern)s) AS m
        FROM dead_letters dl
        WHERE dl.received_at > %(since)s
          AND {_IN_SCOPE}
       ) x
  WHERE x.m IS NOT NULL
  GROUP BY 1, 2
) s
LEFT JOIN devices d ON d.device_id = s.device_id
ORDER BY s.last_seen DESC, s.device_id, s.region
LIMIT %(limit)s
"""


def list_unregistered(conn: psycopg.Connection[Any], *, regions: list[str] | None,
                      since: datetime, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Unregistered devices seen on the topics of ``regions`` (None: all) after ``since``,
    the most recently seen first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows: list[dict[str, Any]] = cur.execute(_UNREGISTERED, {
            "pattern": REASON_SQL_PATTERN, "since": since, "regions": regions, "limit": limit,
        }).fetchall()
    return rows


def unregistered_router(database_url: str, principal: PrincipalDependency, *,
                        clock: Clock | None = None) -> APIRouter:
    """``GET /unregistered-devices`` (included under ``/api/v1`` by
    :func:`console.devices.devices_router`), authenticated by ``principal``."""
    now_ms = (clock or SystemClock()).now_ms
    router = APIRouter()

    @router.get(PATH, tags=["console"], responses={401: {"description": "not authenticated"},
                                                   503: {"description": "database"}})
    def unregistered(
        caller: Annotated[Principal, Depends(principal)],
        region: Annotated[list[RegionCode] | None,
                          Query(description="narrow to these regions")] = None,
        hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="window")] = DEFAULT_HOURS,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> UnregisteredPage:
        """Devices that published on the topics of the caller's regions without being
        registered there (registry admission, docs/registry.md), in the last ``hours``."""
        regions = caller.narrowed(region)   # narrowing never widens what the caller may see
        since = datetime.fromtimestamp(now_ms() / 1000, UTC) - timedelta(hours=hours)
        with queries.reading(database_url) as conn:
            rows = list_unregistered(conn, regions=regions, since=since, limit=limit + 1)
        return UnregisteredPage(devices=[UnregisteredDevice(**r) for r in rows[:limit]],
                                since=since, truncated=len(rows) > limit)

    return router
