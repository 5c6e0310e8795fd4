"""A polling worker: one named thread that runs rounds, woken early on demand.

The alert folder, the escalator, the delivery workers, the provisional dispatcher and the
detection timer all run the same loop: sleep until woken or until a timeout, run one round,
sleep again for as long as the round says. This module holds that loop once, so that the
subtle parts are written (and tested) once:

- **No lost wake-ups.** The wake event is cleared *before* a round, never after: a wake that
  arrives while a round runs makes the next wait return at once, so work queued meanwhile is
  seen by one more round instead of waiting for a timeout.
- **A prompt stop.** :meth:`Worker.stop` sets the stop flag and wakes the thread; a round in
  progress finishes (rounds are bounded by their own timeouts), then the thread runs the
  final round if the component asked for one (``final_round``) and returns.
- **Errors per round** go to the component's ``on_error``, which logs (its own words,
  its own counters) and returns how long to wait before retrying: one failed round never ends
  the loop (STYLE.md habit 7).

What is fatal, on purpose, and ends the thread (under :class:`~foundation.supervisor.Supervisor`
that is a death: the process stops in order and exits 70):

- anything that is not an :class:`Exception` (``KeyboardInterrupt``, ``SystemExit``, any other
  ``BaseException``): it is never caught here;
- :class:`~foundation.errors.WorkerError`: a round raises it when the component knows it
  cannot go on; ``on_error`` never sees it;
- any exception of a worker built without ``on_error``, or one that ``on_error`` re-raises;
- any exception of ``on_start`` (recovery of what a previous run left): a worker that cannot
  begin must not look as if it runs.

A worker is started once; :meth:`Worker.stop` before :meth:`Worker.start` is allowed (the
component is then simply never run), and so is stopping twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from foundation.errors import WorkerError
from foundation.lifecycle import StartStop
from foundation.supervisor import Spawn, plain_spawn

#: One round of work; returns the seconds to sleep before the next round unless woken
#: sooner (``None``: until woken, ``0``: go again at once).
Round = Callable[[], float | None]
#: Handles an exception of a round (logs, counts) and returns the wait before the retry, as a
#: :data:`Round` does; re-raising makes it fatal.
ErrorHandler = Callable[[Exception], float | None]


class Worker(StartStop):
    """Runs ``work`` in the named thread ``name``; see the module docstring.

    ``first_wait_s`` is the wait before the first round (``0``: at once, to pick up what a
    previous run left). ``on_start`` runs once in the thread before that wait, unguarded.
    ``final_round`` runs one more round after a stop is requested (the alert folder folds
    what is pending once more). Thread-safe: :meth:`wake` and :meth:`stop` may be called
    from any thread.
    """

    def __init__(self, name: str, work: Round, *, spawn: Spawn = plain_spawn,
                 on_error: ErrorHandler | None = None,
                 on_start: Callable[[], object] | None = None,
                 first_wait_s: float | None = 0.0, final_round: bool = False) -> None:
        self.name = name
        self.work = work
        self.spawn = spawn
        self.on_error = on_error
        self.on_start = on_start
        self.first_wait_s = first_wait_s
        self.final_round = final_round
        #: Set to run a round now. Public because some owners hand it on as a plain event
        #: (a delivery worker sets the escalator's when it gives a message up).
        self.wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether a stop has been requested."""
        return self._stop.is_set()

    def is_alive(self) -> bool:
        """Whether the thread has been started and has not ended."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"worker {self.name} already started")
        self._thread = self.spawn(self.name, self._run)

    def wake(self) -> None:
        """Run a round now (or right after the one in progress)."""
        self.wakeup.set()

    def request_stop(self) -> None:
        """Ask the thread to stop after its current round (and the final one), without
        waiting for it: for owners that stop several workers and join them afterwards."""
        self._stop.set()
        self.wakeup.set()

    def stop(self, timeout_s: float | None = 10.0) -> bool:
        """Request a stop and join the thread for at most ``timeout_s``; returns whether it
        has ended (``True`` too when it was never started)."""
        self.request_stop()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        if self.on_start is not None:
            self.on_start()
        timeout = self.first_wait_s
        while True:
            self.wakeup.wait(timeout)
            self.wakeup.clear()  # before the round: a wake during the round runs another one
            if self._stop.is_set():
                if self.final_round:
                    self._round()
                return
            timeout = self._round()

    def _round(self) -> float | None:
        try:
            return self.work()
        except WorkerError:
            raise  # the component says it cannot go on: a death, not a retry
        except Exception as exc:
            if self.on_error is None:
                raise
            return self.on_error(exc)
