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
from console.regions_api import PATH as REGIONS_PATH
from console.regions_api import REGIONS_BODY_LIMIT, regions_router
from console.registry_import_api import BODY_LIMITS as IMPORT_BODY_LIMITS
from console.registry_import_api import registry_import_router
from console.settings import MapTiles
from console.stream import stream_router
from console.web import LOGIN_BODY_LIMIT, ConsoleSessions, accounts_admin_router, login_router
from foundation.clock import Clock
from registry.idcard import IdCardVault

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
                     body_limits={"/console/login": LOGIN_BODY_LIMIT,
                                  REGIONS_PATH: REGIONS_BODY_LIMIT, **IMPORT_BODY_LIMITS},
                     liveness=liveness, readiness=readiness, commands=commands)
    limiter = LoginLimiter(login_limits if login_limits is not None else LoginLimits(),
                           clock=clock)
    app.include_router(login_router(accounts, clock, secure_cookies=secure_cookies,
                                    limiter=limiter))
    app.include_router(accounts_admin_router(accounts, limiter, clock))
    return app


def install_console(app: FastAPI, *, database_url: str, feed: ChangeFeed,
                    offline_after_s: Mapping[str, float], tiles: MapTiles,
                    vault: IdCardVault | None = None) -> None:
    """Add the console's own routes to an app from :func:`create_api_with_accounts`: the live
    stream on ``feed`` (its owner starts and ends it), devices (``offline_after_s``: the
    supervision rule's thresholds, so the view and the alarms agree), evidence, the page."""
    app.include_router(stream_router(feed, require_principal))
    app.include_router(devices_router(database_url, require_principal,
                                      offline_after_s=dict(offline_after_s)))
    app.include_router(evidence_router(database_url, require_principal))
    app.include_router(regions_router(database_url, require_principal))
    if vault is not None:   # wearer list import/export (ID-card numbers need the vault)
        app.include_router(registry_import_router(database_url, require_principal, vault=vault))
    mount_console(app, tiles=tiles)


NO_TILES = MapTiles()


def mount_console(app: FastAPI, *, tiles: MapTiles = NO_TILES) -> None:
    """Serve the page at ``/``, its assets at ``/static/`` (with the vendored map libraries,
    ``static/vendor/``), and ``GET /console/config`` (the map's tile source)."""
    router = APIRouter()

    @router.get("/console/config", include_in_schema=False)
    def config() -> dict[str, str | int | None]:
        return {"tile_url": tiles.url, "tile_attribution": tiles.attribution,
                "tile_coord_system": tiles.coord_system, "tile_max_zoom": tiles.max_zoom,
                "tile_subdomains": tiles.subdomains, "language_default": "zh"}

    headers = {
        # Never cached: a new version of the page must reach a console left open all shift.
        "Cache-Control": "no-cache",
        "Content-Security-Policy": content_security_policy(tiles),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    # HEAD too: uptime checkers ask with HEAD; the answer is GET's headers without the body.
    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=headers)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="console-static")


def content_security_policy(tiles: MapTiles) -> str:
    """The page loads nothing but its own files (no inline script or style; Leaflet and its
    drawing plugin are vendored under ``static/vendor/``), talks only to its own origin, and
    cannot be framed (clickjacking an "acknowledge" button); map tiles, when configured, are
    the one outside origin allowed (each ``{s}`` subdomain), for images only."""
    img = " ".join(["'self' data:", *tiles.origins()])
    return ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {img}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
