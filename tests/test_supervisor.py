"""The supervisor (foundation/supervisor.py), and health reporting a dead worker at once.

Unit tests drive real threads with events (no sleeps); the service test runs the ingest
service against real Mosquitto and PostgreSQL with a store whose commit raises a
``RuntimeError``, and reads ``/api/v1/health`` and the metrics while the process is still up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import generate_latest

from eldercare.app import Application
from eldercare.config import Config
from foundation.clock import SystemClock
from foundation.errors import WorkerError
from foundation.supervisor import Death, Supervisor
from ingest.batch import Batch
from ingest.buffer import Message, MessageBuffer
from ingest.metrics import IngestMetrics
from ingest.pipeline import IngestPipeline
from ingest.storage import WriteResult
from schemas import MessageDecoder, device_topic
from schemas.decode import Decoded
from tests.conftest import Publisher, now_ms, wait_for


def test_a_worker_that_raises_is_a_death_reported_once() -> None:
    told: list[Death] = []
    sup = Supervisor(on_death=told.append)

    def boom() -> None:
        raise RuntimeError("driver bug")

    sup.spawn("w-boom", boom).join(5)
    sup.spawn("w-boom-2", boom).join(5)
    assert [d.worker for d in sup.deaths] == ["w-boom", "w-boom-2"]
    assert sup.deaths[0].reason == "RuntimeError: driver bug"
    assert sup.failed.is_set()
    assert [d.worker for d in told] == ["w-boom"]  # on_death runs for the first death only


def test_a_worker_that_returns_while_running_is_a_death_but_not_during_a_stop() -> None:
    sup = Supervisor()
    sup.spawn("w-early", lambda: None).join(5)
    assert [(d.worker, d.reason) for d in sup.deaths] == [
        ("w-early", "returned while the service was running")]

    quiet = Supervisor()
    release = threading.Event()
    thread = quiet.spawn("w-orderly", lambda: release.wait(5) and None)
    quiet.stopping()
    release.set()
    thread.join(5)
    quiet.fail("w-give-up", "commit retried past its grace period")  # at shutdown: not a death
    assert quiet.deaths == ()
    assert not quiet.failed.is_set()


def test_a_child_worker_may_return_but_not_raise() -> None:
    """The pipeline's commit writers end when the pipeline hands them an end mark: a return is
    their parent's doing (else a dying pipeline's death is blamed on a writer that returned)."""
    sup = Supervisor()
    sup.spawn("w-child", lambda: None, child=True).join(5)
    assert sup.deaths == ()

    def boom() -> None:
        raise RuntimeError("driver bug")

    sup.spawn("w-child-boom", boom, child=True).join(5)
    assert [(d.worker, d.reason) for d in sup.deaths] == [
        ("w-child-boom", "RuntimeError: driver bug")]


def test_probes_find_threads_that_stopped_and_excepthook_catches_foreign_threads() -> None:
    sup = Supervisor()
    alive = {"http": True}
    sup.watch("eldercare-http", lambda: alive["http"])
    assert sup.check() == ()
    alive["http"] = False
    assert [d.worker for d in sup.check()] == ["eldercare-http"]

    previous = threading.excepthook
    threading.excepthook = sup.excepthook
    try:
        def crash() -> None:
            raise ValueError("in a library's thread")
        foreign = threading.Thread(target=crash, name="paho-mqtt-client-x")
        foreign.start()
        foreign.join(5)
    finally:
        threading.excepthook = previous
    assert [d.worker for d in sup.deaths] == ["eldercare-http", "paho-mqtt-client-x"]
    assert sup.deaths[1].reason == "ValueError: in a library's thread"


class _FailingStore:
    """A TelemetryStore whose commit fails with something other than a database error."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, batch: Batch) -> WriteResult:
        self.calls += 1
        raise RuntimeError("injected driver bug")

    def close(self) -> None:
        pass


def _metric(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


def test_health_and_metrics_report_a_dead_pipeline_the_moment_it_dies(
        make_config: Callable[..., Config], publisher: Publisher, region: str) -> None:
    store = _FailingStore()
    told: list[Death] = []
    config = make_config(**{"spool.enabled": False})
    service = Application(config, store=store, supervisor=Supervisor(on_death=told.append))
    with service:
        assert service.http is not None
        base = f"http://127.0.0.1:{service.http.port}"

        def metrics() -> str:  # what a scrape of /metrics serves
            return generate_latest(service.ingest.metrics.registry).decode()

        ok = httpx.get(f"{base}/api/v1/health")
        assert (ok.status_code, ok.json()) == (200, {"status": "ok", "failed_workers": []})
        assert httpx.get(f"{base}/healthz").json() == ok.json()
        ready = httpx.get(f"{base}/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True, "failed_workers": [],
            "checks": {"running": True, "mqtt": True, "database": True, "workers": True}})
        assert _metric(metrics(), "eldercare_workers_failed") == 0

        publisher.publish(device_topic(region, "WT-DEAD"), json.dumps(
            {"type": "sos", "ts": now_ms()}).encode())
        wait_for(lambda: told, what="the pipeline's death")
        health = httpx.get(f"{base}/api/v1/health")
        assert health.status_code == 503
        assert health.json() == {"status": "failed", "failed_workers": ["eldercare-pipeline"]}
        assert httpx.get(f"{base}/healthz").status_code == 503
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["workers"] is False
        assert ready.json()["failed_workers"] == ["eldercare-pipeline"]
        assert _metric(metrics(), "eldercare_workers_failed") >= 1
        assert "RuntimeError: injected driver bug" in told[0].reason
    assert store.calls == 1  # nothing was acknowledged behind the failed batch


def test_the_pipeline_thread_raises_worker_error_when_it_halts_unasked(
        make_config: Callable[..., Config]) -> None:
    """The pipeline's own thread body ends in WorkerError (not a quiet return), so any owner,
    supervised or not, sees the halt."""
    service = Application(make_config(), store=_FailingStore())
    pipeline = service.ingest.pipeline
    pipeline._fail("writer failed (RuntimeError: x)")  # what a writer does on a bug
    with pytest.raises(WorkerError, match="eldercare-pipeline: writer failed"):
        pipeline.run()


class _BrokenDecoder(MessageDecoder):
    def decode(self, topic: str, payload: bytes, *, now_ms: int,
               content_type: str | None = None) -> Decoded:
        raise RuntimeError("decoder bug")


def test_a_pipeline_that_raises_is_the_death_reported_not_the_writers_it_ends() -> None:
    """The CI run that failed once: the decoder raised in the pipeline thread, whose cleanup
    ended its commit writers, and the supervisor blamed ``eldercare-commit-0`` ("returned")
    and logged the real exception as a shutdown warning."""
    sup = Supervisor()
    buffer = MessageBuffer(max_messages=10, max_bytes=10**6)
    pipeline = IngestPipeline(
        buffer=buffer, decoder=_BrokenDecoder(), stores=[_FailingStore(), _FailingStore()],
        ack=lambda messages: len(messages), clock=SystemClock(), metrics=IngestMetrics(),
        spawn=sup.spawn, on_failure=lambda reason: sup.fail("eldercare-pipeline", reason))
    assert buffer.put(Message(topic=device_topic("r1", "WT-1"), payload=b"{}", mid=1, qos=1,
                              content_type=None, received_ms=now_ms(), generation=1),
                      abort=threading.Event())
    thread = sup.spawn("eldercare-pipeline", pipeline.run)
    thread.join(10)
    assert not thread.is_alive()  # and its writers were joined before it ended
    assert [d.worker for d in sup.deaths] == ["eldercare-pipeline"]
    assert "RuntimeError: decoder bug" in sup.deaths[0].reason


def test_readyz_fails_on_any_check_and_answers_head(migrated_db: str) -> None:
    """The probe's shape, on the app alone: a failing check (the database, say) is 503 with the
    check named; HEAD answers like GET without a body."""
    from alerts.api import create_app
    from alerts.auth import TokenTable
    from alerts.store import AlertStore
    from foundation.clock import ManualClock
    from foundation.http_server import HttpServer

    checks = {"mqtt": True, "database": False}
    store = AlertStore(migrated_db)
    app = create_app(store=store, database_url=migrated_db, tokens=TokenTable(),
                     clock=ManualClock(0), liveness=lambda: (), readiness=lambda: checks)
    try:
        with HttpServer(app, host="127.0.0.1", port=0) as server, \
                httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            down = client.get("/readyz")
            assert (down.status_code, down.json()) == (503, {
                "ready": False, "failed_workers": [],
                "checks": {"mqtt": True, "database": False, "workers": True}})
            checks["database"] = True
            assert client.get("/readyz").status_code == 200
            head = client.head("/readyz")
            assert (head.status_code, head.content) == (200, b"")
            assert client.head("/healthz").status_code == 200
    finally:
        store.close()
