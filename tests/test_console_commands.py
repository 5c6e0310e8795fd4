"""The duty console's device commands in a real headless Chromium (issue #10): an officer on an
SOS alert presses "locate now" and "call the watch"; the watch, on a real TCP connection to the
gateway, receives the protocol's commands, answers them, and the page shows them confirmed.

Real service, gateway, Mosquitto and PostgreSQL; the watch is a plain socket.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from console.accounts import AccountStore
from eldercare.app import Application
from eldercare.config import Config
from tests.services import Mosquitto
from tests.test_console_browser import PASSWORD, login
from tests.test_gateway_e2e import WATCH, Gateway, frame, gateway_config, port_of, report, watch

REGISTRY = """
wearers:
  - id: W-C
    name: 赵淑珍
    region: "{region}"
    devices: [{{id: "{watch}", kind: watch}}]
"""


def test_an_officer_locates_and_calls_the_watch_of_an_sos_from_the_console(
        browser: Browser, make_config: Callable[..., Config], tmp_path: Path, region: str,
        db_url: str, broker: Mosquitto) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY.format(region=region, watch=WATCH))
    config = make_config(**{"registry": str(tmp_path / "registry.yaml"),
                            "console.secure_cookies": False})
    gw = gateway_config(broker.url, region)
    with Application(config) as svc, Gateway(gw) as g, watch(port_of(gw)) as w:
        assert svc.http is not None and g.linked.wait(20)
        with AccountStore(db_url) as accounts:
            accounts.add_user("officer-c", PASSWORD, role="officer", regions=[region])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        login(page, f"http://127.0.0.1:{svc.http.port}", "officer-c")
        w.send(report("AL", 1 << 16))  # the SOS
        assert w.reply() == frame("AL")
        row = page.locator("[data-testid=alert-row][data-priority='1']")
        row.wait_for(timeout=15_000)
        row.click()
        expect(page.get_by_test_id("device-commands")).to_be_visible(timeout=5_000)

        page.get_by_test_id("cmd-locate").click()
        assert w.reply() == frame("CR")
        located = page.locator("[data-testid=cmd-row][data-command=locate]")
        expect(located).to_have_attribute("data-status", "sent", timeout=5_000)
        w.send(frame("CR"))
        expect(located).to_have_attribute("data-status", "acknowledged", timeout=5_000)

        # No centre number configured: the officer must say which number the watch dials.
        page.get_by_test_id("cmd-call").click()
        expect(page.get_by_test_id("action-error")).to_be_visible()
        page.get_by_test_id("cmd-number").fill("12349")
        page.get_by_test_id("cmd-call").click()
        assert w.reply() == frame("CALL,12349")
        w.send(frame("CALL"))
        called = page.locator("[data-testid=cmd-row][data-command=call_back]")
        expect(called).to_have_attribute("data-status", "acknowledged", timeout=5_000)
        sent = page.locator("[data-testid=audit-entry][data-action=command_requested]")
        expect(sent).to_have_count(2, timeout=5_000)
        expect(sent.first).to_contain_text("officer-c")
        assert errors == []
