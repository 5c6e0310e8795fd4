"""Screenshots of the duty console for docs/ and the README (issue #6).

Runs ``eldercare demo`` (the embedded broker, PostgreSQL, service and demo fleet), logs in to its
console with the printed demo login in headless Chromium at 1366x768, and saves the main views
once the demo's SOS, fall and wandering alerts are in. Chinese text needs a CJK font
(scripts/test installs Debian's fonts-wqy-microhei). Usage: .venv/bin/python
scripts/screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
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


if __name__ == "__main__":
    main()
