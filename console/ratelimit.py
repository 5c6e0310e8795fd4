"""Login rate limiting (issue #7): failed logins per account name and client address, attempts
per client address.

Two limits stand in front of ``POST /console/login``, both checked *before* the password, so a
refused attempt costs no argon2 work and says nothing about the password:

- **per account name and client address**: after ``failures_per_name`` failed logins of one
  name from one address within ``name_window_s`` (default 5 in 15 minutes) that name is refused
  *from that address*, even with the right password, until the oldest of those failures leaves
  the window. This stops password guessing on one account from one place, while the officer
  logging in from elsewhere is not locked out: usernames appear in audit trails, and counting
  per name alone let anyone lock any officer out with six wrong passwords. A successful login
  clears that pair's count, and an attempt the database could not check (503) is taken back.
  Every name is counted the same way whether an account by that name exists or not, so a 429
  reveals nothing about which accounts exist. Attempts are counted when let through, before
  the check, so concurrent guesses cannot slip past together. :meth:`LoginLimiter.forgive`
  lifts a name's lockout (an admin's unlock, ``console/web.py``).
- **per client address**: at most ``attempts_per_address`` attempts (successful or not)
  within ``address_window_s`` (default 30 a minute). This stops password spraying, one or two
  guesses on each of many names from one place. IPv6 addresses count by their /64 network:
  one host usually owns a whole /64 and could otherwise take a fresh address per attempt.

The windows are sliding logs (PyrateLimiter's ``InMemoryBucket``, one per key): the library
does the window arithmetic and computes the wait for ``Retry-After``; this module only keys the
buckets and bounds how many it keeps. Why that library and not ``limits``: its buckets take the
timestamp from the caller, so the time comes from the injected :class:`~foundation.clock.Clock`
and the tests move it; ``limits`` reads ``time.time()`` itself and expires keys from a timer
thread.

State is **in memory, in one process**: a restart forgets every count, and several service
processes behind one load balancer would each count on their own (the service runs one, so
this is acceptable today; a shared store would be PyrateLimiter's Redis or PostgreSQL bucket).
Only unlocks are shared, through the database (``console_users.login_unlocked_at``), so that
``eldercare user unlock`` in another process reaches the running service. Memory is bounded:
at most :data:`MAX_TRACKED` keys per limit (about 0.7 KiB each), least recently used first out,
and keys whose window has passed are dropped as they are met.

Names are kept and logged only as a keyed hash (HMAC-SHA256 with a random key per process):
log lines of one run can be matched with each other, but not with a list of usernames.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta
from pyrate_limiter import Decision, InMemoryBucket, Rate, RateItem

from foundation.clock import Clock

log = logging.getLogger(__name__)

#: Keys kept per limit. Enough for every name and address seen in a window of ordinary use; an
#: attacker who sprays more distinct names than this only pushes out the least recently used.
MAX_TRACKED: Final = 10_000
#: The address of a request whose client the server does not know (some test transports).
UNKNOWN_ADDRESS: Final = "unknown"

Scope = Literal["name", "address"]


class LoginLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[console.login_limits]`` table: how many login attempts are let through."""

    #: Failed logins of one account name from one client address (IPv6: one /64) within
    #: ``name_window_s`` before that name is refused from that address.
    failures_per_name: Annotated[int, Meta(ge=1, le=1000)] = 5
    #: Also how long, at most, a name stays refused after the last counted failure.
    name_window_s: Annotated[int, Meta(ge=1, le=24 * 3600)] = 15 * 60
    #: Login attempts from one client address (IPv6: one /64) within ``address_window_s``.
    attempts_per_address: Annotated[int, Meta(ge=1, le=100_000)] = 30
    address_window_s: Annotated[int, Meta(ge=1, le=24 * 3600)] = 60


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login attempt let through to the password check; counted as a failure of its name
    from its address until :meth:`LoginLimiter.succeeded` or :meth:`LoginLimiter.unchecked`
    says otherwise. ``tag`` is the name's keyed hash (for log lines), ``key`` the count's."""

    tag: str
    at_ms: int
    key: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A login attempt refused before its password was checked.

    ``scope`` says which limit refused it (for the log, never for the client), and
    ``retry_after_s`` when the same attempt would next be let through (``Retry-After``).
    """

    scope: Scope
    retry_after_s: int
    tag: str


class _Buckets:
    """One sliding-window bucket per key, at most ``max_keys`` of them (LRU). Not thread-safe:
    :class:`LoginLimiter` holds its lock around every call."""

    def __init__(self, rate: Rate, *, max_keys: int) -> None:
        self._rate = rate
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, InMemoryBucket] = OrderedDict()
        self._evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str, now_ms: int) -> int | None:
        """Count one attempt of ``key`` at ``now_ms``: ``None`` if it fits in the window, else
        the milliseconds until it would (the refused attempt itself is not counted)."""
        self._prune(now_ms)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = InMemoryBucket([self._rate])
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
                self._evicted += 1
                if self._evicted % 1000 == 1:   # the first, then one line per thousand
                    log.warning("login limiter: more than %d keys within one window (spraying?);"
                                " %d least recently used forgotten so far", self._max_keys,
                                self._evicted)
        self._buckets.move_to_end(key)
        decision = bucket.put_decision(RateItem(key, now_ms))
        assert isinstance(decision, Decision)   # InMemoryBucket is synchronous
        if decision.allowed:
            return None
        # A sliding log always knows its wait; the window is the safe answer if it did not.
        wait = decision.retry_after_ms
        return wait if wait is not None else self._rate.interval

    def forget(self, key: str) -> None:
        """Drop ``key``'s count."""
        self._buckets.pop(key, None)

    def take_back(self, key: str, at_ms: int) -> None:
        """Remove one entry of ``key`` counted at ``at_ms``, if it is still there."""
        entries = self._entries(key)
        for i, entry in enumerate(entries):
            if entry.timestamp == at_ms:
                del entries[i]
                self._rebuild(key, entries)
                return

    def drop_until(self, key_prefix: str, upto_ms: int) -> int:
        """Remove the entries counted at or before ``upto_ms`` from every key that starts with
        ``key_prefix``; how many were removed."""
        removed = 0
        for key in [k for k in self._buckets if k.startswith(key_prefix)]:
            entries = self._entries(key)
            kept = [e for e in entries if e.timestamp > upto_ms]
            if len(kept) < len(entries):
                removed += len(entries) - len(kept)
                self._rebuild(key, kept)
        return removed

    def _entries(self, key: str) -> list[RateItem]:
        # peek(0) is the newest. The bucket has no "remove one": it holds at most a limit's
        # worth of entries, so a change rebuilds it from the entries kept.
        bucket = self._buckets.get(key)
        if bucket is None:
            return []
        return [e for i in range(bucket.count()) if (e := bucket.peek(i)) is not None]

    def _rebuild(self, key: str, entries: list[RateItem]) -> None:
        if not entries:
            del self._buckets[key]
            return
        fresh = InMemoryBucket([self._rate])
        for entry in reversed(entries):
            fresh.put(entry)
        self._buckets[key] = fresh

    def _prune(self, now_ms: int) -> None:
        # The least recently hit bucket is first; when its newest entry has left the window,
        # it is empty and can go, and so on, until one still counts something.
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            bucket.leak(now_ms)
            if bucket.count():
                return
            del self._buckets[key]


class LoginLimiter:
    """The two limits of the module docstring, on ``clock``; thread-safe.

    Call :meth:`admit` before checking a password, then :meth:`succeeded` after a successful
    login, or :meth:`unchecked` if the password could not be checked (the database failed);
    a failed login needs no call: :meth:`admit` counted it already. Counting before the check
    is what keeps concurrent guesses from slipping past the limit together. :meth:`forgive`
    lifts a name's lockout from every address.
    """

    def __init__(self, limits: LoginLimits, *, clock: Clock,
                 max_tracked: int = MAX_TRACKED) -> None:
        self.limits = limits
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # Keyed "<name tag> <address key>": a name's failures from one address.
        self._names = _Buckets(_rate(limits.failures_per_name, limits.name_window_s),
                               max_keys=max_tracked)
        self._addresses = _Buckets(_rate(limits.attempts_per_address, limits.address_window_s),
                                   max_keys=max_tracked)

    def admit(self, name: str, address: str, *, address_counted: bool = False
              ) -> Attempt | Refused:
        """Count a login attempt for ``name`` from ``address``: an :class:`Attempt` may go on
        to the password check, a :class:`Refused` must be answered 429 unchecked.

        The address is checked first, so an attempt refused for its address is not held
        against the name. ``address_counted``: this attempt was refused for its name a moment
        ago and has been counted against its address already (a retry after :meth:`forgive`).
        """
        tag, network = self.tag(name), address_key(address)
        key = f"{tag} {network}"
        with self._lock:
            now_ms = self._clock.now_ms()
            wait_ms = None if address_counted else self._addresses.hit(network, now_ms)
            if wait_ms is not None:
                return Refused("address", _seconds(wait_ms), tag)
            wait_ms = self._names.hit(key, now_ms)
            if wait_ms is not None:
                return Refused("name", _seconds(wait_ms), tag)
        return Attempt(tag, now_ms, key)

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt logged in: its name's failures from its address are forgiven (not
        those from elsewhere: someone else may be guessing)."""
        with self._lock:
            self._names.forget(attempt.key)

    def unchecked(self, attempt: Attempt) -> None:
        """The attempt's password was never checked (the database failed): it is no failure.
        Its address keeps it: the address limit counts attempts, not failures."""
        with self._lock:
            self._names.take_back(attempt.key, attempt.at_ms)

    def forgive(self, name: str, *, upto_ms: int) -> int:
        """Lift ``name``'s lockout: forget its failures counted at or before ``upto_ms``, from
        every address (an admin's unlock at that time); how many were forgotten. Failures
        after ``upto_ms`` still count. The address limit is not touched."""
        with self._lock:
            return self._names.drop_until(f"{self.tag(name)} ", upto_ms)

    def tag(self, name: str) -> str:
        """A short keyed hash of ``name`` for keys and log lines (see module docstring)."""
        # surrogatepass: a JSON string may hold a lone surrogate, which strict UTF-8 refuses.
        digest = hmac.new(self._key, name.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return digest.hexdigest()[:16]

    def tracked(self) -> tuple[int, int]:
        """How many (name, address) pairs and addresses have counts (for tests and
        diagnostics)."""
        with self._lock:
            return len(self._names), len(self._addresses)


def address_key(address: str) -> str:
    """The key an address counts under: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]   # not an IP (a test transport's name); bounded all the same
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _rate(limit: int, window_s: int) -> Rate:
    # PyrateLimiter's sliding log counts an entry while it is at most ``interval`` old, both
    # ends included; one millisecond less makes the window [t, t + window_s): an attempt made
    # exactly Retry-After seconds later is let through, as the header promised.
    return Rate(limit, window_s * 1000 - 1)


def _seconds(ms: int) -> int:
    # Retry-After is whole seconds; rounding down would invite a retry that is refused again.
    return max(1, math.ceil(ms / 1000))
