"""The dispatch-centre webhook: a signed HTTP POST of the alert document (issue #5).

Wire format, which the 12349 platform implements on its side::

    POST <message.address>            (falls back to WebhookConfig.url when the address is empty)
    Content-Type: application/json
    Idempotency-Key: <message.idempotency_key>     stable across attempts: the receiver dedups
    X-Eldercare-Delivery: <message.delivery_id>
    X-Eldercare-Timestamp: <unix seconds>
    X-Eldercare-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    User-Agent: eldercare/<version>

    <body: compact UTF-8 JSON, keys sorted, non-ASCII unescaped>

The signature covers the exact bytes sent plus the timestamp, so a receiver verifies the body
before parsing it and refuses captured requests replayed later (:func:`verify_signature`, which
our tests and the callback endpoint use too). The timestamp comes from the injected
:class:`~foundation.clock.Clock`, so tests pin it.

Outcome mapping: 2xx is delivered; 408, 429, 5xx, timeouts and network errors may succeed when
tried again (``DeliveryFailed(retryable=True)``); any other status means the platform rejected
us (bad URL, credentials or document) and retrying cannot help. Redirects are not followed: a
signed alert must reach the configured host or nobody. The response body is read in a bounded
way (only its start is kept for the audit trail) under the same deadline as the request.
One :class:`httpx.Client` is shared by the channel's worker threads (its pool is thread-safe).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Annotated, Any, Literal

import httpx
import msgspec

from alerts.channels.base import DeliveryFailed, Message, Receipt
from foundation import __version__
from foundation.clock import Clock
from foundation.errors import ConfigError, EldercareError

log = logging.getLogger(__name__)

_RETRYABLE_4XX = frozenset({408, 429})
_BODY_KEEP_CHARS = 500
# Enough bytes for 500 characters of any UTF-8 text; the rest of a large body is never read.
_BODY_READ_BYTES = 4 * _BODY_KEEP_CHARS
_SCHEME = "sha256"
_HEX_DIGITS = frozenset("0123456789abcdef")

SignatureProblem = Literal["malformed", "mismatch", "stale", "no-secret"]


class SignatureError(EldercareError):
    """A webhook request's signature does not prove it is ours and recent.

    ``problem`` says why: ``malformed`` (header or timestamp unparsable), ``mismatch`` (wrong
    secret or altered body), ``stale`` (timestamp outside the window: a replay or a badly set
    clock), ``no-secret`` (verification was asked for with an empty secret, which would make any
    signature forgeable).
    """

    def __init__(self, reason: str, *, problem: SignatureProblem) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problem = problem


class WebhookConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[webhook]`` section: the dispatch platform's endpoint and shared secret."""

    url: str | None = None
    secret: str = ""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 5.0


def encode_body(body: dict[str, Any]) -> bytes:
    """The exact bytes POSTed: compact UTF-8 JSON with sorted keys (stable for signing and
    for a receiver that compares documents byte for byte)."""
    return msgspec.json.encode(body, order="sorted")


def sign(*, secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Eldercare-Signature`` value: ``sha256=`` + hex HMAC over ``timestamp.body``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"{_SCHEME}={mac.hexdigest()}"


def verify_signature(
    *, secret: bytes, timestamp: str, signature: str, body: bytes, now_s: float,
    window_s: float = 300,
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` signs ``timestamp`` and ``body`` with
    ``secret`` and ``timestamp`` lies within ``window_s`` of ``now_s`` (either side, so a
    request stamped in the future cannot be stored and replayed later). Pure: no clock read."""
    if not secret:
        raise SignatureError("no webhook secret configured", problem="no-secret")
    # isdigit() alone accepts non-ASCII digits ("١٢"), which int() would then parse.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureError("timestamp is not unix seconds", problem="malformed")
    scheme, sep, digest = signature.partition("=")
    digest = digest.lower()
    if scheme != _SCHEME or not sep or len(digest) != 64 or not set(digest) <= _HEX_DIGITS:
        raise SignatureError("signature is not sha256=<64 hex digits>", problem="malformed")
    if abs(now_s - int(timestamp)) > window_s:
        raise SignatureError(
            f"timestamp {timestamp} is more than {window_s:g} s from now", problem="stale")
    expected = sign(secret=secret, timestamp=timestamp, body=body)
    if not hmac.compare_digest(expected, f"{_SCHEME}={digest}"):
        raise SignatureError("signature does not match", problem="mismatch")


class WebhookChannel:
    """Delivers alert documents to the dispatch platform's webhook (see module docstring).

    ``transport`` is the httpx seam for tests that want no socket (``httpx.MockTransport``).
    """

    name = "webhook"

    def __init__(self, config: WebhookConfig, *, clock: Clock,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not config.secret:
            # An unsigned alert would be refused by the platform on every attempt; say so at
            # start-up instead of escalating every alert.
            raise ConfigError("webhook.secret must be set to sign dispatch webhooks")
        self.config = config
        self._secret = config.secret.encode("utf-8")
        self._clock = clock
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s), follow_redirects=False,
            transport=transport, headers={"User-Agent": f"eldercare/{__version__}"},
        )

    def send(self, message: Message) -> Receipt:
        """POST ``message.body``; raises :class:`DeliveryFailed` (see module docstring)."""
        url = message.address or self.config.url
        if not url:
            raise DeliveryFailed("no webhook URL for this message", retryable=False)
        try:
            body = encode_body(message.body)
        except (TypeError, msgspec.EncodeError) as exc:
            raise DeliveryFailed(f"alert document is not JSON-able: {exc}",
                                 retryable=False) from exc
        headers = self._headers(message, body)
        status, provider_id, text = self._post(url, body, headers)
        log.debug("webhook delivery %d (alert %d): HTTP %d", message.delivery_id,
                  message.alert_id, status)
        if 200 <= status < 300:
            return Receipt(provider_id=provider_id, detail={"status": status, "body": text})
        # The reason stays free of the response body: platforms echo documents, which carry
        # wearers' names, and reasons end up in logs.
        retryable = status in _RETRYABLE_4XX or status >= 500
        raise DeliveryFailed(f"webhook answered HTTP {status}", retryable=retryable)

    def _headers(self, message: Message, body: bytes) -> dict[str, str]:
        timestamp = str(self._clock.now_ms() // 1000)
        return {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
            "X-Eldercare-Delivery": str(message.delivery_id),
            "X-Eldercare-Timestamp": timestamp,
            "X-Eldercare-Signature": sign(secret=self._secret, timestamp=timestamp, body=body),
        }

    def _post(self, url: str, body: bytes,
              headers: dict[str, str]) -> tuple[int, str | None, str]:
        """Send and read the start of the answer: (status, X-Request-Id, body text)."""
        deadline = time.monotonic() + self.config.timeout_s
        try:
            with self._client.stream("POST", url, content=body, headers=headers) as response:
                raw = bytearray()
                # httpx's timeout bounds each read; the deadline bounds a server that trickles.
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) >= _BODY_READ_BYTES or time.monotonic() > deadline:
                        break
                text = raw.decode("utf-8", "replace")[:_BODY_KEEP_CHARS]
                return response.status_code, response.headers.get("X-Request-Id"), text
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"webhook timed out after {self.config.timeout_s:g} s",
                                 retryable=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DeliveryFailed(f"bad webhook URL: {exc}", retryable=False) from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"webhook unreachable: {type(exc).__name__}: {exc}",
                                 retryable=True) from exc

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
