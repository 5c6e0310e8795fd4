"""The duty console in a real headless Chromium (issue #6), against the real service.

The service runs as in production (real Mosquitto, PostgreSQL, detection, alerts, the console on
the API's HTTP server); the browser is Debian's Chromium driven by Playwright (the test command
installs it). A device publishes an SOS over MQTT and the page must show it within a second of
the publish; the officer acknowledges it and the audit trail shows the claim. Wrong passwords are
refused, and an officer never sees another region's alerts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from console.accounts import AccountStore
from eldercare.app import Application
from eldercare.config import Config
from schemas import device_topic
from tests.conftest import Publisher, now_ms

PASSWORD = "correct horse battery"
REGISTRY = """
wearers:
  - id: W-A
    name: 王秀英
    region: "{region}"
    devices: [{{id: WT-A, kind: watch}}]
"""


@pytest.fixture
def console(make_config: Callable[..., Config], tmp_path: Path, region: str,
            db_url: str) -> Iterator[str]:
    """The running service; returns the console's base URL. Users: officer-a and officer-a2
    (this test's region) and officer-b (another region)."""
    (tmp_path / "registry.yaml").write_text(REGISTRY.format(region=region))
    config = make_config(**{"registry": str(tmp_path / "registry.yaml"),
                            "console.secure_cookies": False})
    with Application(config) as svc:
        with AccountStore(db_url) as accounts:
            accounts.add_user("officer-a", PASSWORD, role="officer", regions=[region],
                              display_name="值班员甲")
            accounts.add_user("officer-a2", PASSWORD, role="officer", regions=[region])
            accounts.add_user("officer-b", PASSWORD, role="officer", regions=["999999"])
        assert svc.http is not None
        yield f"http://127.0.0.1:{svc.http.port}"


def login(page: Page, base: str, user: str, password: str = PASSWORD) -> None:
    page.goto(base + "/")
    page.get_by_test_id("login-username").fill(user)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()


def test_an_sos_appears_within_a_second_and_is_claimed_with_an_audit_entry(
        browser: Browser, console: str, publisher: Publisher, region: str) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []   # script errors and Content-Security-Policy violations
    # (The 401 of /console/me before logging in is how the page learns it must show the form.)
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and "status of 401" not in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, console, "officer-a")
    expect(page.get_by_test_id("connection-status")).to_have_attribute(
        "data-state", "connected", timeout=10_000)
    rows = page.get_by_test_id("alert-row")
    expect(rows).to_have_count(0)
    published = time.monotonic()
    publisher.publish(device_topic(region, "WT-A"), json.dumps(
        {"type": "sos", "ts": now_ms(), "lat": 37.51, "lon": 122.12}).encode())
    row = page.locator("[data-testid=alert-row][data-priority='1']")
    row.wait_for(timeout=5_000)
    shown_after = time.monotonic() - published
    assert shown_after < 1.0, f"the SOS took {shown_after:.2f} s to appear"
    expect(row).to_have_attribute("data-status", "open")
    row.click()
    detail = page.get_by_test_id("alert-detail")
    expect(detail).to_contain_text("王秀英")
    page.get_by_test_id("ack-button").click()
    expect(row).to_have_attribute("data-status", "acknowledged", timeout=5_000)
    claim = page.locator("[data-testid=audit-entry][data-action='acknowledged']")
    expect(claim).to_have_count(1, timeout=5_000)
    expect(claim).to_contain_text("officer-a")
    # The detail drew its map under the page's strict Content-Security-Policy, without errors.
    expect(page.get_by_test_id("map")).to_be_visible()
    assert errors == []
    csp = httpx.get(console + "/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page.close()


def test_a_wrong_password_is_refused(browser: Browser, console: str) -> None:
    page = browser.new_page()
    login(page, console, "officer-a", "not the password")
    expect(page.get_by_test_id("login-error")).to_be_visible()
    expect(page.get_by_test_id("login-submit")).to_be_visible()     # still at the login form
    expect(page.get_by_test_id("alert-queue")).not_to_be_visible()
    page.close()


def test_an_officer_never_sees_another_regions_alerts(
        browser: Browser, console: str, publisher: Publisher, region: str) -> None:
    publisher.publish(device_topic(region, "WT-A"), json.dumps(
        {"type": "sos", "ts": now_ms()}).encode())
    a = browser.new_page()
    login(a, console, "officer-a")
    expect(a.get_by_test_id("alert-row")).to_have_count(1, timeout=10_000)
    alert_id = a.get_by_test_id("alert-row").get_attribute("data-alert-id")
    b = browser.new_page()
    login(b, console, "officer-b")
    expect(b.get_by_test_id("connection-status")).to_have_attribute(
        "data-state", "connected", timeout=10_000)
    # A new SOS in region A while officer-b watches: nothing arrives on officer-b's page.
    publisher.publish(device_topic(region, "WT-A"), json.dumps(
        {"type": "fall", "ts": now_ms()}).encode())
    expect(a.get_by_test_id("alert-row")).to_have_count(2, timeout=10_000)
    expect(b.get_by_test_id("alert-row")).to_have_count(0)
    # And the API behind the page refuses officer-b the alert itself.
    cookies = {c["name"]: c["value"] for c in b.context.cookies()}
    r = httpx.get(f"{console}/api/v1/alerts/{alert_id}", cookies=cookies)
    assert r.status_code == 404
    a.close()
    b.close()


def test_two_officers_on_one_alert_the_second_is_told_who_holds_it(
        browser: Browser, console: str, publisher: Publisher, region: str) -> None:
    publisher.publish(device_topic(region, "WT-A"), json.dumps(
        {"type": "sos", "ts": now_ms()}).encode())
    pages = {}
    for user in ("officer-a", "officer-a2"):
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        login(page, console, user)
        page.get_by_test_id("alert-row").first.click()
        expect(page.get_by_test_id("ack-button")).to_be_visible(timeout=10_000)
        pages[user] = page
    pages["officer-a"].get_by_test_id("ack-button").click()
    second = pages["officer-a2"]
    # The claim reaches the second officer's open detail live: no claim button, the owner named.
    expect(second.get_by_test_id("conflict-message")).to_contain_text("officer-a",
                                                                      timeout=5_000)
    expect(second.get_by_test_id("ack-button")).not_to_be_visible()
    for page in pages.values():
        page.close()
