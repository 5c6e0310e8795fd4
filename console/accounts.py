"""Duty console accounts and sessions (issue #6): who may log in, and who a browser is.

Accounts live in ``console_users`` (``console/sql/0007_console.sql``): a username (also the actor
written to the alert audit trail), a role (``officer``, ``supervisor``, ``admin``, or ``clerk``,
the enrolment clerk who reads alerts but does not act on them: docs/registry-database.md), the
regions the person sees (``["*"]`` = all, as in the API tokens file; each region covers the
division codes below it: :mod:`schemas.regions`), the interface language, and an
argon2id password hash. Sessions live in ``console_sessions``.

Security choices, and why:

- **argon2id** (``argon2-cffi``, its RFC 9106 low-memory defaults): human-chosen passwords need a
  slow, memory-hard, salted hash so that a leaked table resists dictionary attacks. When the
  hasher's parameters change, the stored hash is upgraded at the next successful login. The
  database refuses any ``password_hash`` that is not ``$argon2id$...``.
- **No username oracle**: :meth:`AccountStore.login` always runs one argon2 verification; for an
  unknown or disabled user it verifies against a dummy hash made with the same parameters, so
  the answer's timing does not reveal which usernames exist, and the caller gets ``None`` in
  every failing case (one message for all of them).
- **Sessions**: the token is 256 random bits from :mod:`secrets`, handed to the browser once
  (the cookie); only its SHA-256 is stored, so a database dump grants no session (no slow hash
  needed: 256 random bits cannot be guessed from their hash). A fresh token at every login
  defeats session fixation. Each session has a random CSRF token that state-changing requests
  must echo in a header (``console/web.py``).
- **Expiry**: an absolute lifetime (default 12 h, one shift: staff log in again at handover) and
  an idle timeout (default 30 min: an unattended screen stops being a way in). The idle clock
  (``last_seen_at``) is written at most once a minute, so a busy console does not turn every
  request into a write; the idle timeout is therefore exact to within a minute. Disabling a user
  or setting their password ends all their sessions; a session also stops working at once when
  its user is disabled, and picks up role and region changes on its next request.
- **Time is an input**: every method that needs the time takes ``now_ms``.
- **Login lockouts** are counted in the service's memory (:mod:`console.ratelimit`); what is
  stored here is when an admin last lifted a user's lockout (``login_unlocked_at``, migration
  0008): :meth:`AccountStore.unlock` writes it from any process (``eldercare user unlock``),
  and the login endpoint reads it when it is about to refuse that name
  (:meth:`AccountStore.unlocked_at_ms`).

Errors: :class:`AccountError` (an :class:`~foundation.errors.EldercareError`) for a request the
rules refuse (bad username, short password, duplicate or unknown user); psycopg errors become
:class:`~foundation.errors.StorageError`. Nothing here logs passwords, tokens or usernames.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast, get_args

import psycopg
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from alerts.auth import Principal
from foundation.errors import EldercareError, StorageError
from foundation.pool import LazyPool, PooledStore
from schemas.regions import ALL_REGIONS

log = logging.getLogger(__name__)

ConsoleRole = Literal["officer", "supervisor", "admin", "clerk"]
Language = Literal["zh", "en"]
ROLES: Final = frozenset(get_args(ConsoleRole))
LANGUAGES: Final = frozenset(get_args(Language))

#: Usernames: the API tokens' name rule, since both end up as audit actors.
USERNAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_REGION_PATTERN: Final = re.compile(r"\*|[a-z0-9-]{1,32}")
#: The service's own audit actor (``alerts.audit.SYSTEM``).
_RESERVED_NAMES: Final = frozenset({"system"})
MIN_PASSWORD: Final = 10
#: An upper bound so that nobody can make the server hash megabytes per attempt.
MAX_PASSWORD: Final = 1024
MAX_DISPLAY_NAME: Final = 100

DEFAULT_SESSION_LIFETIME_S: Final = 12 * 3600
DEFAULT_IDLE_TIMEOUT_S: Final = 30 * 60
#: ``last_seen_at`` is refreshed at most this often (a write per request would be waste).
TOUCH_INTERVAL_MS: Final = 60_000


class AccountError(EldercareError):
    """An account request the rules refuse; ``username`` names the account concerned."""

    def __init__(self, message: str, *, username: str | None = None) -> None:
        super().__init__(message)
        self.username = username


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A logged-in console user.

    ``token`` (the cookie's value) is set only in the result of :meth:`AccountStore.login`: it
    is never stored, so it cannot be read back. Neither token appears in ``repr``.
    """

    principal: Principal
    display_name: str | None
    language: Language
    expires_at_ms: int
    csrf_token: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def hash_session_token(token: str) -> str:
    """The lowercase hex SHA-256 of a session token: its id in ``console_sessions``."""
    return hashlib.sha256(token.encode()).hexdigest()


def validate_password(password: str) -> None:
    """Raise AccountError unless ``password`` has MIN_PASSWORD to MAX_PASSWORD characters of
    valid text (no NUL, no lone surrogate: neither can be typed at a login form)."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must have at most {MAX_PASSWORD} characters")
    if "\x00" in password or not _encodable(password):
        raise AccountError("the password must be valid text without NUL characters")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate_user(username: str, role: str, regions: Sequence[str],
                   display_name: str | None, language: str) -> None:
    if not USERNAME_PATTERN.fullmatch(username):
        raise AccountError("a username has 1 to 64 of A-Z a-z 0-9 _ . @ -")
    if username in _RESERVED_NAMES:
        raise AccountError(f"the username {username!r} is reserved for the service",
                           username=username)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(sorted(ROLES))}", username=username)
    if not regions or not all(_REGION_PATTERN.fullmatch(r) for r in regions):
        raise AccountError("regions must be region codes (a-z 0-9 -) or *", username=username)
    if ALL_REGIONS in regions and len(regions) > 1:
        # "*" beside codes is almost certainly a mistake; refuse to guess (as the tokens file).
        raise AccountError('regions must be ["*"] alone or a list of region codes',
                           username=username)
    if language not in LANGUAGES:
        raise AccountError(f"language must be one of {', '.join(sorted(LANGUAGES))}",
                           username=username)
    if display_name is not None and len(display_name) > MAX_DISPLAY_NAME:
        raise AccountError(f"a display name has at most {MAX_DISPLAY_NAME} characters",
                           username=username)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


_SESSION_SQL: Final = """
SELECT s.last_seen_at, s.expires_at, s.csrf_token,
       u.username, u.role, u.regions, u.display_name, u.language
FROM console_sessions s JOIN console_users u ON u.username = s.username
WHERE s.id_sha256 = %s AND NOT u.disabled
"""


class AccountStore(PooledStore):
    """Console users and sessions in PostgreSQL at ``url``; thread-safe (pooled connections).

    ``session_lifetime_s`` and ``idle_timeout_s`` bound every session; ``hasher`` must make
    argon2id hashes (tests pass cheaper parameters; production keeps the default).
    """

    def __init__(self, url: str, *, session_lifetime_s: int = DEFAULT_SESSION_LIFETIME_S,
                 idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S,
                 hasher: PasswordHasher | None = None, pool_size: int = 4) -> None:
        if session_lifetime_s <= 0 or idle_timeout_s <= 0:
            raise ValueError("session lifetime and idle timeout must be positive")
        self.hasher = hasher if hasher is not None else PasswordHasher()
        if self.hasher.type is not Type.ID:
            raise ValueError("console passwords are hashed with argon2id")
        self.session_lifetime_s = session_lifetime_s
        self.idle_timeout_s = idle_timeout_s
        # Unknown and disabled users are verified against this, at the real hash's cost.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self._db = LazyPool(url, name="eldercare-console", max_size=pool_size)

    # --- Transactions ----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        try:
            with self._db.transaction() as conn:
                yield conn
        except psycopg.errors.UndefinedTable as exc:
            raise StorageError("console tables are missing: run `eldercare migrate`") from exc
        except psycopg.Error as exc:
            raise StorageError(f"console accounts: {exc}".strip()) from exc

    # --- Accounts --------------------------------------------------------------------------

    def add_user(self, username: str, password: str, *, role: str, regions: Sequence[str],
                 display_name: str | None = None, language: str = "zh") -> None:
        """Create an account. Raises AccountError for bad fields or an existing username."""
        display_name = (display_name.strip() or None) if display_name is not None else None
        _validate_user(username, role, regions, display_name, language)
        validate_password(password)
        password_hash = self.hasher.hash(password)   # outside the transaction: ~50 ms of CPU
        with self._transaction() as conn:
            row = conn.execute(
                "INSERT INTO console_users (username, display_name, password_hash, role,"
                " regions, language) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (username) DO NOTHING RETURNING username",
                (username, display_name, password_hash, role, list(regions), language),
            ).fetchone()
        if row is None:
            raise AccountError("a user with that name already exists", username=username)
        log.info("console user added (role %s)", role)

    def set_password(self, username: str, password: str) -> None:
        """Replace the user's password and end all their sessions (a reset after a leak must
        lock out whoever holds them). Raises AccountError for a short password or no user."""
        validate_password(password)
        password_hash = self.hasher.hash(password)
        with self._transaction() as conn:
            found = conn.execute(
                "UPDATE console_users SET password_hash = %s WHERE username = %s"
                " RETURNING username", (password_hash, username)).fetchone()
            conn.execute("DELETE FROM console_sessions WHERE username = %s", (username,))
        if found is None:
            raise AccountError("no such user", username=username)
        log.info("console user password set; their sessions ended")

    def disable(self, username: str) -> None:
        """Refuse the user's logins from now on and end their sessions. Raises AccountError if
        there is no such user. Accounts are disabled, not deleted: audit trails name them."""
        with self._transaction() as conn:
            found = conn.execute(
                "UPDATE console_users SET disabled = true WHERE username = %s"
                " RETURNING username", (username,)).fetchone()
            conn.execute("DELETE FROM console_sessions WHERE username = %s", (username,))
        if found is None:
            raise AccountError("no such user", username=username)
        log.info("console user disabled; their sessions ended")

    def unlock(self, username: str, *, now_ms: int) -> None:
        """Record that the user's login lockout was lifted at ``now_ms``: failed logins counted
        until then no longer refuse the name (the service reads this at its next refusal).
        Raises AccountError if there is no such user."""
        with self._transaction() as conn:
            found = conn.execute(
                "UPDATE console_users SET login_unlocked_at = %s WHERE username = %s"
                " RETURNING username", (_at(now_ms), username)).fetchone()
        if found is None:
            raise AccountError("no such user", username=username)
        log.info("console user's login lockout lifted")

    def unlocked_at_ms(self, username: str) -> int | None:
        """When the user's login lockout was last lifted, or ``None`` (never, or no such
        user)."""
        if not USERNAME_PATTERN.fullmatch(username):
            return None
        with self._transaction() as conn:
            row = conn.execute("SELECT login_unlocked_at FROM console_users WHERE username = %s",
                               (username,)).fetchone()
        return _ms(row[0]) if row is not None and row[0] is not None else None

    # --- Sessions --------------------------------------------------------------------------

    def login(self, username: str, password: str, *, now_ms: int) -> Session | None:
        """A new session if ``password`` is the enabled user's password, else ``None``.

        Every call costs one argon2 verification, whether the user exists or not.
        """
        row = None
        if USERNAME_PATTERN.fullmatch(username) and len(password) <= MAX_PASSWORD:
            with self._transaction() as conn:
                row = conn.execute(
                    "SELECT password_hash, disabled, role, regions, display_name, language"
                    " FROM console_users WHERE username = %s", (username,)).fetchone()
        usable = row is not None and not row[1]
        stored: str = row[0] if usable and row is not None else self._dummy_hash
        if not (self._verify(stored, password) and usable and row is not None):
            return None
        _, _, role, regions, display_name, language = row
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires_ms = now_ms + self.session_lifetime_s * 1000
        new_hash = self.hasher.hash(password) if self.hasher.check_needs_rehash(stored) else None
        with self._transaction() as conn:
            self._purge(conn, now_ms)
            if new_hash is not None:
                # Guarded by the old hash: a concurrent set_password wins.
                conn.execute("UPDATE console_users SET password_hash = %s"
                             " WHERE username = %s AND password_hash = %s",
                             (new_hash, username, stored))
            conn.execute(
                "INSERT INTO console_sessions (id_sha256, username, csrf_token, created_at,"
                " last_seen_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (hash_session_token(token), username, csrf, _at(now_ms), _at(now_ms),
                 _at(expires_ms)))
        return Session(principal=Principal(username, cast(ConsoleRole, role), tuple(regions)),
                       display_name=display_name, language=language, expires_at_ms=expires_ms,
                       csrf_token=csrf, token=token)

    def session(self, token: str, *, now_ms: int) -> Session | None:
        """The live session of ``token`` (without the token), or ``None`` if it is unknown,
        expired, idle too long, or its user is disabled. Refreshes the idle clock."""
        if not token or len(token) > 256:   # ours are 43 characters; don't hash junk
            return None
        digest = hash_session_token(token)
        with self._transaction() as conn:
            row = conn.execute(_SESSION_SQL, (digest,)).fetchone()
            if row is None:
                return None
            last_seen, expires_at, csrf, username, role, regions, display_name, language = row
            last_seen_ms, expires_ms = _ms(last_seen), _ms(expires_at)
            if now_ms >= expires_ms or now_ms - last_seen_ms >= self.idle_timeout_s * 1000:
                conn.execute("DELETE FROM console_sessions WHERE id_sha256 = %s", (digest,))
                return None
            if now_ms - last_seen_ms >= TOUCH_INTERVAL_MS:
                conn.execute("UPDATE console_sessions SET last_seen_at = %s"
                             " WHERE id_sha256 = %s AND last_seen_at < %s",
                             (_at(now_ms), digest, _at(now_ms)))
        return Session(principal=Principal(username, cast(ConsoleRole, role), tuple(regions)),
                       display_name=display_name, language=language, expires_at_ms=expires_ms,
                       csrf_token=csrf)

    def logout(self, token: str) -> None:
        """End the session of ``token`` (nothing happens if there is none)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM console_sessions WHERE id_sha256 = %s",
                         (hash_session_token(token),))

    def _purge(self, conn: psycopg.Connection[tuple[Any, ...]], now_ms: int) -> None:
        # Expired sessions are deleted when met, and all of them at each login: the table
        # stays the size of the staff on duty without a background job.
        conn.execute("DELETE FROM console_sessions WHERE expires_at <= %s OR last_seen_at <= %s",
                     (_at(now_ms), _at(now_ms - self.idle_timeout_s * 1000)))

    def _verify(self, stored: str, password: str) -> bool:
        try:
            # surrogatepass: a lone surrogate (possible in JSON) cannot be any stored password,
            # but must cost the same verification as a wrong one, not an encoding error.
            return self.hasher.verify(stored, password.encode("utf-8", "surrogatepass"))
        except VerificationError:
            return False
        except InvalidHashError:
            # A corrupt row (the database CHECK makes this unlikely): refuse, and say so.
            log.error("a console user's stored password hash is malformed; reset it")
            return False
