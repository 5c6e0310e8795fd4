"""Writing the device registry into the database (the file is the source of truth)."""

from __future__ import annotations

import json

import psycopg

from foundation.errors import StorageError
from schemas.registry import Registry


def _window(active: str | None) -> tuple[str | None, str | None]:
    if active is None:
        return None, None
    start, end = active.split("-")
    return start, end


def store_registry(conn: psycopg.Connection, reg: Registry) -> int:
    """Upsert wearers and devices; replace each listed wearer's contacts and zones.

    One transaction; returns the number of wearers written. Wearers absent from the file are kept
    (removing a person's record is a deliberate act, not a side effect of a shorter file).
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            for w in reg.wearers:
                cur.execute(
                    "INSERT INTO wearers (wearer_id, name, region, birth_year, conditions, timezone,"
                    " home_lat, home_lon) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (wearer_id) DO UPDATE SET name = excluded.name,"
                    " region = excluded.region, birth_year = excluded.birth_year,"
                    " conditions = excluded.conditions, timezone = excluded.timezone,"
                    " home_lat = excluded.home_lat, home_lon = excluded.home_lon, updated_at = now()",
                    (w.id, w.name, w.region, w.birth_year, list(w.conditions), w.timezone,
                     w.home.lat if w.home else None, w.home.lon if w.home else None),
                )
                for d in w.devices:
                    cur.execute(
                        "INSERT INTO devices (device_id, wearer_id, kind, region, model,"
                        " coord_system) VALUES (%s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (device_id) DO UPDATE SET"
                        " wearer_id = excluded.wearer_id, kind = excluded.kind,"
                        " region = excluded.region, model = excluded.model,"
                        " coord_system = excluded.coord_system, updated_at = now()",
                        (d.id, w.id, d.kind, w.region, d.model, d.coord_system),
                    )
                cur.execute("DELETE FROM contacts WHERE wearer_id = %s", (w.id,))
                for prio, c in enumerate(w.contacts, start=1):
                    cur.execute(
                        "INSERT INTO contacts (wearer_id, priority, name, relation, phone, email,"
                        " language, channels) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (w.id, prio, c.name, c.relation, c.phone, c.email, c.language,
                         list(c.channels)))
                cur.execute("DELETE FROM geofences WHERE wearer_id = %s", (w.id,))
                for z in w.zones:
                    start, end = _window(z.active)
                    cur.execute(
                        "INSERT INTO geofences (wearer_id, zone_id, kind, center_lat, center_lon,"
                        " radius_m, polygon, active_from, active_to)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::time, %s::time)",
                        (w.id, z.id, z.kind, z.center.lat if z.center else None,
                         z.center.lon if z.center else None, z.radius_m,
                         json.dumps(z.points) if z.points else None, start, end),
                    )
    except psycopg.Error as exc:
        raise StorageError(f"registry not stored: {exc}") from exc
    return len(reg.wearers)
