"""The ``[console]`` section: the duty console served at ``/`` by the API's HTTP server."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from console.ratelimit import LoginLimits


class ConsoleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The duty console (issue #6; docs/console.md), served by the API's HTTP server at ``/``."""

    enabled: bool = True
    #: XYZ map tile URL template (``https://tiles.example/{z}/{x}/{y}.png``) for production;
    #: without one the map draws zones, positions and tracks on a plain background.
    tile_url: str | None = None
    #: Mark the session cookie Secure (HTTPS only). Keep on in production behind TLS; off only
    #: for plain-HTTP local use (demo, tests).
    secure_cookies: bool = True
    session_hours: Annotated[float, Meta(gt=0, le=24)] = 12.0
    idle_minutes: Annotated[float, Meta(gt=0, le=24 * 60)] = 30.0
    #: ``[console.login_limits]``: failed logins per account name and client address (5 in
    #: 15 min; an admin lifts a lockout with ``eldercare user unlock``) and attempts
    #: per client address (30 a minute) before POST /console/login answers 429 (docs/console.md).
    login_limits: LoginLimits = LoginLimits()
