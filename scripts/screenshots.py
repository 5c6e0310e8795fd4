"""Screenshots of the duty console for docs/ and the README (issues #6, #12).

Runs ``eldercare demo`` (the embedded broker, PostgreSQL, service and demo fleet), logs in to its
console with the printed demo login in headless Chromium at 1366x768, and saves the main views
once the demo's SOS, fall and wandering alerts are in. Then the registry pages (issue #12): a
service of its own on the embedded broker and PostgreSQL with the shipped Weihai region tree and
an enrolment clerk, who checks a list with mistakes, imports deploy/wearers.example.csv, and
draws a safe zone on a wearer's map. Chinese text needs a CJK font (scripts/test installs
Debian's fonts-wqy-microhei). Usage: .venv/bin/python scripts/screenshots.py [OUT_DIR]
[--registry-only]
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from playwright.sync_api import Page, sync_playwright
from psycopg.conninfo import make_conninfo

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
OUT = Path(ARGS[0] if ARGS else "docs/img")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if "--registry-only" not in sys.argv:
        demo_shots()
    registry_shots()


def demo_shots() -> None:
    demo = subprocess.Popen([sys.executable, "-m", "eldercare.cli", "demo", "--speed", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert demo.stdout is not None
        url = password = None
        while url is None:
            line = demo.stdout.readline()
            if not line:
                raise SystemExit("the demo stopped before printing its console login")
            if m := re.search(r"duty console (\S+) +\(log in as duty / (\S+)\)", line):
                url, password = m.groups()
        time.sleep(20)  # at 4x: the SOS, the fall and the wanderer are in by now
        shoot(url, password or "")
    finally:
        demo.terminate()
        demo.wait(60)


def shoot(url: str, password: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(url)
        page.get_by_test_id("login-username").fill("duty")
        page.get_by_test_id("login-password").fill(password)
        page.get_by_test_id("login-submit").click()
        page.get_by_test_id("alert-row").first.wait_for()
        open_alert(page, "sos")
        page.screenshot(path=OUT / "console-sos.png")
        open_alert(page, "fall")
        page.screenshot(path=OUT / "console-fall.png")
        open_alert(page, "geofence_exit")
        page.screenshot(path=OUT / "console-wandering.png")
        page.get_by_test_id("devices-tab").click()
        page.get_by_test_id("device-row").first.wait_for()
        page.screenshot(path=OUT / "console-devices.png")
        page.get_by_test_id("lang-toggle").click()
        page.get_by_test_id("alerts-tab").click()
        open_alert(page, "sos")
        page.screenshot(path=OUT / "console-sos-en.png")
        browser.close()
    print("screenshots in", OUT)


def open_alert(page: Page, kind: str) -> None:
    rows = page.get_by_test_id("alert-row")
    for i in range(rows.count()):
        row = rows.nth(i)
        if kind in (row.get_attribute("data-type") or row.inner_text()):
            row.click()
            break
    else:
        rows.first.click()
    page.get_by_test_id("alert-detail").wait_for()
    page.wait_for_timeout(800)  # the map and plot draw after the detail loads


def registry_shots() -> None:
    """The elders list, a wearer page with a zone being drawn, the import check (issue #12)."""
    from console.accounts import AccountStore
    from eldercare.app import Application
    from eldercare.config import load_config
    from eldercare.embedded import EmbeddedBroker, EmbeddedPostgres
    from foundation.ports import free_port

    password = "screenshot clerk"
    with tempfile.TemporaryDirectory(prefix="eldercare-shots-") as tmp, \
            EmbeddedBroker() as broker, EmbeddedPostgres(Path(tmp) / "pgdata") as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE eldercare")
        db_url = make_conninfo(pg.url, dbname="eldercare")
        config = load_config(path=None, env={}, overrides={
            "mqtt.url": broker.url, "database.url": db_url, "metrics.port": free_port(),
            "api.port": free_port(), "console.secure_cookies": False,
            "enrolment.regions": str(ROOT / "registry/data/regions-weihai-zaozhuang-rizhao.csv"),
            "enrolment.secret_file": str(Path(tmp) / "registry.key"),
            "spool.dir": str(Path(tmp) / "spool")})
        # A list with the mistakes the check exists for: a wrong check digit, an unknown region.
        example = (ROOT / "deploy/wearers.example.csv").read_text(encoding="utf-8-sig")
        bad = Path(tmp) / "街道名单-有误.csv"
        bad.write_text(example.replace("37100219440312002X", "371002194403120021")
                       .replace(",371002003,", ",371099003,"), encoding="utf-8")
        with Application(config) as service, AccountStore(db_url) as accounts:
            accounts.add_user("clerk", password, role="clerk", regions=["3710"],
                              display_name="录入员")
            url = f"http://127.0.0.1:{config.api.port}/"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                            headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                page.goto(url)
                page.get_by_test_id("login-username").fill("clerk")
                page.get_by_test_id("login-password").fill(password)
                page.get_by_test_id("login-submit").click()
                page.get_by_test_id("import-tab").click()
                page.get_by_test_id("import-file").set_input_files(str(bad))
                page.get_by_test_id("import-check").click()
                page.get_by_test_id("import-error-row").first.wait_for()
                page.screenshot(path=OUT / "console-import-check.png")
                page.get_by_test_id("import-file").set_input_files(
                    str(ROOT / "deploy/wearers.example.csv"))
                page.get_by_test_id("import-check").click()
                page.get_by_test_id("import-run").click()
                page.get_by_test_id("import-done").wait_for()
                page.get_by_test_id("wearers-tab").click()
                page.get_by_test_id("wearer-row").first.wait_for()
                page.screenshot(path=OUT / "console-elders.png")
                page.get_by_test_id("wearer-link").first.click()
                page.get_by_test_id("wearer-page").wait_for()
                zone_map = page.get_by_test_id("zone-map")
                page.get_by_test_id("zone-draw-circle").click()
                zone_map.scroll_into_view_if_needed()
                box = zone_map.bounding_box()
                assert box is not None
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.click(cx, cy)
                page.mouse.move(cx + 90, cy + 20, steps=5)
                page.mouse.click(cx + 90, cy + 20)
                page.get_by_test_id("zone-name").fill("家")
                page.get_by_test_id("zone-from").fill("20:00")
                page.get_by_test_id("zone-to").fill("07:00")
                page.screenshot(path=OUT / "console-wearer-zone.png", full_page=False)
                page.get_by_test_id("zone-save").click()
                page.get_by_test_id("zone-row").first.wait_for()
                page.get_by_test_id("wearer-audit").scroll_into_view_if_needed()
                page.screenshot(path=OUT / "console-wearer-audit.png")
                page.evaluate("() => document.getElementById('wearer-view').scrollTo(0, 0)")
                page.screenshot(path=OUT / "console-wearer.png")
                page.get_by_test_id("lang-toggle").click()
                page.get_by_test_id("wearers-tab").click()
                page.get_by_test_id("wearer-row").first.wait_for()
                page.screenshot(path=OUT / "console-elders-en.png")
                browser.close()
        assert service is not None
    print("registry screenshots in", OUT)


if __name__ == "__main__":
    main()
