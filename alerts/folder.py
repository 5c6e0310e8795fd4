"""The service's alert folder: a named thread that turns stored detection events into alerts.

It reads unfolded events from the ``detection_events`` table (:meth:`AlertStore.fold_pending`),
not from memory: an event is stored before the batch that raised it is acknowledged, so
whatever happens afterwards (the fold fails, the service dies), the event is still there and
is folded later, exactly once. The folder is also the detection stage's
:class:`~detectors.events.EventSink`: new events wake it at once, so an SOS becomes an alert
without waiting. It also folds once at start (events a previous run left unfolded) and at stop.
After a failed fold it retries every ``poll_s``; while nothing fails and nothing new comes, it
sleeps without touching the database. Folding runs beside ingest, never in its path: a slow or
failing alert store does not hold back PUBACKs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from alerts.store import AlertChange, AlertStore
from detectors.events import Event
from foundation.clock import Clock
from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn

log = logging.getLogger(__name__)


class AlertFolder:
    """Owns the ``eldercare-alert-folder`` thread; see the module docstring."""

    def __init__(self, *, store: AlertStore, clock: Clock, poll_s: float = 1.0,
                 on_changes: Callable[[list[AlertChange]], None] | None = None,
                 spawn: Spawn = plain_spawn) -> None:
        self.store = store
        self.clock = clock
        self.poll_s = poll_s
        self.on_changes = on_changes
        self.spawn = spawn
        self.failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, events: Sequence[Event]) -> None:
        """EventSink: new events are stored; fold them now."""
        self._wake.set()

    def start(self) -> None:
        self._thread = self.spawn("eldercare-alert-folder", self._run)

    def stop(self) -> None:
        """Fold what is pending once more, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def fold_now(self) -> int:
        """Fold everything pending; returns the number of alert changes."""
        total = 0
        while changes := self.store.fold_pending(now_ms=self.clock.now_ms()):
            total += len(changes)
            for c in changes:
                log.info("alert %d %s: %s device=%s", c.alert_id, c.action, c.event.type,
                         c.event.device_id)
            if self.on_changes is not None:
                self.on_changes(changes)
        return total

    def _run(self) -> None:
        timeout: float | None = 0.0  # fold at once: what a previous run stored and did not fold
        while True:
            self._wake.wait(timeout)
            self._wake.clear()  # before folding: an event stored meanwhile wakes the next round
            try:
                self.fold_now()
                timeout = None  # all folded: sleep until new events come
            except StorageError as exc:  # the events stay unfolded; retried after poll_s
                timeout = self.poll_s
                self.failures += 1
                log.warning("alert folding failed, retrying in %.1f s: %s", self.poll_s, exc)
            except Exception:
                timeout = self.poll_s
                self.failures += 1
                log.exception("alert folder failed")
            if self._stop.is_set():
                return
