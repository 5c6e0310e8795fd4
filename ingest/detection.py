"""The detection stage of the service: engine, event store and the hand-off to alerts.

The pipeline calls the stage (a :data:`~ingest.pipeline.BatchSink`) with each batch after its
readings commit and *before* the batch's MQTT messages are acknowledged. The stage runs the
engine, stores the events and hands the new ones to the :class:`~detectors.events.EventSink`.
If the event store fails, the stage retries (an SOS event must not be lost because the database
hiccuped); if it gives up at shutdown it raises :class:`StorageError`, the messages stay
unacknowledged, and the broker redelivers them to the next run, which detects them again.

A named timer thread (a :class:`foundation.worker.Worker`) runs the engine's clock rules
(offline, inactivity, silent falls) every ``tick_s``. One lock serialises it with batches: the
engine is single-threaded state.

With an event journal (``ingest/spool.py``; docs/spool.md) a failing event store is not
retried in place: the events are appended to the journal (fsync) and handed to ``on_unstored``
(the alert service sends life-safety ones to the dispatch centre provisionally), and the batch
goes on. The timer thread writes the journal into the store once it answers again, and hands
the events that are new to the sink as usual. Detection needs no database: during an outage
the pipeline still calls the stage with the batches it spools.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram

from detectors.engine import DetectorEngine, PreparedRegistry
from detectors.events import Event, EventSink
from foundation.clock import Clock
from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn
from foundation.worker import Worker
from ingest.batch import Batch
from ingest.event_store import EventStore
from ingest.retry import StorageRetry
from ingest.spool import SegmentLog, SpoolError

log = logging.getLogger(__name__)

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DetectionMetrics:
    """Prometheus metrics of the detection stage (registered on the service's registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("eldercare_detection_events", "New detection events, by type",
                              ["type"], registry=registry)
        self.seconds = Histogram("eldercare_detection_seconds", "Engine time per batch",
                                 buckets=_BUCKETS, registry=registry)
        self.alarm_latency = Histogram(
            "eldercare_alarm_latency_seconds",
            "SOS and fall events: from receipt of the reading to the stored event",
            buckets=_BUCKETS, registry=registry)
        self.store_errors = Counter("eldercare_detection_store_errors",
                                    "Failed event writes (retried)", registry=registry)
        self.failures = Counter("eldercare_detection_failures",
                                "Batches the engine failed on (logged; ingest goes on)",
                                registry=registry)


class DetectionStage:
    """Runs detection on committed batches and on a timer; see the module docstring."""

    def __init__(self, *, engine: DetectorEngine, store: EventStore, sink: EventSink | None,
                 clock: Clock, metrics: DetectionMetrics, tick_s: float = 5.0,
                 retry_max_s: float = 5.0, shutdown_retry_s: float = 10.0,
                 journal: SegmentLog | None = None,
                 on_unstored: Callable[[Sequence[Event]], None] | None = None,
                 spawn: Spawn = plain_spawn) -> None:
        self.engine = engine
        self.journal = journal
        self.on_unstored = on_unstored
        self.store = store
        self.sink = sink
        self.clock = clock
        self.metrics = metrics
        self.tick_s = tick_s
        self._retry = StorageRetry(max_s=retry_max_s, shutdown_grace_s=shutdown_retry_s,
                                   on_error=metrics.store_errors.inc)
        self._lock = threading.Lock()
        # The journal a previous run left is flushed first, unguarded (a failure to begin is a
        # death); then flush and tick every tick_s, until a stop (no final tick).
        self._timer = Worker("eldercare-detect-timer", self._tick_round, spawn=spawn,
                             on_error=self._tick_failed, on_start=self.flush_journal,
                             first_wait_s=tick_s)

    def __call__(self, batch: Batch) -> None:
        """Detect on one committed batch (called by the pipeline before acknowledging it)."""
        if not batch.readings:
            return
        started = time.perf_counter()
        with self._lock:
            try:
                events = self.engine.process(batch.readings, batch.regions, batch.received_ms)
            except Exception:  # a detector bug must not stop ingest; it is counted and logged
                self.metrics.failures.inc()
                log.exception("detector engine failed on a batch of %d readings",
                              len(batch.readings))
                return
            failures, self.engine.errors = self.engine.errors, []
        for name, exc in failures:
            self.metrics.failures.inc()
            log.error("detector %s failed on a batch of %d readings; the other detectors ran",
                      name, len(batch.readings), exc_info=exc)
        self.metrics.seconds.observe(time.perf_counter() - started)
        self._deliver(events, batch)

    def start(self) -> None:
        """Arm offline supervision of registered devices, then start the timer thread."""
        with self._lock:
            armed = self.engine.watch_registered(self.clock.now_ms())
        log.info("detection: offline supervision armed for %d registered devices", armed)
        self._timer.start()

    def set_registry(self, registry: PreparedRegistry) -> int:
        """A new registry (live reload, ``ingest/registry_watch.py``), prepared beforehand in
        the caller's thread (``DetectorEngine.prepare_registry``): swap it in, then arm offline
        supervision of newly registered devices from now, as :meth:`start` does for those
        registered at start. Returns how many it armed. Serialised with batches and ticks;
        what the engine keeps over a reload: ``DetectorEngine.apply_registry``."""
        with self._lock:
            self.engine.apply_registry(registry)
            return self.engine.watch_registered(self.clock.now_ms())

    def request_stop(self) -> None:
        """Shutdown: from now on a failing event store is retried for ``shutdown_retry_s`` only."""
        self._retry.request_stop()
        self._timer.request_stop()

    def stop(self) -> None:
        """Stop the timer thread and close the store."""
        self._timer.stop(30)
        self.store.close()

    def tick(self) -> None:
        """Run the clock rules once at the clock's now."""
        with self._lock:
            events = self.engine.tick(self.clock.now_ms())
        self._deliver(events, None)

    def _tick_round(self) -> float:
        self.flush_journal()
        self.tick()
        return self.tick_s

    def _tick_failed(self, exc: Exception) -> float:
        if isinstance(exc, StorageError):  # the retry gives up only at shutdown
            log.error("timer events not stored at shutdown: %s", exc)
        else:
            self.metrics.failures.inc()
            log.exception("detector timer failed", exc_info=exc)
        return self.tick_s

    def _deliver(self, events: Sequence[Event], batch: Batch | None) -> None:
        if not events:
            return
        new = self._store(events)
        now = self.clock.now_ms()
        received = _alarm_receipts(new, batch)
        for e in new:
            self.metrics.events.labels(e.type).inc()
            got = received.get((e.device_id, e.ts))
            if got is not None:
                self.metrics.alarm_latency.observe(max(0, now - got) / 1000)
            log.info("event %s device=%s ts=%d severity=%s", e.type, e.device_id, e.ts,
                     e.severity)
        if new and self.sink is not None:
            try:
                self.sink.handle(new)
            except Exception:  # the alert stage has its own durability; log and go on
                log.exception("event sink failed on %d events", len(new))

    def _store(self, events: Sequence[Event]) -> list[Event]:
        def write() -> list[Event]:
            return self.store.write(events, detected_ms=self.clock.now_ms())

        what = f"storing {len(events)} events"
        if self.journal is None:
            return self._retry.run(write, what)
        try:
            return write()
        except StorageError as exc:
            self.metrics.store_errors.inc()
            try:
                self.journal.append([self._encode(e) for e in events])
            except SpoolError as jexc:
                log.error("event journal cannot take %d events (%s); retrying the store",
                          len(events), jexc)
                return self._retry.run(write, what)
            log.warning("%d events journaled, the event store failed: %s", len(events), exc)
        if self.on_unstored is not None:
            try:
                self.on_unstored(events)
            except Exception:
                log.exception("on_unstored failed")
        return []

    @staticmethod
    def _encode(event: Event) -> object:
        return msgspec.to_builtins(event)

    def flush_journal(self) -> int:
        """Store journaled events (oldest first) and hand the new ones on; returns how many
        were new. Stops at the first failure: the rest stay journaled for the next try."""
        if self.journal is None:
            return 0
        new_total = 0
        for segment in self.journal.sealed(seal_current=True):
            try:
                events = msgspec.convert(self.journal.read(segment), list[Event])
                new = self.store.write(events, detected_ms=self.clock.now_ms())
            except (StorageError, SpoolError, msgspec.ValidationError) as exc:
                log.warning("event journal not flushed yet: %s", exc)
                return new_total
            self.journal.release(segment)
            log.info("event journal: %d events stored (%d new)", len(events), len(new))
            new_total += len(new)
            if new and self.sink is not None:
                try:
                    self.sink.handle(new)
                except Exception:
                    log.exception("event sink failed on %d journaled events", len(new))
        return new_total


def _alarm_receipts(events: Sequence[Event], batch: Batch | None) -> dict[tuple[str, int], int]:
    """Receipt times of the readings behind SOS and fall events, for the latency metric. Only
    built when there are such events: most batches have none, and this is the commit path."""
    wanted = {(e.device_id, e.ts) for e in events if e.type in ("sos", "fall")}
    if not wanted or batch is None:
        return {}
    return {(str(r.device_id), r.ts): ms for r, ms in zip(batch.readings, batch.received_ms,
                                                          strict=True)
            if (r.device_id, r.ts) in wanted}
