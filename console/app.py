"""Serving the duty console: its static page and the one setting the page reads at start.

The page is plain files shipped in the package (``console/static/``, no build step at install
time). It talks to the same HTTP API as the dispatch platform (``/api/v1``), authenticated by the
console's session cookie instead of a bearer token, and to the live stream ``/api/v1/stream``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(resources.files("console").joinpath("static")))


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
