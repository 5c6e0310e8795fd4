"""The database's registry as a :class:`schemas.registry.Registry`: what admission and detection use.

Staff edit the registry live (``registry/store.py``, the console); the running service does not
read those tables per reading, it holds one snapshot in memory (``ingest/registry_watch.py``
reloads it when ``registry_version`` moves). A snapshot holds the **active** wearers only, each
with the devices currently bound to it (``devices.wearer_id``, retired devices left out), its
contacts in calling order, its zones (the ``active_from``/``active_to`` times back as the file's
``HH:MM-HH:MM`` window) and the devices' coordinate systems.

Incremental: given the previous snapshot, :func:`read_snapshot` re-reads only the wearers whose
rows changed since its version (``registry_changes``, written by the tables' triggers,
``registry/sql/0014``) and patches the rest in from the previous one: milliseconds for an
enrolment at 100,000 wearers, where reading everything takes seconds. It reads whole when it
cannot prove the log covers the gap (no previous snapshot, a version older than the log's
``changes_from``, a TRUNCATE, the database's counter gone backwards) or when the change is large
(an import: one query beats a long ``ANY``). ``verify=True`` also reads whole in the same
transaction and names the wearers the patched copy got wrong (the watcher does it hourly: a
bug here must heal and be seen, not leave a bracelet unadmitted).

Speed of a whole read: one query whatever the number of wearers (each registry table aggregated once and joined
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
from dataclasses import dataclass, replace
from operator import attrgetter
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
    FROM devices WHERE wearer_id IS NOT NULL AND retired_at IS NULL {only} GROUP BY wearer_id
) d ON d.wearer_id = w.wearer_id
LEFT JOIN (
    SELECT wearer_id, json_agg(json_build_object(
               'name', name, 'phone', phone, 'relation', relation, 'email', email,
               'language', language, 'channels', to_json(channels)) ORDER BY priority) AS items
    FROM contacts WHERE true {only} GROUP BY wearer_id
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
    FROM geofences WHERE true {only} GROUP BY wearer_id
) z ON z.wearer_id = w.wearer_id
WHERE w.active {only_w}
"""
_ALL: Final = _WEARERS.format(only="", only_w="")
#: The same for the wearers named in ``%(ids)s``, filtered in each aggregate (the indexes on
#: ``wearer_id``) rather than after aggregating every table.
_SOME: Final = _WEARERS.format(only="AND wearer_id = ANY(%(ids)s)",
                               only_w="AND w.wearer_id = ANY(%(ids)s)")
#: Wearers changed after a version (NULL: a TRUNCATE, everything).
_CHANGED: Final = "SELECT DISTINCT wearer_id FROM registry_changes WHERE version > %s"
_PRUNE: Final = """
WITH gone AS (
    DELETE FROM registry_changes WHERE at < now() - make_interval(secs => %s) RETURNING version
), moved AS (
    UPDATE registry_version SET changes_from = greatest(changes_from, (SELECT max(version) FROM gone))
    WHERE EXISTS (SELECT FROM gone)
)
SELECT count(*) FROM gone
"""
#: Above this many changed wearers one whole read is cheaper than the filtered one.
PATCH_MAX_WEARERS: Final = 5000

_ID: Final = attrgetter("id")
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
    #: Wearers re-read and patched into the previous snapshot; None: the whole registry read.
    reread: int | None = None
    #: With ``verify``: ids where the patched copy and the whole read differed (a bug healed).
    mismatched: tuple[str, ...] = ()


def load_snapshot(conn: psycopg.Connection) -> Registry:
    """The active registry in the database (see the module docstring). Raises StorageError."""
    return read_snapshot(conn).registry


def read_version(conn: psycopg.Connection) -> int:
    """The current ``registry_version`` (bumped by every statement that changes the registry)."""
    try:
        return _read_versions(conn)[0]
    except psycopg.Error as exc:
        raise StorageError(f"registry version not read: {exc}".strip()) from exc


def read_snapshot(conn: psycopg.Connection, previous: Snapshot | None = None, *,
                  verify: bool = False) -> Snapshot:
    """The registry with its version and the wearers left out; ``conn`` must be idle (outside
    a transaction). With ``previous``, only what changed since it is re-read (module
    docstring); ``verify`` reads whole as well and reports the difference. Raises
    StorageError."""
    started = time.perf_counter()
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise StorageError("a registry snapshot needs a connection outside a transaction")
        with conn.transaction():
            # The version, the change log and the rows of one moment: a change committed in
            # between is either in all of them or in none (and then the next poll reloads).
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version, changes_from = _read_versions(conn)
            changed = (_changed_since(conn, previous.version)
                       if previous is not None and changes_from <= previous.version <= version
                       else None)
            patched: Snapshot | None = None
            if previous is not None and changed is not None and len(changed) <= PATCH_MAX_WEARERS:
                rows = _rows(conn, _SOME, {"ids": sorted(changed)}) if changed else []
                patched = _patch(previous, changed, *_validate(rows), version=version)
            whole = None
            if patched is None or verify:
                registry, invalid = _validate(_rows(conn, _ALL, None))
                whole = Snapshot(registry=registry, version=version, invalid=invalid)
    except psycopg.Error as exc:
        raise StorageError(f"registry snapshot not read: {exc}".strip()) from exc
    seconds = time.perf_counter() - started
    if whole is None:
        assert patched is not None
        return replace(patched, seconds=seconds)
    mismatched = () if patched is None else _differences(patched, whole)
    return replace(whole, seconds=seconds, mismatched=mismatched)


def prune_changes(conn: psycopg.Connection, *, keep_s: float = 86_400.0) -> int:
    """Forget change-log entries older than ``keep_s`` and move ``changes_from`` past them (a
    watcher that last read an older version then reloads whole). Returns the entries deleted.
    Raises StorageError."""
    try:
        with conn.transaction():
            cur = conn.execute(_PRUNE, (keep_s,))
            row = cur.fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"registry change log not pruned: {exc}".strip()) from exc
    return 0 if row is None else int(row[0])


def _read_versions(conn: psycopg.Connection) -> tuple[int, int]:
    """``registry_version`` and ``changes_from`` (the log is complete above it)."""
    row = conn.execute("SELECT version, changes_from FROM registry_version").fetchone()
    if row is None:
        raise StorageError("registry_version has no row (is the registry migration applied?)")
    return int(row[0]), int(row[1])


def _changed_since(conn: psycopg.Connection, version: int) -> set[str] | None:
    """Wearer ids changed after ``version``; None when a TRUNCATE means everything."""
    ids = {row[0] for row in conn.execute(_CHANGED, (version,))}
    return None if None in ids else ids


def _rows(conn: psycopg.Connection, query: str, params: dict[str, list[str]] | None
          ) -> list[bytes]:
    rows: list[bytes] = []
    # A server-side cursor, read in slices: receiving and converting 100,000 rows in one
    # result would hold the GIL for a good part of a second (the pipeline's).
    with conn.cursor(name="eldercare_registry_snapshot") as cur:
        cur.execute(query, params)
        while chunk := cur.fetchmany(_FETCH_ROWS):
            rows += [r[0].encode() for r in chunk]
    return rows


def _patch(previous: Snapshot, changed: set[str], registry: Registry,
           invalid: tuple[tuple[str, str], ...], *, version: int) -> Snapshot:
    """``previous`` with the ``changed`` wearers replaced by what was re-read (a changed id
    not re-read is no longer active, or no longer there)."""
    by_id = {w.id: w for w in previous.registry.wearers if w.id not in changed}
    by_id.update((w.id, w) for w in registry.wearers)
    bad = {i: why for i, why in previous.invalid if i not in changed}
    bad.update(invalid)
    return Snapshot(registry=Registry(wearers=[by_id[i] for i in sorted(by_id)]),
                    version=version, invalid=tuple(sorted(bad.items())), reread=len(changed))


def _differences(patched: Snapshot, whole: Snapshot) -> tuple[str, ...]:
    a = {w.id: w for w in patched.registry.wearers} | dict(patched.invalid)
    b = {w.id: w for w in whole.registry.wearers} | dict(whole.invalid)
    return tuple(sorted(i for i in a.keys() | b.keys() if a.get(i) != b.get(i)))


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
    # Ordered by id in Python, not by the database's collation: a patched snapshot and a
    # whole one list the same wearers in the same order.
    good.sort(key=_ID)
    bad.sort()
    return Registry(wearers=good), tuple(bad)
