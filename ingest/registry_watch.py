"""Live effect of the registry: reload admission and detection when ``registry_version`` moves.

Staff enrol wearers and bind devices in the database while the service runs
(docs/registry-database.md). Every statement that changes the registry tables bumps the one-row
``registry_version`` counter (a statement trigger, ``registry/sql/0011``). This worker, a named
:class:`~foundation.worker.Worker` thread started through the supervisor like the other polling
loops, reads that counter every ``[enrolment] reload_interval_s`` (one indexed one-row read);
when it moved, it reads what changed since its last snapshot and patches it (``registry/snapshot.py``:
the wearers the change log names; the whole registry at the first read, after a long outage, or
for a change of thousands), builds what the
pipeline needs from it (``build``: the decoder with the new admission, the GCJ-02 devices, the
detection stage's rebinding), and hands that to the pipeline (``deliver``), which applies it
between batches in its own thread (``ingest/pipeline.py``). From commit to admission: half the
interval on average, plus the read (milliseconds for an enrolment, whatever the registry's size;
a whole read takes seconds at 100,000 wearers) and the build (half a second at 100,000).

Every ``VERIFY_EVERY_S`` the watcher also reads the whole registry beside the patched one and
compares them: a difference (a change the log missed: a bug, a table written with triggers off)
is logged by id, counted (``outcome="healed"``) and healed by using the whole read. The same
round prunes change-log entries older than a day.

Polling rather than ``LISTEN``: a counter read survives a dropped connection, a restarted
database and a missed notification without any recovery logic, and a second's delay is what
"within seconds" allows.

A failed load (the database down, a statement timeout, a bug in building) is logged, counted
(``eldercare_registry_reloads_total{outcome="failed"}``) and retried at the next interval; the
previous registry stays in use. It never ends the thread: ingest must go on admitting what it
admitted before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn
from foundation.worker import Worker
from ingest.metrics import IngestMetrics
from ingest.pipeline import RegistryChange
from registry.snapshot import Snapshot, prune_changes, read_snapshot, read_version

log = logging.getLogger(__name__)

#: Seconds between repeated log lines of a load failing again and again (each is counted).
_LOG_EVERY_S = 60.0
#: Seconds between whole reads that check the patched registry (and prune the change log).
VERIFY_EVERY_S = 3600.0
#: A snapshot must not hold a transaction open for ever if the database is struggling.
_STATEMENT_TIMEOUT_MS = 60_000


class RegistryWatch:
    """Polls ``registry_version`` and reloads on change; see the module docstring.

    ``build`` turns a snapshot into the pipeline's :class:`RegistryChange`; ``deliver`` hands
    it over (``IngestPipeline.change_registry``).
    """

    def __init__(self, *, database_url: str, interval_s: float,
                 build: Callable[[Snapshot], RegistryChange],
                 deliver: Callable[[RegistryChange], None], metrics: IngestMetrics,
                 spawn: Spawn = plain_spawn) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.build = build
        self.deliver = deliver
        self.metrics = metrics
        #: The last snapshot handed over (None: none yet): the base the next change is
        #: patched into, and the version the pipeline runs on.
        self.snapshot: Snapshot | None = None
        self._verified = time.monotonic()
        self._conn: psycopg.Connection | None = None
        self._failing_since: float | None = None
        self._logged = 0.0
        self.worker = Worker("eldercare-registry-watch", self._round, spawn=spawn,
                             on_error=self._failed, first_wait_s=interval_s)

    @property
    def version(self) -> int | None:
        """The version of the last registry handed to the pipeline (None: none yet)."""
        return None if self.snapshot is None else self.snapshot.version

    def load(self) -> RegistryChange:
        """Read the registry now and build its change (the service's first registry, applied
        before the pipeline starts). Raises StorageError: a service that cannot read its
        registry at start must say so, not run without it."""
        return self._load(self._connection())

    def start(self) -> None:
        """Start polling (after :meth:`load`)."""
        self.worker.start()

    def request_stop(self) -> None:
        """Ask the thread to stop after its current round."""
        self.worker.request_stop()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the thread and close the connection; returns whether the thread ended."""
        ended = self.worker.stop(timeout_s)
        self._close()
        return ended

    def _round(self) -> float:
        conn = self._connection()
        if time.monotonic() - self._verified >= VERIFY_EVERY_S:
            self._verify(conn)
        elif read_version(conn) != self.version:
            self.deliver(self._load(conn))
        if self._failing_since is not None:
            log.warning("registry reload works again after %.0f s",
                        time.monotonic() - self._failing_since)
            self._failing_since = None
        return self.interval_s

    def _verify(self, conn: psycopg.Connection) -> None:
        """The hourly round: patched and whole read compared; the log pruned."""
        self._verified = time.monotonic()
        snap = read_snapshot(conn, self.snapshot, verify=True)
        if snap.mismatched:
            self.metrics.registry_reloads.labels("healed").inc()
            log.error("registry: the patched registry differed from the database for %d"
                      " wearers (%s); the whole read is used from now on",
                      len(snap.mismatched), ", ".join(snap.mismatched[:20]))
        if snap.mismatched or snap.version != self.version:
            self.deliver(self._built(snap, time.perf_counter() - snap.seconds))
        else:
            self.snapshot = snap
        deleted = prune_changes(conn)
        if deleted:
            log.info("registry change log: %d entries older than a day pruned", deleted)

    def _load(self, conn: psycopg.Connection) -> RegistryChange:
        started = time.perf_counter()
        return self._built(read_snapshot(conn, self.snapshot), started)

    def _built(self, snap: Snapshot, started: float) -> RegistryChange:
        change = self.build(snap)
        seconds = time.perf_counter() - started
        self.metrics.registry_reload_seconds.observe(seconds)
        self.metrics.registry_reloads.labels("ok").inc()
        self.snapshot = snap
        devices = sum(len(w.devices) for w in snap.registry.wearers)
        how = "whole" if snap.reread is None else f"{snap.reread} wearers re-read"
        log.info("registry version %d: %d active wearers, %d devices, read (%s) in %.3f s,"
                 " built in %.3f s", snap.version, len(snap.registry.wearers), devices, how,
                 snap.seconds, seconds - snap.seconds)
        for wearer_id, reason in snap.invalid:  # ids and the failing field only
            log.error("registry: wearer %s left out of admission and detection: %s",
                      wearer_id, reason)
        return change

    def _failed(self, exc: Exception) -> float:
        """Log (at most once a minute while it keeps failing), count, retry next interval."""
        self.metrics.registry_reloads.labels("failed").inc()
        self._close()  # a broken connection is replaced at the next round
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._logged >= _LOG_EVERY_S or self._logged == 0.0:
            self._logged = now
            if isinstance(exc, StorageError | psycopg.Error):
                log.warning("registry not reloaded (version %s stays in use): %s",
                            self.version, exc)
            else:
                log.exception("registry not reloaded (version %s stays in use)", self.version,
                              exc_info=exc)
        return self.interval_s

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self.database_url, autocommit=True, connect_timeout=10,
                    options=f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}")
            except psycopg.Error as exc:
                raise StorageError(f"registry watch cannot connect: {exc}".strip()) from exc
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken connection
                pass
            self._conn = None
