"""``/api/v1/docs`` works offline (issue #7): Swagger UI comes from the package, not a CDN.

Over HTTP: the page names no outside host, and every file it loads answers 200 from this
server. In Debian's headless Chromium with every request to another host blocked (and
counted): the page renders the API's operations.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright

from alerts.api import create_app
from alerts.auth import TokenTable
from alerts.store import AlertStore
from foundation.clock import ManualClock
from foundation.http_server import HttpServer


@pytest.fixture
def base(store: AlertStore, migrated_db: str) -> Iterator[str]:
    app = create_app(store=store, database_url=migrated_db, tokens=TokenTable(),
                     clock=ManualClock(0))
    with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield f"http://127.0.0.1:{server.port}"


def test_the_docs_page_loads_only_files_of_this_server(base: str) -> None:
    page = httpx.get(f"{base}/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(urls) == 3, urls                       # script, style, icon
    for url in urls:
        assert not urlsplit(url).netloc, f"{url} is on another host"
        asset = httpx.get(base + url)
        assert asset.status_code == 200 and len(asset.content) > 500, url
    assert "http://" not in page.text and "https://" not in page.text
    assert "validatorUrl" in page.text                # no badge from the public validator
    script = httpx.get(f"{base}/api/v1/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"]
    assert httpx.get(f"{base}/api/v1/docs/assets/swagger-ui.css").headers[
        "content-type"].startswith("text/css")


def test_the_docs_page_renders_the_operations_offline(base: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: scripts/test installs Debian's chromium package"
    outside: list[str] = []
    errors: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:                                          # what a network without CDNs does
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/api/v1/docs")
            page.wait_for_selector(".opblock", timeout=15_000)
            summaries = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    assert any("/api/v1/alerts/{alert_id}/resolve" in s.replace("\u200b", "")
               for s in summaries), summaries
    assert len(summaries) >= 6
    assert outside == [] and errors == []
