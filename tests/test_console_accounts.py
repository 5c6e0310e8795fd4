"""Duty console accounts, sessions and login (issue #6) against the real PostgreSQL, served by a
real HttpServer: argon2id storage, the cookie's attributes, one answer for every refused login,
region isolation and CSRF on the alerts API, idle and absolute expiry on a manual clock,
logout, the session token's hash in the database, and bearer tokens working as before."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher

from alerts.auth import Principal, TokenEntry, TokenTable, hash_token, new_token
from alerts.store import AlertStore
from console.accounts import AccountError, AccountStore
from console.app import create_api_with_accounts
from detectors.events import Event
from foundation.clock import ManualClock
from foundation.http_server import HttpServer

A, B = "371002", "370102"
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
PASSWORD = "correct horse battery"
MINUTE = 60.0
WRONG = {"detail": "wrong username or password"}
CSRF_REFUSED = {"detail": "missing or wrong CSRF token"}
#: Cheap argon2id parameters where a test only needs *a* hash (the default costs ~64 MiB).
CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def event(kind: str, *, region: str = A, wearer: str = "W-1", device: str = "WT-1") -> Event:
    return Event(device_id=device, type=kind, ts=DAY, severity="critical",  # type: ignore[arg-type]
                 region=region, wearer_id=wearer, lat=37.5, lon=122.1)


def lifecycle(store: AlertStore, alert_id: int) -> list[tuple[str, str]]:
    return [(a["actor"], a["action"]) for a in store.get(alert_id)["audit"]
            if a["action"] in {"opened", "acknowledged", "note", "resolved"}]


@dataclass
class Console:
    """A running app with console accounts, and helpers to act as its users."""

    base: str
    accounts: AccountStore
    store: AlertStore
    clock: ManualClock
    db: str
    bearer: str
    changes: list[int] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        c = httpx.Client(base_url=self.base, timeout=10)
        self.clients.append(c)
        return c

    def login(self, username: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
        """A client holding ``username``'s session cookie, and the session's CSRF token."""
        c = self.client()
        r = c.post("/console/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return c, r.json()["csrf_token"]

    def open(self, *events: Event) -> list[int]:
        return [ch.alert_id for ch in self.store.fold(list(events), now_ms=DAY)]

    def sessions(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as conn:
            return conn.execute("SELECT id_sha256, username, csrf_token, created_at,"
                                " last_seen_at, expires_at FROM console_sessions").fetchall()


@pytest.fixture
def console(store: AlertStore, migrated_db: str) -> Iterator[Console]:
    clock = ManualClock(DAY + 60_000)
    bearer = new_token()[0]
    tokens = TokenTable([TokenEntry(name="dispatch", token_sha256=hash_token(bearer),
                                    role="dispatch", regions=["*"])])
    with AccountStore(migrated_db) as accounts:
        accounts.add_user("officer-a", PASSWORD, role="officer", regions=[A],
                          display_name="张伟")
        accounts.add_user("officer-b", PASSWORD, role="officer", regions=[B], language="en")
        accounts.add_user("lead", PASSWORD, role="supervisor", regions=["*"])
        changes: list[int] = []
        app = create_api_with_accounts(store=store, database_url=migrated_db, tokens=tokens,
            clock=clock, on_change=changes.append, accounts=accounts, secure_cookies=False)
        with HttpServer(app, host="127.0.0.1", port=0) as server:
            c = Console(f"http://127.0.0.1:{server.port}", accounts, store, clock, migrated_db,
                        bearer, changes)
            yield c
            for client in c.clients:
                client.close()


# --- Storage of passwords and accounts -----------------------------------------------------

def test_passwords_are_stored_as_argon2id_and_never_in_plaintext(migrated_db: str) -> None:
    with AccountStore(migrated_db) as accounts:
        accounts.add_user("li.wei@371002", PASSWORD, role="officer", regions=[A])
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute("SELECT password_hash, t::text FROM console_users t"
                           " WHERE username = 'li.wei@371002'").fetchone()
        assert row is not None
        stored, whole_row = row
        assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")   # RFC 9106 defaults
        assert PASSWORD not in whole_row
        # The schema itself refuses a password that is not an argon2id hash.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO console_users (username, password_hash, role, regions)"
                         " VALUES ('x', %s, 'officer', '{1}')", (PASSWORD,))


@pytest.mark.parametrize(("username", "password", "fields", "message"), [
    ("a", "short", {}, "at least 10 characters"),
    ("a", "x" * 1025, {}, "at most 1024 characters"),
    ("bad name", PASSWORD, {}, "a username has 1 to 64"),
    ("x" * 65, PASSWORD, {}, "a username has 1 to 64"),
    ("system", PASSWORD, {}, "reserved"),
    ("a", PASSWORD, {"role": "dispatch"}, "role must be one of"),
    ("a", PASSWORD, {"regions": []}, "regions must be"),
    ("a", PASSWORD, {"regions": ["*", A]}, '["*"] alone'),
    ("a", PASSWORD, {"regions": ["Upper"]}, "regions must be"),
    ("a", PASSWORD, {"language": "fr"}, "language must be one of"),
    ("a", PASSWORD, {"display_name": "x" * 101}, "display name"),
    ("a", "ten chars \x00", {}, "valid text without NUL"),
    ("a", "ten chars \ud800", {}, "valid text without NUL"),
])
def test_account_rules_are_enforced(migrated_db: str, username: str, password: str,
                                    fields: dict[str, Any], message: str) -> None:
    kw: dict[str, Any] = {"role": "officer", "regions": [A]} | fields
    with AccountStore(migrated_db, hasher=CHEAP) as accounts:
        with pytest.raises(AccountError, match=re.escape(message)):
            accounts.add_user(username, password, **kw)
        accounts.add_user("taken", PASSWORD, role="officer", regions=[A])
        with pytest.raises(AccountError, match="already exists") as err:
            accounts.add_user("taken", PASSWORD, role="admin", regions=["*"])
        assert err.value.username == "taken"
        with pytest.raises(AccountError, match="no such user"):
            accounts.disable("nobody")
        with pytest.raises(AccountError, match="no such user"):
            accounts.set_password("nobody", PASSWORD)
        with pytest.raises(AccountError, match="no such user"):
            accounts.unlock("nobody", now_ms=0)


def test_a_password_that_is_not_text_is_a_wrong_password_not_a_crash(migrated_db: str) -> None:
    # A JSON string may hold a lone surrogate; argon2 could not encode it (a 500 before).
    with AccountStore(migrated_db, hasher=CHEAP) as accounts:
        accounts.add_user("officer-s", PASSWORD, role="officer", regions=[A])
        for password in ("\ud800", PASSWORD + "\udfff", "\x00"):
            assert accounts.login("officer-s", password, now_ms=0) is None
        assert accounts.login("officer-s", PASSWORD, now_ms=0) is not None
        assert accounts.unlocked_at_ms("officer-s") is None
        accounts.unlock("officer-s", now_ms=1_772_416_800_123)
        assert accounts.unlocked_at_ms("officer-s") == 1_772_416_800_123
        assert accounts.unlocked_at_ms("nobody") is None
        assert accounts.unlocked_at_ms("not a name!") is None


def test_every_login_costs_one_verification_and_hashes_are_upgraded(migrated_db: str) -> None:
    verified: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(str(hash))
            return super().verify(hash, password)

    with AccountStore(migrated_db, hasher=CHEAP) as old:
        old.add_user("wang", PASSWORD, role="officer", regions=[A])
        old.add_user("gone", PASSWORD, role="officer", regions=[A])
        old.disable("gone")
    counting = Counting(time_cost=2, memory_cost=16 * 1024, parallelism=1)
    with AccountStore(migrated_db, hasher=counting) as accounts:
        # Unknown, disabled, malformed: verified against a dummy hash, so the time is the same.
        for name, password in (("nobody", PASSWORD), ("gone", PASSWORD), ("bad name", PASSWORD),
                               ("wang", "wrong password")):
            assert accounts.login(name, password, now_ms=DAY) is None
        assert len(verified) == 4
        assert verified[0] == verified[1] == verified[2]
        assert verified[3].startswith("$argon2id$v=19$m=8192,t=1,p=1$")
        # The right password under old parameters: logged in, and the hash is upgraded.
        session = accounts.login("wang", PASSWORD, now_ms=DAY)
        assert session is not None and session.principal == Principal("wang", "officer", (A,))
        with psycopg.connect(migrated_db) as conn:
            row = conn.execute("SELECT password_hash FROM console_users"
                               " WHERE username = 'wang'").fetchone()
        assert row is not None and row[0].startswith("$argon2id$v=19$m=16384,t=2,p=1$")
        assert accounts.login("wang", PASSWORD, now_ms=DAY) is not None
        assert session.token is not None and session.token not in repr(session)
        assert session.csrf_token not in repr(session)


# --- Login over HTTP -----------------------------------------------------------------------

def test_login_sets_an_httponly_strict_cookie_and_me_returns_the_user(console: Console) -> None:
    c = console.client()
    r = c.post("/console/login", json={"username": "officer-a", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == {"name": "officer-a", "display_name": "张伟", "role": "officer",
                            "regions": [A], "language": "zh"}
    assert len(body["csrf_token"]) >= 43
    assert r.headers["cache-control"] == "no-store"
    attributes = [a.strip() for a in r.headers["set-cookie"].split(";")]
    name, token = attributes[0].split("=", 1)
    assert name == "ec_session" and len(token) >= 43
    assert {a.lower() for a in attributes[1:]} == {
        "httponly", "max-age=43200", "path=/", "samesite=strict"}   # no Secure: plain HTTP
    me = c.get("/console/me")
    assert me.status_code == 200 and me.json() == body
    assert me.headers["cache-control"] == "no-store"
    other, _ = console.login("officer-b")
    assert other.get("/console/me").json()["user"]["language"] == "en"
    assert console.client().get("/console/me").status_code == 401


def test_secure_cookies_are_marked_secure(console: Console) -> None:
    app = create_api_with_accounts(store=console.store, database_url=console.db,
        tokens=TokenTable(), clock=console.clock, accounts=console.accounts)     # secure by default
    with HttpServer(app, host="127.0.0.1", port=0) as server:
        r = httpx.post(f"http://127.0.0.1:{server.port}/console/login",
                       json={"username": "lead", "password": PASSWORD})
    assert r.status_code == 200
    assert "secure" in {a.strip().lower() for a in r.headers["set-cookie"].split(";")}


def test_wrong_password_unknown_and_disabled_users_get_one_identical_401(
        console: Console) -> None:
    console.accounts.add_user("retired", PASSWORD, role="officer", regions=[A])
    console.accounts.disable("retired")
    c = console.client()
    answers = [c.post("/console/login", json=body) for body in (
        {"username": "officer-a", "password": "wrong password"},
        {"username": "no-such-user", "password": PASSWORD},
        {"username": "retired", "password": PASSWORD},
        {"username": "Officer-A", "password": PASSWORD},
        {"username": "", "password": ""},
        {"username": "officer-a", "password": PASSWORD + "x" * 2000},
    )]
    for r in answers:
        assert (r.status_code, r.json()) == (401, WRONG)
        assert "set-cookie" not in r.headers
    assert len({r.content for r in answers}) == 1
    assert console.sessions() == []
    # JSON only: an HTML form of another site cannot log anyone in.
    form = c.post("/console/login", content=f"username=officer-a&password={PASSWORD}",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and "set-cookie" not in form.headers


def test_disabling_a_user_ends_their_sessions(console: Console) -> None:
    c, _ = console.login("officer-a")
    assert c.get("/api/v1/alerts").status_code == 200
    console.accounts.disable("officer-a")
    r = c.get("/api/v1/alerts")
    assert r.status_code == 401 and r.json() == {"detail": "session expired or invalid; log in"
                                                            " again"}
    assert console.client().post("/console/login", json={
        "username": "officer-a", "password": PASSWORD}).json() == WRONG


def test_setting_a_password_ends_sessions_and_the_new_one_works(console: Console) -> None:
    c, _ = console.login("officer-a")
    console.accounts.set_password("officer-a", "a new long password")
    assert c.get("/console/me").status_code == 401
    assert console.client().post("/console/login", json={
        "username": "officer-a", "password": PASSWORD}).status_code == 401
    console.login("officer-a", "a new long password")


# --- The alerts API with a session ---------------------------------------------------------

def test_a_session_sees_only_the_users_regions(console: Console) -> None:
    mine, = console.open(event("sos"))
    theirs, = console.open(event("sos", region=B, wearer="W-9", device="WT-9"))
    c, csrf = console.login("officer-a")
    listed = c.get("/api/v1/alerts")
    assert listed.status_code == 200, listed.text
    assert [a["id"] for a in listed.json()["alerts"]] == [mine]
    assert [a["id"] for a in c.get("/api/v1/alerts", params={"region": B}).json()["alerts"]] == []
    assert c.get(f"/api/v1/alerts/{mine}").status_code == 200
    hidden = c.get(f"/api/v1/alerts/{theirs}")
    assert (hidden.status_code, hidden.json()) == (404, {"detail": f"alert {theirs} not found"})
    ack = c.post(f"/api/v1/alerts/{theirs}/acknowledge", headers={"X-CSRF-Token": csrf})
    assert ack.status_code == 404
    lead, _ = console.login("lead")
    assert {a["id"] for a in lead.get("/api/v1/alerts").json()["alerts"]} == {mine, theirs}


def test_posts_with_a_cookie_need_the_csrf_token_and_record_the_username(
        console: Console) -> None:
    alert_id, = console.open(event("sos"))
    c, csrf = console.login("officer-a")
    other_csrf = console.login("officer-b")[1]
    path = f"/api/v1/alerts/{alert_id}"
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": csrf[:-1]},
                    {"X-CSRF-Token": other_csrf}, {"X-CSRF-Token": "令牌".encode()}):
        for action, body in (("acknowledge", {"note": "x"}), ("resolve", {"outcome": "safe"}),
                             ("notes", {"note": "x"})):
            r = c.post(f"{path}/{action}", json=body, headers=headers)  # type: ignore[arg-type]
            assert (r.status_code, r.json()) == (403, CSRF_REFUSED), (headers, action)
    assert lifecycle(console.store, alert_id) == [("system", "opened")]
    assert console.store.get(alert_id)["status"] == "open" and console.changes == []
    console.clock.advance(30)
    ack = c.post(f"{path}/acknowledge", json={"note": "calling the daughter"},
                 headers={"X-CSRF-Token": csrf})
    assert ack.status_code == 200, ack.text
    assert ack.json()["acknowledged_by"] == "officer-a" and console.changes == [alert_id]
    assert c.post(f"{path}/notes", json={"note": "no answer"},
                  headers={"X-CSRF-Token": csrf}).status_code == 200
    assert c.post(f"{path}/resolve", json={"outcome": "safe"},
                  headers={"X-CSRF-Token": csrf}).json()["resolved_by"] == "officer-a"
    assert lifecycle(console.store, alert_id) == [
        ("system", "opened"), ("officer-a", "acknowledged"), ("officer-a", "note"),
        ("officer-a", "resolved")]
    trail = c.get(path).json()["audit"]
    assert {e["actor"] for e in trail if e["action"] == "acknowledged"} == {"officer-a"}


def test_bearer_tokens_work_unchanged_beside_sessions(console: Console) -> None:
    alert_id, = console.open(event("sos"))
    bearer = {"Authorization": f"Bearer {console.bearer}"}
    c = console.client()
    assert c.get("/api/v1/alerts", headers=bearer).status_code == 200
    r = c.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=bearer)   # no CSRF needed
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "dispatch"
    # A wrong bearer token is refused even beside a valid session: it decides alone.
    session, _ = console.login("officer-a")
    r = session.get("/api/v1/alerts", headers={"Authorization": "Bearer nope"})
    assert (r.status_code, r.json()) == (401, {"detail": "missing or invalid bearer token"})
    assert r.headers["www-authenticate"] == "Bearer"
    nothing = console.client().get("/api/v1/alerts")
    assert (nothing.status_code, nothing.json()) == (
        401, {"detail": "missing or invalid bearer token"})
    forged = console.client().get("/api/v1/alerts", headers={"Cookie": "ec_session=forged"})
    assert forged.status_code == 401
    doc = c.get("/api/v1/openapi.json").json()
    assert {"/console/login", "/console/logout", "/console/me"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["ConsoleSession"] == {
        "type": "apiKey", "in": "cookie", "name": "ec_session",
        "description": doc["components"]["securitySchemes"]["ConsoleSession"]["description"]}


# --- Expiry, logout, and what the database holds -------------------------------------------

def test_an_idle_session_expires_after_30_minutes(console: Console) -> None:
    c, _ = console.login("officer-a")
    console.clock.advance(29 * MINUTE)
    assert c.get("/api/v1/alerts").status_code == 200        # activity moves the idle clock
    console.clock.advance(29 * MINUTE)
    assert c.get("/console/me").status_code == 200
    console.clock.advance(30 * MINUTE)
    r = c.get("/api/v1/alerts")
    assert (r.status_code, r.json()) == (401, {"detail": "session expired or invalid; log in"
                                                         " again"})
    assert console.sessions() == []                          # deleted when met
    assert c.get("/console/me").status_code == 401


def test_a_session_ends_after_12_hours_however_active(console: Console) -> None:
    c, _ = console.login("officer-a")
    for _ in range(12 * 3 - 1):                              # a request every 20 minutes
        console.clock.advance(20 * MINUTE)
        assert c.get("/console/me").status_code == 200
    console.clock.advance(20 * MINUTE - 1)
    assert c.get("/api/v1/alerts").status_code == 200        # 1 s before the end of the shift
    console.clock.advance(1)
    assert c.get("/api/v1/alerts").status_code == 401


def test_the_idle_clock_is_written_at_most_once_a_minute(console: Console) -> None:
    c, _ = console.login("officer-a")
    (first,) = console.sessions()
    console.clock.advance(59)
    assert c.get("/console/me").status_code == 200
    assert console.sessions() == [first]
    console.clock.advance(1)
    assert c.get("/console/me").status_code == 200
    (after,) = console.sessions()
    assert after[4] == datetime.fromtimestamp(console.clock.now_ms() / 1000, UTC)
    assert after[5] == first[5]                               # the absolute end never moves


def test_logout_needs_the_csrf_token_and_ends_the_session(console: Console) -> None:
    c, csrf = console.login("officer-a")
    token = c.cookies["ec_session"]
    refused = c.post("/console/logout")
    assert (refused.status_code, refused.json()) == (403, CSRF_REFUSED)
    assert c.get("/console/me").status_code == 200
    r = c.post("/console/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    cleared = {a.strip().lower() for a in r.headers["set-cookie"].split(";")}
    assert 'ec_session=""' in cleared and "max-age=0" in cleared
    replay = console.client()
    for path in ("/console/me", "/api/v1/alerts"):
        assert replay.get(path, headers={"Cookie": f"ec_session={token}"}).status_code == 401
    assert console.client().post("/console/logout").status_code == 401
    assert console.sessions() == []


def test_only_the_sha256_of_the_session_token_is_stored(console: Console) -> None:
    c, csrf = console.login("officer-a")
    token = c.cookies["ec_session"]
    (row,) = console.sessions()
    assert row[0] == hashlib.sha256(token.encode()).hexdigest()
    assert row[1:3] == ("officer-a", csrf)
    assert row[5] - row[3] == (datetime.fromtimestamp(12 * 3600, UTC)
                               - datetime.fromtimestamp(0, UTC))
    with psycopg.connect(console.db) as conn:
        dump = conn.execute("SELECT string_agg(s::text, ' ') FROM console_sessions s"
                            ).fetchone()
    assert dump is not None and token not in dump[0]
    # A second login from the same browser replaces its session instead of adding one.
    assert c.post("/console/login", json={"username": "officer-a",
                                          "password": PASSWORD}).status_code == 200
    (again,) = console.sessions()
    assert again[0] != row[0] and c.cookies["ec_session"] != token
