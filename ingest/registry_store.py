"""Writing a registry file into the database (``eldercare registry load``, ``--registry``).

The database is the registry staff edit live (docs/registry-database.md); a file loaded into it
is authoritative for what it lists: wearers and devices upserted, each listed wearer's contacts
and zones replaced, the devices it lists bound to their wearers (with binding history). Two
things it does not do: delete wearers it does not list, and bring back a wearer staff have
deactivated (moved away, passed away): such a wearer is left as it is, and named in a warning.
"""

from __future__ import annotations

import json
import logging

import psycopg

from foundation.errors import StorageError
from schemas.registry import Registry

log = logging.getLogger(__name__)

#: The audit actor of a file load when the caller names none.
FILE_ACTOR = "registry-file"


def _window(active: str | None) -> tuple[str | None, str | None]:
    if active is None:
        return None, None
    start, end = active.split("-")
    return start, end


def store_registry(conn: psycopg.Connection, reg: Registry, *, actor: str = FILE_ACTOR) -> int:
    """Upsert wearers and devices; replace each listed wearer's contacts and zones.

    One transaction, audited as one ``registry_file_loaded`` entry by ``actor``; returns the
    number of wearers written. Wearers absent from the file are kept (removing a person's record
    is a deliberate act, not a side effect of a shorter file); deactivated ones are skipped.
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            listed = [w.id for w in reg.wearers]
            inactive = {row[0] for row in cur.execute(
                "SELECT wearer_id FROM wearers WHERE wearer_id = ANY(%s) AND NOT active",
                (listed,))}
            written = [w for w in reg.wearers if w.id not in inactive]
            for w in written:
                cur.execute(
                    "INSERT INTO wearers (wearer_id, name, region, birth_year, conditions, timezone,"
                    " home_lat, home_lon) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (wearer_id) DO UPDATE SET name = excluded.name,"
                    " region = excluded.region, birth_year = excluded.birth_year,"
                    " conditions = excluded.conditions, timezone = excluded.timezone,"
                    " home_lat = excluded.home_lat, home_lon = excluded.home_lon, updated_at = now(),"
                    " version = wearers.version + 1",
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
                        " coord_system = excluded.coord_system, updated_at = now(),"
                        " version = devices.version + 1",
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
            device_ids = [d.id for w in written for d in w.devices]
            _record_bindings(cur, device_ids, actor=actor)
            cur.execute(
                "INSERT INTO registry_audit (actor, action, after) VALUES (%s, %s, %s::jsonb)",
                (actor, "registry_file_loaded", json.dumps(
                    {"wearers": len(written), "devices": len(device_ids),
                     "skipped_deactivated": sorted(inactive)})))
    except psycopg.Error as exc:
        raise StorageError(f"registry not stored: {exc}") from exc
    if inactive:
        log.warning("registry file lists %d deactivated wearers, left as they are: %s",
                    len(inactive), ", ".join(sorted(inactive)[:20]))
    return len(written)


def _record_bindings(cur: psycopg.Cursor, device_ids: list[str], *, actor: str) -> None:
    """Keep ``device_bindings`` true to ``devices.wearer_id`` for the devices just written: an
    open binding to another wearer is closed, a device bound now gets its open binding."""
    cur.execute(
        "UPDATE device_bindings b SET unbound_at = now(), unbound_by = %(actor)s,"
        " unbind_reason = 'registry file' FROM devices d"
        " WHERE d.device_id = ANY(%(ids)s) AND b.device_id = d.device_id"
        " AND b.unbound_at IS NULL AND b.wearer_id IS DISTINCT FROM d.wearer_id",
        {"ids": device_ids, "actor": actor})
    cur.execute(
        "INSERT INTO device_bindings (device_id, wearer_id, bound_by)"
        " SELECT d.device_id, d.wearer_id, %(actor)s FROM devices d"
        " WHERE d.device_id = ANY(%(ids)s) AND d.wearer_id IS NOT NULL AND NOT EXISTS ("
        "SELECT 1 FROM device_bindings b WHERE b.device_id = d.device_id"
        " AND b.unbound_at IS NULL)",
        {"ids": device_ids, "actor": actor})
