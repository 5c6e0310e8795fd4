"""The polling worker (foundation/worker.py): rounds, wake-ups, timeouts, errors, stop.

Real threads and events, no sleeps: each test waits on a condition for at most ``LONG_S`` and
asserts that it came true; the waits the worker makes are recorded by a wake event that keeps
the timeout of each, so "sleep until woken" is checked without waiting to see nothing happen.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from foundation.errors import StorageError, WorkerError
from foundation.supervisor import Supervisor
from foundation.worker import Worker

LONG_S = 5.0  # a bound for things that happen at once; never reached when the code is right
log = logging.getLogger(__name__)


class RecordingEvent(threading.Event):
    """A wake event that records the timeout of every wait the worker makes."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self._counted = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self._counted:
            self.timeouts.append(timeout)
            self._counted.notify_all()
        return super().wait(timeout)

    def wait_for_waits(self, n: int) -> None:
        """Wait until the worker has begun at least ``n`` waits."""
        with self._counted:
            assert self._counted.wait_for(lambda: len(self.timeouts) >= n, LONG_S), (
                f"{len(self.timeouts)} waits, expected {n}")


class Rounds:
    """A round that records each call (thread name, whether a stop was requested, when) and
    returns the next of ``results`` (an exception is raised instead); ``None`` once they run
    out."""

    def __init__(self, *results: float | None | BaseException) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, bool]] = []
        self.started: list[float] = []  # monotonic start of each round
        self.worker: Worker | None = None
        self._lock = threading.Lock()
        self._counted = threading.Condition(self._lock)

    def __call__(self) -> float | None:
        assert self.worker is not None
        with self._lock:
            self.calls.append((threading.current_thread().name, self.worker.stopping))
            self.started.append(time.monotonic())
            self._counted.notify_all()
            result = self.results.pop(0) if self.results else None
        if isinstance(result, BaseException):
            raise result
        return result

    def wait_for(self, n: int) -> None:
        """Wait until at least ``n`` rounds have begun."""
        with self._lock:
            assert self._counted.wait_for(lambda: len(self.calls) >= n, LONG_S), (
                f"{len(self.calls)} rounds, expected {n}")


def make(rounds: Rounds, **kw: object) -> tuple[Worker, RecordingEvent]:
    worker = Worker("test-worker", rounds, **kw)  # type: ignore[arg-type]
    event = RecordingEvent()
    worker.wakeup = event
    rounds.worker = worker
    return worker, event


def test_the_first_round_runs_at_once_in_the_named_thread_then_a_wake_runs_the_next() -> None:
    rounds = Rounds(3600.0, None)  # then sleep an hour: only the wake can run round 2
    worker, event = make(rounds)
    with worker:
        rounds.wait_for(1)
        worker.wake()
        rounds.wait_for(2)
        assert rounds.calls == [("test-worker", False), ("test-worker", False)]
        assert event.timeouts[:2] == [0.0, 3600.0]
    assert not worker.is_alive()


def test_the_returned_timeout_is_honoured_and_none_sleeps_until_woken() -> None:
    rounds = Rounds(0.2, None)
    worker, event = make(rounds)
    with worker:
        rounds.wait_for(2)  # no wake: the 0.2 s timeout ran out
        event.wait_for_waits(3)  # the wait after round 2 has begun
        assert event.timeouts == [0.0, 0.2, None]
        assert rounds.started[1] - rounds.started[0] >= 0.2
        assert len(rounds.calls) == 2


def test_a_wake_during_a_round_is_not_lost() -> None:
    """The wake event is cleared before a round: a wake that comes while it runs is seen."""
    inside, release = threading.Event(), threading.Event()

    def work() -> None:
        if not rounds.calls:
            inside.set()
            assert release.wait(LONG_S)
        rounds()

    rounds = Rounds(None, None)  # both rounds sleep until woken
    worker, _ = make(rounds)
    worker.work = work
    with worker:
        assert inside.wait(LONG_S)
        worker.wake()  # work queued while the first round runs
        release.set()
        rounds.wait_for(2)


def test_an_exception_is_handed_to_on_error_and_the_round_retried_after_its_delay(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Exception] = []

    def on_error(exc: Exception) -> float:
        seen.append(exc)
        log.warning("round failed, retrying in 0.01 s: %s", exc)
        return 0.01

    rounds = Rounds(StorageError("database down"), RuntimeError("a bug"), None)
    worker, event = make(rounds, on_error=on_error)
    with caplog.at_level(logging.WARNING), worker:
        rounds.wait_for(3)
        assert worker.is_alive()
    assert [type(e) for e in seen] == [StorageError, RuntimeError]
    assert event.timeouts[:3] == [0.0, 0.01, 0.01]  # the handler's delay, not a default
    assert [r.getMessage() for r in caplog.records if r.name == __name__] == [
        "round failed, retrying in 0.01 s: database down",
        "round failed, retrying in 0.01 s: a bug"]


def test_stop_runs_the_final_round_when_asked_and_joins() -> None:
    rounds = Rounds()
    worker, _ = make(rounds, first_wait_s=None, final_round=True)
    worker.start()
    assert worker.stop(LONG_S)
    assert rounds.calls == [("test-worker", True)]  # one round, after the stop was requested
    assert not worker.is_alive()

    plain = Rounds()
    worker, _ = make(plain, first_wait_s=None)
    worker.start()
    assert worker.stop(LONG_S)
    assert plain.calls == []  # no final round unless asked for


def test_a_stop_that_comes_during_a_round_still_gets_the_final_round() -> None:
    inside, release = threading.Event(), threading.Event()

    def work() -> None:
        rounds()
        if len(rounds.calls) == 1:
            inside.set()
            assert release.wait(LONG_S)

    rounds = Rounds()
    worker, _ = make(rounds, final_round=True)
    worker.work = work
    worker.start()
    assert inside.wait(LONG_S)
    worker.request_stop()
    release.set()
    assert worker.stop(LONG_S)
    assert rounds.calls == [("test-worker", False), ("test-worker", True)]


def test_stop_is_prompt_while_the_worker_sleeps_long() -> None:
    rounds = Rounds(3600.0)
    worker, event = make(rounds)
    worker.start()
    event.wait_for_waits(2)  # the hour-long wait has begun
    started = time.monotonic()
    assert worker.stop(LONG_S)
    assert time.monotonic() - started < LONG_S  # not the hour the round asked for
    assert len(rounds.calls) == 1


def test_stop_before_start_and_twice_is_fine_but_start_twice_is_not() -> None:
    worker, _ = make(Rounds())
    assert worker.stop(LONG_S)
    assert worker.stopping
    again, _ = make(Rounds(None))
    again.start()
    with pytest.raises(RuntimeError, match="already started"):
        again.start()
    assert again.stop(LONG_S)
    assert again.stop(LONG_S)


class Fatal(BaseException):
    """Not an Exception: never caught by the worker (like KeyboardInterrupt, SystemExit)."""


@pytest.mark.parametrize(("raised", "handled", "reason"), [
    (Fatal("out of here"), True, "Fatal: out of here"),
    (WorkerError("test-worker", "cannot go on"), True, "WorkerError: test-worker: cannot go on"),
    (RuntimeError("a bug"), False, "RuntimeError: a bug"),  # no on_error: nothing is retried
])
def test_what_is_fatal_ends_the_thread_and_the_supervisor_sees_a_death(
        raised: BaseException, handled: bool, reason: str) -> None:
    sup = Supervisor()
    seen: list[Exception] = []

    def on_error(exc: Exception) -> float:
        seen.append(exc)
        return 0.0

    rounds = Rounds(raised, None)
    worker, _ = make(rounds, spawn=sup.spawn, on_error=on_error if handled else None)
    worker.start()
    assert sup.failed.wait(LONG_S)
    assert worker.stop(LONG_S)
    assert [(d.worker, d.reason) for d in sup.deaths] == [("test-worker", reason)]
    assert seen == []  # on_error never saw it
    assert len(rounds.calls) == 1


def test_an_on_error_that_reraises_and_a_failing_on_start_are_deaths() -> None:
    sup = Supervisor()

    def reraise(exc: Exception) -> float:
        raise exc

    rounds = Rounds(ValueError("bad row"))
    worker, _ = make(rounds, spawn=sup.spawn, on_error=reraise)
    worker.start()

    def on_start() -> None:
        raise OSError("journal unreadable")

    never = Rounds()
    starting, _ = make(never, spawn=sup.spawn, on_start=on_start)
    starting.name = "test-starting"
    starting.start()
    assert worker.stop(LONG_S) and starting.stop(LONG_S)
    assert sorted((d.worker, d.reason) for d in sup.deaths) == [
        ("test-starting", "OSError: journal unreadable"), ("test-worker", "ValueError: bad row")]
    assert never.calls == []


def test_a_supervised_worker_stopped_in_order_is_no_death() -> None:
    sup = Supervisor()
    rounds = Rounds(None)
    worker, _ = make(rounds, spawn=sup.spawn, final_round=True)
    worker.start()
    rounds.wait_for(1)
    sup.stopping()
    assert worker.stop(LONG_S)
    assert sup.deaths == ()
    assert [stopping for _, stopping in rounds.calls] == [False, True]
