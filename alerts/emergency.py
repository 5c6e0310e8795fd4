"""Provisional alerts: life-safety events reach the dispatch centre while the database is down.

Normally an SOS becomes an alert through the database (event stored, folded into an alert,
deliveries queued in the outbox, all in transactions). When the database cannot take the event,
the detection stage journals it on local disk (``ingest/detection.py``) and hands it here: an
SOS, a fall or a home alarm is then POSTed to the dispatch webhook at once as an
``alert.provisional`` document (``alerts/document.py``), signed like every webhook, with the
Idempotency-Key ``provisional:<device>:<type>:<ts>``, retried with backoff until the platform
takes it. Nothing here touches the database, and nothing here is the only copy: the journal
holds the event, and once the database is back it becomes an ordinary alert (which the dispatch
centre matches by device, type and time; docs/alerts.md, "Provisional alerts").

The pending set is bounded; if it is ever full, further events wait for the ordinary path (they
are journaled) and the refusal is logged and counted, not hidden.

The thread is a :class:`foundation.worker.Worker` whose round sends what is due and sleeps until
the next retry; :meth:`EmergencyDispatcher.submit` wakes it. A failed send is handled per event
(backoff), so the worker has no error handler: anything escaping a round is a bug, and the
supervisor's death (the process restarts, the journal still holds the events) says so.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from alerts.channels.base import Channel, DeliveryFailed, Message
from alerts.document import provisional_document, provisional_key
from detectors.events import Event
from foundation.clock import Clock
from foundation.supervisor import Spawn, plain_spawn
from foundation.worker import Worker

log = logging.getLogger(__name__)

#: Event types of the life-safety ladder (alerts/policy.yaml): worth a provisional alert.
LIFE_SAFETY: Final = frozenset({"sos", "fall", "home_alarm"})


@dataclass(slots=True)
class _Pending:
    event: Event
    attempt: int = 0
    due: float = 0.0  # monotonic


class EmergencyDispatcher:
    """Owns the ``eldercare-provisional`` thread; see the module docstring."""

    def __init__(self, *, channel: Channel, url: str, clock: Clock,
                 map_link: str | None, max_pending: int = 10_000,
                 backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 spawn: Spawn = plain_spawn) -> None:
        self.channel = channel
        self.url = url
        self.clock = clock
        self.map_link = map_link
        self.max_pending = max_pending
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.sent = 0
        self.refused = 0  # not taken: the pending set was full (the journal still has them)
        self._pending: dict[str, _Pending] = {}
        self._done: set[str] = set()
        self._lock = threading.Lock()  # the pending set: taken by submit, sent by the worker
        self._worker = Worker("eldercare-provisional", self._round, spawn=spawn)

    def submit(self, events: Sequence[Event]) -> int:
        """Send the life-safety ``events`` provisionally; returns how many were taken."""
        taken = 0
        with self._lock:
            for e in events:
                if e.type not in LIFE_SAFETY:
                    continue
                key = provisional_key(e)
                if key in self._pending or key in self._done:
                    continue
                if len(self._pending) >= self.max_pending:
                    self.refused += 1
                    log.error("provisional alerts: %d pending, %s %s left to the journal",
                              len(self._pending), e.type, e.device_id)
                    continue
                self._pending[key] = _Pending(e)
                taken += 1
        if taken:
            self._worker.wake()
        return taken

    def pending(self) -> int:
        """How many provisional alerts are waiting to be sent (or retried)."""
        with self._lock:
            return len(self._pending)

    def start(self) -> None:
        """Start the ``eldercare-provisional`` thread."""
        self._worker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the sends in progress; what is unsent stays journaled."""
        self._worker.stop(timeout_s)
        if unsent := self.pending():
            log.warning("%d provisional alerts unsent at stop (journaled: they become alerts "
                        "when the database is back)", unsent)

    def _round(self) -> float | None:
        """Send what is due; sleep until the next retry is due (or until a submit)."""
        now = time.monotonic()
        with self._lock:
            due = [(k, p) for k, p in self._pending.items() if p.due <= now]
        for key, p in due:  # sent outside the lock: submit never waits for the network
            self._send(key, p)
        with self._lock:
            if not self._pending:
                return None
            wait = min(p.due for p in self._pending.values()) - time.monotonic()
        return 0.0 if wait <= 0 else max(0.01, wait)  # due already: go again at once

    def _send(self, key: str, p: _Pending) -> None:
        p.attempt += 1
        now = self.clock.now_ms()
        body = provisional_document(p.event, now=datetime.fromtimestamp(now / 1000, UTC),
                                    map_link=self.map_link)
        message = Message(delivery_id=0, alert_id=0, channel=self.channel.name,
                          recipient="dispatch", address=self.url, language="zh",
                          idempotency_key=key, attempt=p.attempt, body=body)
        try:
            self.channel.send(message)
        except DeliveryFailed as exc:
            with self._lock:
                if not exc.retryable:
                    log.error("provisional %s %s refused by the dispatch webhook (%s); it "
                              "becomes an alert when the database is back", p.event.type,
                              p.event.device_id, exc.reason)
                    self._finish(key)
                    return
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (p.attempt - 1))
                p.due = time.monotonic() + delay * random.uniform(0.5, 1.0)
            log.warning("provisional %s %s not delivered (attempt %d, %s); retrying",
                        p.event.type, p.event.device_id, p.attempt, exc.reason)
            return
        except Exception:  # a channel bug must not end the thread that sends SOS alerts
            log.exception("provisional alert send failed")
            with self._lock:
                p.due = time.monotonic() + self.backoff_max_s
            return
        with self._lock:
            self.sent += 1
            self._finish(key)
        log.warning("provisional %s alert for device %s sent to the dispatch centre "
                    "(database unavailable)", p.event.type, p.event.device_id)

    def _finish(self, key: str) -> None:
        self._pending.pop(key, None)
        self._done.add(key)
        if len(self._done) > 100_000:  # identities only matter for a while: bound the memory
            self._done.clear()
