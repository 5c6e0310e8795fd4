"""The service's alert folder: a named thread that turns stored detection events into alerts.

The folder is the detection stage's :class:`~detectors.events.EventSink`. Events cross from
detection to alerts once, in memory: the stage stores them in ``detection_events`` before the
batch that raised them is acknowledged, then hands the new ones here, and the folder folds
exactly those (:meth:`AlertStore.fold_stored`: claim each by its identity where not folded
yet, fold, one transaction), without reading them back. The table stays the durable record
and the recovery queue: whatever happens after the hand-off (the fold fails, the service dies,
the hand-off queue overflows), the event is still there unfolded, and the folder reads it back
(:meth:`AlertStore.fold_pending`) exactly then, and only then: at start (what a previous run
left), after a failed fold, and when its queue overflowed. Until that backlog is folded no
hand-off is folded ahead of it, so a subject's events keep their order.

New events wake it at once, so an SOS becomes an alert without waiting; it folds once more at
stop. After a failed fold it retries every ``poll_s``; while nothing fails and nothing new
comes, it sleeps without touching the database. Folding runs beside ingest, never in its path: a slow or
failing alert store does not hold back PUBACKs. The thread is a :class:`foundation.worker.Worker`
with a final round, so a stop that arrives mid-fold still folds once more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Final

from alerts.store import AlertChange, AlertStore
from detectors.events import Event
from foundation.clock import Clock
from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn
from foundation.worker import Worker

log = logging.getLogger(__name__)

#: Events held for the next fold at most; beyond, the copies are dropped and the table is read
#: (they are stored already), so a stalled database cannot grow memory without bound.
MAX_HELD: Final = 10_000


class AlertFolder:
    """Owns the ``eldercare-alert-folder`` thread; see the module docstring."""

    def __init__(self, *, store: AlertStore, clock: Clock, poll_s: float = 1.0,
                 on_changes: Callable[[list[AlertChange]], None] | None = None,
                 spawn: Spawn = plain_spawn) -> None:
        self.store = store
        self.clock = clock
        self.poll_s = poll_s
        self.on_changes = on_changes
        self.failures = 0
        #: Handed-off events not folded yet (guarded by ``_lock``), and whether the table holds
        #: unfolded events the hand-off does not cover (start, a failure, an overflow).
        self._held: list[Event] = []
        self._backlog = True
        self._lock = threading.Lock()
        self._worker = Worker("eldercare-alert-folder", self._fold_round, spawn=spawn,
                              on_error=self._failed, final_round=True)

    def handle(self, events: Sequence[Event]) -> None:
        """EventSink: ``events`` are stored and new; fold them now."""
        with self._lock:
            if len(self._held) + len(events) > MAX_HELD:
                self._held.clear()  # they are in the table: read them back instead
                self._backlog = True
            else:
                self._held.extend(events)
        self._worker.wake()

    def start(self) -> None:
        """Start the thread; it folds at once what a previous run stored and did not fold."""
        self._worker.start()

    def stop(self) -> None:
        """Fold what is pending once more, then stop."""
        self._worker.stop(30)

    def fold_now(self) -> int:
        """Fold everything unfolded in the table; returns the number of alert changes."""
        total = 0
        while changes := self.store.fold_pending(now_ms=self.clock.now_ms()):
            total += self._report(changes)
        return total

    def _report(self, changes: list[AlertChange]) -> int:
        for c in changes:
            log.info("alert %d %s: %s device=%s", c.alert_id, c.action, c.event.type,
                     c.event.device_id)
        if self.on_changes is not None:
            self.on_changes(changes)
        return len(changes)

    def _fold_round(self) -> None:
        """Fold the backlog if there is one, else what was handed off; then sleep (``None``)
        until new events come."""
        with self._lock:
            held, self._held = self._held, []
            backlog, self._backlog = self._backlog, False  # a failure or overflow sets it again
        if backlog:
            # The table has every held event too; copies folded here are not claimed again.
            self.fold_now()
        elif held:
            self._report(self.store.fold_stored(held, now_ms=self.clock.now_ms()))

    def _failed(self, exc: Exception) -> float:
        """The events stay unfolded in the table, which the retry reads; after ``poll_s``."""
        with self._lock:
            self._backlog = True
        self.failures += 1
        if isinstance(exc, StorageError):
            log.warning("alert folding failed, retrying in %.1f s: %s", self.poll_s, exc)
        else:
            log.exception("alert folder failed", exc_info=exc)
        return self.poll_s
