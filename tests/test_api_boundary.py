"""What the HTTP server refuses at its boundary (issue #7; alerts/http_boundary.py,
alerts/http_types.py), found by an outside review and a fuzzer:

- bodies over their route's limit are 413 before they are read whole (an unauthenticated
  400 MB login took the process from 238 MB to 946 MB), declared or streamed;
- 422s never echo input and never fail to render (1e999, NaN, lone surrogates were 500s);
- text that cannot be stored (U+0000, lone surrogates) is 422, not a 503 "retry later";
- malformed JSON of every kind is 422 (non-UTF-8, 5,000 digits, deep nesting were 400s);
- notes: the schema and the validation agree; times need RFC 3339 with a zone;
- HEAD answers like GET for ``/`` and ``/api/v1/health``; the console's cookie routes declare
  their security scheme.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema_rs
import pytest
from argon2 import PasswordHasher

from alerts.api import API_BODY_LIMIT, require_principal
from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.http_boundary import BodyLimit
from alerts.store import AlertStore
from console.accounts import AccountStore
from console.app import create_api_with_accounts, mount_console
from console.devices import devices_router
from console.web import LOGIN_BODY_LIMIT
from detectors.events import Event
from foundation.clock import ManualClock
from foundation.http_server import HttpServer
from tests.http_raw import raw_post

DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


@dataclass
class Served:
    base: str
    token: str
    store: AlertStore
    port: int

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10,
                            headers={"Authorization": f"Bearer {self.token}"})

    def open_alert(self) -> int:
        event = Event(device_id="WT-1", type="sos", ts=DAY, severity="critical",
                      region="371002", wearer_id="W-1", lat=37.5, lon=122.1)
        (change,) = self.store.fold([event], now_ms=DAY)
        return change.alert_id


@pytest.fixture
def served(store: AlertStore, migrated_db: str) -> Iterator[Served]:
    token = new_token()[0]
    table = TokenTable([TokenEntry(name="dispatch", token_sha256=hash_token(token),
                                   role="dispatch", regions=["*"])])
    with AccountStore(migrated_db, hasher=CHEAP) as accounts:
        accounts.add_user("officer-a", PASSWORD, role="officer", regions=["371002"])
        app = create_api_with_accounts(store=store, database_url=migrated_db, tokens=table,
            clock=ManualClock(DAY), accounts=accounts, secure_cookies=False)
        app.include_router(devices_router(migrated_db, require_principal))
        mount_console(app)
        with HttpServer(app, host="127.0.0.1", port=0) as server:
            yield Served(f"http://127.0.0.1:{server.port}", token, store, server.port)


# --- Body limits ---------------------------------------------------------------------------

async def _call(middleware: BodyLimit, headers: list[tuple[bytes, bytes]],
                chunks: list[bytes]) -> tuple[int, dict[str, Any], int, bool]:
    """Run one request through ``middleware`` around an app that reads the whole body;
    (status, JSON answer, body messages handed out, whether the app ran)."""
    handed = 0
    ran = False

    async def receive() -> dict[str, Any]:
        nonlocal handed
        handed += 1
        return {"type": "http.request", "body": chunks[handed - 1],
                "more_body": handed < len(chunks)}

    async def app(scope: Any, receive_: Any, send: Any) -> None:
        nonlocal ran
        ran = True
        while (await receive_()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    middleware.app = app
    scope = {"type": "http", "method": "POST", "path": "/console/login", "headers": headers,
             "query_string": b""}
    await middleware(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), handed, ran


def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read() -> None:
    limit = BodyLimit(lambda *_: None, default=1000, paths={"/console/login": 100})  # type: ignore[arg-type]
    status, answer, handed, ran = asyncio.run(_call(
        limit, [(b"content-length", b"400000000")], [b"x" * 65536] * 10))
    assert (status, handed, ran) == (413, 0, False)
    assert answer == {"detail": "request body too large: at most 100 bytes"}


def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    limit = BodyLimit(lambda *_: None, default=1000, paths={"/console/login": 100})  # type: ignore[arg-type]
    status, _, handed, ran = asyncio.run(_call(limit, [], [b"x" * 40] * 1000))
    assert (status, handed, ran) == (413, 3, True)          # 120 bytes > 100: stop there
    assert asyncio.run(_call(limit, [], [b"x" * 50] * 2))[0] == 200    # exactly the limit


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_login_is_413_before_it_is_read_whole(served: Served,
                                                           chunked: bool) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss    # KiB, the peak so far
    answer, sent = raw_post(served.port, "/console/login", "", 400 * 2**20, chunked=chunked)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"detail": f"request body too large: at most {LOGIN_BODY_LIMIT}"
                                          " bytes"}
    # Refused after at most a few MB in flight, not 400 MB: and the process did not swell.
    assert sent < 16 * 2**20, sent
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_api_bodies_have_their_own_small_limit(served: Served) -> None:
    alert_id = served.open_alert()
    with served.client() as c:
        big = c.post(f"/api/v1/alerts/{alert_id}/notes", content=b" " * (API_BODY_LIMIT + 1),
                     headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["detail"].startswith("request body too")
        ok = c.post(f"/api/v1/alerts/{alert_id}/notes", json={"note": "x" * 2000})
        assert ok.status_code == 200
        # Unauthenticated callers are refused the same way: the limit comes first.
        anonymous = httpx.post(f"{served.base}/api/v1/alerts/{alert_id}/notes",
                               content=b"x" * (API_BODY_LIMIT + 1))
        assert anonymous.status_code == 413
    doc = httpx.get(f"{served.base}/api/v1/openapi.json").json()
    assert "413" in doc["paths"]["/console/login"]["post"]["responses"]
    assert "413" in doc["paths"]["/api/v1/alerts/{alert_id}/resolve"]["post"]["responses"]


# --- 422: no echo, no 500 ------------------------------------------------------------------

def _post_raw(served: Served, path: str, body: bytes, *, auth: bool = True) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {served.token}"
    return httpx.post(served.base + path, content=body, headers=headers, timeout=10)


def _assert_422(r: httpx.Response, secret: str | None = None) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    detail: list[dict[str, Any]] = r.json()["detail"]
    for error in detail:
        assert set(error) == {"loc", "msg", "type"}, error        # no input, no ctx
    if secret is not None:
        assert secret not in r.text
    return detail


@pytest.mark.parametrize("body", [
    rb'{"note": 1e999}', rb'{"note": -1e400}', rb'{"note": NaN}', rb'{"note": Infinity}',
    rb'{"note": "\ud800"}', rb'{"note": "ok", "\udfff": 1}', rb'{"note": ["\ud800", 1e999]}',
])
def test_values_json_cannot_carry_back_are_422_not_500(served: Served, body: bytes) -> None:
    alert_id = served.open_alert()
    _assert_422(_post_raw(served, f"/api/v1/alerts/{alert_id}/notes", body))
    assert _post_raw(served, f"/api/v1/alerts/{alert_id}/resolve",
                     rb'{"outcome": -1e400}').status_code == 422


@pytest.mark.parametrize("body", [
    rb'{"username": "officer-a", "password": "\ud800secret"}',
    rb'{"username": "officer-a", "password": "sec\u0000ret-hunter2"}',
    rb'{"username": "officer-a", "password": 1e999}',
    rb'{"username": "officer-a", "password": ["hunter2-secret"]}',
    rb'{"username": "\ud800", "password": "hunter2-secret"}',
])
def test_a_login_422_never_echoes_the_password(served: Served, body: bytes) -> None:
    detail = _assert_422(_post_raw(served, "/console/login", body, auth=False),
                         secret="secret")
    assert detail[0]["loc"][0] == "body"
    # And the right password still logs in (the limiter did not count these).
    r = httpx.post(f"{served.base}/console/login",
                   json={"username": "officer-a", "password": PASSWORD})
    assert r.status_code == 200


def test_text_with_nul_is_422_naming_the_field_never_a_503(served: Served) -> None:
    alert_id = served.open_alert()
    with served.client() as c:
        cases: list[tuple[str, dict[str, str | list[str]], list[str | int]]] = [
            ("/api/v1/alerts", {"region": "\x00"}, ["query", "region", 0]),
            ("/api/v1/devices", {"region": ["a", "b\x00"]}, ["query", "region", 1]),
            ("/api/v1/devices", {"after": "\x00"}, ["query", "after"])]
        for path, params, loc in cases:
            r = c.get(path, params=params)
            assert _assert_422(r)[0]["loc"] == loc, (path, r.text)
        r = c.post(f"/api/v1/alerts/{alert_id}/notes", json={"note": "call\x00back"})
        assert _assert_422(r)[0]["loc"] == ["body", "note"]
        r = c.post(f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "safe", "note": "\0"})
        assert _assert_422(r)[0]["type"] == "text_nul"
    assert not {"note", "resolved"} & {a["action"] for a in served.store.get(alert_id)["audit"]}


@pytest.mark.parametrize(("body", "why"), [
    (b'{"note": "\xff\xfe"}', "not UTF-8"),
    (b'\xff\xfe{\x00"\x00}\x00', "UTF-16"),
    (b'{"note": ' + b"9" * 5000 + b"}", "5,000 digits"),
    (b'{"note": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep nesting: over the limit"),
    (b'{"note": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "deep nesting"),
    (b'{"note": "x"', "truncated"),
])
def test_every_malformed_body_is_422_json_invalid(served: Served, body: bytes, why: str) -> None:
    alert_id = served.open_alert()
    r = _post_raw(served, f"/api/v1/alerts/{alert_id}/notes", body)
    if len(body) > API_BODY_LIMIT:
        assert r.status_code == 413, why
        return
    detail = _assert_422(r)
    assert detail[0]["type"] == "json_invalid" and detail[0]["loc"][0] == "body", why


def test_a_single_valued_query_parameter_given_twice_is_422(served: Served) -> None:
    with served.client() as c:
        for path, query in [("/api/v1/alerts", "limit=1&limit=500"),
                            ("/api/v1/alerts", "since=2026-03-02T02:00:00Z&limit=5&since=x"),
                            ("/api/v1/devices", "after=a&after=b")]:
            r = c.get(f"{path}?{query}")
            detail = _assert_422(r)
            assert detail[0]["type"] == "query_repeated", (path, r.text)
            assert detail[0]["loc"] == ["query", query.split("=")[0]]
        # Lists are repeated by design.
        assert c.get("/api/v1/alerts?region=371002&region=370102").status_code == 200
        assert c.get("/api/v1/alerts?status=open&status=resolved").status_code == 200


# --- Notes and times: the schema says what is accepted -------------------------------------

NOTES = ["a", " a ", "   ", "", "\t\n", "\u3000", "\u00a0x", "\x1c", "x" * 2000, "x" * 2001,
         " " * 1999 + "y", "\x00", "a\x00", "🙂", "\u2028"]


def test_the_note_schema_and_the_validation_agree(served: Served) -> None:
    doc = httpx.get(f"{served.base}/api/v1/openapi.json").json()
    schema = doc["components"]["schemas"]["NoteIn"]
    validator = jsonschema_rs.validator_for(schema)
    alert_id = served.open_alert()
    with served.client() as c:
        for note in NOTES:
            r = c.post(f"/api/v1/alerts/{alert_id}/notes", json={"note": note})
            assert r.status_code in (200, 422), r.text
            assert (r.status_code == 200) == validator.is_valid({"note": note}), repr(note)
        trail = [a["detail"].get("note") for a in served.store.get(alert_id)["audit"]
                 if a["action"] == "note"]
    assert trail[:2] == ["a", "a"]                # stored without the surrounding blanks


@pytest.mark.parametrize(("since", "status"), [
    ("2026-03-02T02:00:00Z", 200), ("2026-03-02T10:00:00.5+08:00", 200),
    ("2026-03-02t02:00:00z", 200),
    ("2026-03-02T02:00:00", 422), ("1772416800", 422), ("2026-03-02", 422),
    ("2026-03-02T02:00Z", 422), ("2026-03-02 02:00:00Z", 422), ("2026-03-02T02:00:00+0800", 422),
])
def test_times_must_be_rfc3339_with_a_zone(served: Served, since: str, status: int) -> None:
    with served.client() as c:
        r = c.get("/api/v1/alerts", params={"since": since})
    assert r.status_code == status, r.text
    if status == 422:
        assert _assert_422(r)[0]["loc"] == ["query", "since"]


# --- HEAD, and the cookie's security scheme ------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/api/v1/health"])
def test_head_answers_like_get_without_a_body(served: Served, path: str) -> None:
    get = httpx.get(served.base + path)
    head = httpx.head(served.base + path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


def test_the_console_cookie_routes_declare_their_security_scheme(served: Served) -> None:
    doc = httpx.get(f"{served.base}/api/v1/openapi.json").json()
    assert doc["components"]["securitySchemes"]["ConsoleSession"] == {
        "type": "apiKey", "in": "cookie", "name": "ec_session",
        "description": "The duty console's session (POST /console/login); POSTs must also"
                       " send X-CSRF-Token"}
    for path, method in (("/console/me", "get"), ("/console/logout", "post"),
                         ("/api/v1/alerts", "get")):
        assert {"ConsoleSession": []} in doc["paths"][path][method]["security"], path
    assert "security" not in doc["paths"]["/console/login"]["post"]

