"""The duty console in Firefox (issue #6: "works in current Chromium and Firefox").

Playwright drives only its own patched Firefox, which cannot be downloaded here, so this smoke
test drives Debian's Firefox ESR over WebDriver BiDi with puppeteer-core
(``tests/firefox/console_smoke.mjs``; ``scripts/test`` installs both). The full browser suite runs
in Chromium (tests/test_console_browser.py); here: log in, the live stream connects, an SOS
published over MQTT appears, the officer claims it and the audit trail shows the claim.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from console.accounts import AccountStore
from eldercare.app import Application
from eldercare.config import Config
from schemas import device_topic
from tests.conftest import Publisher, now_ms

HERE = Path(__file__).parent / "firefox"
PASSWORD = "correct horse battery"


def test_the_console_works_in_firefox(make_config: Callable[..., Config], tmp_path: Path,
                                      region: str, db_url: str, publisher: Publisher) -> None:
    node, firefox = shutil.which("node"), shutil.which("firefox-esr") or shutil.which("firefox")
    if node is None or not (HERE / "node_modules" / "puppeteer-core").is_dir():
        pytest.skip("Node.js or tests/firefox/node_modules missing (scripts/test installs them"
                    " when npm is present)")
    assert firefox, "Firefox is missing: scripts/test installs Debian's firefox-esr"
    (tmp_path / "registry.yaml").write_text(
        f'wearers:\n  - {{id: W-F, name: 李桂兰, region: "{region}",'
        ' devices: [{id: WT-F, kind: watch}]}\n')
    config = make_config(**{"registry": str(tmp_path / "registry.yaml"),
                            "console.secure_cookies": False})
    with Application(config) as svc:
        with AccountStore(db_url) as accounts:
            accounts.add_user("officer-f", PASSWORD, role="officer", regions=[region])
        assert svc.http is not None
        url = f"http://127.0.0.1:{svc.http.port}/"
        proc = subprocess.Popen([node, "console_smoke.mjs", url, "officer-f", PASSWORD, firefox],
                                cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            ready = proc.stdout.readline().strip()
            assert ready == "READY", ready + (proc.stderr.read() if proc.stderr else "")
            publisher.publish(device_topic(region, "WT-F"),
                              json.dumps({"type": "sos", "ts": now_ms()}).encode())
            proc.stdin.write("published\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = out.split()
    assert "OK" in lines, out
    shown_ms = int(lines[lines.index("SHOWN") + 1])
    assert shown_ms < 1000, f"the SOS took {shown_ms} ms to appear in Firefox"
