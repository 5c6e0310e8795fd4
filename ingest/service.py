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

The service takes its own configuration sections and whatever consumes its detection events
(the alert service, handed in by the application, ``eldercare.app``); it builds nothing of
other components and does not migrate the database: the application does that before
:meth:`IngestService.start`, once for every component.

The registry (admission, detection's bindings and zones, GCJ-02 devices) is, with
``[enrolment]`` given, the database's: read at start (after the application loaded the
registry file, if any, into it) and reloaded live by :class:`~ingest.registry_watch.RegistryWatch`
whenever staff change it. Admission follows ``[enrolment] admission``
(:func:`~ingest.admission.admission_enabled`); detection gets the database's zones either way.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
from prometheus_client import start_http_server

from detectors.engine import DetectorEngine
from detectors.events import Event, EventSink
from detectors.settings import DetectorsConfig
from foundation.broker import BrokerAddress, MqttConfig
from foundation.clock import Clock, SystemClock
from foundation.database import DatabaseConfig, database_answers
from foundation.errors import EldercareError, StorageError
from foundation.lifecycle import StartStop
from foundation.supervisor import Supervisor
from foundation.worker import Worker
from ingest.admission import RegistryAdmission, admission_enabled
from ingest.batch import Batch
from ingest.buffer import MessageBuffer
from ingest.coords import gcj02_devices
from ingest.detection import DetectionMetrics, DetectionStage
from ingest.event_store import PostgresEventStore
from ingest.metrics import IngestMetrics
from ingest.migrations import prune
from ingest.pipeline import BatchSink, IngestPipeline, PipelineConfig, RegistryChange
from ingest.registry_watch import RegistryWatch
from ingest.settings import (
    IngestConfig,
    MetricsConfig,
    SpoolConfig,
    retention_of,
    spool_directory,
)
from ingest.source import MqttSource
from ingest.spool import SegmentLog
from ingest.storage import PostgresStore, TelemetryStore
from registry.settings import EnrolmentConfig
from registry.snapshot import Snapshot
from schemas import SUBSCRIPTIONS, MessageDecoder
from schemas.registry import Registry

log = logging.getLogger(__name__)

#: How long ``/readyz`` waits for the database before calling it unavailable.
READY_DB_TIMEOUT_S = 2
#: How often the retention prune runs (and is retried after a database error).
PRUNE_EVERY_S = 3600.0


class State(enum.Enum):
    """Lifecycle state of the service."""

    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class IngestService(StartStop):
    """MQTT → validated readings → PostgreSQL, as one long-lived component."""

    def __init__(
        self,
        *,
        mqtt: MqttConfig,
        database: DatabaseConfig,
        ingest: IngestConfig,
        spool: SpoolConfig,
        metrics: MetricsConfig,
        detectors: DetectorsConfig | None,
        enrolment: EnrolmentConfig,
        registry_file: bool = False,
        events: EventSink | None = None,
        on_unstored: Callable[[Sequence[Event]], None] | None = None,
        clock: Clock | None = None,
        sink: BatchSink | None = None,
        store: TelemetryStore | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        """``detectors``: None runs no detection; ``enrolment``: the registry is the
        database's, reloaded live (``registry_file``: whether the application loaded a
        registry file into it, which turns admission on unless ``[enrolment] admission``
        says otherwise); ``events``: where stored detection events go (the
        alert service); ``on_unstored``: told of events the database could not take;
        ``sink``: told of every completed batch (tests, benchmarks); ``store``: one writer on
        this store instead of PostgreSQL (tests; no spool then)."""
        self.mqtt, self.database, self.metrics_config = mqtt, database, metrics
        self.clock = clock or SystemClock()
        #: Whoever must act on a dead worker passes its own (``eldercare run``); by default
        #: deaths are only recorded (and reported by health and metrics).
        self.supervisor = supervisor or Supervisor()
        spawn = self.supervisor.spawn
        self.metrics = IngestMetrics()
        self.state = State.NEW
        self.timescale = False
        cfg = self.ingest_config = ingest
        self.admission_on = admission_enabled(enrolment.admission, registry_file=registry_file)
        self.buffer = MessageBuffer(max_messages=cfg.buffer_messages, max_bytes=cfg.buffer_bytes)
        # One store per writer; an injected store (tests) means one writer.
        self.stores: list[TelemetryStore] = [store] if store is not None else [
            PostgresStore(database.url, method=database.write_method)
            for _ in range(cfg.writers)]
        self.source = MqttSource(
            address=BrokerAddress.from_config(mqtt), client_id=mqtt.client_id,
            subscriptions=SUBSCRIPTIONS, buffer=self.buffer, clock=self.clock,
            metrics=self.metrics, protocol=mqtt.protocol,
            session_expiry_s=mqtt.session_expiry_s, keepalive_s=mqtt.keepalive_s,
            reconnect_max_s=mqtt.reconnect_max_s,
        )
        self.detection: DetectionStage | None = None
        # The local spool (docs/spool.md): messages and events wait here, durably, while
        # the database is down or ingest is overloaded.
        sp = spool
        self.spool: SegmentLog | None = None
        self.journal: SegmentLog | None = None
        if sp.enabled and store is None:
            directory = spool_directory(sp, client_id=mqtt.client_id)
            self.spool = SegmentLog(directory, name="messages", max_bytes=sp.max_bytes,
                                    segment_bytes=sp.segment_bytes)
            self.journal = SegmentLog(directory, name="events", max_bytes=sp.max_bytes,
                                      segment_bytes=sp.segment_bytes)
        # One registry for admission (ingest/admission.py) and detection: the database's,
        # read at start and on every change (self.watch).
        if detectors is not None:
            self.detection = DetectionStage(
                engine=DetectorEngine(params=detectors.params(),
                                      watch_unlisted=not self.admission_on),
                store=PostgresEventStore(database.url), sink=events,
                clock=self.clock, metrics=DetectionMetrics(self.metrics.registry),
                tick_s=detectors.tick_s, journal=self.journal, on_unstored=on_unstored,
                spawn=spawn)
        self.pipeline = IngestPipeline(
            buffer=self.buffer,
            decoder=self._decoder(self._first_admission()),
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
        self.watch = RegistryWatch(database_url=database.url,
                                   interval_s=enrolment.reload_interval_s,
                                   build=self._registry_change,
                                   deliver=self.pipeline.change_registry,
                                   metrics=self.metrics, spawn=spawn)
        self._threads: list[threading.Thread] = []
        self.maintenance = Worker("eldercare-maintenance", self._prune, spawn=spawn,
                                  on_error=self._prune_failed)
        self._http: object | None = None
        self.metrics_port: int | None = None

    def start(self, *, timescale: bool = False) -> None:
        """Start the metrics endpoint, detection, the pipeline thread, then connect to the
        broker. The database must be migrated (``timescale``: whether it runs TimescaleDB, for
        the retention prune)."""
        if self.state is not State.NEW:
            raise EldercareError(f"cannot start a service in state {self.state.value}")
        self.timescale = timescale
        # The database's registry, before anything is decoded or detected (StorageError: a
        # service that cannot read its registry must not run without it).
        self.pipeline.apply_registry(self.watch.load())
        m = self.metrics_config
        if m.port:
            server, _thread = start_http_server(m.port, addr=m.host,
                                                registry=self.metrics.registry)
            self._http = server
            self.metrics_port = server.server_port
            log.info("metrics on http://%s:%d/metrics", m.host, self.metrics_port)
        if self.detection is not None:
            self.detection.start()
        self._threads.append(self.supervisor.spawn("eldercare-pipeline", self.pipeline.run))
        self.maintenance.start()
        self.watch.start()
        try:
            self.source.start(timeout_s=self.mqtt.connect_timeout_s)
        except EldercareError:
            self.stop()
            raise
        self.state = State.RUNNING
        log.info("ingest running (timescale=%s, write method %s)", self.timescale,
                 self.database.write_method)

    def _first_admission(self) -> RegistryAdmission | None:
        """The admission until the database's registry is read at start."""
        counter = self.metrics.unregistered_readings
        if not self.admission_on:
            log.warning("registry admission is off ([enrolment] admission): readings of every"
                        " device id are stored; detection uses the database's registry")
            return None
        log.info("registry admission on: the database's registry, reloaded live")
        return RegistryAdmission(Registry(wearers=[]), counter=counter)

    def _decoder(self, admission: RegistryAdmission | None) -> MessageDecoder:
        cfg = self.ingest_config
        return MessageDecoder(max_payload_bytes=cfg.max_payload_bytes,
                              max_future_ms=cfg.max_future_s * 1000, admission=admission)

    def _registry_change(self, snap: Snapshot) -> RegistryChange:
        """What the pipeline applies for a new snapshot (built in the watcher's thread; only
        ``apply`` runs in the pipeline's)."""
        reg = snap.registry
        admission = (RegistryAdmission(reg, counter=self.metrics.unregistered_readings)
                     if self.admission_on else None)
        detection, m = self.detection, self.metrics
        # The engine's arrays are built here, in the watcher's thread: the pipeline thread
        # only swaps them in (tens of milliseconds at 100,000 wearers).
        prepared = detection.engine.prepare_registry(reg) if detection is not None else None

        def apply() -> None:
            if detection is not None and prepared is not None:
                detection.set_registry(prepared)
            m.registry_version.set(snap.version)
            m.registry_wearers.set(len(reg.wearers))
            m.registry_invalid.set(len(snap.invalid))

        return RegistryChange(version=snap.version, decoder=self._decoder(admission),
                              gcj02=gcj02_devices(reg), apply=apply)

    def readiness(self) -> dict[str, bool]:
        """The checks of ``/readyz`` (alerts/probes.py): running, connected to the broker, and
        the database answering a query within ``READY_DB_TIMEOUT_S``. Worker liveness is added
        by the probe itself."""
        return {"running": self.state is State.RUNNING,
                "mqtt": self.metrics.value("eldercare_mqtt_connected") == 1,
                "database": database_answers(self.database.url, timeout_s=READY_DB_TIMEOUT_S)}

    def _prune(self) -> float:
        """Retention prune at start, then hourly (dead letters; everything on plain
        PostgreSQL). At start too: a service restarted more often than hourly (deploys, a
        crash loop) would otherwise never prune, and keep location history past retention."""
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            deleted = prune(conn, retention=retention_of(self.database), timescale=self.timescale)
        log.info("retention prune: %s", deleted)
        return PRUNE_EVERY_S

    def _prune_failed(self, exc: Exception) -> float:
        """A database error is retried at the next prune; anything else is a bug (a death)."""
        if not isinstance(exc, psycopg.Error | StorageError):
            raise exc
        log.warning("retention prune failed: %s", exc)
        return PRUNE_EVERY_S

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Drain and commit what is held, acknowledge it, disconnect, join threads."""
        if self.state is State.STOPPED:
            return
        if self.state is State.NEW:  # never started (a component before it failed to start)
            for store in self.stores:
                store.close()
            self.state = State.STOPPED
            return
        self.state = State.DRAINING
        self.supervisor.stopping()  # workers returning from here on are not deaths
        self.source.close_intake()
        self.pipeline.request_stop()
        if self.detection is not None:
            self.detection.request_stop()
        self.maintenance.request_stop()
        self.watch.request_stop()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.error("thread %s did not stop within %.0f s", t.name, timeout_s)
        if not self.maintenance.stop(max(0.0, deadline - time.monotonic())):
            log.error("thread eldercare-maintenance did not stop within %.0f s", timeout_s)
        if not self.watch.stop(max(0.0, deadline - time.monotonic())):
            log.error("thread eldercare-registry-watch did not stop within %.0f s", timeout_s)
        self.source.stop()
        if self.detection is not None:
            self.detection.stop()
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


def _chain(*sinks: BatchSink | None) -> BatchSink | None:
    """One batch sink calling each given sink in order (detection first)."""
    present = [s for s in sinks if s is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def call_all(batch: Batch) -> None:
        for s in present:
            s(batch)
    return call_all
