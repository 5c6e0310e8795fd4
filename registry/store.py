"""The elderly information database's reads and writes: wearers, devices, bindings, contacts,
zones (issue #12; docs/registry-database.md).

Every write is one transaction holding the change *and* its ``registry_audit`` row(s) (actor,
action, before, after), so the trail can neither miss a change nor show one that did not
commit; the tables' statement triggers (0011) bump ``registry_version`` in the same
transaction, which is how the running service notices (live effect).

Rules enforced here, for every caller (API, console, tests):

- **Scopes.** Each method takes the caller's ``scopes`` (region codes, each covering the codes
  below it; None = all, :mod:`schemas.regions`). A record outside them does not exist for the
  caller (:class:`RecordNotFound`, the same as a missing id); creating or moving one into a
  region outside them is :class:`RegionForbidden`. A region must be in the region tree
  (``regions``): ``unknown region 371099`` is a :class:`RecordConflict`.
- **Concurrency.** Rows are locked (``FOR UPDATE``) in one order, wearer before device, so a
  bind and a deactivation of the same wearer serialize instead of deadlocking. Edits name the
  ``version`` they read; a save since is a conflict, never silently undone.
- **ID-card numbers** arrive in clear, leave as HMAC + ciphertext + masked form
  (:class:`registry.idcard.IdCardVault`); only the masked form is ever read back, so records,
  audit entries and messages cannot carry the number. Logs carry ids only.
- **Phone numbers** are stored in E.164 (:func:`registry.model.e164`, China by default).

Reads and writes share a small pool (:class:`foundation.pool.LazyPool`); every psycopg error
becomes :class:`~foundation.errors.StorageError`, the database's own unique violations (two
clerks enrolling one ID card at once) the :class:`RecordConflict` the earlier check would
have given.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from foundation.clock import Clock, SystemClock
from foundation.errors import StorageError, ValidationError
from foundation.pool import LazyPool, PooledStore
from registry import records
from registry import statements as st
from registry.errors import InvalidRecord, RecordConflict, RecordNotFound
from registry.idcard import IdCardVault, StoredIdCard
from registry.model import (
    Contact,
    DeactivationReason,
    DeviceIn,
    DevicePatch,
    WearerIn,
    WearerPatch,
    ZoneIn,
    e164,
)
from registry.search import WearerQuery, search_wearers

log = logging.getLogger(__name__)

#: The reason written on the bindings a deactivation closes.
DEACTIVATED_UNBIND: Final = "wearer deactivated"
AUDIT_MAX_LIMIT: Final = 500

Row = st.Row
Scopes = st.Scopes


class RegistryStore(PooledStore):
    """The registry database on one URL; see the module docstring. Thread-safe."""

    def __init__(self, database_url: str, *, vault: IdCardVault, clock: Clock | None = None,
                 pool_size: int = 4) -> None:
        self.vault = vault
        self.clock = clock or SystemClock()
        self._db = LazyPool(database_url, name="eldercare-registry", max_size=pool_size)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Row]]:
        try:
            with self._db.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
                yield cur
        except pg_errors.UniqueViolation as exc:
            raise st.unique_conflict(exc) from None
        except psycopg.Error as exc:
            raise StorageError(f"registry store: {exc}".strip()) from exc

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now_ms() / 1000, dt.UTC)

    # --- Wearers ---------------------------------------------------------------------------

    def create_wearer(self, wearer: WearerIn, *, actor: str, scopes: Scopes) -> Row:
        """Enrol a wearer; returns its record (as :meth:`get_wearer`)."""
        if wearer.birth_date is not None and wearer.birth_year is None:
            wearer = msgspec.structs.replace(wearer, birth_year=wearer.birth_date.year)
        card = self._protect(wearer.id_card)
        now = self._now()
        with self._tx() as cur:
            st.check_region(cur, wearer.region, scopes)
            if card is not None:
                st.check_card_free(cur, card.hmac, wearer.id, scopes)
            if cur.execute("SELECT 1 FROM wearers WHERE wearer_id = %s",
                           (wearer.id,)).fetchone():
                raise RecordConflict(f"wearer {wearer.id} already exists")
            values = st.wearer_values(wearer)
            cur.execute(
                "INSERT INTO wearers (wearer_id, name, region, sex, birth_year, birth_date,"
                " address, phone, living_situation, care_categories, conditions, guardian_name,"
                " guardian_phone, guardian_relation, notes, timezone, home_lat, home_lon,"
                " id_card_hmac, id_card_cipher, id_card_masked, created_at, updated_at)"
                " VALUES (%(id)s, %(name)s, %(region)s, %(sex)s, %(birth_year)s, %(birth_date)s,"
                " %(address)s, %(phone)s, %(living_situation)s, %(care_categories)s,"
                " %(conditions)s, %(guardian_name)s, %(guardian_phone)s, %(guardian_relation)s,"
                " %(notes)s, %(timezone)s, %(home_lat)s, %(home_lon)s, %(hmac)s, %(cipher)s,"
                " %(masked)s, %(now)s, %(now)s)",
                {**values, **st.card_values(card), "now": now})
            after = st.wearer_row(cur, wearer.id)
            st.audit(cur, actor, "wearer_created", wearer_id=wearer.id, region=wearer.region,
                   before=None, after=after, at=now)
        log.info("wearer %s created by %s", wearer.id, actor)
        return self.get_wearer(wearer.id, scopes=scopes)

    def get_wearer(self, wearer_id: str, *, scopes: Scopes) -> Row:
        """The wearer with ``devices`` (bound now), ``contacts``, ``zones`` and ``bindings``
        (every binding to them, newest first)."""
        with self._tx() as cur:
            record = st.visible_wearer(cur, wearer_id, scopes)
            record["devices"] = cur.execute(
                f"SELECT {records.DEVICE_COLUMNS} FROM devices d WHERE d.wearer_id = %s"
                " ORDER BY d.device_id", (wearer_id,)).fetchall()
            record["contacts"] = st.contacts(cur, wearer_id)
            record["zones"] = st.zones(cur, wearer_id)
            record["bindings"] = cur.execute(
                f"SELECT {records.BINDING_COLUMNS} FROM device_bindings b WHERE b.wearer_id = %s"
                " ORDER BY b.bound_at DESC, b.id DESC", (wearer_id,)).fetchall()
        return record

    def update_wearer(self, wearer_id: str, patch: WearerPatch, *, actor: str,
                      scopes: Scopes) -> Row:
        """Apply ``patch`` (fields given replace, None clears) if ``patch.version`` is still
        the stored one; the wearer's devices follow a change of region."""
        now = self._now()
        changes = msgspec.to_builtins(patch)
        del changes["version"]
        with self._tx() as cur:
            before = st.visible_wearer(cur, wearer_id, scopes, lock=True)
            st.check_version("wearer", wearer_id, before["version"], patch.version)
            if not before["active"]:
                raise RecordConflict(f"wearer {wearer_id} is deactivated")
            if changes:   # else nothing to change: no new version, no audit entry
                self._update_wearer(cur, before, changes, actor=actor, scopes=scopes, at=now)
        if changes:
            log.info("wearer %s updated by %s", wearer_id, actor)
        return self.get_wearer(wearer_id, scopes=scopes)

    def _update_wearer(self, cur: psycopg.Cursor[Row], before: Row, changes: dict[str, Any],
                       *, actor: str, scopes: Scopes, at: dt.datetime) -> None:
        """The edit, validated as a whole record, written with its audit (row locked)."""
        wearer_id, now = before["id"], at
        card_given = "id_card" in changes
        card = self._protect(changes.pop("id_card", None))
        merged = {**records.wearer_input(before), **changes}
        if changes.get("birth_date") and "birth_year" not in changes:
            merged["birth_year"] = int(str(changes["birth_date"])[:4])
        try:
            wearer = msgspec.convert(merged, WearerIn)
        except msgspec.ValidationError as exc:
            raise records.invalid(exc) from None
        if wearer.region != before["region"]:
            st.check_region(cur, wearer.region, scopes)
        if card is not None:
            st.check_card_free(cur, card.hmac, wearer_id, scopes)
        card_sql = (", id_card_hmac = %(hmac)s, id_card_cipher = %(cipher)s,"
                    " id_card_masked = %(masked)s") if card_given else ""
        cur.execute(
            "UPDATE wearers SET name = %(name)s, region = %(region)s, sex = %(sex)s,"
            " birth_year = %(birth_year)s, birth_date = %(birth_date)s,"
            " address = %(address)s, phone = %(phone)s,"
            " living_situation = %(living_situation)s, care_categories = %(care_categories)s,"
            " conditions = %(conditions)s, guardian_name = %(guardian_name)s,"
            " guardian_phone = %(guardian_phone)s, guardian_relation = %(guardian_relation)s,"
            " notes = %(notes)s, timezone = %(timezone)s, home_lat = %(home_lat)s,"
            f" home_lon = %(home_lon)s{card_sql}, version = version + 1, updated_at = %(now)s"
            " WHERE wearer_id = %(id)s",
            {**st.wearer_values(wearer), **st.card_values(card), "now": now})
        after = st.wearer_row(cur, wearer_id)
        st.audit(cur, actor, "wearer_updated", wearer_id=wearer_id, region=wearer.region,
               before=before, after=after, at=now)
        if wearer.region != before["region"]:
            self._move_devices(cur, wearer_id, wearer.region, actor=actor, at=now)

    def _move_devices(self, cur: psycopg.Cursor[Row], wearer_id: str, region: str, *,
                      actor: str, at: dt.datetime) -> None:
        for dev in cur.execute(
                f"SELECT {records.DEVICE_COLUMNS} FROM devices d WHERE d.wearer_id = %s"
                " ORDER BY d.device_id FOR UPDATE", (wearer_id,)).fetchall():
            cur.execute("UPDATE devices SET region = %s, version = version + 1,"
                        " updated_at = %s WHERE device_id = %s", (region, at, dev["id"]))
            st.audit(cur, actor, "device_updated", wearer_id=wearer_id, device_id=dev["id"],
                   region=region, before=dev, after=st.device_row(cur, dev["id"]), at=at)

    def deactivate_wearer(self, wearer_id: str, *, reason: DeactivationReason,
                          note: str | None, actor: str, scopes: Scopes) -> Row:
        """Deactivate (moved away, deceased): kept with its history, out of admission and
        routing; every open binding is closed and the devices freed. Ending the wearer's
        alerts is the alert store's (``AlertStore.end_for_wearer``), after this commits."""
        now = self._now()
        with self._tx() as cur:
            before = st.visible_wearer(cur, wearer_id, scopes, lock=True)
            if not before["active"]:
                raise RecordConflict(f"wearer {wearer_id} is already deactivated")
            for dev in cur.execute(
                    f"SELECT {records.DEVICE_COLUMNS} FROM devices d WHERE d.wearer_id = %s"
                    " ORDER BY d.device_id FOR UPDATE", (wearer_id,)).fetchall():
                st.unbind(cur, dev, reason=DEACTIVATED_UNBIND, actor=actor, at=now)
            cur.execute(
                "UPDATE wearers SET active = false, deactivated_at = %s,"
                " deactivation_reason = %s, deactivation_note = %s, version = version + 1,"
                " updated_at = %s WHERE wearer_id = %s", (now, reason, note, now, wearer_id))
            st.audit(cur, actor, "wearer_deactivated", wearer_id=wearer_id,
                   region=before["region"], before=before, after=st.wearer_row(cur, wearer_id),
                   at=now)
        log.info("wearer %s deactivated by %s (%s)", wearer_id, actor, reason)
        return self.get_wearer(wearer_id, scopes=scopes)

    def search_wearers(self, query: WearerQuery, *, scopes: Scopes) -> list[Row]:
        """A page of wearer summaries (:mod:`registry.search`), by id."""
        card_hmac = None
        if query.q is not None:
            try:
                card_hmac = self.vault.lookup(query.q)
            except ValidationError:
                pass     # not an ID-card number: searched as the other keys only
        with self._tx() as cur:
            return search_wearers(cur, query, scopes=scopes, card_hmac=card_hmac)

    def wearer_audit(self, wearer_id: str, *, scopes: Scopes, before_id: int | None = None,
                     limit: int = 50) -> list[Row]:
        """The wearer's trail, newest first: their own changes and their devices' bindings."""
        if not 1 <= limit <= AUDIT_MAX_LIMIT:
            raise ValueError(f"limit must be 1-{AUDIT_MAX_LIMIT}, got {limit}")
        with self._tx() as cur:
            st.visible_wearer(cur, wearer_id, scopes)
            return cur.execute(
                f"SELECT {records.AUDIT_COLUMNS} FROM registry_audit a WHERE a.wearer_id = %s"
                " AND (%s::bigint IS NULL OR a.id < %s) ORDER BY a.id DESC LIMIT %s",
                (wearer_id, before_id, before_id, limit)).fetchall()

    # --- Contacts and zones ----------------------------------------------------------------

    def replace_contacts(self, wearer_id: str, contacts: Sequence[Contact], *, actor: str,
                         scopes: Scopes) -> list[Row]:
        """Replace the wearer's contacts by ``contacts``, in calling order."""
        phones = [e164(c.phone, field=("contacts", i, "phone")) for i, c in enumerate(contacts)]
        now = self._now()
        with self._tx() as cur:
            record = st.visible_wearer(cur, wearer_id, scopes, lock=True)
            st.require_active(record)
            before = st.contacts(cur, wearer_id)
            cur.execute("DELETE FROM contacts WHERE wearer_id = %s", (wearer_id,))
            for prio, (c, phone) in enumerate(zip(contacts, phones, strict=True), start=1):
                cur.execute(
                    "INSERT INTO contacts (wearer_id, priority, name, relation, phone, email,"
                    " language, channels) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (wearer_id, prio, c.name, c.relation, phone, c.email, c.language,
                     list(c.channels)))
            after = st.contacts(cur, wearer_id)
            st.audit(cur, actor, "contacts_replaced", wearer_id=wearer_id,
                   region=record["region"], before=before, after=after, at=now)
        log.info("contacts of wearer %s replaced by %s (%d)", wearer_id, actor, len(after))
        return after

    def put_zone(self, wearer_id: str, zone: ZoneIn, *, actor: str, scopes: Scopes) -> Row:
        """Create or replace the wearer's zone ``zone.id``."""
        start, end = records.window(zone.active)
        now = self._now()
        with self._tx() as cur:
            record = st.visible_wearer(cur, wearer_id, scopes, lock=True)
            st.require_active(record)
            before = st.zone(cur, wearer_id, zone.id)
            cur.execute(
                "INSERT INTO geofences (wearer_id, zone_id, name, kind, center_lat, center_lon,"
                " radius_m, polygon, active_from, active_to)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (wearer_id, zone_id) DO UPDATE SET name = excluded.name,"
                " kind = excluded.kind, center_lat = excluded.center_lat,"
                " center_lon = excluded.center_lon, radius_m = excluded.radius_m,"
                " polygon = excluded.polygon, active_from = excluded.active_from,"
                " active_to = excluded.active_to",
                (wearer_id, zone.id, zone.name, zone.kind,
                 zone.center.lat if zone.center else None,
                 zone.center.lon if zone.center else None, zone.radius_m,
                 None if zone.points is None else Jsonb([list(p) for p in zone.points]),
                 start, end))
            after = st.zone(cur, wearer_id, zone.id)
            st.audit(cur, actor, "zone_saved", wearer_id=wearer_id, region=record["region"],
                   before=before, after=after, at=now)
        assert after is not None
        log.info("zone %s of wearer %s saved by %s", zone.id, wearer_id, actor)
        return after

    def delete_zone(self, wearer_id: str, zone_id: str, *, actor: str, scopes: Scopes) -> None:
        """Delete the wearer's zone ``zone_id`` (RecordNotFound if there is none)."""
        now = self._now()
        with self._tx() as cur:
            record = st.visible_wearer(cur, wearer_id, scopes, lock=True)
            before = st.zone(cur, wearer_id, zone_id)
            if before is None:
                raise RecordNotFound("zone", f"{zone_id} of wearer {wearer_id}")
            cur.execute("DELETE FROM geofences WHERE wearer_id = %s AND zone_id = %s",
                        (wearer_id, zone_id))
            st.audit(cur, actor, "zone_deleted", wearer_id=wearer_id, region=record["region"],
                   before=before, after=None, at=now)
        log.info("zone %s of wearer %s deleted by %s", zone_id, wearer_id, actor)

    # --- Devices ---------------------------------------------------------------------------

    def create_device(self, device: DeviceIn, *, actor: str, scopes: Scopes) -> Row:
        """Register a device as unbound stock of ``device.region``."""
        sim = None if device.sim is None else e164(device.sim, field=("sim",))
        now = self._now()
        with self._tx() as cur:
            st.check_region(cur, device.region, scopes)
            if cur.execute("SELECT 1 FROM devices WHERE device_id = %s",
                           (device.id,)).fetchone():
                raise RecordConflict(f"device {device.id} already exists")
            st.check_imei_free(cur, device.imei, device.id)
            cur.execute(
                "INSERT INTO devices (device_id, kind, region, model, protocol, imei, sim,"
                " handed_out_on, coord_system, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (device.id, device.kind, device.region, device.model, device.protocol,
                 device.imei, sim, device.handed_out_on, device.coord_system, now, now))
            after = st.device_row(cur, device.id)
            st.audit(cur, actor, "device_created", device_id=device.id, region=device.region,
                   before=None, after=after, at=now)
        log.info("device %s created by %s", device.id, actor)
        return self.get_device(device.id, scopes=scopes)

    def get_device(self, device_id: str, *, scopes: Scopes) -> Row:
        """The device with ``bindings`` (its history, newest first)."""
        with self._tx() as cur:
            record = st.visible_device(cur, device_id, scopes)
            record["bindings"] = cur.execute(
                f"SELECT {records.BINDING_COLUMNS} FROM device_bindings b WHERE b.device_id = %s"
                " ORDER BY b.bound_at DESC, b.id DESC", (device_id,)).fetchall()
        return record

    def update_device(self, device_id: str, patch: DevicePatch, *, actor: str,
                      scopes: Scopes) -> Row:
        """Apply ``patch`` if ``patch.version`` is still the stored one."""
        changes = msgspec.to_builtins(patch)
        del changes["version"]
        retired = changes.pop("retired", None)
        if changes.get("sim") is not None:
            changes["sim"] = e164(changes["sim"], field=("sim",))
        now = self._now()
        with self._tx() as cur:
            before = st.visible_device(cur, device_id, scopes, lock=True)
            st.check_version("device", device_id, before["version"], patch.version)
            bound = before["wearer_id"] is not None
            if "region" in changes and changes["region"] != before["region"]:
                if bound:
                    raise RecordConflict(f"device {device_id} is bound to {before['wearer_id']}:"
                                         " it is in its wearer's region")
                st.check_region(cur, changes["region"], scopes)
            if changes.get("imei") is not None:
                st.check_imei_free(cur, changes["imei"], device_id)
            retired_at = before["retired_at"]
            if retired is True and retired_at is None:
                if bound:
                    raise RecordConflict(f"device {device_id} is bound to"
                                         f" {before['wearer_id']}: unbind it first")
                retired_at = now
            elif retired is False:
                retired_at = None
            merged = {k: changes.get(k, before[k]) for k in (
                "kind", "region", "model", "protocol", "imei", "sim", "handed_out_on",
                "coord_system")}
            cur.execute(
                "UPDATE devices SET kind = %(kind)s, region = %(region)s, model = %(model)s,"
                " protocol = %(protocol)s, imei = %(imei)s, sim = %(sim)s,"
                " handed_out_on = %(handed_out_on)s, coord_system = %(coord_system)s,"
                " retired_at = %(retired_at)s, version = version + 1, updated_at = %(now)s"
                " WHERE device_id = %(id)s",
                {**merged, "retired_at": retired_at, "now": now, "id": device_id})
            st.audit(cur, actor, "device_updated", wearer_id=before["wearer_id"],
                   device_id=device_id, region=merged["region"], before=before,
                   after=st.device_row(cur, device_id), at=now)
        log.info("device %s updated by %s", device_id, actor)
        return self.get_device(device_id, scopes=scopes)

    def bind(self, device_id: str, wearer_id: str, *, actor: str, scopes: Scopes) -> Row:
        """Bind the device to the wearer; the device takes the wearer's region. Binding it
        again to the same wearer changes nothing."""
        now = self._now()
        with self._tx() as cur:
            person = st.visible_wearer(cur, wearer_id, scopes, lock=True)
            before = st.visible_device(cur, device_id, scopes, lock=True)
            if before["wearer_id"] == wearer_id:
                return self._device_in(cur, device_id)
            if before["wearer_id"] is not None:
                holder = before["wearer_id"]
                raise RecordConflict(f"device {device_id} already bound to {holder}"
                                     if st.wearer_visible(cur, holder, scopes) else
                                     f"device {device_id} is bound to a wearer outside"
                                     " your regions")
            if before["retired_at"] is not None:
                raise RecordConflict(f"device {device_id} is retired")
            st.require_active(person)
            cur.execute("UPDATE devices SET wearer_id = %s, region = %s, version = version + 1,"
                        " updated_at = %s WHERE device_id = %s",
                        (wearer_id, person["region"], now, device_id))
            cur.execute("INSERT INTO device_bindings (device_id, wearer_id, bound_at, bound_by)"
                        " VALUES (%s, %s, %s, %s)", (device_id, wearer_id, now, actor))
            st.audit(cur, actor, "device_bound", wearer_id=wearer_id, device_id=device_id,
                   region=person["region"], before=before, after=st.device_row(cur, device_id),
                   at=now)
            result = self._device_in(cur, device_id)
        log.info("device %s bound to wearer %s by %s", device_id, wearer_id, actor)
        return result

    def unbind(self, device_id: str, *, reason: str, actor: str, scopes: Scopes) -> Row:
        """End the device's current binding (RecordConflict if it has none)."""
        now = self._now()
        with self._tx() as cur:
            # The device row alone is locked: an unbinding writes nothing of the wearer, so
            # it cannot deadlock with a deactivation (wearer, then their devices).
            before = st.visible_device(cur, device_id, scopes, lock=True)
            if before["wearer_id"] is None:
                raise RecordConflict(f"device {device_id} is not bound")
            st.unbind(cur, before, reason=reason, actor=actor, at=now)
            result = self._device_in(cur, device_id)
        log.info("device %s unbound by %s", device_id, actor)
        return result

    @staticmethod
    def _device_in(cur: psycopg.Cursor[Row], device_id: str) -> Row:
        record = st.device_row(cur, device_id)
        record["bindings"] = cur.execute(
            f"SELECT {records.BINDING_COLUMNS} FROM device_bindings b WHERE b.device_id = %s"
            " ORDER BY b.bound_at DESC, b.id DESC", (device_id,)).fetchall()
        return record

    # --- ID-card numbers -------------------------------------------------------------------

    def _protect(self, number: str | None) -> StoredIdCard | None:
        if number is None:
            return None
        try:
            return self.vault.protect(number)
        except ValidationError as exc:
            raise InvalidRecord(("id_card",), exc.reason) from None
