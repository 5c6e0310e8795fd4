"""The duty console on the alerts API's app: accounts, live stream, devices, evidence, page.

The console is served by the same HTTP server as the API (one port, one origin for the cookie).
The alerts API knows nothing of it but a seam (:class:`alerts.api.SessionAuth`); this module
plugs the console into an app built by :func:`alerts.api.create_app`:

- :func:`create_api_with_accounts` builds the API app accepting console sessions, with the
  login routes and the admin's unlock route (what tests of accounts need, and the first half of
  what the service serves);
- :func:`install_console` adds the live stream, the devices and evidence views and the page.

The page is plain files shipped in the package (``console/static/``, no build step at install
time). It talks to the same HTTP API as the dispatch platform (``/api/v1``), authenticated by the
console's session cookie instead of a bearer token, and to the live stream ``/api/v1/stream``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from alerts.api import create_app, require_principal
from alerts.auth import TokenTable
from alerts.device_commands import DeviceCommands
from alerts.probes import Liveness, ReadinessChecks
from alerts.store import AlertStore
from console.accounts import AccountStore
from console.devices import devices_router
from console.evidence import evidence_router
from console.live import ChangeFeed
from console.ratelimit import LoginLimiter, LoginLimits
from console.stream import stream_router
from console.web import LOGIN_BODY_LIMIT, ConsoleSessions, accounts_admin_router, login_router
from foundation.clock import Clock

STATIC = Path(str(resources.files("console").joinpath("static")))


def create_api_with_accounts(
        *, store: AlertStore, database_url: str, tokens: TokenTable, clock: Clock,
        accounts: AccountStore, secure_cookies: bool = True,
        login_limits: LoginLimits | None = None,
        on_change: Callable[[int], None] | None = None, liveness: Liveness | None = None,
        readiness: ReadinessChecks | None = None,
        commands: DeviceCommands | None = None) -> FastAPI:
    """The alerts API accepting console sessions beside bearer tokens, with ``/console/login``,
    ``/logout``, ``/me`` and the admin's unlock route (one login limiter for both).
    ``secure_cookies=False`` only for plain HTTP on a trusted host (demo, tests). The caller
    owns ``accounts`` (and closes it)."""
    app = create_app(store=store, database_url=database_url, tokens=tokens, clock=clock,
                     on_change=on_change, sessions=ConsoleSessions(accounts),
                     body_limits={"/console/login": LOGIN_BODY_LIMIT},
                     liveness=liveness, readiness=readiness, commands=commands)
    limiter = LoginLimiter(login_limits if login_limits is not None else LoginLimits(),
                           clock=clock)
    app.include_router(login_router(accounts, clock, secure_cookies=secure_cookies,
                                    limiter=limiter))
    app.include_router(accounts_admin_router(accounts, limiter, clock))
    return app


def install_console(app: FastAPI, *, database_url: str, feed: ChangeFeed,
                    offline_after_s: Mapping[str, float], tile_url: str | None) -> None:
    """Add the console's own routes to an app from :func:`create_api_with_accounts`: the live
    stream on ``feed`` (its owner starts and ends it), devices (``offline_after_s``: the
    supervision rule's thresholds, so the view and the alarms agree), evidence, the page."""
    app.include_router(stream_router(feed, require_principal))
    app.include_router(devices_router(database_url, require_principal,
                                      offline_after_s=dict(offline_after_s)))
    app.include_router(evidence_router(database_url, require_principal))
    mount_console(app, tile_url=tile_url)


def mount_console(app: FastAPI, *, tile_url: str | None) -> None:
    """Serve the page at ``/``, its assets at ``/static/``, and ``GET /console/config``."""
    router = APIRouter()

    @router.get("/console/config", include_in_schema=False)
    def config() -> dict[str, str | None]:
        return {"tile_url": tile_url, "language_default": "zh"}

    headers = {
        # Never cached: a new version of the page must reach a console left open all shift.
        "Cache-Control": "no-cache",
        "Content-Security-Policy": content_security_policy(tile_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    # HEAD too: uptime checkers ask with HEAD; the answer is GET's headers without the body.
    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=headers)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="console-static")


def content_security_policy(tile_url: str | None) -> str:
    """The page loads nothing but its own files (no inline script or style), talks only to
    its own origin, and cannot be framed (clickjacking an "acknowledge" button); map tiles,
    when configured, are the one outside origin allowed, for images only."""
    img = "'self' data:"
    if tile_url:
        parts = urlsplit(tile_url)
        img += f" {parts.scheme}://{parts.netloc}"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {img}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
