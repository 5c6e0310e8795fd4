"""Authentication on every HTTP route (issue #7), read off the app the service really serves.

The routes are enumerated from the FastAPI app that :class:`~alerts.service.AlertService`
builds (alerts API, console login, live stream, devices, evidence, the console page), not
from a list kept here: a route added later without ``require_principal`` fails
:func:`test_every_route_but_the_open_ones_refuses_a_caller_without_credentials`. The few open
routes are listed with the reason each may be open, and must still exist.

Also here: the roles the API distinguishes (``resolve``: an officer may not take over someone
else's claim; unlocking a console user's login: admins only), and the session cookie's
attributes as the configuration sets them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount, Route

from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.service import AlertService
from detectors.events import Event
from eldercare.app import HttpFront
from eldercare.config import load_config
from foundation.clock import ManualClock

A = "371002"
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
PASSWORD = "correct horse battery"

#: Routes that answer without credentials, and why they may. Everything else must refuse.
OPEN: dict[str, str] = {
    "/api/v1/health": "liveness for load balancers; touches nothing",
    "/healthz": "the same liveness, where Kubernetes probes look",
    "/readyz": "readiness: names of checks and pass/fail, no data",
    "/api/v1/openapi.json": "the API's description; no data",
    "/api/v1/docs": "the page that shows that description",
    "/api/v1/docs/assets": "that page's script, style and icon (Swagger UI, from the package)",
    "/console/login": "the way in (rate limited: tests/test_login_ratelimit.py)",
    "/": "the console page's shell: static HTML, no data",
    "/static": "the page's scripts, styles and translations",
    "/console/config": "the page's settings: map tile URL, default language",
}
#: Token holders and console users, by role.
ROLES = ("officer", "supervisor", "admin", "clerk")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Served:
    """The service's HTTP app, running, with a token per role and console users per role."""

    app: FastAPI
    base: str
    service: AlertService
    tokens: dict[str, str]
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        c = httpx.Client(base_url=self.base, timeout=10)
        self.clients.append(c)
        return c

    def bearer(self, role: str) -> httpx.Client:
        c = self.client()
        c.headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return c

    def login(self, username: str) -> tuple[httpx.Client, httpx.Response]:
        c = self.client()
        r = c.post("/console/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c, r

    def open_alert(self, device: str) -> int:
        event = Event(device_id=device, type="sos", ts=DAY, severity="critical",
                      region=A, wearer_id="W-" + device, lat=37.5, lon=122.1)
        (change,) = self.service.store.fold([event], now_ms=DAY)
        return change.alert_id


@pytest.fixture
def serve(migrated_db: str) -> Iterator[Callable[..., Served]]:
    """``serve(**config_overrides)``: the HTTP app the service builds for that configuration
    (the composition root's HttpFront on an AlertService)."""
    services: list[tuple[AlertService, HttpFront]] = []
    served: list[Served] = []

    def make(**overrides: object) -> Served:
        config = load_config(path=None, env={}, overrides={
            "database.url": migrated_db, "api.port": 0, "alerts.mqtt_publish": False,
            "console.secure_cookies": False, **overrides})
        tokens = {role: new_token()[0] for role in (*ROLES, "dispatch")}
        table = TokenTable([TokenEntry(name=f"token-{role}", token_sha256=hash_token(t),
                                       role=role, regions=["*"])  # type: ignore[arg-type]
                            for role, t in tokens.items()])
        clock = ManualClock(DAY + 60_000)
        service = AlertService(config.alerts, database_url=migrated_db,
                               timezone=config.detectors.timezone, clock=clock, channels=[])
        front = HttpFront(config, alerts=service, clock=clock, tokens=table)
        services.append((service, front))
        if len(services) == 1:    # one database: the users are made once
            assert front.accounts is not None
            for role in ROLES:
                for n in (1, 2):
                    front.accounts.add_user(f"{role}-{n}", PASSWORD, role=role, regions=[A])
        service.start()
        front.start()
        s = Served(front.app, f"http://127.0.0.1:{front.port}", service, tokens)
        served.append(s)
        return s

    yield make
    for s in served:
        for c in s.clients:
            c.close()
    for service, front in services:
        front.stop()
        service.stop()


def flat_routes(app: FastAPI) -> Iterator[tuple[str, set[str] | None, BaseRoute]]:
    """(path, methods, route) of every route, included routers flattened."""
    try:    # FastAPI >= 0.13x keeps included routers nested in app.routes
        from fastapi.routing import iter_route_contexts
    except ImportError:
        for route in app.routes:
            yield getattr(route, "path", ""), getattr(route, "methods", None), route
        return
    for context in iter_route_contexts(app.routes):
        yield context.path or "", context.methods, context.original_route


def routes(app: FastAPI) -> Iterator[tuple[str, str, BaseRoute]]:
    """(method, path, route) for every route of ``app``; mounts as ``GET`` of their path."""
    for path, methods, route in flat_routes(app):
        if isinstance(route, Mount):
            yield "GET", path, route
        elif isinstance(route, Route):       # APIRoute, and the docs pages FastAPI adds
            for method in sorted(methods or ()):
                yield method, path, route
        else:
            pytest.fail(f"a route of a kind this test does not know: {route!r};"
                        " teach it how to call one")


def concrete(path: str) -> str:
    """``path`` with every ``{parameter}`` filled with a value that passes validation."""
    return re.sub(r"\{[^}]+\}", "1", path)


def actors(s: Served, alert_id: int) -> set[str]:
    """Who appears in the alert's trail (the escalator, running, adds its own entries)."""
    return {entry["actor"] for entry in s.service.store.get(alert_id)["audit"]}


def closed_routes(app: FastAPI) -> list[tuple[str, str, BaseRoute]]:
    return [(m, p, r) for m, p, r in routes(app) if p not in OPEN]


def test_every_route_but_the_open_ones_refuses_a_caller_without_credentials(
        serve: Callable[..., Served]) -> None:
    s = serve()
    closed = closed_routes(s.app)
    paths = {p for _, p, _ in closed}
    # The enumeration sees the whole service, not just the alerts router.
    assert {"/api/v1/alerts", "/api/v1/stream", "/api/v1/devices", "/console/me",
            "/console/logout", "/api/v1/alerts/{alert_id}/evidence"} <= paths
    alert_id = s.open_alert("WT-1")
    wrong: list[dict[str, str]] = [
        {}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic b2ZmaWNlcg=="},
        {"Cookie": "ec_session=forged"}, {"Cookie": "ec_session="},
        {"Authorization": f"Bearer {s.tokens['admin']}x"}]
    c = s.client()
    for method, path, route in closed:
        for headers in wrong:
            r = c.request(method, concrete(path), headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
            assert "set-cookie" not in r.headers
    assert actors(s, alert_id) == {"system"}            # nobody acted on the alert


def test_every_state_changing_route_refuses_a_session_without_its_csrf_token(
        serve: Callable[..., Served]) -> None:
    s = serve()
    alert_id = s.open_alert("WT-2")
    session, _ = s.login("supervisor-1")
    csrf = session.headers.pop("X-CSRF-Token")
    unsafe = [(m, p) for m, p, _ in closed_routes(s.app) if m in UNSAFE]
    assert ("POST", "/api/v1/alerts/{alert_id}/resolve") in unsafe
    for method, path in unsafe:
        for headers in ({}, {"X-CSRF-Token": csrf[:-1]}, {"X-CSRF-Token": ""}):
            r = session.request(method, concrete(path).replace("/1/", f"/{alert_id}/"),
                                headers=headers, json={"outcome": "safe", "note": "x"})
            assert (r.status_code, r.json()) == (403, {"detail": "missing or wrong CSRF token"}), (
                method, path, headers)
    assert actors(s, alert_id) == {"system"}
    assert session.get("/console/me").status_code == 200      # the session itself still works


def test_the_open_routes_exist_and_carry_no_data(serve: Callable[..., Served]) -> None:
    s = serve()
    present = {p for _, p, _ in routes(s.app)}
    assert set(OPEN) <= present, f"stale entries in OPEN: {set(OPEN) - present}"
    c = s.client()
    assert c.get("/api/v1/health").json() == {"status": "ok", "failed_workers": []}
    assert set(c.get("/console/config").json()) == {
        "tile_url", "tile_attribution", "tile_coord_system", "tile_max_zoom", "tile_subdomains",
        "language_default"}
    assert c.get("/").headers["content-type"].startswith("text/html")
    assert c.post("/console/login", json={}).status_code == 401


# --- Roles ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "may_take_over"), [
    ("officer", False), ("supervisor", True), ("admin", True)])
def test_only_supervisors_admins_and_dispatch_may_resolve_someone_elses_claim(
        serve: Callable[..., Served], role: str, may_take_over: bool) -> None:
    s = serve()
    holder, _ = s.login("officer-2")
    for credentials in ("session", "token"):
        alert_id = s.open_alert(f"WT-{role}-{credentials}")
        path = f"/api/v1/alerts/{alert_id}"
        assert holder.post(f"{path}/acknowledge").status_code == 200
        caller = s.login(f"{role}-1")[0] if credentials == "session" else s.bearer(role)
        r = caller.post(f"{path}/resolve", json={"outcome": "safe"})
        if may_take_over:
            assert r.status_code == 200, (credentials, r.text)
            assert r.json()["resolved_by"] in {f"{role}-1", f"token-{role}"}
        else:
            assert r.status_code == 409, (credentials, r.text)
            assert r.json()["owner"] == "officer-2" and r.json()["status"] == "acknowledged"
            # ...but the officer may note, and resolve what is unclaimed or their own.
            assert caller.post(f"{path}/notes", json={"note": "seen"}).status_code == 200
            own = s.open_alert(f"WT-own-{credentials}")
            assert caller.post(f"/api/v1/alerts/{own}/resolve",
                               json={"outcome": "false_alarm"}).status_code == 200


def test_only_admins_may_unlock_a_console_user(serve: Callable[..., Served]) -> None:
    s = serve()
    path = "/api/v1/console-users/officer-2/unlock"
    for role in ("officer", "supervisor"):
        session, _ = s.login(f"{role}-1")
        assert session.post(path).status_code == 403, role
        assert s.bearer(role).post(path).status_code == 403, role
    assert s.bearer("dispatch").post(path).status_code == 403
    admin, _ = s.login("admin-1")
    assert admin.post(path).status_code == 204
    assert s.bearer("admin").post(path).status_code == 204


def test_a_dispatch_token_may_resolve_someone_elses_claim(serve: Callable[..., Served]) -> None:
    s = serve()
    holder, _ = s.login("officer-2")
    alert_id = s.open_alert("WT-dispatch")
    assert holder.post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 200
    r = s.bearer("dispatch").post(f"/api/v1/alerts/{alert_id}/resolve",
                                  json={"outcome": "ambulance"})
    assert r.status_code == 200 and r.json()["resolved_by"] == "token-dispatch"


# --- The session cookie --------------------------------------------------------------------

def cookie_attributes(header: str) -> tuple[str, dict[str, str]]:
    """The cookie's ``name=value`` and its attributes (lower-case names)."""
    first, *rest = (part.strip() for part in header.split(";"))
    attributes = {}
    for part in rest:
        key, _, value = part.partition("=")
        attributes[key.lower()] = value
    return first, attributes


@pytest.mark.parametrize(("overrides", "secure", "max_age"), [
    ({}, False, 12 * 3600),
    ({"console.secure_cookies": True}, True, 12 * 3600),
    ({"console.session_hours": 8.5}, False, 8 * 3600 + 1800),
])
def test_the_session_cookie_is_httponly_strict_host_only_and_lives_one_shift(
        serve: Callable[..., Served], overrides: dict[str, object], secure: bool,
        max_age: int) -> None:
    s = serve(**overrides)
    c, r = s.login("officer-1")
    value, attributes = cookie_attributes(r.headers["set-cookie"])
    assert value.startswith("ec_session=") and len(value) > len("ec_session=") + 40
    expected = {"httponly": "", "samesite": "strict", "path": "/", "max-age": str(max_age)}
    if secure:
        expected["secure"] = ""
    # No Domain (the cookie stays with this host only) and no Expires beside Max-Age.
    assert attributes == expected
    assert len(r.headers.get_list("set-cookie")) == 1
    # Sent by hand: httpx, like a browser, keeps a Secure cookie from plain http://.
    c.cookies.clear()
    c.headers["Cookie"] = value
    # Only login sets it: other answers never refresh or widen it.
    me = c.get("/console/me")
    assert me.status_code == 200 and "set-cookie" not in me.headers
    logout = c.post("/console/logout")
    assert logout.status_code == 204
    cleared, gone = cookie_attributes(logout.headers["set-cookie"])
    assert cleared in {"ec_session=", 'ec_session=""'}
    assert gone["max-age"] == "0" and gone["path"] == "/" and gone["samesite"] == "strict"
    assert "httponly" in gone and ("secure" in gone) is secure
