"""registry/store.py against the real PostgreSQL: wearers, devices, bindings, contacts, zones,
every write with its audit row, scopes, versions, ID-card numbers never in clear."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest

from registry.errors import InvalidRecord, RecordConflict, RecordNotFound, RegionForbidden
from registry.model import Contact, DeviceIn, DevicePatch, WearerIn, WearerPatch, ZoneIn
from registry.search import WearerQuery, search_sql
from registry.store import RegistryStore
from tests.registry_fixtures import CITY, STREET_A, STREET_B, id_card, seed_regions, vault

A = [STREET_A]


@pytest.fixture
def reg(migrated_db: str) -> Iterator[RegistryStore]:
    seed_regions(migrated_db)
    with RegistryStore(migrated_db, vault=vault()) as s:
        yield s


def wearer(wid: str = "W-1", *, region: str = STREET_A, **kw: Any) -> WearerIn:
    return msgspec.convert({"id": wid, "name": "王秀英", "region": region, **kw}, WearerIn)


def audit_rows(url: str, **where: str) -> list[dict[str, Any]]:
    key, value = next(iter(where.items()))
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"SELECT * FROM registry_audit WHERE {key} = %s ORDER BY id",
                           (value,)).fetchall()


def test_create_read_update_with_audit_and_versions(reg: RegistryStore, migrated_db: str) -> None:
    w = reg.create_wearer(wearer(phone="138 0000 0001", birth_date="1941-05-06",
                                 guardian={"name": "李明", "phone": "0631-5212345"},
                                 care_categories=["dementia", "over_80"]),
                          actor="clerk-1", scopes=A)
    assert w["phone"] == "+8613800000001"
    assert w["guardian"] == {"name": "李明", "phone": "+866315212345", "relation": None}
    assert w["birth_year"] == 1941 and w["version"] == 1 and w["active"]
    changed = reg.update_wearer("W-1", WearerPatch(version=1, notes="walks at night",
                                                   phone=None), actor="clerk-2", scopes=A)
    assert changed["notes"] == "walks at night" and changed["phone"] is None
    assert changed["version"] == 2 and changed["name"] == "王秀英"
    with pytest.raises(RecordConflict, match="changed meanwhile"):
        reg.update_wearer("W-1", WearerPatch(version=1, notes="stale"), actor="x", scopes=A)
    trail = audit_rows(migrated_db, wearer_id="W-1")
    assert [(r["actor"], r["action"]) for r in trail] == [
        ("clerk-1", "wearer_created"), ("clerk-2", "wearer_updated")]
    assert trail[0]["before"] is None and trail[0]["after"]["phone"] == "+8613800000001"
    assert trail[1]["before"]["phone"] == "+8613800000001" and trail[1]["after"]["phone"] is None
    assert trail[1]["after"]["version"] == 2


def test_id_card_masked_duplicate_refused_never_in_clear(reg: RegistryStore,
                                                          migrated_db: str) -> None:
    number = id_card(7)
    w = reg.create_wearer(wearer(id_card=number), actor="c", scopes=None)
    assert w["id_card_masked"] == number[:4] + "*" * 10 + number[-4:]
    with pytest.raises(RecordConflict, match="ID-card number already enrolled for W-1"):
        reg.create_wearer(wearer("W-2", id_card=number.lower()), actor="c", scopes=None)
    # A clerk of the other street learns it is taken, not by whom.
    with pytest.raises(RecordConflict, match="outside your regions"):
        reg.create_wearer(wearer("W-3", region=STREET_B, id_card=number), actor="c",
                          scopes=[STREET_B])
    with pytest.raises(InvalidRecord, match="check digit") as bad:
        reg.create_wearer(wearer("W-4", id_card=number[:-1] + ("1" if number[-1] != "1"
                                                               else "2")),
                          actor="c", scopes=None)
    assert bad.value.field == ("id_card",)
    # Searchable by the number, and nowhere in clear: not in the table, not in the audit.
    found = reg.search_wearers(WearerQuery(q=number), scopes=None)
    assert [r["id"] for r in found] == ["W-1"]
    with psycopg.connect(migrated_db) as conn:
        dump = json.dumps(conn.execute(
            "SELECT json_agg(w) FROM wearers w").fetchone()) + json.dumps(conn.execute(
            "SELECT json_agg(a) FROM registry_audit a").fetchone())
    assert number not in dump and number[6:14] not in dump
    # Deactivated, the number is free again (moved away, enrolled again elsewhere).
    reg.deactivate_wearer("W-1", reason="moved_away", note=None, actor="c", scopes=None)
    assert reg.create_wearer(wearer("W-5", id_card=number), actor="c", scopes=None)["active"]


def test_scopes_hide_other_streets_and_refuse_foreign_regions(reg: RegistryStore) -> None:
    reg.create_wearer(wearer("W-A"), actor="c", scopes=None)
    reg.create_wearer(wearer("W-B", region=STREET_B), actor="c", scopes=None)
    with pytest.raises(RecordNotFound, match="wearer W-B not found"):
        reg.get_wearer("W-B", scopes=A)
    with pytest.raises(RecordNotFound):
        reg.update_wearer("W-B", WearerPatch(version=1, notes="x"), actor="c", scopes=A)
    with pytest.raises(RegionForbidden, match="371002002 is outside"):
        reg.create_wearer(wearer("W-C", region=STREET_B), actor="c", scopes=A)
    with pytest.raises(RegionForbidden):   # nor move one there
        reg.update_wearer("W-A", WearerPatch(version=1, region=STREET_B), actor="c", scopes=A)
    assert [r["id"] for r in reg.search_wearers(WearerQuery(), scopes=[CITY])] == ["W-A", "W-B"]
    assert [r["id"] for r in reg.search_wearers(WearerQuery(), scopes=A)] == ["W-A"]
    with pytest.raises(RecordConflict, match="unknown region 371099"):
        reg.create_wearer(wearer("W-D", region="371099"), actor="c", scopes=None)


def test_bind_unbind_history_and_refusals(reg: RegistryStore, migrated_db: str) -> None:
    reg.create_wearer(wearer("W-1"), actor="c", scopes=None)
    reg.create_wearer(wearer("W-2", region=STREET_B), actor="c", scopes=None)
    d = reg.create_device(msgspec.convert({"id": "BR-1", "kind": "bracelet", "region": CITY,
                                           "imei": "860000000000001", "sim": "13800000002"},
                                          DeviceIn), actor="c", scopes=None)
    assert d["wearer_id"] is None and d["sim"] == "+8613800000002" and d["bindings"] == []
    bound = reg.bind("BR-1", "W-1", actor="c1", scopes=None)
    assert bound["wearer_id"] == "W-1" and bound["region"] == STREET_A   # follows the wearer
    with pytest.raises(RecordConflict, match="device BR-1 already bound to W-1"):
        reg.bind("BR-1", "W-2", actor="c", scopes=None)
    freed = reg.unbind("BR-1", reason="returned broken", actor="c2", scopes=None)
    assert freed["wearer_id"] is None
    again = reg.bind("BR-1", "W-2", actor="c3", scopes=None)
    assert again["region"] == STREET_B
    history = [(b["wearer_id"], b["bound_by"], b["unbound_by"], b["unbind_reason"])
               for b in again["bindings"]]
    assert history == [("W-2", "c3", None, None), ("W-1", "c1", "c2", "returned broken")]
    assert [b["device_id"] for b in reg.get_wearer("W-1", scopes=None)["bindings"]] == ["BR-1"]
    with pytest.raises(RecordConflict, match="IMEI already registered for device BR-1"):
        reg.create_device(msgspec.convert({"id": "BR-2", "kind": "watch", "region": CITY,
                                           "imei": "860000000000001"}, DeviceIn),
                          actor="c", scopes=None)
    actions = [(r["action"], r["wearer_id"]) for r in audit_rows(migrated_db, device_id="BR-1")]
    assert actions == [("device_created", None), ("device_bound", "W-1"),
                       ("device_unbound", "W-1"), ("device_bound", "W-2")]


def test_retired_device_and_inactive_wearer_cannot_be_bound(reg: RegistryStore) -> None:
    reg.create_wearer(wearer("W-1"), actor="c", scopes=None)
    reg.create_device(DeviceIn(id="BR-1", kind="bracelet", region=STREET_A), actor="c",
                      scopes=None)
    retired = reg.update_device("BR-1", DevicePatch(version=1, retired=True), actor="c",
                                scopes=None)
    assert retired["retired_at"] is not None and retired["version"] == 2
    with pytest.raises(RecordConflict, match="retired"):
        reg.bind("BR-1", "W-1", actor="c", scopes=None)
    reg.update_device("BR-1", DevicePatch(version=2, retired=False), actor="c", scopes=None)
    reg.deactivate_wearer("W-1", reason="deceased", note=None, actor="c", scopes=None)
    with pytest.raises(RecordConflict, match="W-1 is deactivated"):
        reg.bind("BR-1", "W-1", actor="c", scopes=None)


def test_deactivation_frees_devices_and_keeps_history(reg: RegistryStore,
                                                       migrated_db: str) -> None:
    reg.create_wearer(wearer("W-1"), actor="c", scopes=None)
    for dev in ("BR-1", "WT-1"):
        reg.create_device(DeviceIn(id=dev, kind="watch", region=STREET_A), actor="c",
                          scopes=None)
        reg.bind(dev, "W-1", actor="c", scopes=None)
    out = reg.deactivate_wearer("W-1", reason="moved_away", note="to Qingdao", actor="c9",
                                scopes=A)
    assert not out["active"] and out["deactivation_reason"] == "moved_away"
    assert out["deactivated_at"] is not None and out["devices"] == []
    assert {(b["device_id"], b["unbound_by"], b["unbind_reason"]) for b in out["bindings"]} == {
        ("BR-1", "c9", "wearer deactivated"), ("WT-1", "c9", "wearer deactivated")}
    with pytest.raises(RecordConflict, match="already deactivated"):
        reg.deactivate_wearer("W-1", reason="other", note=None, actor="c", scopes=A)
    with pytest.raises(RecordConflict, match="deactivated"):
        reg.update_wearer("W-1", WearerPatch(version=out["version"], notes="x"), actor="c",
                          scopes=A)
    assert [r["action"] for r in audit_rows(migrated_db, wearer_id="W-1")][-3:] == [
        "device_unbound", "device_unbound", "wearer_deactivated"]
    assert [r["id"] for r in reg.search_wearers(WearerQuery(active=False), scopes=A)] == ["W-1"]


def test_contacts_e164_and_zones(reg: RegistryStore, migrated_db: str) -> None:
    reg.create_wearer(wearer("W-1"), actor="c", scopes=None)
    contacts = reg.replace_contacts("W-1", [
        Contact(name="李明", phone="138-0000-0003", relation="son"),
        Contact(name="Anna", phone="+1 650 253 0000", language="en", channels=("voice",))],
        actor="c", scopes=A)
    assert [(c["priority"], c["phone"]) for c in contacts] == [
        (1, "+8613800000003"), (2, "+16502530000")]
    with pytest.raises(InvalidRecord) as bad:
        reg.replace_contacts("W-1", [Contact(name="x", phone="110")], actor="c", scopes=A)
    assert bad.value.field == ("contacts", 0, "phone")
    circle = msgspec.convert({"id": "home", "name": "家", "kind": "circle", "radius_m": 300,
                              "center": {"lat": 37.5, "lon": 122.1}, "active": "20:00-06:00"},
                             ZoneIn)
    saved = reg.put_zone("W-1", circle, actor="c", scopes=A)
    assert saved == {"id": "home", "name": "家", "kind": "circle", "radius_m": 300.0,
                     "center": {"lat": 37.5, "lon": 122.1}, "points": None,
                     "active": "20:00-06:00"}
    square = msgspec.convert({"id": "home", "kind": "polygon", "points": [
        [37.5, 122.1], [37.5, 122.2], [37.6, 122.2], [37.6, 122.1]]}, ZoneIn)
    assert reg.put_zone("W-1", square, actor="c", scopes=A)["points"][2] == [37.6, 122.2]
    with pytest.raises(msgspec.ValidationError, match="at least 3 points"):
        msgspec.convert({"id": "z", "kind": "polygon", "points": [[1, 2], [3, 4]]}, ZoneIn)
    with pytest.raises(msgspec.ValidationError, match="HH:MM-HH:MM"):
        msgspec.convert({"id": "z", "kind": "circle", "radius_m": 5, "active": "25:00-01:00",
                         "center": {"lat": 1, "lon": 2}}, ZoneIn)
    reg.delete_zone("W-1", "home", actor="c", scopes=A)
    with pytest.raises(RecordNotFound, match="zone home of wearer W-1"):
        reg.delete_zone("W-1", "home", actor="c", scopes=A)
    trail = audit_rows(migrated_db, wearer_id="W-1")
    assert [r["action"] for r in trail][1:] == ["contacts_replaced", "zone_saved", "zone_saved",
                                                "zone_deleted"]
    assert trail[2]["before"] is None and trail[3]["before"]["kind"] == "circle"
    assert trail[4]["after"] is None and trail[1]["after"][0]["phone"] == "+8613800000003"


def test_search_by_each_key_filters_and_pages(reg: RegistryStore) -> None:
    for i, (name, region) in enumerate([("王秀英", STREET_A), ("王建国", STREET_B),
                                        ("李秀兰", STREET_A), ("张伟", STREET_B)]):
        reg.create_wearer(wearer(f"W-{i}", name=name, region=region, phone=f"1380000001{i}",
                                 care_categories=["dementia"] if i % 2 else [],
                                 living_situation="alone" if i < 2 else "with_family"),
                          actor="c", scopes=None)
    reg.create_device(DeviceIn(id="BR-9", kind="bracelet", region=STREET_A,
                               imei="860000000000009"), actor="c", scopes=None)
    reg.bind("BR-9", "W-2", actor="c", scopes=None)

    def ids(**kw: Any) -> list[str]:
        return [r["id"] for r in reg.search_wearers(WearerQuery(**kw), scopes=None)]

    assert ids(q="王") == ["W-0", "W-1"]
    assert ids(q="秀") == ["W-0", "W-2"]           # substring
    assert ids(q="138 0000 0012") == ["W-2"]        # phone written any way
    assert ids(q="+8613800000013") == ["W-3"]
    assert ids(q="BR-9") == ["W-2"] and ids(q="860000000000009") == ["W-2"]
    assert ids(q="W-3") == ["W-3"]
    assert ids(q="50%") == []                        # LIKE wildcards are literal
    assert ids(region="371002") == ["W-0", "W-1", "W-2", "W-3"]
    assert ids(region=STREET_B) == ["W-1", "W-3"]
    assert ids(care_category="dementia") == ["W-1", "W-3"]
    assert ids(living_situation="alone", region=STREET_A) == ["W-0"]
    assert ids(limit=2) == ["W-0", "W-1"] and ids(limit=2, after="W-1") == ["W-2", "W-3"]
    page = reg.search_wearers(WearerQuery(q="W-2"), scopes=None)
    assert page[0]["device_ids"] == ["BR-9"]
    assert reg.search_wearers(WearerQuery(q="王"), scopes=[STREET_B])[0]["id"] == "W-1"


def test_concurrent_edits_one_wins(reg: RegistryStore) -> None:
    reg.create_wearer(wearer("W-1"), actor="c", scopes=None)
    results: list[str] = []

    def edit(note: str) -> None:
        try:
            reg.update_wearer("W-1", WearerPatch(version=1, notes=note), actor=note, scopes=None)
            results.append("ok")
        except RecordConflict:
            results.append("conflict")

    threads = [threading.Thread(target=edit, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "conflict", "conflict", "ok"]
    assert reg.get_wearer("W-1", scopes=None)["version"] == 2


def test_a_wearer_moved_takes_their_devices_along(reg: RegistryStore, migrated_db: str) -> None:
    reg.create_wearer(wearer("W-1", id_card=id_card(3)), actor="c", scopes=None)
    reg.create_device(DeviceIn(id="BR-1", kind="bracelet", region=STREET_A), actor="c",
                      scopes=None)
    reg.bind("BR-1", "W-1", actor="c", scopes=None)
    moved = reg.update_wearer("W-1", WearerPatch(version=1, region=STREET_B, id_card=None),
                              actor="c", scopes=[CITY])
    assert moved["region"] == STREET_B and moved["id_card_masked"] is None
    assert moved["devices"][0]["region"] == STREET_B
    assert reg.get_device("BR-1", scopes=[STREET_B])["wearer_id"] == "W-1"
    with pytest.raises(RecordNotFound):
        reg.get_device("BR-1", scopes=A)
    trail = audit_rows(migrated_db, device_id="BR-1")
    assert (trail[-1]["action"], trail[-1]["before"]["region"], trail[-1]["after"]["region"]) \
        == ("device_updated", STREET_A, STREET_B)
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT id_card_hmac, id_card_cipher FROM wearers"
                            " WHERE wearer_id = 'W-1'").fetchone() == (None, None)


def test_search_at_a_citys_size_uses_the_indexes(reg: RegistryStore, migrated_db: str) -> None:
    """100,000 wearers: every exact key is an index probe (no scan of the table), and a list,
    a key and a name find what they should. (The issue's 200 ms is measured, with figures, by
    ``python -m benchmarks.registry_api``: speed targets live in benchmarks, not in tests.)"""
    n = 100_000
    with psycopg.connect(migrated_db) as conn, conn.cursor() as cur:
        with cur.copy("COPY wearers (wearer_id, name, region, phone) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((f"W{i:07d}", "王秀英" if i % 1000 else "李建国",
                                STREET_A if i % 2 else STREET_B, f"+86139{i:08d}"))
        with cur.copy("COPY devices (device_id, wearer_id, kind, region, imei) FROM STDIN") as copy:
            for i in range(0, n, 10):
                copy.write_row((f"BR{i:07d}", f"W{i:07d}", "bracelet", STREET_A, f"86{i:013d}"))
        cur.execute("ANALYZE")
    card = vault().lookup(id_card(1))
    with psycopg.connect(migrated_db) as conn, conn.cursor() as cur:
        for q in ("13900012345", "BR0000420", "860000000000420", "W0004242", id_card(1)):
            sql, params = search_sql(WearerQuery(q=q), scopes=[CITY], card_hmac=card)
            plan = "\n".join(r[0] for r in cur.execute("EXPLAIN " + sql, params).fetchall())
            assert "Seq Scan on wearers" not in plan and "Seq Scan on devices" not in plan, plan
    for query, scopes, expect in [
            (WearerQuery(), None, 50), (WearerQuery(), [STREET_A], 50),
            (WearerQuery(q="139 0004 2424"), [CITY], 1), (WearerQuery(q="BR0000420"), None, 1),
            (WearerQuery(q="李建"), [CITY], 50), (WearerQuery(q="无此人"), None, 0)]:
        rows = reg.search_wearers(query, scopes=scopes)
        assert len(rows) == expect, query
