"""Supervised worker threads: a worker that dies takes the process down, loudly.

The service runs about a dozen long-lived threads (pipeline, commit writers, detection timer,
alert folder, escalator, delivery workers, the HTTP server, paho's network loop). Before this
module a thread that died of an unexpected exception simply vanished: the process stayed up,
``/health`` said ok, and every later SOS waited unacknowledged until a person restarted it.
A stalled process is worse than a dead one, because a dead one is restarted by its supervisor
(systemd ``Restart=on-failure``, Kubernetes): so any unexpected death is *fatal by design*.

- :meth:`Supervisor.spawn` starts a named thread whose body is wrapped: an exception, or a
  return while the owner has not begun stopping (:meth:`Supervisor.stopping`), is a death.
- :meth:`Supervisor.watch` adds a liveness probe for a thread we do not start ourselves
  (paho's network loop, uvicorn's server), polled by :meth:`Supervisor.check`.
- :meth:`Supervisor.excepthook` is for ``threading.excepthook``, so an exception escaping any
  other thread of the process is a death too.
- Components that detect their own fatal state call :meth:`Supervisor.fail`.

The first death logs an error and calls ``on_death`` once (the entry point then stops the
service in order, bounded, and exits non-zero); health endpoints read :attr:`Supervisor.deaths`.
Components take a :data:`Spawn` callable, so they run unsupervised (plain threads) in unit
tests and supervised in the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

#: Exit status of a process whose worker died (EX_SOFTWARE): its supervisor restarts it.
EXIT_WORKER_DIED = 70


class Spawn(Protocol):
    """Start ``target`` in a new named thread and return it."""

    def __call__(self, name: str, target: Callable[[], None], *,
                 child: bool = False) -> threading.Thread: ...


def plain_spawn(name: str, target: Callable[[], None], *,
                child: bool = False) -> threading.Thread:
    """A :data:`Spawn` without supervision: a daemon thread (unit tests, tools)."""
    del child  # nothing watches the thread, so there is nothing to tell apart
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True, slots=True)
class Death:
    """One worker that stopped unexpectedly: its name, why, and when (monotonic seconds)."""

    worker: str
    reason: str
    at: float


class Supervisor:
    """Owns the liveness of the process's workers; see the module docstring.

    Thread-safe: workers report from their own threads.
    """

    def __init__(self, *, on_death: Callable[[Death], None] | None = None) -> None:
        self.on_death = on_death
        self._lock = threading.Lock()
        self._deaths: list[Death] = []
        self._probes: dict[str, Callable[[], bool]] = {}
        self._stopping = threading.Event()
        self.failed = threading.Event()

    @property
    def deaths(self) -> tuple[Death, ...]:
        """Every death recorded so far, first first."""
        with self._lock:
            return tuple(self._deaths)

    def describe_deaths(self) -> str:
        """The deaths so far, for a person: ``worker (reason), ...``."""
        return ", ".join(f"{d.worker} ({d.reason})" for d in self.deaths)

    @property
    def is_stopping(self) -> bool:
        """Whether the owner has begun an orderly stop (worker returns are expected)."""
        return self._stopping.is_set()

    def stopping(self) -> None:
        """The owner begins an orderly stop: from now on workers that return are not deaths."""
        self._stopping.set()

    def spawn(self, name: str, target: Callable[[], None], *,
              child: bool = False) -> threading.Thread:
        """Start ``target`` as the supervised worker ``name`` (a :data:`Spawn`).

        A ``child`` is a worker that another supervised worker starts, ends (by handing it an
        end mark) and joins, such as the pipeline's commit writers: its return is its parent's
        doing, not a death, while an exception escaping it still is one. Without this, a parent
        that died would end its children first and the death would be blamed on a child that
        merely returned (the log would name the wrong worker and hide the exception).
        """
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - every way out of a worker is reported
                self.fail(name, f"{type(exc).__name__}: {exc}", exc=exc)
                return
            if not child and not self._stopping.is_set():
                self.fail(name, "returned while the service was running")

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    def watch(self, name: str, alive: Callable[[], bool]) -> None:
        """Add a liveness probe for a thread someone else starts; polled by :meth:`check`."""
        with self._lock:
            self._probes[name] = alive

    def check(self) -> tuple[Death, ...]:
        """Poll the probes (outside an orderly stop); return every death so far."""
        if not self._stopping.is_set():
            with self._lock:
                probes = list(self._probes.items())
            for name, alive in probes:
                if not alive():
                    self.fail(name, "thread is no longer running")
        return self.deaths

    def fail(self, worker: str, reason: str, *, exc: BaseException | None = None) -> None:
        """Record that ``worker`` died; the first death calls ``on_death``.

        During an orderly stop a failure is logged but is not a death: shutdown paths give
        up on purpose (a commit retried past its grace period; the broker redelivers).
        """
        if self._stopping.is_set():
            log.warning("worker %s ended during shutdown: %s", worker, reason)
            return
        death = Death(worker=worker, reason=reason, at=time.monotonic())
        with self._lock:
            if any(d.worker == worker for d in self._deaths):
                return
            self._deaths.append(death)
            first = len(self._deaths) == 1
        log.error("worker %s died: %s; the service stops and exits non-zero so that its"
                  " supervisor restarts it", worker, reason, exc_info=exc)
        self.failed.set()
        if first and self.on_death is not None:
            self.on_death(death)

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        """For ``threading.excepthook``: an exception escaping any thread is a death."""
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "unknown thread"
        exc = args.exc_value
        self.fail(name, f"{args.exc_type.__name__}: {exc}",
                  exc=exc if isinstance(exc, BaseException) else None)
