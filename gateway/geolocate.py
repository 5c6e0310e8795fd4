"""Positions from radio scans: the provider seam, and the cache and rate limit in front of it.

A device without a GPS fix reports the cell towers and Wi-Fi access points it hears
(:class:`~schemas.readings.RadioScan`). A :class:`Geolocator` turns such a scan into a
:class:`Fix`: a WGS-84 position, its accuracy and whether Wi-Fi or cells placed it. Providers
are adapters behind that seam (:class:`gateway.amap.AmapGeolocator`); the server only ever
talks to a :class:`CachedGeolocator`, which is a Geolocator too and adds what a paid, remote
service needs:

- a cache (:class:`FixCache`, LRU with a TTL) keyed on the *set* of towers and access points,
  signals and order left out (:func:`scan_key`): a wearer at home sends the same scan every few
  minutes, and the towers do not move. A provider's "no position" is cached too; its failures
  are not (they may pass);
- a rate limit (:class:`TokenBucket`, per process): over it, no request is made, the scan is
  published without a position and the lookup is counted ``rate_limited``;
- a time limit on every request; a failure (time-out, HTTP error, the provider's refusal) is
  counted ``failed`` and logged with the device id and the reason, never with coordinates,
  MACs or the key. :meth:`CachedGeolocator.locate` never raises: no position is a normal
  outcome, and publishing must not depend on a provider.

Time is an input: the cache and the bucket take ``now`` (seconds, monotonic), and the
CachedGeolocator reads it from the clock it is given. Each lookup ends in one outcome, reported
to an :data:`Observer` (the gateway's metrics): ``hit`` (from the cache, a position or a cached
"none"), ``miss`` (asked the provider, got a position), ``rate_limited``, ``failed`` (asked,
got no position: an error or none known).

Exceptions (providers raise them; the CachedGeolocator absorbs them)::

    EldercareError
    └── GeolocationError     a lookup failed; ``reason`` says why (never a coordinate, MAC or key)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from prometheus_client import Counter, Histogram

from foundation.errors import ConfigError, EldercareError
from gateway.settings import GeolocationConfig
from schemas.readings import RadioScan

log = logging.getLogger(__name__)

FixSource = Literal["wifi", "cell"]
Outcome = Literal["hit", "miss", "rate_limited", "failed"]
#: Called once per lookup: its outcome, and the provider's time when it was asked (else None).
Observer = Callable[[Outcome, float | None], None]
#: A scan's identity for the cache: its towers (mcc, mnc, lac, cid) and access points, sorted.
ScanKey = tuple[tuple[tuple[int, int, int, int], ...], tuple[str, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fix:
    """A position resolved from a radio scan: WGS-84 degrees, accuracy radius in metres."""

    lat: float
    lon: float
    accuracy_m: float | None
    source: FixSource


class GeolocationError(EldercareError):
    """A lookup failed; ``reason`` names why (a time-out, an HTTP status, the provider's own
    status), never a coordinate, a MAC address or the key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Geolocator(Protocol):
    """Resolves radio scans to positions (the provider seam)."""

    async def locate(self, scan: RadioScan) -> Fix | None:
        """The position of ``scan``; None when none is known for these radios. A provider
        raises :class:`GeolocationError` when it cannot tell."""
        ...


def scan_key(scan: RadioScan) -> ScanKey:
    """What identifies a scan's place: the set of its towers and access points (a signal
    changes from one report to the next; the radios heard do not)."""
    cells = tuple(sorted({(c.mcc, c.mnc, c.lac, c.cid) for c in scan.cells}))
    return cells, tuple(sorted({ap.mac for ap in scan.wifi}))


class _Missing:
    """Nothing cached (distinct from a cached "no position", None)."""


MISSING: Final = _Missing()


class FixCache:
    """A bounded LRU of lookups with a time to live; ``now`` in seconds (monotonic)."""

    def __init__(self, *, size: int, ttl_s: float) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._entries: OrderedDict[ScanKey, tuple[float, Fix | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ScanKey, now: float) -> Fix | None | _Missing:
        """The cached lookup of ``key`` (a Fix, or None for "no position"), or MISSING."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        expires, fix = entry
        if now >= expires:
            del self._entries[key]
            return MISSING
        self._entries.move_to_end(key)
        return fix

    def put(self, key: ScanKey, fix: Fix | None, now: float) -> None:
        """Keep ``fix`` for ``key`` until ``now + ttl_s``, evicting the least recently used."""
        self._entries[key] = (now + self.ttl_s, fix)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class TokenBucket:
    """``rate_per_s`` tokens a second, holding at most one second's worth (at least one)."""

    def __init__(self, *, rate_per_s: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = max(1.0, rate_per_s)
        self._tokens = self.capacity
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token at ``now``; False (nothing spent) when there is none."""
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = max(self._at, now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class CachedGeolocator:
    """A :class:`Geolocator` in front of a provider: cache, rate limit and time limit, and it
    never raises (see the module docstring)."""

    def __init__(self, provider: Geolocator, *, cache_size: int, cache_ttl_s: float,
                 max_requests_per_s: float, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 observe: Observer | None = None) -> None:
        self.provider = provider
        self.timeout_s = timeout_s
        self.cache = FixCache(size=cache_size, ttl_s=cache_ttl_s)
        self._clock = clock
        self._bucket = TokenBucket(rate_per_s=max_requests_per_s, now=clock())
        self._observe = observe or (lambda outcome, seconds: None)

    async def locate(self, scan: RadioScan) -> Fix | None:
        """The position of ``scan``, or None (none known, over the rate limit, or failed)."""
        now = self._clock()
        key = scan_key(scan)
        cached = self.cache.get(key, now)
        if not isinstance(cached, _Missing):
            self._observe("hit", None)
            return cached
        if not self._bucket.take(now):
            log.debug("geolocation: over the rate limit; %s published without a position",
                      scan.device_id)
            self._observe("rate_limited", None)
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                fix = await self.provider.locate(scan)
        except TimeoutError:
            self._failed(scan, f"no answer within {self.timeout_s:g} s", started)
            return None
        except GeolocationError as exc:
            self._failed(scan, exc.reason, started)
            return None
        except Exception as exc:  # noqa: BLE001 - a provider's bug must cost a position only
            self._failed(scan, f"provider error {type(exc).__name__}", started)
            return None
        self.cache.put(key, fix, self._clock())
        self._observe("miss" if fix is not None else "failed", time.perf_counter() - started)
        if fix is None:
            log.info("geolocation: no position known for the radio scan of %s (%d towers,"
                     " %d access points)", scan.device_id, len(scan.cells), len(scan.wifi))
        return fix

    def _failed(self, scan: RadioScan, reason: str, started: float) -> None:
        self._observe("failed", time.perf_counter() - started)
        log.warning("geolocation: the radio scan of %s was not resolved: %s", scan.device_id,
                    reason)

    async def aclose(self) -> None:
        """Close the provider's connections, if it holds any."""
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()


def metrics_observer(lookups: Counter, seconds: Histogram) -> Observer:
    """An :data:`Observer` counting outcomes in ``lookups`` (label ``outcome``) and the
    provider's time in ``seconds`` (the gateway's metrics)."""
    def observe(outcome: Outcome, provider_s: float | None) -> None:
        lookups.labels(outcome).inc()
        if provider_s is not None:
            seconds.observe(provider_s)
    return observe


def build_locator(config: GeolocationConfig, *,
                  observe: Observer | None = None) -> CachedGeolocator | None:
    """The locator ``config`` names (None for provider ``none``). Raises ConfigError naming
    ``key_file`` when the key cannot be read (never the key itself)."""
    if config.provider == "none":
        return None
    from gateway.amap import AmapGeolocator  # the provider's HTTP client, only when used

    assert config.key_file is not None  # GeolocationConfig requires it for a provider
    provider = AmapGeolocator(key=read_key(config.key_file), url=config.url,
                              timeout_s=config.timeout_s)
    return CachedGeolocator(provider, cache_size=config.cache_size,
                            cache_ttl_s=config.cache_ttl_s,
                            max_requests_per_s=config.max_requests_per_s,
                            timeout_s=config.timeout_s, observe=observe)


def read_key(path: str) -> str:
    """The API key in ``path``: its one line, without the line end."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"[gateway.geolocation] key_file {path}: {why}") from exc
    key = text.strip()
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"[gateway.geolocation] key_file {path} must hold the key on one"
                          " line")
    return key
