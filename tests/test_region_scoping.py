"""Region scoping through the service's real HTTP app (issue #12): an officer of one street can
neither read nor act on another street's alert, through the API and the console's live stream;
a city supervisor (``3710``) sees every street of Weihai, a province (``37``) the whole
province; legacy region names match only themselves; the enrolment clerk reads alerts but may
not act on them; ``GET``/``PUT /api/v1/regions``.

The app is the composition root's :class:`~eldercare.app.HttpFront` on an
:class:`~alerts.service.AlertService`, against the real PostgreSQL, with the shipped region
tree loaded; callers are bearer tokens (and console sessions where the cookie path matters).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import console.app
from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.service import AlertService
from console.stream import stream_router
from detectors.events import Event
from eldercare.app import HttpFront
from eldercare.config import load_config
from foundation.clock import ManualClock
from registry.regions import load_regions, read_region_tree
from schemas import device_topic
from schemas.admission import refusal_reason
from tests.test_console_live import Sse, SseReader, is_change

STREET_1, STREET_2 = "371002001", "371002002"      # two streets of Huancui, Weihai
COMMUNITY_1 = "371002001001"                        # a community of street 1
ZAOZHUANG = "370402"                                # a district of another city
LEGACY, LEGACY_2 = "hz-west", "hz-west-2"
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
PASSWORD = "correct horse battery"
SHIPPED = Path(str(resources.files("registry").joinpath(
    "data", "regions-weihai-zaozhuang-rizhao.csv")))
#: Token holders: name -> (role, regions).
CALLERS: dict[str, tuple[str, list[str]]] = {
    "street-1": ("officer", [STREET_1]), "street-2": ("officer", [STREET_2]),
    "city": ("supervisor", ["3710"]), "province": ("supervisor", ["37"]),
    "clerk": ("clerk", [STREET_1]), "legacy": ("officer", [LEGACY]),
    "dispatch": ("dispatch", ["*"]), "admin": ("admin", ["*"]),
}
ACTING = "only dispatch, officer, supervisor, admin may"


@dataclass
class Served:
    base: str
    db: str
    service: AlertService
    front: HttpFront
    tokens: dict[str, str]
    alerts: dict[str, int] = field(default_factory=dict)   # region -> its alert
    clients: list[httpx.Client] = field(default_factory=list)

    def as_(self, who: str) -> httpx.Client:
        c = httpx.Client(base_url=self.base, timeout=10,
                         headers={"Authorization": f"Bearer {self.tokens[who]}"})
        self.clients.append(c)
        return c

    def login(self, username: str) -> httpx.Client:
        c = httpx.Client(base_url=self.base, timeout=10)
        self.clients.append(c)
        r = c.post("/console/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    def open_alert(self, region: str, device: str, kind: str = "sos") -> int:
        event = Event(device_id=device, type=kind, ts=DAY, severity="critical",  # type: ignore[arg-type]
                      region=region, wearer_id="W-" + device, lat=37.5, lon=122.1)
        (change,) = self.service.store.fold([event], now_ms=DAY)
        return change.alert_id

    def listed(self, who: str, **params: Any) -> set[str]:
        r = self.as_(who).get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        return {a["region"] for a in r.json()["alerts"]}

    def reader(self, who: str, last_event_id: str | None = None) -> SseReader:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return SseReader(f"{self.base}/api/v1/stream", headers, {})


@pytest.fixture
def served(migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    # Heartbeats every 0.2 s (15 s in service): a test's stream reader notices its end soon.
    monkeypatch.setattr(console.app, "stream_router", partial(stream_router, heartbeat_s=0.2))
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_regions(conn, read_region_tree(SHIPPED), actor="test")
    config = load_config(path=None, env={}, overrides={
        "database.url": migrated_db, "api.port": 0, "alerts.mqtt_publish": False,
        "console.secure_cookies": False})
    tokens = {name: new_token()[0] for name in CALLERS}
    table = TokenTable([TokenEntry(name=name, token_sha256=hash_token(tokens[name]),
                                   role=role, regions=regions)  # type: ignore[arg-type]
                        for name, (role, regions) in CALLERS.items()])
    clock = ManualClock(DAY + 60_000)
    service = AlertService(config.alerts, database_url=migrated_db,
                           timezone=config.detectors.timezone, clock=clock, channels=[])
    front = HttpFront(config, alerts=service, clock=clock, tokens=table)
    assert front.accounts is not None
    front.accounts.add_user("clerk-web", PASSWORD, role="clerk", regions=[STREET_1])
    front.accounts.add_user("officer-web-2", PASSWORD, role="officer", regions=[STREET_2])
    service.start()
    front.start()
    s = Served(f"http://127.0.0.1:{front.port}", migrated_db, service, front, tokens)
    try:
        for i, region in enumerate((STREET_1, COMMUNITY_1, STREET_2, ZAOZHUANG, LEGACY,
                                    LEGACY_2)):
            s.alerts[region] = s.open_alert(region, f"DV-{i}")
        yield s
    finally:
        for c in s.clients:
            c.close()
        front.stop()
        service.stop()


def statuses(s: Served, region: str) -> tuple[str, str | None]:
    alert = s.service.store.get(s.alerts[region])
    return alert["status"], alert["acknowledged_by"]


# --- Alerts: list, get, act -----------------------------------------------------------------

def test_each_scope_lists_the_alerts_below_it_and_nothing_else(served: Served) -> None:
    assert served.listed("street-1") == {STREET_1, COMMUNITY_1}
    assert served.listed("street-2") == {STREET_2}
    assert served.listed("city") == {STREET_1, COMMUNITY_1, STREET_2}
    assert served.listed("province") == {STREET_1, COMMUNITY_1, STREET_2, ZAOZHUANG}
    assert served.listed("legacy") == {LEGACY}                 # not hz-west-2
    assert served.listed("dispatch") == set(served.alerts)
    # Narrowing stays inside the scope: the city, asked by a street officer, is their street.
    assert served.listed("street-1", region="3710") == {STREET_1, COMMUNITY_1}
    assert served.listed("street-1", region=STREET_2) == set()
    assert served.listed("city", region=STREET_2) == {STREET_2}
    assert served.listed("city", region=["371002", ZAOZHUANG]) == {
        STREET_1, COMMUNITY_1, STREET_2}
    assert served.listed("legacy", region="hz") == set()


def test_pages_of_a_city_supervisor_cover_both_streets_and_the_cursor_obeys_the_scope(
        served: Served) -> None:
    city = served.as_("city")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        page = city.get("/api/v1/alerts", params=params).json()
        seen += [a["region"] for a in page["alerts"]]
        if page["next_before_id"] is None:
            break
        params["before_id"] = page["next_before_id"]
    assert sorted(seen) == sorted([STREET_1, COMMUNITY_1, STREET_2])
    # A cursor from outside the scope gives an empty page, revealing nothing.
    r = served.as_("street-2").get("/api/v1/alerts",
                                   params={"before_id": served.alerts[STREET_1]})
    assert r.status_code == 200 and r.json()["alerts"] == []


def test_a_street_officer_can_neither_read_nor_act_on_the_next_streets_alert(
        served: Served) -> None:
    other = served.alerts[STREET_2]
    street_1 = served.as_("street-1")
    refusals = [
        street_1.get(f"/api/v1/alerts/{other}"),
        street_1.get(f"/api/v1/alerts/{other}/evidence"),
        street_1.get(f"/api/v1/alerts/{other}/commands"),
        street_1.post(f"/api/v1/alerts/{other}/acknowledge", json={"note": "mine?"}),
        street_1.post(f"/api/v1/alerts/{other}/notes", json={"note": "x"}),
        street_1.post(f"/api/v1/alerts/{other}/resolve", json={"outcome": "false_alarm"}),
    ]
    for r in refusals:
        assert r.status_code == 404, (r.request.url, r.text)
        assert r.json()["detail"] == f"alert {other} not found"   # as for a missing one
    # Commands are off in this service (503 before anything is looked up); never sent.
    r = street_1.post(f"/api/v1/alerts/{other}/commands", json={"command": "locate"})
    assert r.status_code in (404, 503), r.text
    assert statuses(served, STREET_2) == ("open", None)
    assert {e["actor"] for e in served.service.store.get(other)["audit"]} <= {"system"}
    # Its own street's community is its own.
    mine = served.alerts[COMMUNITY_1]
    assert street_1.get(f"/api/v1/alerts/{mine}").json()["region"] == COMMUNITY_1
    assert street_1.get(f"/api/v1/alerts/{mine}/evidence").status_code == 200
    r = street_1.post(f"/api/v1/alerts/{mine}/acknowledge")
    assert r.status_code == 200, r.text
    assert statuses(served, COMMUNITY_1) == ("acknowledged", "street-1")


def test_a_city_supervisor_takes_over_a_street_officers_claim(served: Served) -> None:
    alert_id = served.alerts[STREET_1]
    assert served.as_("street-1").post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 200
    # The other street's officer does not even see it; the city's supervisor resolves it.
    r = served.as_("street-2").post(f"/api/v1/alerts/{alert_id}/resolve",
                                    json={"outcome": "false_alarm"})
    assert r.status_code == 404
    r = served.as_("city").post(f"/api/v1/alerts/{alert_id}/resolve",
                                json={"outcome": "false_alarm", "note": "handled by phone"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "resolved" and r.json()["resolved_by"] == "city"
    # The province's supervisor sees the whole province, another city's district included.
    zz = served.alerts[ZAOZHUANG]
    assert served.as_("province").get(f"/api/v1/alerts/{zz}").status_code == 200
    assert served.as_("city").get(f"/api/v1/alerts/{zz}").status_code == 404


def test_the_clerk_reads_alerts_but_may_not_act_on_them(served: Served) -> None:
    clerk = served.as_("clerk")
    mine = served.alerts[STREET_1]
    assert served.listed("clerk") == {STREET_1, COMMUNITY_1}
    assert clerk.get(f"/api/v1/alerts/{mine}").status_code == 200
    assert clerk.get(f"/api/v1/alerts/{mine}/evidence").status_code == 200
    for path, body in (("acknowledge", None), ("notes", {"note": "x"}),
                       ("resolve", {"outcome": "false_alarm"}), ("commands", {"command": "find"})):
        r = clerk.post(f"/api/v1/alerts/{mine}/{path}", json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["detail"] == ("the clerk role reads alerts but may not act on them;"
                                      f" {ACTING}")
    # Refused for the role before anything else: an alert elsewhere gets the same 403.
    r = clerk.post(f"/api/v1/alerts/{served.alerts[STREET_2]}/acknowledge")
    assert r.status_code == 403
    assert statuses(served, STREET_1) == ("open", None)


def test_console_sessions_are_scoped_and_roled_the_same_way(served: Served) -> None:
    clerk = served.login("clerk-web")
    me = clerk.get("/console/me").json()["user"]
    assert me["role"] == "clerk" and me["regions"] == [STREET_1]
    assert {a["region"] for a in clerk.get("/api/v1/alerts").json()["alerts"]} == {
        STREET_1, COMMUNITY_1}
    r = clerk.post(f"/api/v1/alerts/{served.alerts[STREET_1]}/acknowledge")
    assert r.status_code == 403 and ACTING in r.json()["detail"]
    officer = served.login("officer-web-2")
    assert officer.post(f"/api/v1/alerts/{served.alerts[STREET_1]}/acknowledge"
                        ).status_code == 404
    assert officer.post(f"/api/v1/alerts/{served.alerts[STREET_2]}/acknowledge"
                        ).status_code == 200
    assert statuses(served, STREET_1) == ("open", None)
    assert statuses(served, STREET_2) == ("acknowledged", "officer-web-2")


# --- The live stream ------------------------------------------------------------------------

def alert_regions(events: list[Sse]) -> set[str]:
    return {e.data["alert"]["region"] for e in events if e.event == "alert"}


def test_a_street_officer_receives_only_their_streets_changes_on_the_stream(
        served: Served) -> None:
    with (served.reader("street-1") as r1, served.reader("street-2") as r2,
          served.reader("city") as rc):
        hellos = [r.next() for r in (r1, r2, rc)]
        assert all(h.event == "hello" for h in hellos)
        start = str(hellos[0].data["max_id"])
        s2 = served.open_alert(STREET_2, "DV-S2", "fall")
        c1 = served.open_alert(COMMUNITY_1, "DV-C1", "fall")
        zz = served.open_alert(ZAOZHUANG, "DV-ZZ", "fall")
        assert served.as_("street-2").post(f"/api/v1/alerts/{s2}/notes",
                                           json={"note": "on the way"}).status_code == 200
        assert served.as_("street-1").post(f"/api/v1/alerts/{c1}/acknowledge").status_code == 200
        last = served.open_alert(STREET_2, "DV-S2b", "fall")     # after everything above
        seen_1 = r1.until(is_change(c1, "acknowledged"))
        seen_2 = r2.until(is_change(last, "opened"))
        seen_c = rc.until(is_change(last, "opened"))
        # The feed fans out in id order: street 1 has been offered every change before `last`.
        seen_1 += r1.pending()
    def ids(events: list[Sse]) -> set[int]:
        return {e.data["alert"]["id"] for e in events if e.event == "alert"}

    # (The escalator may add entries to the fixture's alerts meanwhile: in their regions.)
    assert alert_regions(seen_1) <= {STREET_1, COMMUNITY_1} and c1 in ids(seen_1)
    assert not ids(seen_1) & {s2, last, zz, served.alerts[STREET_2]}
    assert alert_regions(seen_2) == {STREET_2} and {s2, last} <= ids(seen_2)
    assert alert_regions(seen_c) <= {STREET_1, STREET_2, COMMUNITY_1}    # not Zaozhuang
    assert {s2, c1, last} <= ids(seen_c) and zz not in ids(seen_c)
    # Catching up after a reconnect (the database's history, not the live fan-out) is scoped
    # by the same rule.
    with served.reader("street-1", last_event_id=start) as again:
        caught = again.until(is_change(c1, "acknowledged"))
    assert alert_regions(caught) <= {STREET_1, COMMUNITY_1} and c1 in ids(caught)


# --- Devices and unregistered devices --------------------------------------------------------

def test_devices_and_unregistered_sightings_follow_the_scope(served: Served) -> None:
    devices = {"D-S1": STREET_1, "D-C1": COMMUNITY_1, "D-S2": STREET_2, "D-ZZ": ZAOZHUANG,
               "D-L": LEGACY}
    with psycopg.connect(served.db, autocommit=True) as conn:
        for device, region in devices.items():
            conn.execute("INSERT INTO devices (device_id, kind, region) VALUES (%s, 'watch', %s)",
                         (device, region))
        for device, region in (("X-S2", STREET_2), ("X-C1", COMMUNITY_1)):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                " VALUES (now(), %s, '\\x7b7d', %s)",
                (device_topic(region, device), refusal_reason(
                    device, topic_region=region, registered=None, type_name="sos",
                    alarm=True)))

    def seen(who: str, path: str = "/api/v1/devices", **params: Any) -> set[str]:
        r = served.as_(who).get(path, params=params)
        assert r.status_code == 200, r.text
        return {d["device_id"] for d in r.json()["devices"]}

    assert seen("street-1") == {"D-S1", "D-C1"}
    assert seen("street-2") == {"D-S2"}
    assert seen("city") == {"D-S1", "D-C1", "D-S2"}
    assert seen("province") == {"D-S1", "D-C1", "D-S2", "D-ZZ"}
    assert seen("legacy") == {"D-L"}
    assert seen("street-1", region="3710") == {"D-S1", "D-C1"}
    assert seen("city", region=COMMUNITY_1) == {"D-C1"}
    unregistered = "/api/v1/unregistered-devices"
    assert seen("street-1", unregistered) == {"X-C1"}
    assert seen("street-2", unregistered) == {"X-S2"}
    assert seen("city", unregistered) == {"X-C1", "X-S2"}
    assert seen("legacy", unregistered) == set()


# --- The region tree over HTTP --------------------------------------------------------------

def nodes(r: httpx.Response) -> list[tuple[str, bool]]:
    assert r.status_code == 200, r.text
    return [(n["code"], n["in_scope"]) for n in r.json()["regions"]]


def test_get_regions_gives_the_callers_subtree_with_breadcrumbs(served: Served) -> None:
    r = served.as_("street-1").get("/api/v1/regions")
    assert nodes(r) == [("37", False), ("3710", False), ("371002", False), (STREET_1, True),
                        (COMMUNITY_1, True), ("371002001002", True), ("371002001003", True)]
    first = r.json()["regions"][3]
    assert first == {"code": STREET_1, "name": "环翠楼街道", "parent": "371002",
                     "level": "street", "in_scope": True}
    assert r.json()["truncated"] is False
    city = nodes(served.as_("city").get("/api/v1/regions",
                                        params={"under": "371002", "depth": 1}))
    assert city[:3] == [("37", False), ("3710", True), ("371002", True)]
    assert all(len(code) == 9 for code, _ in city[3:]) and len(city) == 3 + 11
    assert nodes(served.as_("legacy").get("/api/v1/regions")) == []
    assert len(nodes(served.as_("dispatch").get("/api/v1/regions"))) == 36
    assert nodes(served.as_("street-2").get("/api/v1/regions", params={"under": STREET_1})) == []
    bad = served.as_("city").get("/api/v1/regions", params={"under": "37100"})
    assert bad.status_code == 422
    # Without under, depth counts from the provinces: the city sees itself, not its districts.
    assert nodes(served.as_("city").get("/api/v1/regions", params={"depth": 1})) == [
        ("37", False), ("3710", True)]


def test_only_an_admin_loads_the_tree_and_every_problem_comes_back_with_its_line(
        served: Served) -> None:
    body = "code,name,parent\n371002009,新街道,371002\n371002009001,新社区,371002009\n"
    csv_type = {"Content-Type": "text/csv; charset=utf-8"}
    for who in ("city", "clerk", "dispatch"):
        r = served.as_(who).put("/api/v1/regions", content=body.encode(), headers=csv_type)
        assert r.status_code == 403 and r.json()["detail"] == "only an admin may do this"
    admin = served.as_("admin")
    r = admin.put("/api/v1/regions", content=body.encode(), headers=csv_type)
    assert r.status_code == 200, r.text
    assert r.json() == {"inserted": 2, "updated": 0, "unchanged": 0}
    assert (STREET_1[:6] + "009", True) in nodes(served.as_("city").get(
        "/api/v1/regions", params={"under": "371002", "depth": 1}))
    r = admin.put("/api/v1/regions", content=b"code,name\n37100,x\n3799001,y\n", headers=csv_type)
    assert r.status_code == 422
    assert [(p["line"], p["code"]) for p in r.json()["problems"]] == [(2, None), (3, None)]
    assert "not a division code" in r.json()["problems"][0]["message"]
    r = admin.put("/api/v1/regions", content="- {code: '3701', name: 济南市}\n".encode(),
                  headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200 and r.json()["inserted"] == 1
    r = admin.put("/api/v1/regions", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    with psycopg.connect(served.db) as conn:
        audit = conn.execute("SELECT actor, after->'inserted' FROM registry_audit"
                             " WHERE action = 'regions_loaded' AND actor <> 'test'"
                             " ORDER BY id").fetchall()
    assert audit == [("admin", 2), ("admin", 1)]


def test_a_tree_larger_than_the_api_body_limit_is_accepted_on_its_route(served: Served) -> None:
    lines = ["code,name"] + [f"{street}{n:03d},社区{n}"
                             for street in ("371002004", "371002005", "371002006")
                             for n in range(1, 1000)]
    body = "\n".join(lines).encode()
    assert len(body) > 64 * 1024                 # the API's default limit
    r = served.as_("admin").put("/api/v1/regions", content=body,
                                headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["inserted"] == 3 * 999
    # Other routes keep the small limit.
    r = served.as_("admin").post(f"/api/v1/alerts/{served.alerts[STREET_1]}/notes",
                                 content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413

