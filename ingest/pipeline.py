"""The pipeline: take messages, decode, commit each batch, then acknowledge it.

Order is the guarantee: a message is acknowledged only after the transaction holding its readings
(or its dead letter) has committed. If the store fails, the batch is retried with jittered
exponential backoff and *nothing* is acknowledged meanwhile; the bounded buffer fills, the
network thread blocks, and the broker keeps the rest. Data is never dropped to make room.

One thread decodes; one writer thread per store (each store its own connection) commits batches
concurrently, because PostgreSQL processes a ``COPY`` mostly after the client has sent it: with
one connection the database idles while Python builds the next batch, and Python idles while
the database inserts (README, Performance). Whatever order the commits finish
in, batches are *completed* (counted, handed to the sink, acknowledged) strictly in the order
they were decoded: MQTT wants PUBACKs in PUBLISH order, and detection wants device time order.

Batches close at ``max_batch_readings`` readings or ``linger_s`` after their first message, or at
once when they hold an alarm reading (SOS, fall, wear, home alarm): lingering trades latency for
throughput, and an alarm's latency is the one that matters. The cost is smaller batches while
alarms arrive faster than batches fill (each still holds at least one take of ``max_take``
messages when there is a backlog); alarms are rare in real fleets. While a batch fills, the
pipeline asks the buffer for about as many messages as the batch still needs and sleeps until
they are there (``MessageBuffer.take(min_items=...)``), instead of waking for every message.

With a message spool (``ingest/spool.py``; docs/spool.md) two more paths exist:

- **Database down.** A batch whose commit fails is not retried in place: its messages are
  appended to the spool (fsync), the batch still goes through detection (which journals its
  events and sends life-safety ones to the dispatch centre provisionally), and it is then
  acknowledged. Later batches are spooled straight away, with one real commit tried every
  ``probe_s``; the first that succeeds ends the outage. The broker keeps delivering, so an
  SOS published during the outage is seen within a batch's time.
- **Overload.** Broker messages that waited in the buffer longer than ``defer_after_s`` and
  carry no alarm (no alarm type name of ``schemas.ALARM_TYPES``, nor ``accel``, in the payload) are
  deferred: appended to the spool and acknowledged at once, without decoding. That drains the
  broker's backlog at disk speed, so alarms behind it are reached quickly; the deferred readings
  are stored later, not shed. These PUBACKs go out ahead of earlier messages still being
  committed (MQTT asks for PUBACKs in order; Mosquitto and EMQX match them by packet id).

Spooled messages are replayed (``ingest/replay.py``) when the database is up and the broker has
nothing waiting: the pipeline takes them only when the buffer is empty.

**Registry changes** (live enrolment, ``ingest/registry_watch.py``) arrive from the watcher's
thread as a :class:`RegistryChange` and are applied here, in the pipeline thread, between
batches: once every batch decoded so far has completed (committed, detected, acknowledged), the
detection stage is rebound and the decoder with the new admission swapped in, so each batch is
admitted and detected under one registry. The wait is the few milliseconds of the commits in
flight, once per change; changes that arrive faster than that are coalesced (the latest wins).
Positions of devices registered as GCJ-02 are converted to WGS-84 right after decoding
(``ingest/coords.py``).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foundation.clock import Clock
from foundation.errors import StorageError, WorkerError
from foundation.supervisor import Spawn, plain_spawn
from ingest.batch import Batch
from ingest.buffer import Message, MessageBuffer
from ingest.coords import to_wgs84
from ingest.metrics import IngestMetrics
from ingest.replay import SpoolReplay, spool_records
from ingest.retry import StorageRetry
from ingest.spool import SegmentLog, SpoolError
from ingest.storage import TelemetryStore, WriteResult
from schemas import ALARM_TYPES, TYPE_NAMES, MessageDecoder

log = logging.getLogger(__name__)

#: Reading types that close their batch at once: ``schemas.ALARM_TYPES``, as classes.
ALARM_CLASSES = frozenset(cls for cls, name in TYPE_NAMES.items() if name in ALARM_TYPES)

#: Raw accelerometer streams are never deferred either: falls are detected in them, and a
#: deferred chunk would reach the fall detector too late. (Alarms: ``Message.urgent``.) A false
#: match (a device id "fall-7") only means "not deferred": the safe side.
_ACCEL_BYTES = re.compile(rb"accel")
#: How long overload lasts after the last overdue message (``_defer_overdue``).
_OVERLOAD_HOLD_S = 2.0

#: Called after each commit, before the acknowledgement, with the committed batch (the
#: detection stage plugs in here).
BatchSink = Callable[[Batch], None]
Acker = Callable[[list[Message]], int]


@dataclass(frozen=True, kw_only=True, slots=True)
class PipelineConfig:
    """Batching and retry parameters."""

    max_batch_readings: int = 5000
    #: Messages taken from the buffer per lock acquisition.
    max_take: int = 100
    linger_s: float = 0.05
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0
    #: On shutdown, how long to keep retrying a failing commit before giving up (the messages
    #: stay unacknowledged and the broker redelivers them).
    shutdown_retry_s: float = 10.0
    #: With a spool: broker messages older than this in the buffer are deferred when they hold
    #: no alarm (overload; module docstring); 0 never defers.
    defer_after_s: float = 0.5
    #: With a spool, while the database is down: how often a real commit is tried again.
    probe_s: float = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistryChange:
    """A new registry for the pipeline, applied between batches (module docstring)."""

    #: ``registry_version`` it was read at (logs, the version gauge).
    version: int
    #: The decoder with the new registry's admission (or none, admission off).
    decoder: MessageDecoder
    #: Devices whose positions are GCJ-02 (``ingest/coords.py``).
    gcj02: frozenset[str] = frozenset()
    #: Runs in the pipeline thread with no batch in flight, before the decoder is swapped
    #: (the detection stage's rebinding); an exception is logged, the rest still applied.
    apply: Callable[[], object] | None = None
    #: Set once applied (tests, and the watcher's gauge).
    applied: threading.Event = field(default_factory=threading.Event)


class IngestPipeline:
    """Owns the loop of the pipeline thread; see the module docstring."""

    def __init__(
        self,
        *,
        buffer: MessageBuffer,
        decoder: MessageDecoder,
        stores: Sequence[TelemetryStore],
        ack: Acker,
        clock: Clock,
        metrics: IngestMetrics,
        config: PipelineConfig = PipelineConfig(),
        sink: BatchSink | None = None,
        spool: SegmentLog | None = None,
        spawn: Spawn = plain_spawn,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.spawn = spawn
        #: Told at once when the pipeline halts on an unexpected error (the supervisor: the
        #: service must not stay up and deaf; foundation/supervisor.py).
        self.on_failure = on_failure
        #: Why the pipeline halted, if it did.
        self.failure: str | None = None
        self.decoder = decoder
        if not stores:
            raise ValueError("the pipeline needs at least one store")
        self.stores = list(stores)  # one writer thread each: batches committed at once
        self.ack = ack
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.sink = sink
        self._stop = threading.Event()
        self._failed = threading.Event()
        self._retry = StorageRetry(initial_s=config.retry_initial_s, max_s=config.retry_max_s,
                                   shutdown_grace_s=config.shutdown_retry_s,
                                   on_error=metrics.storage_errors.inc)
        self.spool = spool
        self.replay = SpoolReplay(spool) if spool is not None else None
        self._db_down = threading.Event()
        self._last_probe = 0.0
        self._overload_until = 0.0  # monotonic; see _defer_overdue
        self._overload_logged = -60.0
        self._spool_refused_logged = -60.0
        self._ready: queue.Queue[tuple[int, list[Message], Batch] | None] = queue.Queue(maxsize=1)
        # Completion order: the sequence number of the next batch to complete.
        self._turn = threading.Condition()
        self._next = 0
        #: Devices whose positions are converted from GCJ-02 (ingest/coords.py).
        self.gcj02: frozenset[str] = frozenset()
        self._pending: RegistryChange | None = None
        self._pending_lock = threading.Lock()

    def change_registry(self, change: RegistryChange) -> None:
        """Apply ``change`` between batches (from any thread; module docstring). A change
        still pending is replaced: only the latest registry matters."""
        with self._pending_lock:
            self._pending = change

    def apply_registry(self, change: RegistryChange) -> None:
        """Apply ``change`` now, in the caller's thread: only before :meth:`run` starts (the
        service's first registry) or in tests."""
        if change.apply is not None:
            try:
                change.apply()
            except Exception:  # detection keeps its previous registry; admission moves on
                log.exception("registry version %d not applied to detection", change.version)
        self.decoder = change.decoder
        self.gcj02 = change.gcj02
        change.applied.set()

    def _apply_pending(self, seq: int) -> None:
        """The pending registry change, once the ``seq`` batches decoded so far completed."""
        with self._pending_lock:
            change, self._pending = self._pending, None
        if change is None:
            return
        with self._turn:
            self._turn.wait_for(lambda: self._next == seq or self._failed.is_set())
        if not self._failed.is_set():
            self.apply_registry(change)

    def request_stop(self) -> None:
        """Finish what the buffer holds, then return from :meth:`run`."""
        self._retry.request_stop()
        self._stop.set()

    def run(self) -> None:
        """Thread body: decode batches here, commit them in the writer threads, complete them
        in order.

        The writers wait on PostgreSQL with the GIL released, so the next batch is decoded
        meanwhile. At most one decoded batch waits for a writer (the hand-off queue holds one),
        so memory stays bounded by the buffer plus one batch per writer and one more. Returns after
        :meth:`request_stop` once the buffer is empty and the last batch is completed.

        Raises
        ------
        WorkerError
            The pipeline halted on an unexpected error before a stop was requested: nothing
            after the failed batch is acknowledged, so the process must exit and restart.
        """
        writers = [self.spawn(f"eldercare-commit-{i}", _bind(self._write_loop, store),
                              child=True)
                   for i, store in enumerate(self.stores)]
        seq = 0
        try:
            while not self._failed.is_set():
                if self._pending is not None:
                    self._apply_pending(seq)
                messages, batch = self._collect()
                if not messages:
                    if self._stop.is_set():
                        break
                    continue
                self._ready.put((seq, messages, batch))
                seq += 1
        except Exception as exc:
            # Reported before the writers are ended and joined below: a writer may be retrying a
            # commit for a while, and the supervisor must hear of this death at once.
            log.exception("pipeline failed")
            self._fail(f"pipeline failed ({type(exc).__name__}: {exc}); stopping,"
                       " unacknowledged messages are redelivered")
            raise
        finally:
            for _ in writers:
                self._ready.put(None)
            for w in writers:
                w.join()
        if self._failed.is_set() and not self._stop.is_set():
            raise WorkerError("eldercare-pipeline", self.failure or "halted")

    def _write_loop(self, store: TelemetryStore) -> None:
        while (item := self._ready.get()) is not None:
            seq, messages, batch = item
            try:
                if not self._failed.is_set():
                    self._commit(store, seq, batch, messages)
            except StorageError:
                self._fail(f"stopping with {len(messages)} messages uncommitted; "
                           "the broker redelivers them")
            except Exception as exc:  # a bug must not leave the other writers waiting a turn
                log.exception("writer failed")
                self._fail(f"writer failed ({type(exc).__name__}: {exc}); stopping,"
                           " unacknowledged messages are redelivered")
            self.metrics.buffered.set(len(self.buffer))

    def _fail(self, message: str) -> None:
        log.error(message)
        if self.failure is None:
            self.failure = message
        self._halt()
        if self.on_failure is not None and not self._stop.is_set():
            self.on_failure(message)

    def _halt(self) -> None:
        """Stop: after a give-up, later batches stay unacknowledged too (order)."""
        with self._turn:
            self._failed.set()
            self._turn.notify_all()

    def _collect(self) -> tuple[list[Message], Batch]:
        """Take and decode messages until the batch holds ``max_batch_readings`` readings (or
        dead letters) or ``linger_s`` has passed since its first message."""
        cfg = self.config
        batch = Batch()
        replay = self._replay_due()
        messages = self._defer_overdue(self.buffer.take(cfg.max_take,
                                                        timeout_s=0.0 if replay else 0.2))
        if not messages and replay:
            assert self.replay is not None
            messages = self.replay.take(cfg.max_take)
        if not messages:
            return messages, batch
        deadline = time.monotonic() + cfg.linger_s
        chunk = messages
        while True:
            alarm = self._decode_into(batch, chunk)
            remaining = deadline - time.monotonic()
            # An alarm does not linger: its batch is committed (and detected) at once.
            if (alarm or len(batch) >= cfg.max_batch_readings or remaining <= 0
                    or self._stop.is_set()):
                return messages, batch
            # Wait for about what the batch still needs (at the readings per message seen so
            # far), not for the next message: one decode per chunk, not one per message.
            per_message = max(1, len(batch) // len(messages))
            need = -(-(cfg.max_batch_readings - len(batch)) // per_message)
            chunk = self._defer_overdue(self.buffer.take(cfg.max_take, timeout_s=remaining,
                                                         min_items=need))
            messages.extend(chunk)

    def _replay_due(self) -> bool:
        """Replay when the database is up; while it is down, a replayed batch every
        ``probe_s`` is the probe that finds it back when no new messages come in."""
        if self.replay is None or self._stop.is_set():
            return False
        if time.monotonic() < self._overload_until:
            return False  # the CPU a replay takes is what the network thread needs now
        if self._db_down.is_set() and (
                time.monotonic() - self._last_probe < self.config.probe_s):
            return False
        return self.replay.has_work()

    def _defer_overdue(self, chunk: list[Message]) -> list[Message]:
        """Overload: spool and acknowledge the alarm-free messages of ``chunk``; return the
        others (module docstring). Overload begins when a message waited longer than
        ``defer_after_s`` and lasts until none has for ``_OVERLOAD_HOLD_S``: while it lasts,
        every alarm-free message is deferred, fresh or not, because decoding and committing
        them is what starves the network thread of the CPU it needs to reach the alarms."""
        if (not chunk or self.spool is None or self.config.defer_after_s <= 0
                or self._db_down.is_set() or chunk[0].segment):
            return chunk
        limit = self.clock.now_ms() - round(self.config.defer_after_s * 1000)
        now = time.monotonic()
        if chunk[0].received_ms <= limit:  # the buffer is FIFO: chunk[0] waited longest
            if now >= self._overload_until and now - self._overload_logged > 60:
                self._overload_logged = now  # once a minute: overload comes and goes in seconds
                log.warning("overload: deferring alarm-free messages to the spool (%.0f so far;"
                            " eldercare_spooled_messages_total)",
                            self.metrics.value("eldercare_spooled_messages_total",
                                               reason="overload"))
            self._overload_until = now + _OVERLOAD_HOLD_S
        elif now >= self._overload_until:
            return chunk
        deferred = [m for m in chunk if not m.urgent and _ACCEL_BYTES.search(m.payload) is None]
        if not deferred:
            return chunk
        try:
            self.spool.append(spool_records(deferred))
        except SpoolError as exc:  # full or failing: keep processing in order, slower
            if now - self._spool_refused_logged > 60:  # once a minute, not once a chunk
                self._spool_refused_logged = now
                log.warning("overload: cannot defer to the spool (%s); processing in order", exc)
            return chunk
        self.metrics.spooled.labels("overload").inc(len(deferred))
        self.ack(deferred)
        taken = {id(m) for m in deferred}
        return [m for m in chunk if id(m) not in taken]

    def _decode_into(self, batch: Batch, messages: list[Message]) -> bool:
        """Decode messages into ``batch``. Returns whether an alarm reading (SOS, fall, wear,
        home alarm) was among them.

        Each message is judged against its own receipt time, not the decoding moment: the
        future-clock limit and the receipt stamp of a salvaged alarm (schemas/decode.py) are
        then the same whether it is decoded at once or replayed from the spool hours later."""
        alarm = False
        for m in messages:
            result = self.decoder.decode(m.topic, m.payload, now_ms=m.received_ms,
                                         content_type=m.content_type)
            if result.readings:
                assert result.topic is not None
                readings = to_wgs84(result.readings, self.gcj02) if self.gcj02 \
                    else result.readings
                batch.add_readings(readings, region=result.topic.region,
                                   received_ms=m.received_ms)
                alarm = alarm or any(type(r) in ALARM_CLASSES for r in readings)
            for reject in result.rejects:
                batch.add_dead_letter(m.topic, reject.raw, reject.reason, m.received_ms)
        return alarm

    def _commit(self, store: TelemetryStore, seq: int, batch: Batch,
                messages: list[Message]) -> None:
        result = self._write(store, batch, messages)
        with self._turn:
            self._turn.wait_for(lambda: self._next == seq or self._failed.is_set())
            if self._failed.is_set():
                return  # committed but not acknowledged: redelivered, and deduplicated
        try:
            if result is None:
                self._complete_spooled(batch, messages)
            else:
                self._complete(batch, messages, result)
        except BaseException:
            self._halt()  # before the turn passes on: no later batch is acknowledged ahead of it
            raise
        with self._turn:
            self._next += 1
            self._turn.notify_all()

    def _write(self, store: TelemetryStore, batch: Batch,
               messages: list[Message]) -> WriteResult | None:
        """Commit ``batch``: its result, or None when its messages went to the spool instead
        (database down; module docstring). Without a spool, retries until the commit succeeds."""
        started = 0.0

        def attempt() -> WriteResult:
            nonlocal started
            started = time.perf_counter()  # the metric times the attempt that succeeded
            return store.write(batch)

        what = f"commit of {len(batch)}"
        if self.spool is None:
            result = self._retry.run(attempt, what)
        else:
            down = self._db_down.is_set()
            if down and time.monotonic() - self._last_probe < self.config.probe_s:
                return self._spool(batch, messages, attempt, what)
            try:
                result = attempt()
            except StorageError as exc:
                self.metrics.storage_errors.inc()
                self._last_probe = time.monotonic()
                if not down:
                    log.error("database unavailable (%s); spooling to %s", exc,
                              self.spool.directory)
                    self._db_down.set()
                    self.metrics.database_down.set(1)
                return self._spool(batch, messages, attempt, what)
            if down and self._db_down.is_set():
                self._db_down.clear()
                self.metrics.database_down.set(0)
                log.warning("database available again; replaying the spool")
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        return result

    def _spool(self, batch: Batch, messages: list[Message], attempt: Callable[[], WriteResult],
               what: str) -> WriteResult | None:
        """Spool the broker messages of a batch the database cannot take; if the spool cannot
        take them either, hold them and retry the database (back-pressure)."""
        assert self.spool is not None
        fresh = [m for m in messages if not m.segment]
        try:
            self.spool.append(spool_records(fresh))
        except SpoolError as exc:
            log.error("spool cannot take %d messages (%s); retrying the database with them "
                      "unacknowledged", len(fresh), exc)
            return self._retry.run(attempt, what)
        self.metrics.spooled.labels("outage").inc(len(fresh))
        return None

    def _complete_spooled(self, batch: Batch, messages: list[Message]) -> None:
        """Detect and acknowledge a spooled batch (the caller holds the turn). Detection runs
        now, without the database: its events are journaled, and life-safety ones are sent
        to the dispatch centre provisionally (ingest/detection.py)."""
        self._to_sink(batch)
        self.ack(messages)
        if self.replay is not None:
            self.replay.done(messages, stored=False)  # replayed ones: their segment again

    def _complete(self, batch: Batch, messages: list[Message], result: WriteResult) -> None:
        """Count, hand to the sink, acknowledge: in decode order (the caller holds the turn)."""
        self._count(batch, result, messages)
        self._to_sink(batch)
        self.ack(messages)  # replayed messages have qos 0: the source skips them
        if self.replay is not None:
            replayed = self.replay.replayed
            self.replay.done(messages, stored=True)
            self.metrics.replayed.inc(self.replay.replayed - replayed)

    def _to_sink(self, batch: Batch) -> None:
        """Hand ``batch`` to the sink, before its acknowledgement: if detection cannot store
        its events (StorageError, raised only once it gives up at shutdown) the messages stay
        unacknowledged and come back. Any other failure is logged: one faulty consumer must
        not stop ingest."""
        if self.sink is None:
            return
        try:
            self.sink(batch)
        except StorageError:
            raise
        except Exception:
            log.exception("batch sink failed")

    def _count(self, batch: Batch, result: WriteResult, messages: list[Message]) -> None:
        m = self.metrics
        m.batches.inc()
        for cls, n in Counter(type(r) for r in batch.readings).items():
            m.readings_received.labels(TYPE_NAMES[cls]).inc(n)
        m.readings_stored.inc(result.stored)
        m.readings_duplicate.inc(result.readings - result.stored)
        m.dead_letters.inc(result.dead_letters)
        live = [msg.received_ms for msg in messages if not msg.segment]
        if live:  # replayed messages waited in the spool on purpose
            m.batch_latency.observe(max(0, self.clock.now_ms() - min(live)) / 1000)
        if result.dead_letters:
            log.debug("batch: %d stored, %d dead letters", result.stored, result.dead_letters)


def _bind(loop: Callable[[TelemetryStore], None], store: TelemetryStore) -> Callable[[], None]:
    """``loop`` bound to its writer's store (a thread target takes no arguments)."""
    return lambda: loop(store)
