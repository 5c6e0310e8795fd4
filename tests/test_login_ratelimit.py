"""Login rate limiting (issue #7): the limiter on a manual clock, then ``POST /console/login``
against the real PostgreSQL through a real HttpServer.

Per account name and client address: 5 failures in 15 minutes, then 429 with Retry-After even
for the right password, the same for names that exist and names that do not; a success
forgives the failures; the same name from another address is not refused (nobody can lock an
officer out from elsewhere). An admin lifts a lockout (the API endpoint, or ``eldercare user
unlock`` in another process, through the database). Per client address: 30 attempts a minute,
whatever the names (spraying). Refusals are logged with the address and a keyed hash of the
name, never the name. Addresses other than 127.0.0.1 come through ``X-Forwarded-For``, which
uvicorn believes from 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.store import AlertStore
from console.accounts import AccountStore
from console.app import create_api_with_accounts
from console.ratelimit import Attempt, LoginLimiter, LoginLimits, Refused, address_key
from console.web import login_router
from eldercare.cli import main as cli_main
from eldercare.config import ConsoleConfig, load_config
from foundation.clock import ManualClock
from foundation.errors import ConfigError, StorageError
from foundation.http_server import HttpServer
from foundation.ports import free_port

T0 = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
PASSWORD = "correct horse battery"
WRONG = {"detail": "wrong username or password"}
TOO_MANY = {"detail": "too many login attempts; try again later"}
#: Cheap argon2id parameters: these tests log in dozens of times.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


# --- The limiter alone, on a manual clock --------------------------------------------------

def limiter(**limits: int) -> tuple[LoginLimiter, ManualClock]:
    clock = ManualClock(T0)
    return LoginLimiter(LoginLimits(**limits), clock=clock), clock


def try_(lim: LoginLimiter, name: str, address: str) -> tuple[str, int] | None:
    """None if the attempt may go on to the password check, else (scope, Retry-After)."""
    answer = lim.admit(name, address)
    if isinstance(answer, Attempt):
        return None
    return answer.scope, answer.retry_after_s


def test_defaults_are_5_failures_in_15_minutes_and_30_attempts_a_minute() -> None:
    assert ConsoleConfig().login_limits == LoginLimits(
        failures_per_name=5, name_window_s=900, attempts_per_address=30, address_window_s=60)
    custom = load_config(path=None, env={}, overrides={
        "console.login_limits.failures_per_name": 3,
        "console.login_limits.name_window_s": 600})
    assert custom.console.login_limits.failures_per_name == 3
    assert custom.console.login_limits.name_window_s == 600


@pytest.mark.parametrize(("option", "value", "message"), [
    ("failures_per_name", 0, "Expected `int` >= 1 - at `$.console.login_limits.failures_per_name`"),
    ("name_window_s", 86_401, "<= 86400 - at `$.console.login_limits.name_window_s`"),
    ("attempts_per_address", "30", "Expected `int`, got `str`"),
    ("per_minute", 5, "unknown field `per_minute` - at `$.console.login_limits`"),
])
def test_bad_limits_are_config_errors_naming_the_option(option: str, value: object,
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path=None, env={}, overrides={f"console.login_limits.{option}": value})


def test_five_failures_refuse_the_name_from_that_address_until_the_oldest_leaves() -> None:
    lim, clock = limiter()
    for _ in range(5):
        assert try_(lim, "officer-a", "198.51.100.1") is None     # each one then fails
        clock.advance(10)
    assert try_(lim, "officer-a", "198.51.100.1") == ("name", 900 - 50)
    # Only from there: a guesser elsewhere cannot lock the officer out.
    assert try_(lim, "officer-a", "203.0.113.9") is None
    assert try_(lim, "officer-b", "198.51.100.1") is None         # other names are not
    clock.advance(900 - 50 - 1)
    assert try_(lim, "officer-a", "198.51.100.1") == ("name", 1)
    clock.advance(1)
    assert try_(lim, "officer-a", "198.51.100.1") is None         # the first failure left
    assert try_(lim, "officer-a", "198.51.100.1") is not None     # ...and only that one


def test_a_success_forgives_the_names_failures() -> None:
    lim, _ = limiter()
    for _ in range(4):
        assert try_(lim, "officer-a", "198.51.100.1") is None
    attempt = lim.admit("officer-a", "198.51.100.1")
    assert isinstance(attempt, Attempt)
    lim.succeeded(attempt)
    for _ in range(5):
        assert try_(lim, "officer-a", "198.51.100.1") is None
    assert try_(lim, "officer-a", "198.51.100.1") is not None


def test_an_attempt_the_database_could_not_check_is_no_failure() -> None:
    lim, clock = limiter()
    for _ in range(3):
        assert try_(lim, "officer-a", "198.51.100.1") is None
        clock.advance(1)
    for _ in range(10):                                           # retrying through an outage
        attempt = lim.admit("officer-a", "198.51.100.1")
        assert isinstance(attempt, Attempt)
        lim.unchecked(attempt)
        clock.advance(1)
    assert try_(lim, "officer-a", "198.51.100.1") is None         # failures 4 and 5
    assert try_(lim, "officer-a", "198.51.100.1") is None
    assert try_(lim, "officer-a", "198.51.100.1") == ("name", 900 - 13)  # the first at T0


def test_refused_attempts_do_not_extend_the_lock() -> None:
    lim, clock = limiter()
    for _ in range(5):
        try_(lim, "officer-a", "198.51.100.1")
    for _ in range(50):                                           # hammering while refused
        clock.advance(10)
        assert try_(lim, "officer-a", "198.51.100.1") is not None
    clock.advance(400)
    assert try_(lim, "officer-a", "198.51.100.1") is None


def test_one_address_may_try_30_times_a_minute_whatever_the_names() -> None:
    lim, clock = limiter()
    for i in range(30):                                           # spraying: one try per name
        assert try_(lim, f"user-{i}", "198.51.100.1") is None
    assert try_(lim, "user-30", "198.51.100.1") == ("address", 60)
    assert try_(lim, "user-30", "198.51.100.2") is None           # another address is not
    clock.advance(60)
    assert try_(lim, "user-31", "198.51.100.1") is None


def test_an_address_refusal_does_not_count_against_the_name() -> None:
    lim, clock = limiter(attempts_per_address=2)
    assert try_(lim, "officer-a", "198.51.100.1") is None
    assert try_(lim, "officer-a", "198.51.100.1") is None
    for _ in range(10):
        assert try_(lim, "officer-a", "198.51.100.1") == ("address", 60)
    clock.advance(60)
    for _ in range(2):                                            # 2 + 2 = 4 failures
        assert try_(lim, "officer-a", "198.51.100.1") is None
    clock.advance(60)
    assert try_(lim, "officer-a", "198.51.100.1") is None         # the fifth
    assert try_(lim, "officer-a", "198.51.100.1") == ("name", 900 - 120)


def test_a_success_forgives_only_the_failures_from_its_own_address() -> None:
    lim, _ = limiter()
    for _ in range(4):
        assert try_(lim, "officer-a", "203.0.113.66") is None     # someone guessing
    attempt = lim.admit("officer-a", "198.51.100.1")              # the officer logs in
    assert isinstance(attempt, Attempt)
    lim.succeeded(attempt)
    assert try_(lim, "officer-a", "203.0.113.66") is None         # the guesser's fifth...
    assert try_(lim, "officer-a", "203.0.113.66") == ("name", 900)


def test_forgive_lifts_a_names_lockout_from_every_address_but_later_failures_count() -> None:
    lim, clock = limiter()
    for address in ("198.51.100.1", "203.0.113.9"):
        for _ in range(5):
            try_(lim, "officer-a", address)
    for _ in range(5):
        try_(lim, "officer-b", "198.51.100.1")
    clock.advance(30)
    assert lim.forgive("officer-a", upto_ms=clock.now_ms()) == 10
    assert lim.forgive("officer-a", upto_ms=clock.now_ms()) == 0   # nothing left to forgive
    assert try_(lim, "officer-b", "198.51.100.1") == ("name", 900 - 30)   # others stay locked
    for _ in range(5):
        assert try_(lim, "officer-a", "198.51.100.1") is None
    assert try_(lim, "officer-a", "198.51.100.1") == ("name", 900)  # failures after count again
    # Forgiving up to an earlier time leaves the later failures alone.
    assert lim.forgive("officer-a", upto_ms=clock.now_ms() - 1) == 0


@pytest.mark.parametrize(("address", "key"), [
    ("198.51.100.7", "198.51.100.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("testclient", "testclient"),
    ("x" * 500, "x" * 64),
])
def test_ipv6_addresses_count_by_their_64(address: str, key: str) -> None:
    assert address_key(address) == key


def test_a_host_cannot_dodge_the_address_limit_by_rotating_its_ipv6_address() -> None:
    lim, _ = limiter(attempts_per_address=3)
    for i in range(3):
        assert try_(lim, f"u{i}", f"2001:db8::{i + 1}") is None
    assert try_(lim, "u3", "2001:db8::ffff") == ("address", 60)


def test_memory_is_bounded_and_expired_counts_are_dropped() -> None:
    clock = ManualClock(T0)
    lim = LoginLimiter(LoginLimits(), clock=clock, max_tracked=100)
    for i in range(250):
        try_(lim, f"user-{i}", f"198.51.100.{i % 250}")
    names, addresses = lim.tracked()
    assert names <= 100 and addresses <= 100
    clock.advance(901)
    try_(lim, "late", "203.0.113.1")
    assert lim.tracked() == (1, 1)


def test_names_are_tagged_with_a_key_of_this_process() -> None:
    a, _ = limiter()
    b, _ = limiter()
    assert a.tag("officer-a") == a.tag("officer-a") != b.tag("officer-a")
    assert "officer" not in a.tag("officer-a") and len(a.tag("officer-a")) == 16
    assert a.tag("\ud800") != a.tag("")           # a lone surrogate from JSON is no crash
    refused = a.admit("x", "198.51.100.1")
    for _ in range(5):
        refused = a.admit("x", "198.51.100.1")
    assert isinstance(refused, Refused) and refused.tag == a.tag("x")


# --- Over HTTP -----------------------------------------------------------------------------

@dataclass
class Login:
    """An app with console accounts, served; ``post`` logs in as if from ``address``."""

    base: str
    clock: ManualClock
    clients: list[httpx.Client] = field(default_factory=list)

    def post(self, username: str, password: str = PASSWORD,
             address: str = "198.51.100.1") -> httpx.Response:
        c = httpx.Client(base_url=self.base, timeout=10)
        self.clients.append(c)
        return c.post("/console/login", json={"username": username, "password": password},
                      headers={"X-Forwarded-For": address})


@pytest.fixture
def accounts(migrated_db: str) -> Iterator[AccountStore]:
    with AccountStore(migrated_db, hasher=CHEAP) as store:
        store.add_user("officer-a", PASSWORD, role="officer", regions=["371002"])
        store.add_user("officer-b", PASSWORD, role="officer", regions=["371002"])
        yield store


@pytest.fixture
def login(store: AlertStore, migrated_db: str, accounts: AccountStore) -> Iterator[Login]:
    clock = ManualClock(T0)
    app = create_api_with_accounts(store=store, database_url=migrated_db, tokens=TokenTable(),
        clock=clock, accounts=accounts, secure_cookies=False)
    with HttpServer(app, host="127.0.0.1", port=0) as server:
        login = Login(f"http://127.0.0.1:{server.port}", clock)
        yield login
        for c in login.clients:
            c.close()


def test_the_sixth_attempt_on_a_name_is_429_even_with_the_right_password(
        login: Login, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(5):
        r = login.post("officer-a", "wrong password", address="203.0.113.50")
        assert (r.status_code, r.json()) == (401, WRONG)
        login.clock.advance(1)
    caplog.set_level(logging.INFO, logger="console")
    r = login.post("officer-a", PASSWORD, address="203.0.113.50")
    assert (r.status_code, r.json()) == (429, TOO_MANY)
    assert r.headers["retry-after"] == str(15 * 60 - 5)
    assert "set-cookie" not in r.headers
    [refusal] = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert refusal.name == "console.web"
    assert "203.0.113.50" in refusal.getMessage() and "per name" in refusal.getMessage()
    assert all("officer-a" not in rec.getMessage() for rec in caplog.records)
    assert login.post("officer-b", address="203.0.113.50").status_code == 200   # other names
    login.clock.advance(15 * 60 - 5)
    assert login.post("officer-a", address="203.0.113.50").status_code == 200  # window passed


def test_a_guesser_elsewhere_cannot_lock_the_officer_out(login: Login) -> None:
    for _ in range(20):          # an attacker who knows the name from an audit trail
        login.post("officer-a", "wrong password", address="203.0.113.66")
    assert login.post("officer-a", PASSWORD, address="203.0.113.66").status_code == 429
    # The officer, at the duty room's address, logs in as usual, with a typo first.
    assert login.post("officer-a", "typo", address="198.51.100.1").status_code == 401
    assert login.post("officer-a", PASSWORD, address="198.51.100.1").status_code == 200
    # ...which forgives the officer's own typo, not the attacker's failures.
    assert login.post("officer-a", PASSWORD, address="203.0.113.66").status_code == 429


def test_a_429_does_not_say_whether_the_account_exists(login: Login) -> None:
    answers: dict[str, list[httpx.Response]] = {}
    for name in ("officer-a", "nobody-here"):
        answers[name] = [login.post(name, "wrong password") for _ in range(6)]
    real, ghost = answers["officer-a"], answers["nobody-here"]
    assert [r.status_code for r in real] == [r.status_code for r in ghost] == [401] * 5 + [429]
    assert real[-1].content == ghost[-1].content
    assert real[-1].headers["retry-after"] == ghost[-1].headers["retry-after"] == "900"


def test_a_successful_login_resets_the_names_count(login: Login) -> None:
    for _ in range(4):
        assert login.post("officer-a", "wrong password").status_code == 401
    assert login.post("officer-a").status_code == 200
    for _ in range(5):
        assert login.post("officer-a", "wrong password").status_code == 401
    assert login.post("officer-a").status_code == 429


def test_spraying_from_one_address_is_refused_after_30_attempts_a_minute(login: Login) -> None:
    for i in range(30):
        assert login.post(f"guess-{i}", "Summer2026!", address="192.0.2.66").status_code == 401
    r = login.post("officer-a", PASSWORD, address="192.0.2.66")
    assert (r.status_code, r.json()) == (429, TOO_MANY)
    assert r.headers["retry-after"] == "60"
    assert login.post("officer-a", PASSWORD, address="192.0.2.67").status_code == 200
    login.clock.advance(60)
    assert login.post("officer-b", PASSWORD, address="192.0.2.66").status_code == 200


def test_the_limits_come_from_the_router_argument(store: AlertStore,
                                                  accounts: AccountStore) -> None:
    clock = ManualClock(T0)
    app = FastAPI()
    app.include_router(login_router(accounts, clock, secure_cookies=False, limits=LoginLimits(
        failures_per_name=2, name_window_s=30)))
    with HttpServer(app, host="127.0.0.1", port=0) as server, httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        def post(password: str) -> httpx.Response:
            return c.post("/console/login", json={"username": "officer-a",
                                                  "password": password})
        assert [post("wrong password").status_code for _ in range(3)] == [401, 401, 429]
        assert post(PASSWORD).headers["retry-after"] == "30"
        clock.advance(30)
        assert post(PASSWORD).status_code == 200


class DatabaseDown:
    """An account store whose database is unreachable."""

    def login(self, username: str, password: str, *, now_ms: int) -> None:
        raise StorageError("console accounts: connection refused")


def test_logins_the_database_could_not_check_do_not_lock_the_name() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with AlertStore(dead) as store:
        app = create_api_with_accounts(store=store, database_url=dead, tokens=TokenTable(),
            clock=ManualClock(T0), accounts=cast(AccountStore, DatabaseDown()),
            secure_cookies=False)
        with HttpServer(app, host="127.0.0.1", port=0) as server:
            answers = [httpx.post(f"http://127.0.0.1:{server.port}/console/login",
                                  json={"username": "officer-a", "password": PASSWORD})
                       for _ in range(8)]
    assert [r.status_code for r in answers] == [503] * 8


def test_429_is_in_the_openapi_document(login: Login) -> None:
    doc = httpx.get(f"{login.base}/api/v1/openapi.json").json()
    answer = doc["paths"]["/console/login"]["post"]["responses"]["429"]
    assert "Retry-After" in answer["headers"]


# --- Lifting a lockout ---------------------------------------------------------------------

@dataclass
class Unlocking:
    """A served app with console accounts and a bearer token per role."""

    login: Login
    tokens: dict[str, str]
    accounts: AccountStore

    def unlock(self, name: str, role: str = "admin") -> httpx.Response:
        return httpx.post(f"{self.login.base}/api/v1/console-users/{name}/unlock",
                          headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=10)

    def lock_out(self, name: str, address: str = "198.51.100.1") -> None:
        for _ in range(5):
            assert self.login.post(name, "wrong password", address=address).status_code == 401
        assert self.login.post(name, address=address).status_code == 429


@pytest.fixture
def unlocking(store: AlertStore, migrated_db: str,
              accounts: AccountStore) -> Iterator[Unlocking]:
    tokens = {role: new_token()[0] for role in ("officer", "supervisor", "admin", "dispatch")}
    table = TokenTable([TokenEntry(name=f"token-{role}", token_sha256=hash_token(t),
                                   role=role, regions=["*"])  # type: ignore[arg-type]
                        for role, t in tokens.items()])
    # Near the wall clock: `eldercare user unlock` stamps the unlock with the real time.
    clock = ManualClock(int(time.time() * 1000) - 60_000)
    app = create_api_with_accounts(store=store, database_url=migrated_db, tokens=table,
        clock=clock, accounts=accounts, secure_cookies=False)
    with HttpServer(app, host="127.0.0.1", port=0) as server:
        login = Login(f"http://127.0.0.1:{server.port}", clock)
        yield Unlocking(login, tokens, accounts)
        for c in login.clients:
            c.close()


def test_an_admin_lifts_a_lockout_from_every_address_at_once(unlocking: Unlocking) -> None:
    u = unlocking
    u.lock_out("officer-a", "198.51.100.1")
    u.lock_out("officer-a", "198.51.100.2")
    u.lock_out("officer-b")
    r = u.unlock("officer-a")
    assert r.status_code == 204, r.text
    assert u.login.post("officer-a", address="198.51.100.1").status_code == 200
    assert u.login.post("officer-a", address="198.51.100.2").status_code == 200
    assert u.login.post("officer-b").status_code == 429           # only the name unlocked
    # Failures after the unlock count again.
    u.login.clock.advance(1)
    u.lock_out("officer-a", "198.51.100.1")


def test_only_admins_may_unlock_and_only_existing_users(unlocking: Unlocking) -> None:
    u = unlocking
    u.lock_out("officer-a")
    for role in ("officer", "supervisor", "dispatch"):
        r = u.unlock("officer-a", role)
        assert (r.status_code, r.json()) == (403, {"detail": "only an admin may do this"}), role
    assert u.login.post("officer-a").status_code == 429
    assert u.unlock("nobody-here").status_code == 404
    assert u.unlock("not a name!").status_code == 422
    assert httpx.post(f"{u.login.base}/api/v1/console-users/officer-a/unlock").status_code == 401


def test_an_unlock_from_another_process_reaches_the_running_service(
        unlocking: Unlocking, migrated_db: str) -> None:
    u = unlocking
    u.lock_out("officer-a")
    # `eldercare user unlock` runs in its own process, with its own AccountStore: the running
    # service hears of it through the database, at the next attempt.
    assert cli_main(["user", "unlock", "officer-a", "--database-url", migrated_db]) == 0
    assert u.login.post("officer-a").status_code == 200
    assert cli_main(["user", "unlock", "nobody-here", "--database-url", migrated_db]) == 2


def test_an_unlock_forgives_only_what_was_counted_before_it(unlocking: Unlocking) -> None:
    u = unlocking
    u.lock_out("officer-a")
    u.accounts.unlock("officer-a", now_ms=u.login.clock.now_ms())
    u.login.clock.advance(1)
    # The next attempt is let through (the unlock is newer than the failures)...
    assert u.login.post("officer-a", "wrong password").status_code == 401
    # ...and a stale unlock does not wipe the failures made after it.
    for _ in range(4):
        assert u.login.post("officer-a", "wrong password").status_code == 401
    assert u.login.post("officer-a").status_code == 429
