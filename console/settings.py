"""The ``[console]`` section: the duty console served at ``/`` by the API's HTTP server."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from console.ratelimit import LoginLimits


class ConsoleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The duty console (issue #6; docs/console.md), served by the API's HTTP server at ``/``."""

    enabled: bool = True
    #: XYZ map tile URL template (``https://tiles.example/{z}/{x}/{y}.png``, ``{s}`` for a
    #: subdomain) for production; without one the map draws zones, positions and tracks on a
    #: plain background and fetches nothing (the demo default).
    tile_url: Annotated[str, Meta(pattern=r"^https?://[^/?#]+")] | None = None
    #: Credit line the tile provider requires (``© 高德地图``, ``© OpenStreetMap contributors``).
    tile_attribution: Annotated[str, Meta(max_length=300)] | None = None
    #: The tiles' coordinate system. Amap/Gaode and Tencent tiles are drawn in GCJ-02 (a GPS
    #: position drawn on them as is lands 300-600 m off); Tianditu (CGCS2000, within centimetres
    #: of WGS-84) and OSM-style tiles are WGS-84. Positions and zones are stored in WGS-84 and the
    #: console converts for display and back when zones are drawn (docs/console.md).
    tile_coord_system: Literal["wgs84", "gcj02"] = "wgs84"
    tile_max_zoom: Annotated[int, Meta(ge=1, le=22)] = 18
    #: Letters or digits that replace ``{s}`` in ``tile_url`` (Amap: ``"1234"``).
    tile_subdomains: Annotated[str, Meta(pattern=r"^[a-z0-9]{1,8}\Z")] = "abc"
    #: Mark the session cookie Secure (HTTPS only). Keep on in production behind TLS; off only
    #: for plain-HTTP local use (demo, tests).
    secure_cookies: bool = True
    session_hours: Annotated[float, Meta(gt=0, le=24)] = 12.0
    idle_minutes: Annotated[float, Meta(gt=0, le=24 * 60)] = 30.0
    #: ``[console.login_limits]``: failed logins per account name and client address (5 in
    #: 15 min; an admin lifts a lockout with ``eldercare user unlock``) and attempts
    #: per client address (30 a minute) before POST /console/login answers 429 (docs/console.md).
    login_limits: LoginLimits = LoginLimits()

    def tiles(self) -> MapTiles:
        return MapTiles(url=self.tile_url, attribution=self.tile_attribution,
                        coord_system=self.tile_coord_system, max_zoom=self.tile_max_zoom,
                        subdomains=self.tile_subdomains)


class MapTiles(msgspec.Struct, frozen=True, kw_only=True):
    """The console map's tile source as the page receives it (``GET /console/config``)."""

    url: str | None = None
    attribution: str | None = None
    coord_system: Literal["wgs84", "gcj02"] = "wgs84"
    max_zoom: int = 18
    subdomains: str = "abc"

    def origins(self) -> list[str]:
        """The origins tiles are fetched from, ``{s}`` expanded (a Content-Security-Policy
        source cannot hold a placeholder); none without a URL."""
        if not self.url:
            return []
        parts = urlsplit(self.url)
        hosts = ([parts.netloc.replace("{s}", sd) for sd in self.subdomains]
                 if "{s}" in parts.netloc else [parts.netloc])
        return [f"{parts.scheme}://{host}" for host in hosts]
