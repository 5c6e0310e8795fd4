"""The alert document: the JSON every channel sends (webhook body, MQTT payload, message texts).

Pure: built from an alert row (a mapping with the ``alerts`` columns plus ``wearer_name`` and
``timezone`` from the registry). Its shape is the contract the 12349 platform codes against and
is documented in docs/alerts.md ("Alert document"); fields are only ever added.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

SCHEMA: Final = "eldercare.alert/1"

#: Default map link: the Amap (高德) URI API, which takes WGS-84 coordinates when told so and
#: opens in any phone browser; configurable in ``[alerts] map_link``.
DEFAULT_MAP_LINK: Final = (
    "https://uri.amap.com/marker?position={lon:.6f},{lat:.6f}&coordinate=wgs84&callnative=0"
)


def alert_document(row: Mapping[str, Any], *, event: str, now: datetime,
                   map_link: str | None = DEFAULT_MAP_LINK,
                   escalation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The document announcing ``event`` (``alert.opened``, ``alert.escalated``...) of ``row``."""
    doc: dict[str, Any] = {
        "schema": SCHEMA, "event": event, "sent_at": now.isoformat(),
        "alert": alert_object(row, map_link=map_link),
    }
    if escalation is not None:
        doc["escalation"] = dict(escalation)
    return doc


def alert_object(row: Mapping[str, Any], *, map_link: str | None) -> dict[str, Any]:
    """The ``alert`` member of the document."""
    lat, lon = row.get("lat"), row.get("lon")
    position = None if lat is None or lon is None else {"lat": lat, "lon": lon}
    return {
        "id": row["id"], "type": row["type"], "priority": row["priority"],
        "severity": row["severity"], "status": row["status"], "region": row["region"],
        "subject": row["subject"],
        "wearer": {"id": row.get("wearer_id"), "name": row.get("wearer_name")},
        "timezone": row.get("timezone") or "Asia/Shanghai",
        "device_id": row["device_id"],
        "first_ts": _iso(row["first_ts"]), "last_ts": _iso(row["last_ts"]),
        "opened_at": _iso(row["opened_at"]), "event_count": row["event_count"],
        "position": position,
        "map_link": map_link.format(lat=lat, lon=lon) if map_link and position else None,
        "acknowledged_by": row.get("acknowledged_by"),
        "resolved_by": row.get("resolved_by"), "outcome": row.get("outcome"),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
