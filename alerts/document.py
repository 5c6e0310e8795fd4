"""The alert document: the JSON every channel sends (webhook body, MQTT payload, message texts).

Pure: built from an alert row (a mapping with the ``alerts`` columns plus ``wearer_name`` and
``timezone`` from the registry). Its shape is the contract the 12349 platform codes against and
is documented in docs/alerts.md ("Alert document"); fields are only ever added.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from detectors.events import Event

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


def provisional_document(event: Event, *, now: datetime,
                         map_link: str | None = DEFAULT_MAP_LINK) -> dict[str, Any]:
    """The document of a *provisional* alert (``alert.provisional``): a life-safety event the
    database could not take, sent to the dispatch centre straight from detection
    (``alerts/emergency.py``). It has no alert id yet: the alert opened once the database is
    back carries the same ``device_id``, ``type`` and ``first_ts``, and the ``key`` here is the
    webhook's Idempotency-Key (docs/alerts.md, "Provisional alerts")."""
    position = None if event.lat is None or event.lon is None else {
        "lat": event.lat, "lon": event.lon}
    return {
        "schema": SCHEMA, "event": "alert.provisional", "sent_at": now.isoformat(),
        "provisional": {
            "key": provisional_key(event), "type": event.type, "severity": event.severity,
            "region": event.region, "device_id": event.device_id,
            "wearer": {"id": event.wearer_id},
            "ts": datetime.fromtimestamp(event.ts / 1000, UTC).isoformat(),
            "position": position,
            "map_link": map_link.format(lat=event.lat, lon=event.lon)
            if map_link and position else None,
            "evidence": dict(event.evidence),
            "reason": "database_unavailable",
        },
    }


def provisional_key(event: Event) -> str:
    """Idempotency-Key of a provisional alert: one per event identity."""
    return f"provisional:{event.device_id}:{event.type}:{event.ts}"
