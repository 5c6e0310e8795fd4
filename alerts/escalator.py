"""The escalator: a named thread that climbs the next rung of alerts whose timer ran out.

Timers are persisted in the alert rows (``alerts.next_action_at``), not held in memory, so a
restart neither loses a pending escalation nor repeats one: each climb and its deliveries
commit in one transaction (:meth:`AlertStore.escalate_due`), rows locked ``FOR UPDATE SKIP
LOCKED`` so two service instances never climb the same rung twice. The thread sleeps until the
earliest timer, at most ``poll_s`` (timers set by another process), and is woken early by
:meth:`wake` (a claim, a resolution, a delivery given up).
"""

from __future__ import annotations

import logging
import threading

from alerts.store import AlertStore
from foundation.clock import Clock
from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn

log = logging.getLogger(__name__)


class Escalator:
    """Owns the ``eldercare-alert-escalator`` thread; see the module docstring."""

    def __init__(self, *, store: AlertStore, clock: Clock, poll_s: float = 1.0,
                 spawn: Spawn = plain_spawn) -> None:
        self.spawn = spawn
        self.store = store
        self.clock = clock
        self.poll_s = poll_s
        self.climbed = 0
        self.wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Look at the timers now (one may have been moved earlier)."""
        self.wakeup.set()

    def start(self) -> None:
        self._thread = self.spawn("eldercare-alert-escalator", self._run)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run_due(self) -> int:
        """Climb every due rung now; returns how many. Raises StorageError."""
        total = 0
        while n := self.store.escalate_due(now_ms=self.clock.now_ms()):
            total += n
        self.climbed += total
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = self.poll_s
            try:
                self.run_due()
                due = self.store.next_timer_ms()
                if due is not None:
                    timeout = min(self.poll_s, max(0.0, (due - self.clock.now_ms()) / 1000))
            except StorageError as exc:
                log.warning("escalation failed, retrying in %.1f s: %s", self.poll_s, exc)
            except Exception:
                log.exception("escalator failed")
            self.wakeup.wait(timeout)
            self.wakeup.clear()
