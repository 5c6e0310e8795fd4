"""Rows of the registry tables as the records the API returns and the audit keeps (pure).

One shape per record, used for both: what ``GET /wearers/{id}`` answers is what
``registry_audit.before``/``after`` hold (as JSON), so the trail shows exactly what staff saw.
The ID-card number has no place in either: only ``id_card_masked`` is ever selected.

The column lists name every column (never ``SELECT *``): a column added later reaches the API
only when added here. No I/O: the store (:mod:`registry.store`) runs the SQL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from registry.errors import InvalidRecord

WEARER_COLUMNS: Final = (
    "w.wearer_id AS id, w.name, w.sex, w.birth_year, w.birth_date, w.address, w.region,"
    " w.phone, w.living_situation, w.care_categories, w.conditions, w.guardian_name,"
    " w.guardian_phone, w.guardian_relation, w.notes, w.id_card_masked, w.timezone,"
    " w.home_lat, w.home_lon, w.active, w.deactivated_at, w.deactivation_reason,"
    " w.deactivation_note, w.created_at, w.updated_at, w.version")
SUMMARY_COLUMNS: Final = (
    "w.wearer_id AS id, w.name, w.sex, w.birth_year, w.region, w.phone, w.living_situation,"
    " w.care_categories, w.active, w.id_card_masked, w.version,"
    " coalesce((SELECT array_agg(d.device_id ORDER BY d.device_id) FROM devices d"
    " WHERE d.wearer_id = w.wearer_id), '{}') AS device_ids")
DEVICE_COLUMNS: Final = (
    "d.device_id AS id, d.kind, d.region, d.model, d.protocol, d.imei, d.sim, d.handed_out_on,"
    " d.coord_system, d.wearer_id, d.retired_at, d.created_at, d.updated_at, d.version")
BINDING_COLUMNS: Final = (
    "b.device_id, b.wearer_id, b.bound_at, b.bound_by, b.unbound_at, b.unbound_by,"
    " b.unbind_reason")
CONTACT_COLUMNS: Final = (
    "c.priority, c.name, c.phone, c.relation, c.email, c.language, c.channels")
ZONE_COLUMNS: Final = (
    "g.zone_id AS id, g.name, g.kind, g.center_lat, g.center_lon, g.radius_m, g.polygon,"
    " g.active_from, g.active_to")
AUDIT_COLUMNS: Final = (
    "a.id, a.at, a.actor, a.action, a.wearer_id, a.device_id, a.region, a.before, a.after")

#: The fields of a wearer record that :class:`registry.model.WearerIn` takes back (an edit is
#: the stored record with the edit applied, validated as a whole).
WEARER_INPUT_FIELDS: Final = (
    "id", "name", "region", "sex", "birth_year", "birth_date", "address", "phone",
    "living_situation", "care_categories", "conditions", "guardian", "notes", "timezone", "home")
_MSGSPEC_PATH: Final = " - at `$"


def wearer(row: Mapping[str, Any]) -> dict[str, Any]:
    """A wearer row (:data:`WEARER_COLUMNS`) as its record: guardian and home nested."""
    out = {k: v for k, v in row.items() if not k.startswith(("guardian_", "home_"))}
    out["guardian"] = None if row["guardian_name"] is None else {
        "name": row["guardian_name"], "phone": row["guardian_phone"],
        "relation": row["guardian_relation"]}
    out["home"] = None if row["home_lat"] is None else {
        "lat": row["home_lat"], "lon": row["home_lon"]}
    out["care_categories"] = list(row["care_categories"])
    out["conditions"] = list(row["conditions"])
    return out


def zone(row: Mapping[str, Any]) -> dict[str, Any]:
    """A geofence row (:data:`ZONE_COLUMNS`) as a zone record (``active`` as ``HH:MM-HH:MM``)."""
    points = row["polygon"]
    if isinstance(points, str):
        points = json.loads(points)
    window = None
    if row["active_from"] is not None and row["active_to"] is not None:
        window = f"{row['active_from']:%H:%M}-{row['active_to']:%H:%M}"
    return {
        "id": row["id"], "name": row["name"], "kind": row["kind"],
        "center": None if row["center_lat"] is None else {
            "lat": row["center_lat"], "lon": row["center_lon"]},
        "radius_m": row["radius_m"],
        "points": None if points is None else [list(p) for p in points],
        "active": window,
    }


def window(active: str | None) -> tuple[dt.time | None, dt.time | None]:
    """``HH:MM-HH:MM`` (already validated) as the two columns; None as two NULLs."""
    if active is None:
        return None, None
    start, end = active.split("-")
    return dt.time.fromisoformat(start), dt.time.fromisoformat(end)


def as_json(record: Any) -> Any:
    """A record as JSON builtins (dates and times ISO 8601), for ``registry_audit``."""
    return msgspec.to_builtins(record)


def wearer_input(record: Mapping[str, Any]) -> dict[str, Any]:
    """The stored record as :class:`~registry.model.WearerIn` builtins (no ``id_card``)."""
    return {k: as_json(record[k]) for k in WEARER_INPUT_FIELDS}


def invalid(exc: msgspec.ValidationError, *, prefix: tuple[str | int, ...] = ()
            ) -> InvalidRecord:
    """msgspec's error (``Expected int - at `$.home.lat```) as InvalidRecord with the field's
    path; a rule between fields (``__post_init__``) names no field."""
    text = str(exc)
    reason, _, path = text.partition(_MSGSPEC_PATH)
    field: list[str | int] = list(prefix)
    if path:
        for part in path.rstrip("`").replace("[", ".").replace("]", "").split("."):
            if part:
                field.append(int(part) if part.isdigit() else part)
    return InvalidRecord(tuple(field), reason)
