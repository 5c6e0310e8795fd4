"""The composition root: the one place that builds every component and wires them together.

``eldercare run`` and the demo build an :class:`Application` from the configuration; nothing
else constructs components for the service. It:

1. reads each component's own section of :class:`~eldercare.config.Config` and hands it to that
   component alone (ingest gets ``[mqtt]``, ``[database]``, ``[ingest]``, ``[spool]``,
   ``[metrics]``, ``[detectors]``; the alert service ``[alerts]``; the HTTP front ``[api]`` and
   ``[console]``), so no component reads, or imports, the whole configuration;
2. opens the database once at start (:func:`prepare_database`): every component's migrations in
   one order (:mod:`eldercare.schema`) and the registry file; components then own the
   connections they use, on the one URL;
3. wires the data path: ingest's detection stage hands stored events to the alert service
   (the folder) and anything else that listens; the alert service's store backs the HTTP API,
   and the console plugs into the API through its session seam (:mod:`console.app`);
4. starts consumers before producers and stops in the reverse order, every thread through the
   one :class:`~foundation.supervisor.Supervisor`.

Start order: database, alert workers, HTTP server (API and console), ingest (detection, the
pipeline, and last the broker connection, so nothing is acknowledged before everything that
acts on it runs). Stop order: ingest drains and acknowledges what it holds, the HTTP server
closes (open console streams end first), then the alert workers, which fold what the last
batches stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import psycopg
from fastapi import FastAPI
from prometheus_client import Gauge

from alerts.api import create_app, require_principal
from alerts.auth import TokenTable, load_tokens
from alerts.channels.base import Channel
from alerts.probes import Liveness, ReadinessChecks
from alerts.service import AlertService
from console.accounts import AccountStore
from console.app import create_api_with_accounts, install_console
from console.live import ChangeFeed
from console.registry_api import registry_router
from detectors.events import Event, EventSink
from eldercare.config import Config
from eldercare.schema import migrate
from foundation.clock import Clock, SystemClock
from foundation.errors import StorageError
from foundation.http_server import HttpServer
from foundation.lifecycle import StartStop
from foundation.migrations import MigrationReport
from foundation.supervisor import Supervisor
from ingest.pipeline import BatchSink
from ingest.registry_store import store_registry
from ingest.service import IngestService
from ingest.settings import retention_of
from ingest.storage import TelemetryStore
from registry.idcard import load_vault
from registry.regions import load_regions, read_region_tree
from registry.store import RegistryStore
from schemas.registry import load_registry

log = logging.getLogger(__name__)


def prepare_database(config: Config, *, wait_s: float = 30.0) -> MigrationReport:
    """Apply every component's migrations and load the registry file, waiting up to ``wait_s``
    for the database to answer (a service started beside its database must not crash-loop)."""
    deadline = time.monotonic() + wait_s
    # Read (and checked) before connecting: a bad tree file is a configuration error to fix.
    regions = read_region_tree(config.enrolment.regions) if config.enrolment.regions else None
    while True:
        try:
            with psycopg.connect(config.database.url, autocommit=True, connect_timeout=5) as conn:
                report = migrate(conn, timescale=config.database.timescale,
                                 retention=retention_of(config.database))
                if regions is not None:   # before the registry, whose regions it names
                    load_regions(conn, regions, actor="system")
                if config.registry:
                    n = store_registry(conn, load_registry(config.registry))
                    log.info("registry: %d wearers loaded from %s", n, config.registry)
                return report
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise StorageError(f"database unreachable at start-up: {exc}") from exc
            log.warning("database not reachable yet (%s); retrying", str(exc).strip())
            time.sleep(1.0)


class HttpFront(StartStop):
    """The HTTP server of the service: the alerts API on :attr:`AlertService.store`, and the
    duty console on it when ``[console] enabled`` (accounts, live stream, devices, evidence,
    the page: :mod:`console.app`). Owns the account store and the change feed it creates."""

    def __init__(self, config: Config, *, alerts: AlertService, clock: Clock,
                 tokens: TokenTable | None = None, liveness: Liveness | None = None,
                 readiness: ReadinessChecks | None = None) -> None:
        """``tokens`` replace ``[api] tokens_file``; ``liveness`` (the supervisor's deaths)
        answers ``/health``, ``readiness`` (ingest's checks) ``/readyz``."""
        url, c = config.database.url, config.console
        table = tokens if tokens is not None else (
            load_tokens(config.api.tokens_file) if config.api.tokens_file else TokenTable())
        self.accounts: AccountStore | None = None
        self.feed: ChangeFeed | None = None
        self.app: FastAPI
        # The registry's ID-card secret, read once (a missing file is made, a bad one fails
        # start-up); the registry API is served in both branches: programs enrol too.
        vault = load_vault(config.enrolment.secret_file)
        self.registry = RegistryStore(url, vault=vault, clock=clock)
        if c.enabled:
            self.accounts = AccountStore(url, session_lifetime_s=round(c.session_hours * 3600),
                                         idle_timeout_s=round(c.idle_minutes * 60))
            self.app = create_api_with_accounts(
                store=alerts.store, database_url=url, tokens=table, clock=clock,
                accounts=self.accounts, secure_cookies=c.secure_cookies,
                login_limits=c.login_limits, on_change=alerts.changed, liveness=liveness,
                readiness=readiness, commands=alerts.commands)
            self.feed = ChangeFeed(url)
            install_console(self.app, database_url=url, feed=self.feed,
                            offline_after_s=config.detectors.supervision.offline_after_s,
                            tiles=c.tiles(), vault=vault)
        else:
            self.app = create_app(store=alerts.store, database_url=url, tokens=table,
                                  clock=clock, on_change=alerts.changed, liveness=liveness,
                                  readiness=readiness, commands=alerts.commands)
        self.app.include_router(registry_router(self.registry, require_principal,
                                                alerts=alerts.store,
                                                on_alert_change=alerts.changed, clock=clock))
        self.server = HttpServer(self.app, host=config.api.host, port=config.api.port)

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`, when ``[api] port`` is 0)."""
        return self.server.port

    def alive(self) -> bool:
        """Whether the server thread still runs (the supervisor's probe)."""
        return self.server.alive()

    def start(self) -> None:
        self.server.start()
        log.info("alerts API on http://%s:%d/api/v1", self.server.host, self.server.port)

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.end_streams()  # open console streams would hold the server's shutdown
        self.server.stop()
        self.registry.close()
        if self.accounts is not None:
            self.accounts.close()


class Application(StartStop):
    """Every component of the service, built from one configuration; see the module docstring.

    ``supervisor``: whoever must act on a dead worker passes its own (``eldercare run`` exits);
    by default deaths are only recorded and reported by health and metrics. The other keywords
    are for tests, benchmarks and the demo: ``sink`` sees every completed batch, ``store``
    replaces PostgreSQL for telemetry (one writer, no spool), ``event_sink`` also receives the
    detection events, ``channels`` replace the configured alert channels, ``tokens`` the API
    tokens file.
    """

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 supervisor: Supervisor | None = None, sink: BatchSink | None = None,
                 store: TelemetryStore | None = None, event_sink: EventSink | None = None,
                 channels: Sequence[Channel] | None = None,
                 tokens: TokenTable | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.supervisor = supervisor or Supervisor()
        self.timescale = False
        # Admission and detection use the database's registry, reloaded live (the file, when
        # configured, is loaded into the database by prepare_database at start).
        detecting = config.detectors.enabled
        self.alerts: AlertService | None = None
        if detecting and config.alerts.enabled:
            self.alerts = AlertService(
                config.alerts, database_url=config.database.url,
                timezone=config.detectors.timezone, clock=self.clock, broker=config.mqtt,
                provisional=config.spool.enabled and config.spool.provisional_alerts,
                channels=channels, spawn=self.supervisor.spawn)
        self.ingest = IngestService(
            mqtt=config.mqtt, database=config.database, ingest=config.ingest,
            spool=config.spool, metrics=config.metrics,
            detectors=config.detectors if detecting else None,
            enrolment=config.enrolment, registry_file=bool(config.registry),
            events=fan_out([s for s in (self.alerts, event_sink) if s is not None]),
            on_unstored=self.alerts.unstored if self.alerts is not None else None,
            clock=self.clock, sink=sink, store=store, supervisor=self.supervisor)
        Gauge("eldercare_workers_failed", "Worker threads that died unexpectedly (the process"
              " then exits non-zero)", registry=self.ingest.metrics.registry,
              ).set_function(lambda: len(self.supervisor.check()))
        self.http: HttpFront | None = None
        if self.alerts is not None and config.api.enabled:
            self.http = HttpFront(config, alerts=self.alerts, clock=self.clock, tokens=tokens,
                                  liveness=self.supervisor.check,
                                  readiness=self.ingest.readiness)

    def start(self) -> None:
        """Migrate, then start the alert workers, the HTTP server and ingest, in that order."""
        report = prepare_database(self.config)
        self.timescale = report.timescale
        try:
            if self.alerts is not None:
                self.alerts.start()
            if self.http is not None:
                self.http.start()
                self.supervisor.watch("eldercare-http", self.http.alive)
            self.ingest.start(timescale=report.timescale)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Drain ingest (commit and acknowledge what it holds), then the HTTP server, then the
        alert workers (after detection: they fold what the last batches stored)."""
        self.supervisor.stopping()  # workers returning from here on are not deaths
        self.ingest.stop(timeout_s=timeout_s)
        if self.http is not None:
            self.http.stop()
        if self.alerts is not None:
            self.alerts.stop()


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


def fan_out(sinks: Sequence[EventSink]) -> EventSink | None:
    """``sinks`` as one EventSink (None when there are none)."""
    return None if not sinks else sinks[0] if len(sinks) == 1 else _FanOut(sinks)
