"""The one small interface every delivery channel implements (issue #5).

A channel sends one :class:`Message` (one outbox row: one recipient, one channel) and returns
the provider's :class:`Receipt`, or raises :class:`DeliveryFailed`. Channels are synchronous and
called from the channel's own delivery worker threads, so a slow or failing channel never holds
up another. They do no retrying and no bookkeeping of their own: the outbox worker
(``alerts/delivery.py``) retries with backoff, records every attempt and escalates when a
delivery is given up.

Delivery is at-least-once: a message may be sent again after a crash or a timeout whose outcome
is unknown. ``Message.idempotency_key`` is stable across attempts; receivers that can
deduplicate (the dispatch webhook) get it, and channels whose provider cannot (SMS) check
whether an earlier attempt went through before sending again (``Message.attempt > 1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from foundation.errors import EldercareError


@dataclass(frozen=True, slots=True)
class Message:
    """One notification to send.

    ``body`` is the alert document (docs/alerts.md, "Alert document"): JSON-able, with at least
    ``event`` (``alert.opened``, ``alert.escalated``, ``alert.acknowledged``,
    ``alert.claim_expired``, ``alert.resolved``, ``alert.grouped``) and ``alert`` (id, type,
    priority, severity, status, region, wearer {id, name}, device_id, first_ts, last_ts (ISO
    8601), position {lat, lon} or null, map_link or null, event_count), and ``escalation``
    ({step, cycle, action}) for ladder notifications. ``alert.grouped`` bodies carry
    ``alerts``: a list of such alert objects (low-priority grouping, one message per wearer).
    """

    delivery_id: int
    alert_id: int
    channel: str          # webhook, sms, voice, email, mqtt
    recipient: str        # dispatch, family:1, community, ...
    address: str          # URL, E.164 phone number, e-mail address, MQTT topic
    language: str         # zh or en
    idempotency_key: str  # stable across attempts
    attempt: int          # 1 for the first attempt
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider said when it took the message: its id for it (SMS BizId, SMTP queue
    id, HTTP status) and details worth keeping in the audit trail."""

    provider_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class DeliveryFailed(EldercareError):
    """The message was not delivered.

    ``retryable`` is false when sending again cannot help (the provider rejected the number,
    the template or our credentials; HTTP 4xx other than 408/429): the worker then gives up at
    once and escalates instead of retrying.
    """

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Channel(Protocol):
    """A delivery channel. ``name`` is the ``channel`` value of the outbox rows it sends."""

    name: str

    def send(self, message: Message) -> Receipt:
        """Send ``message``; raises :class:`DeliveryFailed`. Must not block longer than the
        channel's configured timeout."""
        ...

    def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...
