"""One wearer's personal data: export it (right of access) and delete it (right to erasure).

Where a wearer's data lives (``docs/privacy.md`` has the full map): the registry rows
(``wearers``, ``contacts``, ``devices``, ``geofences``, the binding history ``device_bindings``
and the registry's audit trail ``registry_audit``), what their devices sent (``readings``,
``accel_chunks``, and the ``dead_letters`` whose topic names one of the devices), what the
detectors concluded (``detection_events``) and the emergency responses (``alerts``,
``alert_audit``, ``alert_deliveries``). Readings carry no wearer id: they are attributed through
the wearer's devices: those bound to them now, and those once bound to them and bound to
nobody since (a device handed on to somebody else takes its history along, docs/privacy.md).

The ID-card number is stored encrypted (``registry/idcard.py``); the person's own export
reveals it when given the registry's vault, and shows only the masked form otherwise. The
lookup HMAC and the ciphertext themselves are never exported.

Export (:func:`export_sections`, :func:`write_export`, :func:`export_wearer`) reads everything in
one REPEATABLE READ, READ ONLY transaction, so the document is one consistent snapshot; readings,
accelerometer chunks and dead letters come through server-side cursors, so :func:`write_export`
streams months of one-minute fixes without holding them in memory.

Delete (:func:`delete_wearer`) is one transaction: all of it happens, or none. Alerts and their
audit trail are *kept*: they are the record of an emergency response (who was told, who acted,
when) that the operator must still be able to produce, and ``alert_audit`` is append-only by
design (a trigger refuses UPDATE and DELETE). They are pseudonymised instead: positions cleared,
the wearer's name and position taken out of the stored message bodies, family addresses masked,
and one ``wearer_data_deleted`` audit entry per alert records who deleted what, and when. On
TimescaleDB the devices' rows of the ``device_hourly`` aggregate (hourly last positions) go in
the same transaction (:func:`_materialized_device_hourly` says why). A wearer with an
unresolved alert is not deleted: erasure must not pull the data out from under an emergency in
progress.

Why in the shell: this is an operation of ``eldercare wearer export|delete`` that reads and
deletes across every component's tables (ingest's readings, detection's events, the alerts and
their audit trail, the registry); no one component owns it, and none needs it.

Errors (the tree of :mod:`foundation.errors`)::

    EldercareError
    ├── UnknownWearer      no such wearer (``wearer_id``; ``deleted_at`` when a deletion is on
    │                      record, so a second delete says so instead of reporting zeros)
    ├── DeletionRefused    the wearer has unresolved alerts (``alert_ids``)
    └── StorageError       the database failed (psycopg errors are translated here)
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final, TextIO

import phonenumbers
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from foundation.errors import EldercareError, StorageError
from registry.idcard import IdCardVault

log = logging.getLogger(__name__)

EXPORT_SCHEMA: Final = "eldercare.wearer-export/1"
#: The audit action a deletion appends to each kept alert.
DELETED_ACTION: Final = "wearer_data_deleted"
#: Tables emptied of the wearer's rows, in deletion order (the bulk first, the registry rows
#: that others reference last).
DELETED_TABLES: Final = ("readings", "accel_chunks", "dead_letters", "detection_events",
                         "contacts", "geofences", "registry_audit", "device_bindings", "devices",
                         "wearers")
#: What stands in for a name or address removed from a stored message body.
REDACTED: Final = "[deleted]"
_ITERSIZE: Final = 2000
# Dead letters name their device only in the topic (the payload may be unreadable):
# eldercare/v1/<region>/dev/<device_id> or eldercare/v1/<region>/gw/<gateway_id>.
_TOPIC_SOURCE: Final = r"^eldercare/v1/[^/]*/(?:dev|gw)/([^/]*)$"
# Devices attributed by the registry; events and alerts also by the wearer id they were
# stored with, so a device since handed to someone else still takes its old events along.
_EVENTS_WHERE: Final = "(wearer_id = %(w)s OR (wearer_id IS NULL AND device_id = ANY(%(d)s)))"
_ALERTS_WHERE: Final = ("(wearer_id = %(w)s OR subject = %(w)s"
                        " OR (wearer_id IS NULL AND device_id = ANY(%(d)s)))")


class UnknownWearer(EldercareError):
    """No wearer with this id; ``deleted_at`` is when their data was deleted, if on record."""

    def __init__(self, wearer_id: str, *, deleted_at: datetime | None) -> None:
        done = f"; their data was deleted at {deleted_at.isoformat()}" if deleted_at else ""
        super().__init__(f"no wearer {wearer_id!r} in the registry{done}")
        self.wearer_id = wearer_id
        self.deleted_at = deleted_at


class DeletionRefused(EldercareError):
    """The wearer has unresolved alerts; resolve them (or wait) before deleting."""

    def __init__(self, wearer_id: str, *, alert_ids: Sequence[int]) -> None:
        super().__init__(f"wearer {wearer_id!r} has unresolved alerts"
                         f" {', '.join(map(str, alert_ids))}: resolve them first")
        self.wearer_id = wearer_id
        self.alert_ids = tuple(alert_ids)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeletionReport:
    """What :func:`delete_wearer` did: rows deleted per table (every table of
    :data:`DELETED_TABLES`, zeros included, and ``device_hourly`` on TimescaleDB), rows
    rewritten in place, audit rows appended."""

    wearer_id: str
    actor: str
    at: datetime
    deleted: Mapping[str, int]
    pseudonymized: Mapping[str, int]
    audited: int


# -- export -------------------------------------------------------------------------------------


def export_sections(conn: psycopg.Connection, wearer_id: str, *,
                    vault: IdCardVault | None = None) -> Iterator[tuple[str, Any]]:
    """The export, section by section, as ``(name, value)`` in document order.

    ``vault``: the registry's ID-card vault; with it the wearer's ID-card number is revealed
    (``wearer.id_card``), without it ``id_card`` is null and only ``id_card_masked`` shows.

    Values are JSON-ready; ``readings``, ``accel_chunks`` and ``dead_letters`` are iterators
    over server-side cursors, to be consumed before the next section is asked for. The whole
    walk is one read-only snapshot; ``conn`` must not be inside a transaction of its own.

    Raises UnknownWearer, or StorageError.
    """
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise StorageError("export needs a connection outside a transaction")
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield from _sections(conn, wearer_id, vault)
    except psycopg.Error as exc:
        raise StorageError(f"export of wearer {wearer_id}: {exc}".strip()) from exc


def export_wearer(conn: psycopg.Connection, wearer_id: str, *,
                  vault: IdCardVault | None = None) -> dict[str, Any]:
    """Everything stored about one wearer as one JSON-able dict (format: docs/privacy.md)."""
    return {name: list(value) if isinstance(value, Iterator) else value
            for name, value in export_sections(conn, wearer_id, vault=vault)}


def write_export(conn: psycopg.Connection, wearer_id: str, out: TextIO, *,
                 vault: IdCardVault | None = None) -> dict[str, int]:
    """Stream the export to ``out`` as JSON (UTF-8 text, one list item per line); returns the
    number of items per list section."""
    counts: dict[str, int] = {}
    # The opening brace goes out with the first section: an unknown wearer writes nothing.
    for i, (name, value) in enumerate(export_sections(conn, wearer_id, vault=vault)):
        out.write(("," if i else "{") + f"\n{_dumps(name)}: ")
        if not isinstance(value, Iterator | list):
            out.write(_dumps(value))
            continue
        counts[name] = 0
        out.write("[")
        for item in value:
            out.write(("," if counts[name] else "") + "\n  " + _dumps(item))
            counts[name] += 1
        out.write("\n]" if counts[name] else "]")
    out.write("\n}\n")
    return counts


def _sections(conn: psycopg.Connection, wearer_id: str,
              vault: IdCardVault | None) -> Iterator[tuple[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    wearer = cur.execute("SELECT *, now() AS exported_at FROM wearers WHERE wearer_id = %s",
                         (wearer_id,)).fetchone()
    if wearer is None:
        raise UnknownWearer(wearer_id, deleted_at=_deleted_at(conn, wearer_id))
    exported_at = wearer.pop("exported_at")
    # The lookup HMAC and the ciphertext are keys to the number, not the person's data.
    wearer.pop("id_card_hmac", None)
    cipher = wearer.pop("id_card_cipher", None)
    wearer["id_card"] = vault.reveal(cipher) if vault is not None and cipher else None
    devices = _rows(cur, "SELECT * FROM devices WHERE wearer_id = %s ORDER BY device_id",
                    (wearer_id,))
    key = {"w": wearer_id, "d": [d["device_id"] for d in devices] + _former_devices(
        conn, wearer_id)}
    yield "schema", EXPORT_SCHEMA
    yield "exported_at", _jsonable(exported_at)
    yield "wearer_id", wearer_id
    yield "wearer", _jsonable(wearer)
    yield "contacts", _rows(cur, "SELECT * FROM contacts WHERE wearer_id = %s ORDER BY priority",
                            (wearer_id,))
    yield "devices", devices
    yield "device_bindings", _rows(
        cur, "SELECT * FROM device_bindings WHERE wearer_id = %s ORDER BY bound_at, id",
        (wearer_id,))
    yield "zones", _rows(cur, "SELECT * FROM geofences WHERE wearer_id = %s ORDER BY zone_id",
                         (wearer_id,))
    yield "registry_audit", _rows(
        cur, "SELECT * FROM registry_audit WHERE wearer_id = %s ORDER BY id", (wearer_id,))
    # Readings: the typed columns a reading of its type does not have are NULL; leaving them
    # out keeps a location fix to its few fields.
    yield "readings", (
        {k: v for k, v in r.items() if v is not None} for r in _stream(
            conn, "SELECT * FROM readings WHERE device_id = ANY(%(d)s)"
                  " ORDER BY device_id, type, ts, seq", key))
    yield "accel_chunks", _stream(
        conn, "SELECT * FROM accel_chunks WHERE device_id = ANY(%(d)s) ORDER BY device_id, ts, seq",
        key)
    yield "dead_letters", _stream(
        conn, "SELECT * FROM dead_letters WHERE substring(topic FROM %(re)s) = ANY(%(d)s)"
              " ORDER BY id", {**key, "re": _TOPIC_SOURCE})
    yield "detection_events", _rows(
        cur, f"SELECT * FROM detection_events WHERE {_EVENTS_WHERE} ORDER BY ts, id", key)
    yield "alerts", _alerts(cur, key)


def _alerts(cur: psycopg.Cursor[dict[str, Any]], key: dict[str, Any]) -> list[dict[str, Any]]:
    """The wearer's alerts, each with its audit trail and deliveries (oldest first)."""
    alerts = _rows(cur, f"SELECT * FROM alerts WHERE {_ALERTS_WHERE} ORDER BY id", key)
    ids = [a["id"] for a in alerts]
    audit = _rows(cur, "SELECT * FROM alert_audit WHERE alert_id = ANY(%s) ORDER BY id", (ids,))
    deliveries = _rows(cur, "SELECT * FROM alert_deliveries WHERE alert_id = ANY(%s)"
                            " ORDER BY id", (ids,))
    for a in alerts:
        a["audit"] = [r for r in audit if r["alert_id"] == a["id"]]
        a["deliveries"] = [r for r in deliveries if r["alert_id"] == a["id"]]
    return alerts


def _former_devices(conn: psycopg.Connection, wearer_id: str) -> list[str]:
    """Devices once bound to the wearer and bound to nobody since: what they sent while the
    wearer had them is the wearer's (a device since bound to somebody else is that person's
    now, history included: docs/privacy.md)."""
    return [d for (d,) in conn.execute(
        "SELECT DISTINCT b.device_id FROM device_bindings b JOIN devices d USING (device_id)"
        " WHERE b.wearer_id = %s AND d.wearer_id IS NULL ORDER BY b.device_id",
        (wearer_id,)).fetchall()]


def _rows(cur: psycopg.Cursor[dict[str, Any]], query: str,
          params: Sequence[Any] | Mapping[str, Any]) -> list[dict[str, Any]]:
    return [_jsonable(r) for r in cur.execute(query.encode(), params).fetchall()]


def _stream(conn: psycopg.Connection, query: str,
            params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Rows of a server-side cursor, ``_ITERSIZE`` at a time (bounded memory)."""
    with conn.cursor(name="eldercare_export", row_factory=dict_row) as cur:
        cur.itersize = _ITERSIZE
        cur.execute(query.encode(), params)
        for row in cur:
            yield _jsonable(row)


def _jsonable(value: Any) -> Any:
    """JSON types only: times in ISO 8601, bytes in base64, NaN/Infinity as null."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


# -- delete -------------------------------------------------------------------------------------


def delete_wearer(conn: psycopg.Connection, wearer_id: str, *, now: datetime, actor: str,
                  phone_region: str = "CN") -> DeletionReport:
    """Delete one wearer's data in one transaction, keeping their alerts pseudonymised.

    ``actor`` (who asked) and ``now`` go into the audit entry appended to each kept alert.
    ``phone_region`` reads contact numbers written without a country code, as the alert
    routing does (``[alerts] phone_region``).

    Raises UnknownWearer (twice deleted included), DeletionRefused, or StorageError.
    """
    try:
        with conn.transaction():
            report = _delete(conn, wearer_id, now=now, actor=actor, phone_region=phone_region)
    except psycopg.Error as exc:
        raise StorageError(f"wearer {wearer_id} not deleted: {exc}".strip()) from exc
    log.info("wearer %s: data deleted by %s: %s; kept pseudonymised: %s", wearer_id, actor,
             dict(report.deleted), dict(report.pseudonymized))
    return report


def _delete(conn: psycopg.Connection, wearer_id: str, *, now: datetime, actor: str,
            phone_region: str) -> DeletionReport:
    row = conn.execute("SELECT name FROM wearers WHERE wearer_id = %s FOR UPDATE",
                       (wearer_id,)).fetchone()
    if row is None:
        raise UnknownWearer(wearer_id, deleted_at=_deleted_at(conn, wearer_id))
    devices = [d for (d,) in conn.execute(
        "SELECT device_id FROM devices WHERE wearer_id = %s ORDER BY device_id FOR UPDATE",
        (wearer_id,)).fetchall()]
    key = {"w": wearer_id, "d": devices + _former_devices(conn, wearer_id)}
    alerts = conn.execute(f"SELECT id, status FROM alerts WHERE {_ALERTS_WHERE}"
                          " ORDER BY id FOR UPDATE".encode(), key).fetchall()
    if unresolved := [i for i, status in alerts if status != "resolved"]:
        raise DeletionRefused(wearer_id, alert_ids=unresolved)
    alert_ids = [i for i, _ in alerts]
    secrets = _Secrets.of(conn, wearer_id, name=row[0], phone_region=phone_region)
    pseudonymized = {
        "alert_deliveries": _pseudonymize_deliveries(conn, alert_ids, secrets, now=now),
        "alerts": conn.execute("UPDATE alerts SET lat = NULL, lon = NULL WHERE id = ANY(%s)",
                               (alert_ids,)).rowcount}
    deleted = _delete_rows(conn, key)
    detail = {"wearer_id": wearer_id, "deleted": deleted, "pseudonymized": pseudonymized}
    # The registry's trail of this person is gone; this entry says who erased it, and when.
    conn.execute("INSERT INTO registry_audit (at, actor, action, wearer_id, after)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (now, actor, DELETED_ACTION, wearer_id, Jsonb(detail)))
    audited = conn.execute(
        "INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
        " SELECT id, %s, %s, %s, %s FROM unnest(%s::bigint[]) AS id",
        (now, actor, DELETED_ACTION, Jsonb(detail), alert_ids)).rowcount
    return DeletionReport(wearer_id=wearer_id, actor=actor, at=now, deleted=deleted,
                          pseudonymized=pseudonymized, audited=audited)


def _delete_rows(conn: psycopg.Connection, key: dict[str, Any]) -> dict[str, int]:
    """Delete the rows of every table of DELETED_TABLES (and of the TimescaleDB aggregate);
    returns the counts."""
    statements = {
        "readings": "DELETE FROM readings WHERE device_id = ANY(%(d)s)",
        "accel_chunks": "DELETE FROM accel_chunks WHERE device_id = ANY(%(d)s)",
        "dead_letters": "DELETE FROM dead_letters WHERE substring(topic FROM %(re)s)"
                        " = ANY(%(d)s)",
        "detection_events": f"DELETE FROM detection_events WHERE {_EVENTS_WHERE}",
        "contacts": "DELETE FROM contacts WHERE wearer_id = %(w)s",
        "geofences": "DELETE FROM geofences WHERE wearer_id = %(w)s",
        "registry_audit": "DELETE FROM registry_audit WHERE wearer_id = %(w)s",
        "device_bindings": "DELETE FROM device_bindings WHERE wearer_id = %(w)s",
        "devices": "DELETE FROM devices WHERE wearer_id = %(w)s",
        "wearers": "DELETE FROM wearers WHERE wearer_id = %(w)s",
    }
    deleted: dict[str, int] = {}
    for table, statement in statements.items():
        # registry_audit is append-only (a trigger); erasure is the one path it lets through,
        # announced by a transaction-local setting (SET LOCAL) switched off again at once.
        erasing = table == "registry_audit"
        if erasing:
            conn.execute("SET LOCAL eldercare.erasing = 'on'")
        deleted[table] = conn.execute(statement.encode(), {**key, "re": _TOPIC_SOURCE}).rowcount
        if erasing:
            conn.execute("SET LOCAL eldercare.erasing = 'off'")
    if (aggregate := _materialized_device_hourly(conn)) is not None:
        deleted["device_hourly"] = conn.execute(
            sql.SQL("DELETE FROM {} WHERE device_id = ANY(%s)").format(aggregate),
            (key["d"],)).rowcount
    return deleted


def _materialized_device_hourly(conn: psycopg.Connection) -> sql.Identifier | None:
    """The table behind TimescaleDB's ``device_hourly`` aggregate, if there is one.

    Its hourly last positions outlive the raw readings: a refresh recomputes only the hours
    it was told were touched, and never the hours whose raw chunks retention dropped. So the
    devices' rows are deleted from the materialisation itself, in this transaction; a later
    refresh of those hours finds no raw rows of the devices and brings nothing back.
    """
    row = conn.execute("SELECT to_regclass('device_hourly') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute(
        "SELECT materialization_hypertable_schema, materialization_hypertable_name"
        " FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name = 'device_hourly'").fetchone()
    return sql.Identifier(row[0], row[1]) if row else None


@dataclass(frozen=True, slots=True)
class _Secrets:
    """The wearer's name, their contacts' names, numbers (as written, E.164, national) and
    e-mail addresses: what must not survive in the kept delivery rows."""

    names: tuple[str, ...]
    addresses: frozenset[str]

    @classmethod
    def of(cls, conn: psycopg.Connection, wearer_id: str, *, name: str,
           phone_region: str) -> _Secrets:
        names, addresses = [name], set[str]()
        for c_name, phone, email in conn.execute(
                "SELECT name, phone, email FROM contacts WHERE wearer_id = %s", (wearer_id,)):
            names.append(c_name)
            addresses.update(a for a in (phone, *_phone_forms(phone, phone_region), email) if a)
        # Longest first, so a name that contains another is replaced whole.
        return cls(tuple(sorted(set(names), key=len, reverse=True)), frozenset(addresses))

    def scrub(self, value: Any) -> Any:
        """``value`` (JSON) with names redacted, addresses masked, positions removed."""
        if isinstance(value, dict):
            out = {k: self.scrub(v) for k, v in value.items()}
            if isinstance(out.get("wearer"), dict):
                out["wearer"] = {**out["wearer"], "name": None}
            for k in ("position", "map_link", "lat", "lon"):
                if k in out:
                    out[k] = None
            return out
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if isinstance(value, str):
            for a in sorted(self.addresses, key=len, reverse=True):
                value = value.replace(a, mask_address(a))
            for n in self.names:
                value = value.replace(n, REDACTED)
        return value


def _pseudonymize_deliveries(conn: psycopg.Connection, alert_ids: list[int], secrets: _Secrets,
                             *, now: datetime) -> int:
    """Mask family addresses and scrub bodies, receipts and errors of the alerts' deliveries.

    A family message still pending is cancelled: its address is masked, so it could only
    fail. Community staff and the dispatch platform are not the wearer's data and stay.
    """
    rows = conn.execute(
        "SELECT id, recipient, address, status, body, receipt, last_error FROM alert_deliveries"
        " WHERE alert_id = ANY(%s) ORDER BY id FOR UPDATE", (alert_ids,)).fetchall()
    marker = {"reason": DELETED_ACTION, "at": now.isoformat()}
    updates = []
    for did, recipient, address, status, body, receipt, last_error in rows:
        personal = recipient.startswith("family") or address in secrets.addresses
        updates.append((
            mask_address(address) if personal else address,
            "cancelled" if personal and status == "pending" else status,
            Jsonb({**secrets.scrub(body), "redacted": marker}),
            None if receipt is None else Jsonb(secrets.scrub(receipt)),
            None if last_error is None else secrets.scrub(last_error), did))
    with conn.cursor() as cur:
        cur.executemany("UPDATE alert_deliveries SET address = %s, status = %s, body = %s,"
                        " receipt = %s, last_error = %s WHERE id = %s", updates)
    return len(updates)


def mask_address(address: str) -> str:
    """A phone number or e-mail address in a form that no longer identifies its holder:
    ``+86*******5678`` (the country code and the last four digits, the "尾号" by which a call
    centre confirms a number with its holder), ``***@example.com``. Anything else (a webhook
    URL, an MQTT topic) is not personal and comes back as it is."""
    if "@" in address and "/" not in address:
        return "***@" + address.rsplit("@", 1)[1]
    digits = re.sub(r"\D", "", address)
    if not re.fullmatch(r"[+\d\s().-]{5,}", address) or len(digits) < 5:
        return address
    prefix = ""
    if address.startswith("+"):
        try:
            prefix = f"+{phonenumbers.parse(address).country_code}"
            digits = digits.removeprefix(prefix[1:])
        except phonenumbers.NumberParseException:
            prefix = "+"
    return prefix + "*" * (len(digits) - 4) + digits[-4:]


def _phone_forms(phone: str, region: str) -> tuple[str, ...]:
    """The forms a number is stored or sent in besides as written: E.164 (the outbox's
    addresses) and the national number (what Aliyun is sent for mainland numbers)."""
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return ()
    return (phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
            phonenumbers.national_significant_number(parsed))


def _deleted_at(conn: psycopg.Connection, wearer_id: str) -> datetime | None:
    """When this wearer's data was deleted, from the audit entries the deletion left (in the
    registry's trail, and in the kept alerts' for deletions made before it existed)."""
    row = conn.execute("SELECT greatest((SELECT max(at) FROM alert_audit WHERE action = %(a)s"
                       " AND detail->>'wearer_id' = %(w)s), (SELECT max(at) FROM registry_audit"
                       " WHERE action = %(a)s AND wearer_id = %(w)s))",
                       {"a": DELETED_ACTION, "w": wearer_id}).fetchone()
    return row[0] if row else None
