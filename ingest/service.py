"""The ingest service: wires source, buffer, pipeline and store, and owns their threads.

Lifecycle (explicit states, see :class:`State`)::

    NEW --start()--> RUNNING --stop()--> DRAINING --> STOPPED

``stop()`` (SIGTERM in ``eldercare run``) closes intake, lets the pipeline commit and acknowledge
everything it holds, then disconnects. Messages that arrive during the drain are not acknowledged,
so the broker redelivers them to the next run (persistent session). Threads are named and joined.

Every long-lived thread is started through the :class:`~foundation.supervisor.Supervisor`: one
that dies unexpectedly is recorded at once (``/api/v1/health`` answers 503,
``eldercare_workers_failed`` counts it) and its ``on_death`` tells the owner (``eldercare run``)
to stop in order and exit non-zero, so the process is restarted instead of staying up and deaf.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from prometheus_client import Gauge, start_http_server

from alerts.service import AlertService
from detectors.engine import DetectorEngine
from detectors.events import Event, EventSink
from eldercare.config import Config
from foundation.broker import BrokerAddress
from foundation.clock import Clock, SystemClock
from foundation.errors import EldercareError, StorageError
from foundation.supervisor import Supervisor
from ingest.admission import registry_admission
from ingest.batch import Batch
from ingest.buffer import MessageBuffer
from ingest.detection import DetectionMetrics, DetectionStage
from ingest.event_store import PostgresEventStore
from ingest.metrics import IngestMetrics
from ingest.migrations import MigrationReport, RetentionPolicy, migrate, prune
from ingest.pipeline import BatchSink, IngestPipeline, PipelineConfig
from ingest.registry_store import store_registry
from ingest.source import MqttSource
from ingest.spool import SegmentLog
from ingest.storage import PostgresStore, TelemetryStore
from schemas import SUBSCRIPTIONS, MessageDecoder
from schemas.registry import load_registry

log = logging.getLogger(__name__)

#: How long ``/readyz`` waits for the database before calling it unavailable.
READY_DB_TIMEOUT_S = 2


class State(enum.Enum):
    """Lifecycle state of the service."""

    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


def retention_of(config: Config) -> RetentionPolicy:
    """The retention policy section of the database configuration."""
    db = config.database
    return RetentionPolicy(
        readings_days=db.retention_readings_days, accel_days=db.retention_accel_days,
        dead_letter_days=db.retention_dead_letter_days, compress_after_days=db.compress_after_days,
    )


def spool_directory(config: Config) -> Path:
    """The spool directory: ``[spool] dir``, or one per client id under the XDG state home."""
    if config.spool.dir:
        return Path(config.spool.dir)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "eldercare" / "spool" / config.mqtt.client_id


def prepare_database(config: Config, *, wait_s: float = 30.0) -> MigrationReport:
    """Apply migrations and load the registry file, waiting up to ``wait_s`` for the database."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with psycopg.connect(config.database.url, autocommit=True, connect_timeout=5) as conn:
                report = migrate(conn, timescale=config.database.timescale,
                                 retention=retention_of(config))
                if config.registry:
                    n = store_registry(conn, load_registry(config.registry))
                    log.info("registry: %d wearers loaded from %s", n, config.registry)
                return report
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise StorageError(f"database unreachable at start-up: {exc}") from exc
            log.warning("database not reachable yet (%s); retrying", str(exc).strip())
            time.sleep(1.0)


class IngestService:
    """MQTT → validated readings → PostgreSQL, as one long-lived component."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        sink: BatchSink | None = None,
        store: TelemetryStore | None = None,
        event_sink: EventSink | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        #: Whoever must act on a dead worker passes its own (``eldercare run``); by default
        #: deaths are only recorded (and reported by health and metrics).
        self.supervisor = supervisor or Supervisor()
        spawn = self.supervisor.spawn
        self.metrics = IngestMetrics()
        Gauge("eldercare_workers_failed", "Worker threads that died unexpectedly (the process"
              " then exits non-zero)", registry=self.metrics.registry,
              ).set_function(lambda: len(self.supervisor.check()))
        self.state = State.NEW
        self.timescale = False
        cfg = config.ingest
        self.buffer = MessageBuffer(max_messages=cfg.buffer_messages, max_bytes=cfg.buffer_bytes)
        # One store per writer; an injected store (tests) means one writer.
        self.stores: list[TelemetryStore] = [store] if store is not None else [
            PostgresStore(config.database.url, method=config.database.write_method)
            for _ in range(cfg.writers)]
        self.source = MqttSource(
            address=BrokerAddress.from_config(config.mqtt), client_id=config.mqtt.client_id,
            subscriptions=SUBSCRIPTIONS, buffer=self.buffer, clock=self.clock,
            metrics=self.metrics, protocol=config.mqtt.protocol,
            session_expiry_s=config.mqtt.session_expiry_s, keepalive_s=config.mqtt.keepalive_s,
            reconnect_max_s=config.mqtt.reconnect_max_s,
        )
        self.detection: DetectionStage | None = None
        self.alerts: AlertService | None = None
        # The local spool (docs/spool.md): messages and events wait here, durably, while
        # the database is down or ingest is overloaded.
        sp = config.spool
        self.spool: SegmentLog | None = None
        self.journal: SegmentLog | None = None
        if sp.enabled and store is None:
            directory = spool_directory(config)
            self.spool = SegmentLog(directory, name="messages", max_bytes=sp.max_bytes,
                                    segment_bytes=sp.segment_bytes)
            self.journal = SegmentLog(directory, name="events", max_bytes=sp.max_bytes,
                                      segment_bytes=sp.segment_bytes)
        # One registry for admission (ingest/admission.py) and detection.
        registry = load_registry(config.registry) if config.registry else None
        if config.detectors.enabled:
            if config.alerts.enabled:
                self.alerts = AlertService(config, clock=self.clock, spawn=spawn,
                                           liveness=self.supervisor.check,
                                           readiness=self.readiness)
            sinks = [s for s in (self.alerts, event_sink) if s is not None]
            self.detection = DetectionStage(
                engine=DetectorEngine(params=config.detectors.params(), registry=registry),
                store=PostgresEventStore(config.database.url), sink=_fan_out(sinks),
                clock=self.clock, metrics=DetectionMetrics(self.metrics.registry),
                tick_s=config.detectors.tick_s, journal=self.journal,
                on_unstored=self.alerts.unstored if self.alerts is not None else None,
                spawn=spawn)
        self.pipeline = IngestPipeline(
            buffer=self.buffer,
            decoder=MessageDecoder(max_payload_bytes=cfg.max_payload_bytes,
                                   max_future_ms=cfg.max_future_s * 1000,
                                   admission=registry_admission(
                                       registry, counter=self.metrics.unregistered_readings)),
            stores=self.stores, ack=self.source.ack, clock=self.clock, metrics=self.metrics,
            config=PipelineConfig(max_batch_readings=cfg.max_batch_readings,
                                  linger_s=cfg.linger_ms / 1000,
                                  defer_after_s=sp.defer_after_ms / 1000,
                                  probe_s=sp.probe_ms / 1000),
            spool=self.spool,
            sink=_chain(self.detection, sink),
            spawn=spawn,
            on_failure=lambda reason: self.supervisor.fail("eldercare-pipeline", reason),
        )
        self._threads: list[threading.Thread] = []
        self._maintenance_stop = threading.Event()
        self._http: object | None = None
        self.metrics_port: int | None = None

    def start(self) -> None:
        """Migrate, start the metrics endpoint, the pipeline thread, then connect to the broker."""
        if self.state is not State.NEW:
            raise EldercareError(f"cannot start a service in state {self.state.value}")
        report = prepare_database(self.config)
        self.timescale = report.timescale
        if self.config.metrics.port:
            server, _thread = start_http_server(
                self.config.metrics.port, addr=self.config.metrics.host,
                registry=self.metrics.registry)
            self._http = server
            self.metrics_port = server.server_port
            log.info("metrics on http://%s:%d/metrics", self.config.metrics.host, self.metrics_port)
        if self.alerts is not None:
            self.alerts.start()
            if self.alerts.api is not None:
                self.supervisor.watch("eldercare-http", self.alerts.api.alive)
        if self.detection is not None:
            self.detection.start()
        self._spawn("eldercare-pipeline", self.pipeline.run)
        self._spawn("eldercare-maintenance", self._maintenance_loop)
        try:
            self.source.start(timeout_s=self.config.mqtt.connect_timeout_s)
        except EldercareError:
            self.stop()
            raise
        self.state = State.RUNNING
        log.info("ingest running (timescale=%s, write method %s)", self.timescale,
                 self.config.database.write_method)

    def readiness(self) -> dict[str, bool]:
        """The checks of ``/readyz`` (alerts/probes.py): running, connected to the broker, and
        the database answering a query within ``READY_DB_TIMEOUT_S``. Worker liveness is added
        by the probe itself."""
        return {"running": self.state is State.RUNNING,
                "mqtt": self.metrics.value("eldercare_mqtt_connected") == 1,
                "database": self._database_answers()}

    def _database_answers(self) -> bool:
        try:
            with psycopg.connect(self.config.database.url, autocommit=True,
                                 connect_timeout=READY_DB_TIMEOUT_S,
                                 options=f"-c statement_timeout={READY_DB_TIMEOUT_S * 1000}",
                                 ) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        self._threads.append(self.supervisor.spawn(name, target))

    def _maintenance_loop(self) -> None:
        """Retention prune at start, then hourly (dead letters; everything on plain
        PostgreSQL). At start too: a service restarted more often than hourly (deploys, a
        crash loop) would otherwise never prune, and keep location history past retention."""
        while True:
            try:
                with psycopg.connect(self.config.database.url, autocommit=True) as conn:
                    deleted = prune(conn, retention=retention_of(self.config),
                                    timescale=self.timescale)
                log.info("retention prune: %s", deleted)
            except (psycopg.Error, StorageError) as exc:
                log.warning("retention prune failed: %s", exc)
            if self._maintenance_stop.wait(3600.0):
                return

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Drain and commit what is held, acknowledge it, disconnect, join threads."""
        if self.state is State.STOPPED:
            return
        self.state = State.DRAINING
        self.supervisor.stopping()  # workers returning from here on are not deaths
        self.source.close_intake()
        self.pipeline.request_stop()
        if self.detection is not None:
            self.detection.request_stop()
        self._maintenance_stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.error("thread %s did not stop within %.0f s", t.name, timeout_s)
        self.source.stop()
        if self.detection is not None:
            self.detection.stop()
        if self.alerts is not None:
            self.alerts.stop()  # after detection: it folds what the last batches stored
        for store in self.stores:
            store.close()
        for log_ in (self.spool, self.journal):
            if log_ is not None:
                log_.close()
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]
            self._http.server_close()  # type: ignore[attr-defined]
        self.state = State.STOPPED
        log.info("ingest stopped")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _FanOut:
    """One EventSink in front of several, each called whatever the others do."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)

    def handle(self, events: Sequence[Event]) -> None:
        for sink in self.sinks:
            try:
                sink.handle(events)
            except Exception:  # one faulty consumer must not starve the others
                log.exception("event sink %r failed", sink)


def _fan_out(sinks: Sequence[EventSink]) -> EventSink | None:
    return None if not sinks else sinks[0] if len(sinks) == 1 else _FanOut(sinks)


def _chain(*sinks: BatchSink | None) -> BatchSink | None:
    """One batch sink calling each given sink in order (detection first)."""
    present = [s for s in sinks if s is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def call_all(batch: Batch) -> None:
        for s in present:
            s(batch)
    return call_all
