"""The escalator: a named thread that climbs the next rung of alerts whose timer ran out.

Timers are persisted in the alert rows (``alerts.next_action_at``), not held in memory, so a
restart neither loses a pending escalation nor repeats one: each climb and its deliveries
commit in one transaction (:meth:`AlertStore.escalate_due`), rows locked ``FOR UPDATE SKIP
LOCKED`` so two service instances never climb the same rung twice. The thread sleeps until the
earliest timer, at most ``poll_s`` (timers set by another process), and is woken early by
:meth:`wake` (a claim, a resolution, a delivery given up). The thread is a
:class:`foundation.worker.Worker`; after a failed round it retries in ``poll_s``.
"""

from __future__ import annotations

import logging

from alerts.store import AlertStore
from foundation.clock import Clock
from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn
from foundation.worker import Worker

log = logging.getLogger(__name__)


class Escalator:
    """Owns the ``eldercare-alert-escalator`` thread; see the module docstring."""

    def __init__(self, *, store: AlertStore, clock: Clock, poll_s: float = 1.0,
                 spawn: Spawn = plain_spawn) -> None:
        self.store = store
        self.clock = clock
        self.poll_s = poll_s
        self.climbed = 0
        self._worker = Worker("eldercare-alert-escalator", self._round, spawn=spawn,
                              on_error=self._failed)
        #: Set it to look at the timers now; a delivery worker sets it when it gives up on a
        #: ladder message (``on_given_up``).
        self.wakeup = self._worker.wakeup

    def wake(self) -> None:
        """Look at the timers now (one may have been moved earlier)."""
        self._worker.wake()

    def start(self) -> None:
        """Start the thread; it climbs at once what fell due while the service was down."""
        self._worker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the climb in progress, if any."""
        self._worker.stop(timeout_s)

    def run_due(self) -> int:
        """Climb every due rung now; returns how many. Raises StorageError."""
        total = 0
        while n := self.store.escalate_due(now_ms=self.clock.now_ms()):
            total += n
        self.climbed += total
        return total

    def _round(self) -> float:
        """Climb what is due; sleep until the earliest timer, at most ``poll_s``."""
        self.run_due()
        due = self.store.next_timer_ms()
        if due is None:
            return self.poll_s
        return min(self.poll_s, max(0.0, (due - self.clock.now_ms()) / 1000))

    def _failed(self, exc: Exception) -> float:
        if isinstance(exc, StorageError):
            log.warning("escalation failed, retrying in %.1f s: %s", self.poll_s, exc)
        else:
            log.exception("escalator failed", exc_info=exc)
        return self.poll_s
