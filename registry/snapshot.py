"""The database's registry as a :class:`schemas.registry.Registry`: what admission and detection use.

Staff edit the registry live (``registry/store.py``, the console); the running service does not
read those tables per reading, it holds one snapshot in memory (``ingest/registry_watch.py``
reloads it when ``registry_version`` moves). A snapshot holds the **active** wearers only, each
with the devices currently bound to it (``devices.wearer_id``, retired devices left out), its
contacts in calling order, its zones (the ``active_from``/``active_to`` times back as the file's
``HH:MM-HH:MM`` window) and the devices' coordinate systems.

Speed: one query whatever the number of wearers (each registry table aggregated once and joined
to the active wearers), PostgreSQL building each wearer's JSON and msgspec decoding and
validating them all in one call; figures in docs/registry-database.md ("Live effect"). The
version and the rows are read in one REPEATABLE READ transaction.

Validation: the tables' constraints are looser than the file format (a device kind the file does
not know, a zone whose window has one end only). A wearer whose rows do not make a valid record is
left out of the snapshot and named in :attr:`Snapshot.invalid` (the caller logs it, ids only):
one bad record must not stop every other enrolment from taking effect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import msgspec
import psycopg

from foundation.errors import StorageError
from schemas.registry import Registry, Wearer

#: One JSON document per active wearer, in the file format's shape (``schemas.registry.Wearer``),
#: built by PostgreSQL: its JSON functions and msgspec's decoder are both C, where building the
#: records in Python took five times as long. A window with one end only becomes a malformed
#: ``active`` (refused by validation), never a silent "always". float8 prints its shortest exact
#: form (PostgreSQL 12+), so positions come back bit for bit.
_WEARERS: Final = """
SELECT json_build_object(
    'id', w.wearer_id, 'name', w.name, 'region', w.region, 'birth_year', w.birth_year,
    'conditions', to_json(w.conditions), 'timezone', w.timezone,
    'home', CASE WHEN w.home_lat IS NOT NULL AND w.home_lon IS NOT NULL
                 THEN json_build_object('lat', w.home_lat, 'lon', w.home_lon) END,
    'devices', coalesce(d.items, '[]'), 'contacts', coalesce(c.items, '[]'),
    'zones', coalesce(z.items, '[]'))::text
FROM wearers w
LEFT JOIN (
    SELECT wearer_id, json_agg(json_build_object(
               'id', device_id, 'kind', kind, 'model', model, 'coord_system', coord_system)
               ORDER BY device_id) AS items
    FROM devices WHERE wearer_id IS NOT NULL AND retired_at IS NULL GROUP BY wearer_id
) d ON d.wearer_id = w.wearer_id
LEFT JOIN (
    SELECT wearer_id, json_agg(json_build_object(
               'name', name, 'phone', phone, 'relation', relation, 'email', email,
               'language', language, 'channels', to_json(channels)) ORDER BY priority) AS items
    FROM contacts GROUP BY wearer_id
) c ON c.wearer_id = w.wearer_id
LEFT JOIN (
    SELECT wearer_id, json_agg(json_build_object(
               'id', zone_id, 'kind', kind,
               'center', CASE WHEN center_lat IS NOT NULL AND center_lon IS NOT NULL
                              THEN json_build_object('lat', center_lat, 'lon', center_lon) END,
               'radius_m', radius_m, 'points', polygon,
               'active', CASE WHEN active_from IS NOT NULL OR active_to IS NOT NULL
                              THEN coalesce(to_char(active_from, 'HH24:MI'), '') || '-'
                                   || coalesce(to_char(active_to, 'HH24:MI'), '') END)
               ORDER BY zone_id) AS items
    FROM geofences GROUP BY wearer_id
) z ON z.wearer_id = w.wearer_id
WHERE w.active
ORDER BY w.wearer_id
"""


#: Rows converted per call (see read_snapshot).
_FETCH_ROWS: Final = 1000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of the registry tables."""

    registry: Registry
    #: ``registry_version`` the snapshot was read at (the counter the watcher polls).
    version: int
    #: Wearer ids whose rows did not validate, with the reason (left out of ``registry``).
    invalid: tuple[tuple[str, str], ...] = ()
    #: Seconds the read took.
    seconds: float = 0.0


def load_snapshot(conn: psycopg.Connection) -> Registry:
    """The active registry in the database (see the module docstring). Raises StorageError."""
    return read_snapshot(conn).registry


def read_version(conn: psycopg.Connection) -> int:
    """The current ``registry_version`` (bumped by every statement that changes the registry)."""
    try:
        row = conn.execute("SELECT version FROM registry_version").fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"registry version not read: {exc}".strip()) from exc
    if row is None:
        raise StorageError("registry_version has no row (is the registry migration applied?)")
    return int(row[0])


def read_snapshot(conn: psycopg.Connection) -> Snapshot:
    """The registry with its version and the wearers left out; ``conn`` must be idle (outside
    a transaction). Raises StorageError."""
    started = time.perf_counter()
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise StorageError("a registry snapshot needs a connection outside a transaction")
        with conn.transaction():
            # The version and the rows of one moment: a change committed in between is
            # either in both or in neither (and then the next poll reloads).
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version = read_version(conn)
            rows: list[bytes] = []
            # A server-side cursor, read in slices: receiving and converting 100,000 rows in
            # one result would hold the GIL for a good part of a second (the pipeline's).
            with conn.cursor(name="eldercare_registry_snapshot") as cur:
                cur.execute(_WEARERS)
                while chunk := cur.fetchmany(_FETCH_ROWS):
                    rows += [r[0].encode() for r in chunk]
    except psycopg.Error as exc:
        raise StorageError(f"registry snapshot not read: {exc}".strip()) from exc
    registry, invalid = _validate(rows)
    return Snapshot(registry=registry, version=version, invalid=invalid,
                    seconds=time.perf_counter() - started)


def _validate(rows: list[bytes]) -> tuple[Registry, tuple[tuple[str, str], ...]]:
    """Decode and validate each wearer; the bad ones are left out, with the reason.

    One msgspec call per wearer, not one for the whole registry: a single C call decoding
    100,000 wearers would hold the GIL for a second or more, stalling the pipeline thread
    (and an SOS in it) while the watcher reloads; between calls the threads take turns."""
    decode = msgspec.json.Decoder(Wearer).decode
    good: list[Wearer] = []
    bad: list[tuple[str, str]] = []
    for row in rows:
        try:
            good.append(decode(row))
        except msgspec.ValidationError as exc:
            bad.append((str(msgspec.json.decode(row)["id"]), str(exc)))
    return Registry(wearers=good), tuple(bad)
