"""The statements the registry store's writes share, inside the caller's transaction.

Reading a record *for a caller* (:func:`visible_wearer`, :func:`visible_device`: outside the
caller's scopes it does not exist; ``lock`` takes the row for the write), the checks a write
makes before it changes anything (region in the tree and in scope, version, ID card and IMEI
free), the unbinding a deactivation and an unbind both do, the audit row every write appends,
and a wearer's columns from its validated struct. Each takes the open cursor of
:class:`registry.store.RegistryStore`'s transaction; none commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from registry import records
from registry.errors import RecordConflict, RecordNotFound, RegionForbidden
from registry.idcard import StoredIdCard
from registry.model import WearerIn, e164
from schemas.regions import covers_any

Row = dict[str, Any]
Scopes = Sequence[str] | None


def in_scope(scopes: Scopes, region: str) -> bool:
    return scopes is None or covers_any(scopes, region)


def wearer_row(cur: psycopg.Cursor[Row], wearer_id: str, *, lock: bool = False
                ) -> Row:
    row = cur.execute(f"SELECT {records.WEARER_COLUMNS} FROM wearers w WHERE w.wearer_id = %s"
                      + (" FOR UPDATE" if lock else ""), (wearer_id,)).fetchone()
    if row is None:
        raise RecordNotFound("wearer", wearer_id)
    return records.wearer(row)


def visible_wearer(cur: psycopg.Cursor[Row], wearer_id: str, scopes: Scopes, *,
                    lock: bool = False) -> Row:
    record = wearer_row(cur, wearer_id, lock=lock)
    if not in_scope(scopes, record["region"]):
        raise RecordNotFound("wearer", wearer_id)   # the same answer as a missing one
    return record


def wearer_visible(cur: psycopg.Cursor[Row], wearer_id: str, scopes: Scopes) -> bool:
    row = cur.execute("SELECT region FROM wearers WHERE wearer_id = %s", (wearer_id,)).fetchone()
    return row is not None and in_scope(scopes, row["region"])


def require_active(record: Row) -> None:
    if not record["active"]:
        raise RecordConflict(f"wearer {record['id']} is deactivated")


def device_row(cur: psycopg.Cursor[Row], device_id: str, *, lock: bool = False) -> Row:
    row = cur.execute(f"SELECT {records.DEVICE_COLUMNS} FROM devices d WHERE d.device_id = %s"
                      + (" FOR UPDATE" if lock else ""), (device_id,)).fetchone()
    if row is None:
        raise RecordNotFound("device", device_id)
    return row


def visible_device(cur: psycopg.Cursor[Row], device_id: str, scopes: Scopes, *,
                    lock: bool = False) -> Row:
    row = device_row(cur, device_id, lock=lock)
    if not in_scope(scopes, row["region"]):
        raise RecordNotFound("device", device_id)
    return row


def check_region(cur: psycopg.Cursor[Row], region: str, scopes: Scopes) -> None:
    if not in_scope(scopes, region):
        raise RegionForbidden(region)
    if cur.execute("SELECT 1 FROM regions WHERE code = %s", (region,)).fetchone() is None:
        raise RecordConflict(f"unknown region {region}")


def check_version(kind: str, key: str, stored: int, sent: int) -> None:
    if stored != sent:
        raise RecordConflict(f"{kind} {key} was changed meanwhile (version {stored}, you sent"
                             f" {sent}): reload it and edit again")


def check_card_free(cur: psycopg.Cursor[Row], card_hmac: str, wearer_id: str,
                     scopes: Scopes) -> None:
    row = cur.execute("SELECT wearer_id, region FROM wearers WHERE id_card_hmac = %s AND active"
                      " AND wearer_id <> %s LIMIT 1", (card_hmac, wearer_id)).fetchone()
    if row is not None:
        # Naming a wearer of another street would reveal who lives there: name it only
        # to a caller who may see it.
        where = (f"for {row['wearer_id']}" if in_scope(scopes, row["region"])
                 else "for a wearer outside your regions")
        raise RecordConflict(f"ID-card number already enrolled {where}")


def check_imei_free(cur: psycopg.Cursor[Row], imei: str | None, device_id: str) -> None:
    if imei is None:
        return
    row = cur.execute("SELECT device_id FROM devices WHERE imei = %s AND device_id <> %s",
                      (imei, device_id)).fetchone()
    if row is not None:
        raise RecordConflict(f"IMEI already registered for device {row['device_id']}")


def unbind(cur: psycopg.Cursor[Row], device: Row, *, reason: str, actor: str,
            at: dt.datetime) -> None:
    """Close the device's open binding and free it (the device row locked by the caller)."""
    cur.execute("UPDATE device_bindings SET unbound_at = greatest(%s, bound_at),"
                " unbound_by = %s, unbind_reason = %s"
                " WHERE device_id = %s AND unbound_at IS NULL", (at, actor, reason, device["id"]))
    cur.execute("UPDATE devices SET wearer_id = NULL, version = version + 1, updated_at = %s"
                " WHERE device_id = %s", (at, device["id"]))
    audit(cur, actor, "device_unbound", wearer_id=device["wearer_id"], device_id=device["id"],
           region=device["region"], before=device, after=device_row(cur, device["id"]), at=at)


def contacts(cur: psycopg.Cursor[Row], wearer_id: str) -> list[Row]:
    rows = cur.execute(f"SELECT {records.CONTACT_COLUMNS} FROM contacts c WHERE c.wearer_id = %s"
                       " ORDER BY c.priority", (wearer_id,)).fetchall()
    return [{**r, "channels": list(r["channels"])} for r in rows]


def zones(cur: psycopg.Cursor[Row], wearer_id: str) -> list[Row]:
    return [records.zone(r) for r in cur.execute(
        f"SELECT {records.ZONE_COLUMNS} FROM geofences g WHERE g.wearer_id = %s"
        " ORDER BY g.zone_id", (wearer_id,)).fetchall()]


def zone(cur: psycopg.Cursor[Row], wearer_id: str, zone_id: str) -> Row | None:
    row = cur.execute(f"SELECT {records.ZONE_COLUMNS} FROM geofences g"
                      " WHERE g.wearer_id = %s AND g.zone_id = %s", (wearer_id, zone_id)).fetchone()
    return None if row is None else records.zone(row)


def audit(cur: psycopg.Cursor[Row], actor: str, action: str, *, region: str,
           before: Any, after: Any, at: dt.datetime, wearer_id: str | None = None,
           device_id: str | None = None) -> None:
    cur.execute(
        "INSERT INTO registry_audit (at, actor, action, wearer_id, device_id, region, before,"
        " after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (at, actor, action, wearer_id, device_id, region,
         None if before is None else Jsonb(records.as_json(before)),
         None if after is None else Jsonb(records.as_json(after))))


def wearer_values(w: WearerIn) -> dict[str, Any]:
    """The columns of a validated wearer, phones in E.164."""
    g = w.guardian
    return {
        "id": w.id, "name": w.name, "region": w.region, "sex": w.sex,
        "birth_year": w.birth_year, "birth_date": w.birth_date, "address": w.address,
        "phone": None if w.phone is None else e164(w.phone, field=("phone",)),
        "living_situation": w.living_situation,
        "care_categories": list(dict.fromkeys(w.care_categories)),
        "conditions": list(w.conditions),
        "guardian_name": None if g is None else g.name,
        "guardian_phone": None if g is None or g.phone is None
        else e164(g.phone, field=("guardian", "phone")),
        "guardian_relation": None if g is None else g.relation,
        "notes": w.notes, "timezone": w.timezone,
        "home_lat": None if w.home is None else w.home.lat,
        "home_lon": None if w.home is None else w.home.lon,
    }


def card_values(card: StoredIdCard | None) -> dict[str, str | None]:
    if card is None:
        return {"hmac": None, "cipher": None, "masked": None}
    return {"hmac": card.hmac, "cipher": card.cipher, "masked": card.masked}


def unique_conflict(exc: pg_errors.UniqueViolation) -> RecordConflict:
    """A race the checks before the write lost (two clerks at once): the same conflict."""
    constraint = exc.diag.constraint_name or ""
    if constraint == "wearers_id_card":
        return RecordConflict("ID-card number already enrolled for another wearer")
    if constraint == "devices_imei":
        return RecordConflict("IMEI already registered for another device")
    if constraint == "device_bindings_open":
        return RecordConflict("device already bound (by someone else just now)")
    if constraint in ("wearers_pkey", "devices_pkey"):
        return RecordConflict("that id was taken just now")
    return RecordConflict(f"already exists ({constraint})")
