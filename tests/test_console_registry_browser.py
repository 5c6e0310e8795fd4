"""The console's registry pages in a real headless Chromium (issue #12), against the service.

The service runs as in production (Mosquitto, PostgreSQL, ingest with detection, alerts, the
console); the browser is Playwright's Chromium. A clerk enrols an elder, registers and binds a
bracelet, draws a home zone on the map with the mouse (Leaflet-Geoman) and saves it; the
bracelet then walks out of that zone over MQTT and the wandering alert against that zone comes
up on the console, with no restart. The map is on GCJ-02 tiles (served by the test, nothing
leaves the machine), so the zone drawn on them must be stored in WGS-84 where the elder lives.
A read-only role sees the same pages without a single edit control.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

from console.accounts import AccountStore
from detectors.geo import haversine_m
from eldercare.app import Application
from eldercare.config import Config
from schemas import device_topic
from tests.conftest import Publisher, now_ms, wait_for

PASSWORD = "correct horse battery"
HOME = (37.5125, 122.1203)          # WGS-84, Huancui district, Weihai
TILES = "https://tiles.test/{z}/{x}/{y}.png"


def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xee\xe8\xdc")) + chunk(b"IEND", b""))


def id_card(prefix17: str) -> str:
    """A number with the right GB 11643 check digit."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return prefix17 + "10X98765432"[sum(int(d) * w for d, w in
                                         zip(prefix17, weights, strict=True)) % 11]


@dataclass
class Console:
    url: str
    community: str      # a 12-digit community code of the loaded tree, unique to the test
    app: Application
    db_url: str

    def registry_applied(self) -> None:
        """Wait until ingest runs on the registry as the database has it now. The page answers
        a save at once; the service takes it up at its next poll (``reload_interval_s``): a
        reading published in between is judged without the new zone (no exit)."""
        with psycopg.connect(self.db_url) as conn:
            row = conn.execute("SELECT version FROM registry_version").fetchone()
        assert row is not None and self.app.ingest is not None
        ingest = self.app.ingest
        wait_for(lambda: ingest.metrics.value("eldercare_registry_version") >= row[0],
                 what="ingest on the saved registry")


@pytest.fixture
def console(make_config: Callable[..., Config], tmp_path: Path, db_url: str) -> Iterator[Console]:
    community = "371002001" + f"{uuid.uuid4().int % 900 + 100}"
    (tmp_path / "regions.csv").write_text(
        "code,name,parent\n37,山东省,\n3710,威海市,37\n371002,环翠区,3710\n"
        f"371002001,环城街道,371002\n{community},测试社区,371002001\n", encoding="utf-8")
    config = make_config(**{"console.secure_cookies": False,
                            "enrolment.regions": str(tmp_path / "regions.csv"),
                            "console.tile_url": TILES, "console.tile_coord_system": "gcj02",
                            "console.tile_attribution": "© test tiles"})
    with Application(config) as svc:
        with AccountStore(db_url) as accounts:
            accounts.add_user("clerk-a", PASSWORD, role="clerk", regions=["371002001"],
                              display_name="录入员甲")
            accounts.add_user("officer-a", PASSWORD, role="officer", regions=["371002001"])
        assert svc.http is not None
        yield Console(f"http://127.0.0.1:{svc.http.port}", community, svc, db_url)


def open_page(browser: Browser, base: str) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []   # script errors and Content-Security-Policy violations

    def on_console(m: ConsoleMessage) -> None:
        # Not errors: the 401 of /console/me before logging in (how the page learns it must
        # show the form), the 404 of GET /api/v1/devices/ID by which the bind form learns that
        # a device id is new and must be registered before it is bound, and the 422 that
        # carries an import's report of a file with errors.
        line = f"{m.text} {m.location.get('url', '')}"
        if m.type == "error" and "status of 401" not in line \
                and "status of 404 (Not Found) " + base + "/api/v1/devices/" not in line \
                and "status of 422 (Unprocessable Entity) " + base + "/api/v1/imports/" \
                not in line:
            errors.append(line)
    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append(str(e)))
    tile = png_1x1()

    def offline(route: Route) -> None:
        url = route.request.url
        if url.startswith("https://tiles.test/"):
            route.fulfill(status=200, content_type="image/png", body=tile)
        elif url.startswith(base):
            route.continue_()
        else:
            errors.append(f"outside request {url}")
            route.abort()
    page.route("**/*", offline)
    return page, errors


def login(page: Page, base: str, user: str) -> None:
    page.goto(base + "/")
    page.get_by_test_id("login-username").fill(user)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("logout")).to_be_visible()


def api(page: Page, base: str, path: str) -> httpx.Response:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    return httpx.get(base + path, cookies=cookies)


def test_a_clerk_enrols_binds_draws_a_home_zone_and_the_wandering_alert_names_it(
        browser: Browser, console: Console, publisher: Publisher) -> None:
    base = console.url
    page, errors = open_page(browser, base)
    login(page, base, "clerk-a")
    page.get_by_test_id("wearers-tab").click()
    expect(page.get_by_test_id("wearers-table")).to_be_visible()
    page.get_by_test_id("wearer-new").click()

    # --- Enrol -----------------------------------------------------------------------------
    number = id_card("37100219450301002")
    form = page.get_by_test_id("details-form")
    form.get_by_test_id("f-id").fill("W-E2E")
    form.get_by_test_id("f-name").fill("张桂兰")
    form.get_by_test_id("f-sex").select_option("female")
    form.get_by_test_id("f-birth_year").fill("1945")
    form.get_by_test_id("f-region").select_option(console.community)
    form.get_by_test_id("f-phone").fill("138 0000 0001")
    form.get_by_test_id("f-id_card").fill(number)
    form.locator("input[name=care_categories][value=dementia]").check()
    form.locator("input[name=home_lat]").fill(str(HOME[0]))
    form.locator("input[name=home_lon]").fill(str(HOME[1]))
    page.get_by_test_id("details-save").click()
    wearer = page.get_by_test_id("wearer-page")
    expect(wearer).to_have_attribute("data-wearer-id", "W-E2E", timeout=10_000)
    expect(page.get_by_test_id("idcard-masked")).to_have_text("3710**********" + number[-4:])
    assert number not in page.content()          # the full number never comes back

    # --- Register and bind a bracelet --------------------------------------------------------
    page.get_by_test_id("bind-device-id").fill("BR-E2E")
    page.get_by_test_id("bind-kind").select_option("bracelet")
    page.get_by_test_id("bind-imei").fill("864000000000017")
    page.get_by_test_id("bind-submit").click()
    expect(page.locator("[data-testid=bound-device][data-device-id=BR-E2E]")).to_be_visible(
        timeout=10_000)
    expect(page.locator("[data-testid=binding][data-device-id=BR-E2E]")).to_contain_text("clerk-a")

    # --- Draw the home zone: a circle around the home, with the mouse -------------------------
    zone_map = page.get_by_test_id("zone-map")
    zone_map.scroll_into_view_if_needed()
    expect(zone_map).to_have_attribute("data-coord-system", "gcj02")
    page.get_by_test_id("zone-draw-circle").click()
    zone_map.scroll_into_view_if_needed()
    box = zone_map.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.click(cx, cy)                      # the centre: the map is centred on the home
    page.mouse.move(cx + 60, cy, steps=6)
    page.mouse.click(cx + 100, cy)                # the radius: ~100 px, about 190 m at zoom 16
    page.get_by_test_id("zone-name").fill("家")
    page.get_by_test_id("zone-save").click()
    row = page.get_by_test_id("zone-row")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_contain_text("家")

    stored = api(page, base, "/api/v1/wearers/W-E2E").json()
    zone, = stored["zones"]
    assert zone["kind"] == "circle" and zone["name"] == "家"
    # Drawn on GCJ-02 tiles at the home as the map shows it, stored back in WGS-84: at the home
    # (a pixel is ~1.9 m here; unconverted, it would be ~500 m away).
    off = float(haversine_m(zone["center"]["lat"], zone["center"]["lon"], *HOME))
    assert off < 6, f"zone centre {off:.1f} m from the home"
    assert 120 < zone["radius_m"] < 260, zone["radius_m"]
    assert stored["devices"][0]["id"] == "BR-E2E" and stored["id_card_masked"].endswith(number[-4:])

    # --- The audit trail on the page: who, what -----------------------------------------------
    page.reload()
    audit = page.get_by_test_id("wearer-audit")
    for action in ("wearer_created", "device_bound", "zone_saved"):
        expect(audit.locator(f"[data-testid=reg-audit-entry][data-action={action}]")).to_have_count(
            1, timeout=10_000)
    expect(audit.locator("[data-action=zone_saved]")).to_contain_text("clerk-a")

    # --- The bracelet walks out of the zone: the wandering alert against it -------------------
    console.registry_applied()
    now = now_ms()
    topic = device_topic(console.community, "BR-E2E")
    for i, north_m in enumerate([0, 500, 600, 700, 800]):
        publisher.publish(topic, json.dumps(
            {"type": "location", "ts": now - 5000 + i * 1000, "lat": HOME[0] + north_m / 111_195,
             "lon": HOME[1], "accuracy_m": 10}).encode())
    page.get_by_test_id("alerts-tab").click()
    alert = page.locator("[data-testid=alert-row][data-type=geofence_exit]")
    expect(alert).to_have_count(1, timeout=20_000)
    alert.click()
    expect(page.get_by_test_id("alert-detail")).to_contain_text("张桂兰")
    # The alert's map (Leaflet too) draws that zone and where the bracelet was, on the tiles.
    alert_map = page.get_by_test_id("map")
    expect(alert_map.locator("path.zone-shape")).to_have_count(1)
    expect(alert_map.locator("path.pos-dot")).to_have_count(1)
    expect(alert_map.locator("img.leaflet-tile-loaded").first).to_be_attached()
    alert_id = alert.get_attribute("data-alert-id")
    detail = api(page, base, f"/api/v1/alerts/{alert_id}").json()
    assert json.dumps(detail, ensure_ascii=False).count(zone["id"]) >= 1, detail
    assert errors == [], errors
    page.close()


def test_a_read_only_role_sees_the_pages_without_edit_controls(
        browser: Browser, console: Console) -> None:
    base = console.url
    clerk, _ = open_page(browser, base)
    login(clerk, base, "clerk-a")
    cookies = {c["name"]: c["value"] for c in clerk.context.cookies()}
    csrf = httpx.get(base + "/console/me", cookies=cookies).json()["csrf_token"]
    headers = {"X-CSRF-Token": csrf}
    r = httpx.post(base + "/api/v1/wearers", cookies=cookies, headers=headers, json={
        "id": "W-RO", "name": "李明", "region": console.community,
        "home": {"lat": HOME[0], "lon": HOME[1]},
        "care_categories": ["over_80"], "id_card": id_card("37100219400101003")})
    assert r.status_code == 201, r.text
    r = httpx.put(base + "/api/v1/wearers/W-RO/zones/home", cookies=cookies, headers=headers,
                  json={"name": "家", "kind": "circle", "center": {"lat": HOME[0], "lon": HOME[1]},
                        "radius_m": 200, "active": "08:00-20:00"})
    assert r.status_code == 200, r.text
    r = httpx.put(base + "/api/v1/wearers/W-RO/contacts", cookies=cookies, headers=headers,
                  json={"contacts": [{"name": "李娜", "phone": "13900000002", "relation": "女儿"}]})
    assert r.status_code == 200, r.text
    clerk.close()

    page, errors = open_page(browser, base)
    login(page, base, "officer-a")
    expect(page.get_by_test_id("import-tab")).to_be_hidden()
    page.get_by_test_id("wearers-tab").click()
    row = page.locator("[data-testid=wearer-row][data-wearer-id=W-RO]")
    expect(row).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("wearer-new")).to_have_count(0)
    page.get_by_test_id("wearers-search").fill("李明")
    expect(page.get_by_test_id("wearer-row")).to_have_count(1)
    row.get_by_test_id("wearer-link").click()
    wearer = page.get_by_test_id("wearer-page")
    expect(wearer).to_have_attribute("data-editable", "false", timeout=10_000)
    expect(page.get_by_test_id("zone-row")).to_contain_text("08:00-20:00")
    expect(page.get_by_test_id("contact")).to_contain_text("李娜")
    for control in ("details-save", "bind-form", "unbind", "contacts-save", "contact-add",
                    "zone-draw-circle", "zone-draw-polygon", "zone-edit", "zone-delete",
                    "deactivate"):
        expect(page.get_by_test_id(control)).to_have_count(0)
    # Every field of the details form is shown, none editable.
    assert page.get_by_test_id("details-form").locator(
        "input:not([disabled]), select:not([disabled]), textarea:not([disabled])").count() == 0
    # The map draws the zone for them too (read only).
    expect(page.locator(".zone-map path.zone-shape")).to_have_count(1)
    expect(page.locator(".zone-map path.home-marker")).to_have_count(1)
    # The import page is not theirs either, even by its address.
    page.goto(base + "/#import")
    expect(page.get_by_test_id("import-view")).to_be_hidden()
    assert errors == [], errors
    page.close()


def test_a_clerk_draws_a_polygon_zone_renames_it_and_deletes_it(
        browser: Browser, console: Console) -> None:
    base = console.url
    page, errors = open_page(browser, base)
    login(page, base, "clerk-a")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csrf = httpx.get(base + "/console/me", cookies=cookies).json()["csrf_token"]
    r = httpx.post(base + "/api/v1/wearers", cookies=cookies, headers={"X-CSRF-Token": csrf},
                   json={"id": "W-PG", "name": "赵玉珍", "region": console.community,
                         "home": {"lat": HOME[0], "lon": HOME[1]}})
    assert r.status_code == 201, r.text
    page.goto(base + "/#wearer/W-PG")
    expect(page.get_by_test_id("wearer-page")).to_have_attribute("data-editable", "true")
    zone_map = page.get_by_test_id("zone-map")
    zone_map.scroll_into_view_if_needed()
    page.get_by_test_id("zone-draw-polygon").click()
    zone_map.scroll_into_view_if_needed()
    box = zone_map.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # A square of 160 px around the home (the map's centre), closed on its first corner.
    corners = [(-80, -80), (80, -80), (80, 80), (-80, 80), (-80, -80)]
    for dx, dy in corners:
        page.mouse.move(cx + dx, cy + dy, steps=4)
        page.mouse.click(cx + dx, cy + dy)
    page.get_by_test_id("zone-name").fill("小区")
    page.get_by_test_id("zone-from").fill("20:00")
    page.get_by_test_id("zone-to").fill("07:00")
    page.get_by_test_id("zone-save").click()
    row = page.get_by_test_id("zone-row")
    expect(row).to_have_attribute("data-kind", "polygon", timeout=10_000)
    expect(row).to_contain_text("20:00-07:00")
    zone, = api(page, base, "/api/v1/wearers/W-PG").json()["zones"]
    assert zone["active"] == "20:00-07:00" and len(zone["points"]) == 4
    lat = sum(p[0] for p in zone["points"]) / 4
    lon = sum(p[1] for p in zone["points"]) / 4
    # Drawn on GCJ-02 tiles around the home, stored in WGS-84 around the home.
    assert float(haversine_m(lat, lon, *HOME)) < 6
    side = float(haversine_m(zone["points"][0][0], zone["points"][0][1],
                             zone["points"][1][0], zone["points"][1][1]))
    assert 250 < side < 360, side           # 160 px at zoom 16, ~1.9 m a pixel

    # Rename: the shape stays, the name changes.
    row.get_by_test_id("zone-edit").click()
    page.get_by_test_id("zone-name").fill("小区（夜间）")
    page.get_by_test_id("zone-save").click()
    expect(page.get_by_test_id("zone-row")).to_contain_text("小区（夜间）", timeout=10_000)
    again, = api(page, base, "/api/v1/wearers/W-PG").json()["zones"]
    assert again["id"] == zone["id"] and len(again["points"]) == 4
    # Through GCJ-02 and back once more: the same corners (to the conversion's centimetres).
    assert max(float(haversine_m(a[0], a[1], b[0], b[1]))
               for a, b in zip(again["points"], zone["points"], strict=True)) < 0.5

    # Delete, after the confirmation.
    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("zone-delete").click()
    expect(page.get_by_test_id("zone-row")).to_have_count(0, timeout=10_000)
    assert api(page, base, "/api/v1/wearers/W-PG").json()["zones"] == []
    audit = page.get_by_test_id("wearer-audit")
    expect(audit.locator("[data-action=zone_saved]")).to_have_count(2)
    expect(audit.locator("[data-action=zone_deleted]")).to_have_count(1)
    assert errors == [], errors
    page.close()


def test_a_clerk_orders_contacts_then_deactivates_the_elder_and_the_page_turns_read_only(
        browser: Browser, console: Console) -> None:
    base = console.url
    page, errors = open_page(browser, base)
    login(page, base, "clerk-a")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    headers = {"X-CSRF-Token": httpx.get(base + "/console/me", cookies=cookies).json()["csrf_token"]}
    for path, body in (("/api/v1/wearers", {"id": "W-DX", "name": "孙凤英",
                                            "region": console.community}),
                       ("/api/v1/devices", {"id": "BR-DX", "kind": "bracelet",
                                            "region": console.community}),
                       ("/api/v1/devices/BR-DX/bind", {"wearer_id": "W-DX"})):
        r = httpx.post(base + path, cookies=cookies, headers=headers, json=body)
        assert r.status_code in (200, 201), r.text
    page.goto(base + "/#wearer/W-DX")
    expect(page.locator("[data-testid=bound-device][data-device-id=BR-DX]")).to_be_visible()
    for name, phone in (("孙强", "13800000011"), ("孙丽", "13800000012")):
        page.get_by_test_id("contact-add").click()
        page.get_by_test_id("contact-name").last.fill(name)
        page.get_by_test_id("contact-phone").last.fill(phone)
    # The daughter is to be called first: move her up.
    page.get_by_test_id("contact").nth(1).get_by_role("button", name="上移").click()
    page.get_by_test_id("contacts-save").click()
    expect(page.get_by_test_id("contact-name").first).to_have_value("孙丽", timeout=10_000)
    contacts = api(page, base, "/api/v1/wearers/W-DX").json()["contacts"]
    assert [(c["name"], c["phone"], c["priority"]) for c in contacts] == [
        ("孙丽", "+8613800000012", 1), ("孙强", "+8613800000011", 2)]

    # Deactivate (moved away): the device is freed, the page is read-only from now on.
    page.locator("details.deactivate summary").click()
    page.get_by_test_id("deactivate-reason").select_option("moved_away")
    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("deactivate").click()
    wearer = page.get_by_test_id("wearer-page")
    expect(wearer).to_have_attribute("data-active", "false", timeout=10_000)
    expect(wearer).to_have_attribute("data-editable", "false")
    for control in ("details-save", "bind-form", "contacts-save", "zone-draw-circle",
                    "deactivate"):
        expect(page.get_by_test_id(control)).to_have_count(0)
    expect(page.get_by_test_id("bound-device")).to_have_count(0)
    expect(page.locator("[data-testid=binding][data-device-id=BR-DX]")).to_contain_text(
        "wearer deactivated")
    device = api(page, base, "/api/v1/devices/BR-DX").json()
    assert device["wearer_id"] is None
    expect(page.get_by_test_id("wearer-audit").locator(
        "[data-action=wearer_deactivated]")).to_have_count(1)
    assert errors == [], errors
    page.close()


def test_a_clerk_checks_a_list_sees_each_bad_cell_then_imports_the_corrected_one(
        browser: Browser, console: Console) -> None:
    base = console.url
    page, errors = open_page(browser, base)
    login(page, base, "clerk-a")
    good = id_card("37100219470805001")
    right = id_card("37100219380101004")
    wrong = right[:-1] + ("0" if right[-1] != "0" else "1")     # the check digit off
    header = "老人编号,姓名,身份证号,区划代码,设备号,设备类型,紧急联系人1,紧急联系人1电话\n"
    rows = [f"W-I1,周玉兰,{good},{console.community},BR-I1,手环,周强,13800000021\n",
            f"W-I2,吴秀珍,{wrong},{console.community},,,,\n",
            "W-I3,郑桂芝,,371002009,,,,\n"]
    page.get_by_test_id("import-tab").click()
    page.get_by_test_id("import-file").set_input_files(
        {"name": "名单.csv", "mimeType": "text/csv", "buffer": (header + "".join(rows)).encode()})
    page.get_by_test_id("import-check").click()
    report = page.get_by_test_id("import-report")
    expect(report).to_have_attribute("data-errors", "2", timeout=10_000)
    expect(page.locator("[data-testid=import-error-row][data-row='3']")).to_contain_text("身份证号")
    expect(page.locator("[data-testid=import-error-row][data-row='4']")).to_contain_text("区划代码")
    expect(page.get_by_test_id("import-run")).to_have_count(0)      # nothing to import yet
    assert api(page, base, "/api/v1/wearers?q=W-I1").json()["wearers"] == []

    page.get_by_test_id("import-file").set_input_files(
        {"name": "名单.csv", "mimeType": "text/csv", "buffer": (header + rows[0]).encode()})
    page.get_by_test_id("import-check").click()
    expect(report).to_have_attribute("data-errors", "0", timeout=10_000)
    page.get_by_test_id("import-run").click()
    expect(page.get_by_test_id("import-done")).to_be_visible(timeout=10_000)
    page.get_by_test_id("wearers-tab").click()
    row = page.locator("[data-testid=wearer-row][data-wearer-id=W-I1]")
    expect(row).to_contain_text("BR-I1", timeout=10_000)
    expect(row).to_contain_text("3710**********" + good[-4:])
    assert errors == [], errors
    page.close()
