"""Privacy (issue #7, "Security", "Privacy"): one wearer's export and deletion, retention, and
logs and metrics that carry ids, never names, numbers or precise positions.

Against real PostgreSQL (and Mosquitto for the end-to-end log test). Two wearers share the
database in every test: whatever is done to A must leave B exactly as B was, which is checked
by comparing B's whole export before and after.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerts.auth import new_token
from alerts.outbox import Routing
from alerts.store import AlertStore
from alerts.webhook_receiver import Receiver
from detectors.events import Event
from eldercare import cli
from eldercare.app import Application
from eldercare.config import Config, load_config
from eldercare.privacy import (
    DELETED_ACTION,
    DELETED_TABLES,
    DeletionRefused,
    UnknownWearer,
    delete_wearer,
    export_wearer,
    mask_address,
    write_export,
)
from eldercare.schema import migrate
from foundation.ports import free_port
from ingest.batch import Batch
from ingest.event_store import PostgresEventStore
from ingest.migrations import RetentionPolicy, prune
from ingest.registry_store import store_registry
from ingest.settings import retention_of
from ingest.storage import PostgresStore
from registry.idcard import IdCardVault
from schemas import MessageDecoder, device_topic, gateway_topic
from schemas.registry import load_registry
from tests import test_timescale_pglite
from tests.aliyun_fake import KEY_ID, FakeAliyun
from tests.aliyun_fake import SECRET as ALIYUN_SECRET
from tests.conftest import Publisher, count, now_ms, wait_for

REGION = "371002"
#: One reading of every wire type (fields besides type, ts and seq).
READINGS: dict[str, dict[str, Any]] = {
    "location": {"lat": 37.5, "lon": 122.1, "accuracy_m": 8, "battery_pct": 80, "source": "gps"},
    "vitals": {"heart_rate_bpm": 72, "spo2_pct": 97, "systolic_mmhg": 130, "steps": 1200},
    "sos": {},
    "fall": {"confidence": 0.8, "lat": 37.5, "lon": 122.1},
    "accel": {"rate_hz": 50, "x": [0.0, 0.1], "y": [0.0, 0.0], "z": [1.0, 0.98]},
    "heartbeat": {"battery_pct": 50, "rssi_dbm": -80},
    "wear": {"worn": False},
    "home_alarm": {"sensor": "smoke", "active": True},
}
# Distinctive values, so a search for them cannot hit anything else by chance.
A_NAME, A_CONTACTS = "王秀英", ("李明", "李华")
A_PHONES = ("+86 139 8765 4321", "13912348765")
A_EMAIL = "lihua.family@example.com"
A_HOME = (37.513179, 122.120417)
A_SOS = (37.516283, 122.127941)
B_NAME, B_CONTACT, B_PHONE = "张建国", "张伟", "13700001111"


def registry_yaml(region: str) -> str:
    """Wearer A (two devices, two contacts, a zone) and wearer B, in ``region``."""
    return f"""
wearers:
  - id: W-A
    name: {A_NAME}
    region: "{region}"
    home: {{lat: {A_HOME[0]}, lon: {A_HOME[1]}}}
    devices: [{{id: BR-A, kind: bracelet}}, {{id: FS-A, kind: fall_sensor}}]
    contacts:
      - {{name: {A_CONTACTS[0]}, relation: son, phone: "{A_PHONES[0]}"}}
      - {{name: {A_CONTACTS[1]}, phone: "{A_PHONES[1]}", email: {A_EMAIL}, channels: [sms, email]}}
    zones:
      - {{id: home, kind: circle, center: {{lat: {A_HOME[0]}, lon: {A_HOME[1]}}}, radius_m: 300}}
  - id: W-B
    name: {B_NAME}
    region: "{region}"
    home: {{lat: 36.651234, lon: 117.120987}}
    devices: [{{id: BR-B, kind: bracelet}}]
    contacts: [{{name: {B_CONTACT}, phone: "{B_PHONE}"}}]
"""


A_DEVICES, B_DEVICES = ["BR-A", "FS-A"], ["BR-B"]


@dataclass
class Fleet:
    """Two wearers with readings, dead letters, events and alerts in one database."""

    url: str
    alerts: dict[str, list[int]]


def _readings(batch: Batch, device: str, ts: int, *, region: str = REGION) -> None:
    """One reading of every wire type from ``device`` at ``ts``."""
    dec = MessageDecoder()
    for i, (kind, fields) in enumerate(sorted(READINGS.items())):
        payload = json.dumps({"type": kind, "ts": ts, "seq": i, **fields}).encode()
        out = dec.decode(device_topic(region, device), payload, now_ms=ts)
        batch.add_readings(out.readings, region=region, received_ms=ts)


def _store_fixes(url: str, device: str, ages_days: tuple[int, ...], *,
                 method: Literal["copy", "unnest"] = "unnest") -> None:
    """One location fix of ``device`` per age (unnest by default: PGlite cannot COPY FROM
    STDIN)."""
    now, batch, dec = now_ms(), Batch(), MessageDecoder()
    for age in ages_days:
        payload = json.dumps({"type": "location", "ts": now - age * 86_400_000,
                              "lat": A_SOS[0], "lon": A_SOS[1]}).encode()
        batch.add_readings(dec.decode(device_topic(REGION, device), payload, now_ms=now).readings,
                           region=REGION, received_ms=now)
    store = PostgresStore(url, method=method)
    try:
        assert store.write(batch).stored == len(ages_days)
    finally:
        store.close()


def _alert_store(url: str) -> AlertStore:
    return AlertStore(url, routing=Routing(dispatch_url="http://dispatch.test/hook",
                                           channels=frozenset({"webhook", "sms", "email"})))


@pytest.fixture
def fleet(migrated_db: str, tmp_path: Path) -> Fleet:
    (tmp_path / "registry.yaml").write_text(registry_yaml(REGION), encoding="utf-8")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, load_registry(tmp_path / "registry.yaml"))
    now = now_ms()
    batch = Batch()
    for device in A_DEVICES + B_DEVICES:
        for ts in (now - 3_600_000, now):
            _readings(batch, device, ts)
        batch.add_dead_letter(device_topic(REGION, device), b"\xffnot json", "not JSON", now)
    batch.add_dead_letter(gateway_topic(REGION, "GW-OTHER"), b"[]", "empty", now)
    store = PostgresStore(migrated_db)
    try:
        store.write(batch)
    finally:
        store.close()
    events = PostgresEventStore(migrated_db)
    try:
        events.write([
            Event(device_id="BR-A", type="sos", ts=now, severity="critical", region=REGION,
                  wearer_id="W-A", lat=A_SOS[0], lon=A_SOS[1]),
            Event(device_id="FS-A", type="fall", ts=now, severity="critical", region=REGION,
                  wearer_id="W-A", lat=A_SOS[0], lon=A_SOS[1], evidence={"confidence": 0.9}),
            Event(device_id="BR-B", type="sos", ts=now, severity="critical", region=REGION,
                  wearer_id="W-B", lat=36.652, lon=117.121),
        ], detected_ms=now)
    finally:
        events.close()
    with _alert_store(migrated_db) as alerts:
        alerts.fold_pending(now_ms=now)
        # Up the ladder to "family:all", so the second contact's SMS and e-mail are queued.
        alerts.escalate_due(now_ms=now + 61_000)
        alerts.escalate_due(now_ms=now + 182_000)
    with psycopg.connect(migrated_db) as conn:
        ids: dict[str, list[int]] = {"W-A": [], "W-B": []}
        for alert_id, wearer in conn.execute("SELECT id, wearer_id FROM alerts ORDER BY id"):
            ids[wearer].append(alert_id)
    assert len(ids["W-A"]) == 2 and len(ids["W-B"]) == 1
    return Fleet(url=migrated_db, alerts=ids)


def _resolve(url: str, alert_ids: list[int]) -> None:
    with _alert_store(url) as alerts:
        for alert_id in alert_ids:
            alerts.acknowledge(alert_id, by="officer-7", now_ms=now_ms(), note="calling back")
            alerts.resolve(alert_id, by="officer-7", outcome="helped_on_site", now_ms=now_ms())


def _export(url: str, wearer_id: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        return export_wearer(conn, wearer_id)


def _without_time(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "exported_at"}


# Per table, the rows of one wearer, attributed the way an operator would (by hand, not with
# the module's own queries).
_OWN_ROWS = {
    "readings": "SELECT count(*) FROM readings WHERE device_id = ANY(%(d)s)",
    "accel_chunks": "SELECT count(*) FROM accel_chunks WHERE device_id = ANY(%(d)s)",
    "dead_letters": "SELECT count(*) FROM dead_letters WHERE split_part(topic, '/', 5)"
                    " = ANY(%(d)s)",
    "detection_events": "SELECT count(*) FROM detection_events WHERE wearer_id = %(w)s",
    "contacts": "SELECT count(*) FROM contacts WHERE wearer_id = %(w)s",
    "geofences": "SELECT count(*) FROM geofences WHERE wearer_id = %(w)s",
    # The entry recording an erasure is not the person's data: it says who erased it.
    "registry_audit": "SELECT count(*) FROM registry_audit WHERE wearer_id = %(w)s"
                      " AND action <> 'wearer_data_deleted'",
    "device_bindings": "SELECT count(*) FROM device_bindings WHERE wearer_id = %(w)s",
    "devices": "SELECT count(*) FROM devices WHERE device_id = ANY(%(d)s)",
    "wearers": "SELECT count(*) FROM wearers WHERE wearer_id = %(w)s",
    "alerts": "SELECT count(*) FROM alerts WHERE wearer_id = %(w)s",
}


def _own_rows(url: str, wearer_id: str, devices: list[str]) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: int((conn.execute(q.encode(), {"w": wearer_id, "d": devices}).fetchone()
                        or [0])[0]) for t, q in _OWN_ROWS.items()}


def _all_text(url: str) -> str:
    """Every row of every table of the schema, as text."""
    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_type = 'BASE TABLE'")]
        return "\n".join(str(r[0]) for t in tables for r in conn.execute(
            psycopg.sql.SQL("SELECT t::text FROM {} t").format(psycopg.sql.Identifier(t))))


def _digits_pattern(phone: str) -> re.Pattern[str]:
    """A phone number's national digits, whatever separators or encodings stand between
    them: "139 8765 4321", "139-8765-4321", "+86%20139...", "8613987654321"."""
    national = re.sub(r"\D", "", phone).removeprefix("86")[-11:]
    return re.compile(r"(?:[\s\-.()/]|%20|%2B|%2D)*".join(national))


PHONE_PATTERNS = [_digits_pattern(p) for p in A_PHONES]


# -- export -------------------------------------------------------------------------------------


def test_export_holds_all_of_one_wearers_data_and_nothing_of_another(fleet: Fleet) -> None:
    doc = _export(fleet.url, "W-A")
    counts = _own_rows(fleet.url, "W-A", A_DEVICES)
    assert doc["schema"] == "eldercare.wearer-export/1" and doc["wearer_id"] == "W-A"
    assert doc["wearer"]["name"] == A_NAME
    assert (doc["wearer"]["home_lat"], doc["wearer"]["home_lon"]) == A_HOME
    assert [c["name"] for c in doc["contacts"]] == list(A_CONTACTS)
    assert [d["device_id"] for d in doc["devices"]] == A_DEVICES
    assert [z["zone_id"] for z in doc["zones"]] == ["home"]
    assert len(doc["readings"]) == counts["readings"] == 2 * 2 * (len(READINGS) - 1)
    assert {r["type"] for r in doc["readings"]} == set(READINGS) - {"accel"}
    fix = next(r for r in doc["readings"] if r["type"] == "location")
    assert (fix["lat"], fix["lon"], fix["battery_pct"]) == (37.5, 122.1, 80.0)
    assert "heart_rate_bpm" not in fix  # NULL columns of other types are left out
    assert len(doc["accel_chunks"]) == counts["accel_chunks"] == 4
    assert doc["accel_chunks"][0]["z"] == [1.0, 0.98]
    assert len(doc["dead_letters"]) == counts["dead_letters"] == 2
    assert doc["dead_letters"][0]["payload"] == "/25vdCBqc29u"  # base64 of b"\xffnot json"
    assert [e["type"] for e in doc["detection_events"]] == ["sos", "fall"]
    assert [a["id"] for a in doc["alerts"]] == fleet.alerts["W-A"]
    sos = doc["alerts"][0]
    assert (sos["lat"], sos["lon"]) == A_SOS
    assert [a["action"] for a in sos["audit"]][:2] == ["opened", "routed"]
    assert {d["recipient"] for d in sos["deliveries"]} >= {"dispatch", "family:1"}
    every = {r["device_id"] for k in ("readings", "accel_chunks", "detection_events", "devices")
             for r in doc[k]}
    assert every == set(A_DEVICES)
    text = json.dumps(doc, ensure_ascii=False)
    for other in ("W-B", "BR-B", B_NAME, B_CONTACT, B_PHONE, "GW-OTHER", "36.65", "117.12"):
        assert other not in text, other


def test_streamed_export_is_the_same_document(fleet: Fleet) -> None:
    buf = io.StringIO()
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        counts = write_export(conn, "W-A", buf)
    streamed = json.loads(buf.getvalue())
    assert _without_time(streamed) == _without_time(_export(fleet.url, "W-A"))
    assert counts["readings"] == len(streamed["readings"]) and counts["contacts"] == 2
    assert buf.getvalue().count("\n") > len(streamed["readings"])  # one item per line


def test_export_of_an_unknown_wearer_is_a_clear_error(fleet: Fleet) -> None:
    with pytest.raises(UnknownWearer, match="no wearer 'W-NOBODY'") as err:
        _export(fleet.url, "W-NOBODY")
    assert err.value.wearer_id == "W-NOBODY" and err.value.deleted_at is None


# -- delete -------------------------------------------------------------------------------------


def test_delete_is_refused_while_an_alert_is_unresolved(fleet: Fleet) -> None:
    before = _own_rows(fleet.url, "W-A", A_DEVICES)
    with psycopg.connect(fleet.url, autocommit=True) as conn, \
            pytest.raises(DeletionRefused, match="unresolved alerts") as err:
        delete_wearer(conn, "W-A", now=datetime.now(UTC), actor="dpo")
    assert err.value.alert_ids == tuple(fleet.alerts["W-A"])
    assert _own_rows(fleet.url, "W-A", A_DEVICES) == before


def test_delete_removes_the_wearer_keeps_alerts_pseudonymised_and_spares_the_other(
        fleet: Fleet) -> None:
    _resolve(fleet.url, fleet.alerts["W-A"])
    before = _own_rows(fleet.url, "W-A", A_DEVICES)
    b_before = _export(fleet.url, "W-B")
    audit_before = count(fleet.url, "SELECT count(*) FROM alert_audit")
    at = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        report = delete_wearer(conn, "W-A", now=at, actor="dpo-wang")

    assert tuple(report.deleted) == DELETED_TABLES
    assert dict(report.deleted) == {t: before[t] for t in DELETED_TABLES}
    assert report.deleted["readings"] == 28 and report.deleted["dead_letters"] == 2
    assert report.pseudonymized["alerts"] == 2 and report.audited == 2
    after = _own_rows(fleet.url, "W-A", A_DEVICES)
    assert after == {**{t: 0 for t in DELETED_TABLES}, "alerts": 2}
    assert count(fleet.url, "SELECT count(*) FROM dead_letters") == 2  # B's and the gateway's
    assert _without_time(_export(fleet.url, "W-B")) == _without_time(b_before)

    # The alerts stay, with their whole trail plus one entry recording the deletion.
    assert count(fleet.url, "SELECT count(*) FROM alert_audit") == audit_before + 2
    with psycopg.connect(fleet.url) as conn:
        rows = conn.execute(
            "SELECT a.id, a.lat, a.lon, a.status, au.at, au.actor, au.detail FROM alerts a"
            " JOIN alert_audit au ON au.alert_id = a.id AND au.action = %s"
            " ORDER BY a.id", (DELETED_ACTION,)).fetchall()
        deliveries = conn.execute(
            "SELECT recipient, channel, address, body FROM alert_deliveries"
            " WHERE alert_id = ANY(%s)", (fleet.alerts["W-A"],)).fetchall()
    assert [r[0] for r in rows] == fleet.alerts["W-A"]
    for _, lat, lon, status, when, actor, detail in rows:
        assert (lat, lon, status, when, actor) == (None, None, "resolved", at, "dpo-wang")
        assert detail["wearer_id"] == "W-A" and detail["deleted"]["readings"] == 28
    family = {(c, a) for r, c, a, _ in deliveries if r.startswith("family")}
    assert ("sms", "+86*******4321") in family and ("email", "***@example.com") in family
    assert all(b["alert"]["wearer"] == {"id": "W-A", "name": None} for *_, b in deliveries)
    assert all(b["alert"]["position"] is None and b["redacted"]["reason"] == DELETED_ACTION
               for *_, b in deliveries)
    # Nothing anywhere in the database names A, their family, their numbers or positions.
    text = _all_text(fleet.url)
    for secret in (A_NAME, *A_CONTACTS, A_EMAIL, "37.5131", "37.5162", "122.1279"):
        assert secret not in text, secret
    assert not any(p.search(text) for p in PHONE_PATTERNS)
    assert B_NAME in text and B_PHONE in text

    # A second run: the wearer is gone, and the refusal says when the data went.
    with psycopg.connect(fleet.url, autocommit=True) as conn, \
            pytest.raises(UnknownWearer, match="deleted at 2026-05-01T08:30") as err:
        delete_wearer(conn, "W-A", now=datetime.now(UTC), actor="dpo-wang")
    assert err.value.deleted_at == at


# -- the registry database's fields (issue #12) ----------------------------------------------

#: A made-up resident ID-card number with a valid GB 11643 check digit.
ID_CARD = "37100219410101002" + "10X98765432"[sum(int(d) * w for d, w in zip(
    "37100219410101002", (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2),
    strict=True)) % 11]


def _enrolled_fields(url: str, vault: IdCardVault) -> None:
    """A's record as staff keep it in the registry database: the new wearer fields, an ID card,
    a binding history (a device given back, one handed on to B) and audit entries; B has
    some of each too."""
    card = vault.protect(ID_CARD)
    now = now_ms()
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE wearers SET sex = 'female', address = '威海市环翠区某路1号', phone = %s,"
            " living_situation = 'alone', care_categories = '{dementia,over_80}',"
            " guardian_name = %s, guardian_phone = %s, guardian_relation = 'son',"
            " notes = '独居', id_card_hmac = %s, id_card_cipher = %s, id_card_masked = %s"
            " WHERE wearer_id = 'W-A'",
            (A_PHONES[1], A_CONTACTS[0], A_PHONES[0], card.hmac, card.cipher, card.masked))
        conn.execute("INSERT INTO devices (device_id, kind, region) VALUES"
                     " ('BR-OLD-A', 'bracelet', %s), ('BR-SOLD', 'bracelet', %s)",
                     (REGION, REGION))
        conn.execute("UPDATE devices SET wearer_id = 'W-B' WHERE device_id = 'BR-SOLD'")
        conn.execute(
            "INSERT INTO device_bindings (device_id, wearer_id, bound_at, bound_by, unbound_at,"
            " unbound_by, unbind_reason) VALUES"
            " ('BR-OLD-A', 'W-A', now() - interval '30 days', 'clerk-1', now() - interval '1 day',"
            "  'clerk-1', 'broken'),"
            " ('BR-SOLD', 'W-A', now() - interval '60 days', 'clerk-1', now() - interval '40 days',"
            "  'clerk-1', 'handed on'),"
            # BR-A's open binding to W-A is the registry file's (store_registry records it).
            " ('BR-SOLD', 'W-B', now() - interval '39 days', 'clerk-2', NULL, NULL, NULL)")
        conn.execute(
            "INSERT INTO registry_audit (actor, action, wearer_id, device_id, region, before,"
            " after) VALUES"
            " ('clerk-1', 'wearer.create', 'W-A', NULL, %(r)s, NULL, %(a)s),"
            " ('clerk-1', 'device.bind', 'W-A', 'BR-OLD-A', %(r)s, NULL, '{}'),"
            " ('clerk-2', 'wearer.create', 'W-B', NULL, %(r)s, NULL, %(b)s)",
            {"r": REGION, "a": Jsonb({"name": A_NAME, "id_card_masked": card.masked}),
             "b": Jsonb({"name": B_NAME})})
    batch = Batch()
    _readings(batch, "BR-OLD-A", now - 86_400_000 * 2)
    _readings(batch, "BR-SOLD", now - 3_600_000)
    store = PostgresStore(url)
    try:
        store.write(batch)
    finally:
        store.close()


def test_export_and_erasure_cover_the_registry_databases_fields(fleet: Fleet) -> None:
    vault = IdCardVault(os.urandom(32))
    _enrolled_fields(fleet.url, vault)
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        doc = export_wearer(conn, "W-A", vault=vault)
        masked = export_wearer(conn, "W-A")
    w = doc["wearer"]
    assert (w["id_card"], w["id_card_masked"]) == (ID_CARD, "3710**********" + ID_CARD[-4:])
    assert "id_card_hmac" not in w and "id_card_cipher" not in w
    assert (w["sex"], w["living_situation"], w["care_categories"], w["guardian_relation"]) == \
        ("female", "alone", ["dementia", "over_80"], "son")
    assert masked["wearer"]["id_card"] is None
    assert ID_CARD not in json.dumps(masked) and ID_CARD[6:14] not in json.dumps(masked)
    bindings = [(b["device_id"], b["unbind_reason"]) for b in doc["device_bindings"]]
    # Oldest first; the file's two bindings (bracelet, fall sensor) were made in one statement.
    assert bindings[:2] == [("BR-SOLD", "handed on"), ("BR-OLD-A", "broken")]
    assert sorted(bindings[2:]) == [("BR-A", None), ("FS-A", None)]
    assert [(a["action"], a["device_id"]) for a in doc["registry_audit"]] == [
        ("wearer.create", None), ("device.bind", "BR-OLD-A")]
    # A bracelet given back is still A's history; one handed on to B is B's now.
    devices = {r["device_id"] for r in doc["readings"]}
    assert devices == {"BR-A", "FS-A", "BR-OLD-A"}
    assert B_NAME not in json.dumps(doc, ensure_ascii=False)

    _resolve(fleet.url, fleet.alerts["W-A"])
    at = datetime(2026, 5, 2, 9, 0, tzinfo=UTC)
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        report = delete_wearer(conn, "W-A", now=at, actor="dpo-wang")
    assert report.deleted["registry_audit"] == 2 and report.deleted["device_bindings"] == 4
    assert count(fleet.url, "SELECT count(*) FROM readings WHERE device_id = 'BR-OLD-A'") == 0
    assert count(fleet.url, "SELECT count(*) FROM readings WHERE device_id = 'BR-SOLD'") > 0
    # The stock device stays (no personal data without its binding); B's history stays.
    assert count(fleet.url, "SELECT count(*) FROM devices WHERE device_id = 'BR-OLD-A'"
                            " AND wearer_id IS NULL") == 1
    assert count(fleet.url, "SELECT count(*) FROM device_bindings WHERE wearer_id = 'W-B'") == 2
    with psycopg.connect(fleet.url) as conn:
        trail = conn.execute("SELECT actor, action, wearer_id, at, after FROM registry_audit"
                             " WHERE action <> 'registry_file_loaded' ORDER BY id").fetchall()
    assert [t[:3] for t in trail] == [("clerk-2", "wearer.create", "W-B"),
                                      ("dpo-wang", DELETED_ACTION, "W-A")]
    assert trail[1][3] == at and trail[1][4]["deleted"]["registry_audit"] == 2
    text = _all_text(fleet.url)
    for secret in (A_NAME, ID_CARD, "3710**********", "威海市环翠区某路1号"):
        assert secret not in text, secret
    # Outside an erasure, the trail stays append-only.
    with psycopg.connect(fleet.url) as conn, pytest.raises(psycopg.errors.RaiseException,
                                                           match="append-only"):
        conn.execute("DELETE FROM registry_audit")
    with psycopg.connect(fleet.url, autocommit=True) as conn, \
            pytest.raises(UnknownWearer) as err:
        export_wearer(conn, "W-A")
    assert err.value.deleted_at == at


@pytest.mark.parametrize(("address", "masked"), [
    ("+8613987654321", "+86*******4321"),
    ("13912348765", "*******8765"),
    ("+44 20 7946 0958", "+44******0958"),
    ("lihua.family@example.com", "***@example.com"),
    ("http://dispatch.test/hook", "http://dispatch.test/hook"),
    ("eldercare/v1/371002/alerts/7", "eldercare/v1/371002/alerts/7"),
])
def test_mask_address(address: str, masked: str) -> None:
    assert mask_address(address) == masked


# -- command line -------------------------------------------------------------------------------


def test_cli_exports_to_a_file_and_deletes_only_with_yes(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ELDERCARE_CONFIG", "ELDERCARE_DATABASE_URL", "ELDERCARE_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    db = ["--database-url", fleet.url]
    out = tmp_path / "w-a.json"
    assert cli.main(["wearer", "export", "W-A", "--out", str(out), *db]) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert A_NAME in out.read_text(encoding="utf-8")     # UTF-8, not \\u escapes
    assert _without_time(doc) == _without_time(_export(fleet.url, "W-A"))
    assert "28 readings" in capsys.readouterr().err

    assert cli.main(["wearer", "export", "W-B", "--out", "-", *db]) == 0
    assert json.loads(capsys.readouterr().out)["wearer"]["name"] == B_NAME
    assert cli.main(["wearer", "export", "W-NOBODY", *db]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "no wearer 'W-NOBODY'" in printed.err

    _resolve(fleet.url, fleet.alerts["W-A"])
    assert cli.main(["wearer", "delete", "W-A", "--actor", "dpo-wang", *db]) == 2
    assert "add --yes" in capsys.readouterr().err
    assert count(fleet.url, "SELECT count(*) FROM wearers WHERE wearer_id = 'W-A'") == 1
    assert cli.main(["wearer", "delete", "W-A", "--yes", "--actor", "dpo-wang", *db]) == 0
    printed = capsys.readouterr()
    assert re.search(r"deleted\s+readings\s+28\n", printed.out), printed.out
    assert re.search(r"pseudonymised\s+alerts\s+2\n", printed.out)
    assert "registry file" in printed.err
    assert cli.main(["wearer", "delete", "W-A", "--yes", "--actor", "dpo-wang", *db]) == 2
    assert "no wearer 'W-A' in the registry; their data was deleted at" in capsys.readouterr().err


# -- retention ----------------------------------------------------------------------------------


def test_retention_prune_drops_location_history_older_than_configured(migrated_db: str) -> None:
    assert load_config(path=None, env={}).database.retention_readings_days == 180
    config = load_config(path=None, env={}, overrides={"database.retention_readings_days": 30})
    day, now = 86_400_000, now_ms()
    _store_fixes(migrated_db, "BR-R", (400, 31, 29, 1), method="copy")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        deleted = prune(conn, retention=retention_of(config.database), timescale=False)
        kept = sorted(round((now - r[0]) / day) for r in conn.execute(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM readings"))
        assert deleted["readings"] == 2 and kept == [1, 29]
        # 0 days = keep forever.
        assert "readings" not in prune(conn, retention=RetentionPolicy(readings_days=0),
                                       timescale=False)
    assert count(migrated_db, "SELECT count(*) FROM readings") == 2


def test_the_service_prunes_expired_history_soon_after_it_starts(
        make_config: Callable[..., Config], db_url: str) -> None:
    config = make_config(**{"database.retention_readings_days": 30})
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    _store_fixes(db_url, "BR-EXPIRED", (31, 1), method="copy")
    with Application(config):
        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings") == 1, timeout_s=5,
                 what="the 31-day-old fix pruned")


# -- TimescaleDB (PGlite, see tests/test_timescale_pglite.py) -----------------------------------


#: The PGlite server fixture, one server for this module.
pglite_url = test_timescale_pglite.timescale_url


def _hourly(conn: psycopg.Connection, device: str) -> list[int]:
    """Ages in days of the device's rows in the device_hourly aggregate."""
    return sorted(int(r[0]) for r in conn.execute(
        "SELECT extract(day FROM now() - bucket) FROM device_hourly WHERE device_id = %s"
        " AND last_lat IS NOT NULL", (device,)))


def _run_policies(conn: psycopg.Connection) -> None:
    """What TimescaleDB's background worker would do now (PGlite runs none): the retention
    jobs of readings and of the device_hourly aggregate, then its refresh (the last 3 days)."""
    for proc, table in (("policy_retention", "readings"), ("policy_retention", "device_hourly"),
                        ("policy_refresh_continuous_aggregate", "device_hourly")):
        row = conn.execute(
            "SELECT j.job_id FROM timescaledb_information.jobs j"
            " LEFT JOIN timescaledb_information.continuous_aggregates c"
            " ON c.materialization_hypertable_name = j.hypertable_name"
            " WHERE j.proc_name = %s AND coalesce(c.view_name, j.hypertable_name) = %s",
            (proc, table)).fetchone()
        assert row is not None, proc
        conn.execute("CALL run_job(%s)", (row[0],))


def test_delete_on_timescaledb_takes_the_hourly_aggregate_along(pglite_url: str,
                                                                tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(registry_yaml(REGION), encoding="utf-8")
    with psycopg.connect(pglite_url, autocommit=True) as conn:
        migrate(conn, timescale="on")
        store_registry(conn, load_registry(tmp_path / "registry.yaml"))
    for device in ("BR-A", "BR-B"):
        _store_fixes(pglite_url, device, (200, 5, 0))
    with psycopg.connect(pglite_url, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('device_hourly', NULL, NULL)")
        _run_policies(conn)           # the 200-day-old fixes go, and their hourly rows
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings',"
                     " older_than => INTERVAL '3 days') c")
        assert _hourly(conn, "BR-A") == _hourly(conn, "BR-B") == [0, 5]
        report = delete_wearer(conn, "W-A", now=datetime.now(UTC), actor="dpo-wang")
        assert (report.deleted["readings"], report.deleted["device_hourly"]) == (2, 2)
        assert _hourly(conn, "BR-A") == []
        _run_policies(conn)           # the next refresh brings nothing back
        assert _hourly(conn, "BR-A") == [] and _hourly(conn, "BR-B") == [0, 5]
        assert conn.execute("SELECT count(*) FROM readings WHERE device_id = 'BR-B'"
                            ).fetchone() == (2,)


def test_retention_on_timescaledb_leaves_no_hourly_positions_older_than_configured(
        pglite_url: str) -> None:
    with psycopg.connect(pglite_url, autocommit=True) as conn:
        migrate(conn, timescale="on")
    _store_fixes(pglite_url, "BR-RETAINED", (200, 1))
    with psycopg.connect(pglite_url, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('device_hourly', NULL, NULL)")
        _run_policies(conn)
        assert conn.execute("SELECT count(*) FROM readings WHERE device_id = 'BR-RETAINED'"
                            ).fetchone() == (1,)          # the raw history is pruned...
        assert _hourly(conn, "BR-RETAINED") == [1]        # ...and its hourly positions too


# -- logs and metrics ---------------------------------------------------------------------------



def log_registry_yaml(region: str) -> str:
    """Wearer A again, alone, with one watch."""
    return f"""
wearers:
  - id: W-LOG
    name: {A_NAME}
    region: "{region}"
    home: {{lat: {A_HOME[0]}, lon: {A_HOME[1]}}}
    devices: [{{id: WT-LOG, kind: watch}}]
    contacts:
      - {{name: {A_CONTACTS[0]}, relation: son, phone: "{A_PHONES[0]}"}}
      - {{name: {A_CONTACTS[1]}, phone: "{A_PHONES[1]}", email: {A_EMAIL}}}
    zones:
      - {{id: home, kind: circle, center: {{lat: {A_HOME[0]}, lon: {A_HOME[1]}}}, radius_m: 300}}
"""


SECRET_COORDS = (*A_HOME, *A_SOS)
_FLOAT = re.compile(r"-?\d+\.(\d+)")


def privacy_leaks(text: str) -> list[str]:
    """What in ``text`` names the wearer or their family, gives a number, or a position to
    more than 3 decimals (about 100 m)."""
    found = []
    for name in (A_NAME, *A_CONTACTS):
        forms = (name, json.dumps(name)[1:-1], urllib.parse.quote(name),
                 name.encode().decode("latin-1"))
        found += [f"name {name} as {f!r}" for f in forms if f in text]
    if A_EMAIL in text or urllib.parse.quote(A_EMAIL) in text:
        found.append("e-mail address")
    found += [f"phone {m.group(0)!r}" for p in PHONE_PATTERNS for m in p.finditer(text)]
    for m in _FLOAT.finditer(text):
        value = float(m.group(0))
        if len(m.group(1)) > 3 and any(abs(value - c) < 0.001 for c in SECRET_COORDS):
            found.append(f"position {m.group(0)}")
    return found


def test_privacy_leaks_sees_every_form() -> None:
    assert privacy_leaks("delivery 7 (alert 3, sms, family:1) sent; 37.513 122.120") == []
    for leak in (A_NAME, "\\u738b\\u79c0\\u82f1", "139-8765-4321", "+86%20139%208765%204321",
                 "8613912348765", "lat=37.5132", "122.127941", A_EMAIL):
        assert privacy_leaks(f"x {leak} y"), leak


def _silent_loggers() -> set[str]:
    """Loggers that do not propagate to the root logger: caplog does not see their records."""
    return {name for name, lg in logging.root.manager.loggerDict.items()
            if isinstance(lg, logging.Logger) and not lg.propagate}


def test_logs_and_metrics_carry_ids_never_names_numbers_or_positions(
        make_config: Callable[..., Config], tmp_path: Path, region: str, receiver: Receiver,
        aliyun: FakeAliyun, publisher: Publisher, db_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "registry.yaml").write_text(log_registry_yaml(region), encoding="utf-8")
    token, digest = new_token()
    (tmp_path / "tokens.yaml").write_text(
        f"- {{name: dispatch-12349, token_sha256: {digest}, role: dispatch, regions: ['*']}}\n")
    config = make_config(**{
        "registry": str(tmp_path / "registry.yaml"), "api.tokens_file": str(tmp_path / "tokens.yaml"),
        "alerts.webhook.url": receiver.url, "alerts.webhook.secret": "s3cret",
        "alerts.webhook.timeout_s": 2.0, "metrics.port": free_port(),
        "alerts.aliyun.access_key_id": KEY_ID, "alerts.aliyun.access_key_secret": ALIYUN_SECRET,
        "alerts.aliyun.sign_name": "养老服务", "alerts.aliyun.sms_templates": {"default": "SMS_1"},
        "alerts.aliyun.sms_endpoint": aliyun.url})
    aliyun.plan["SendSms"] = ["500"]          # the first SMS fails: the retry path logs too
    caplog.set_level(logging.DEBUG)
    topic = device_topic(region, "WT-LOG")
    with Application(config) as svc:
        # At home, then twice outside the zone (a geofence exit), then an SOS out there.
        t0 = now_ms()
        for i, (lat, lon) in enumerate([A_HOME, A_SOS, (A_SOS[0] + 0.000123, A_SOS[1])]):
            publisher.publish(topic, json.dumps({"type": "location", "ts": t0 - 3000 + i * 1000,
                                                 "lat": lat, "lon": lon}).encode())
        publisher.publish(topic, json.dumps({"type": "sos", "ts": t0, "lat": A_SOS[0],
                                             "lon": A_SOS[1]}).encode())
        wait_for(lambda: any(json.loads(r.body)["event"] == "alert.opened"
                             for r in list(receiver.requests)), what="the SOS at dispatch")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM alert_deliveries WHERE"
                               " channel = 'sms' AND status = 'sent'") >= 1,
                 timeout_s=30, what="the family SMS, after one failure")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM alerts WHERE type IN"
                               " ('sos', 'geofence_exit')") == 2, what="SOS and exit alerts")
        alert_id = count(db_url, "SELECT id FROM alerts WHERE type = 'sos'")
        assert svc.http is not None
        api = f"http://127.0.0.1:{svc.http.port}/api/v1"
        r = httpx.post(f"{api}/alerts/{alert_id}/acknowledge", json={"note": "calling back"},
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        wait_for(lambda: any(json.loads(r.body)["event"] == "alert.acknowledged"
                             for r in list(receiver.requests)), what="the claim at dispatch")
        metrics = httpx.get(f"http://127.0.0.1:{svc.ingest.metrics_port}/metrics").text
    # The flow did carry the secrets: the platform got the name, the SMS went to the number.
    assert A_NAME in receiver.requests[0].body.decode()
    assert aliyun.calls("SendSms")[-1]["PhoneNumbers"] == "13987654321"
    assert "eldercare_readings_stored" in metrics

    # caplog sees what reaches the root logger. uvicorn switches its access log off by making
    # it a dead end (no handlers, no propagation: foundation/http_server.py, access_log=False);
    # any other logger that does not propagate would escape this test.
    assert _silent_loggers() <= {"uvicorn.access"}
    assert logging.getLogger("uvicorn.access").handlers == []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = list(caplog.records)
    assert len(records) > 20 and any(r.levelno == logging.DEBUG for r in records)
    leaks = [f"{rec.name} ({rec.pathname}:{rec.lineno}): {leak}: {formatter.format(rec)[:300]}"
             for rec in records for leak in privacy_leaks(formatter.format(rec))]
    assert leaks == [], "\n".join(leaks)
    assert privacy_leaks(metrics) == []
