"""Versioned SQL migrations, applied idempotently at start-up.

Files ``ingest/sql/NNNN_name.sql`` apply everywhere; ``ingest/sql/timescale/NNNN_name.sql`` apply
only when the ``timescaledb`` extension is available (or required by configuration). Each file runs
once, in its own transaction, recorded in ``schema_migrations`` with a checksum; a file whose
checksum changed after it was applied is an error, because silently re-running or skipping edited
DDL is how schemas drift. A file whose first line contains ``eldercare: no-transaction`` runs in
autocommit (TimescaleDB continuous aggregates need that). A session advisory lock serialises
concurrent starters. Retention and compression *policies* come from configuration and are
re-applied on every start, so changing a retention period needs no migration.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Final, Literal

import psycopg

from foundation.errors import MigrationError, StorageError

log = logging.getLogger(__name__)

_LOCK_KEY: Final = 0x454C4443  # "ELDC": one advisory lock for all eldercare migrators
_NO_TX_MARK: Final = "eldercare: no-transaction"

TimescaleMode = Literal["auto", "on", "off"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionPolicy:
    """How long raw data is kept, in days (0 = keep forever)."""

    readings_days: int = 180
    accel_days: int = 7
    dead_letter_days: int = 90
    compress_after_days: int = 7


@dataclass(slots=True)
class MigrationReport:
    """What :func:`migrate` did: versions applied now, and whether TimescaleDB is in use."""

    applied: list[str] = field(default_factory=list)
    timescale: bool = False


@dataclass(frozen=True, slots=True)
class _Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    @property
    def transactional(self) -> bool:
        return _NO_TX_MARK not in self.sql.split("\n", 1)[0]


def _load(subdir: str | None, prefix: str) -> list[_Migration]:
    root = resources.files("ingest").joinpath("sql")
    if subdir:
        root = root.joinpath(subdir)
    files = sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [_Migration(prefix + p.name.removesuffix(".sql"), p.read_text("utf-8")) for p in files]


def _timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrate(
    conn: psycopg.Connection,
    *,
    timescale: TimescaleMode = "auto",
    retention: RetentionPolicy = RetentionPolicy(),
) -> MigrationReport:
    """Bring the schema up to date and (re)apply data policies.

    ``conn`` must be in autocommit mode; it is used for this and nothing else meanwhile.

    Raises
    ------
    MigrationError
        A migration failed, an applied file was edited, or ``timescale="on"`` without the extension.
    StorageError
        The database could not be reached.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    report = MigrationReport()
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            pending = _load(None, "")
            use_ts = timescale == "on" or (timescale == "auto" and _timescale_available(conn))
            if timescale == "on" and not _timescale_available(conn):
                raise MigrationError("timescaledb extension is not available", version="timescale")
            if use_ts:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                pending += _load("timescale", "timescale/")
            done: dict[str, str] = dict(
                conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for mig in pending:
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise MigrationError(
                            "file changed after it was applied; add a new migration instead",
                            version=mig.version,
                        )
                    continue
                _apply(conn, mig)
                report.applied.append(mig.version)
            report.timescale = use_ts or "timescale/0001_hypertables" in done
            if report.timescale:
                _timescale_policies(conn, retention)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    if report.applied:
        log.info("applied migrations %s (timescale=%s)", report.applied, report.timescale)
    return report


def _apply(conn: psycopg.Connection, mig: _Migration) -> None:
    log.info("applying migration %s", mig.version)
    try:
        if mig.transactional:
            with conn.transaction():
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                    (mig.version, mig.checksum),
                )
        else:
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                (mig.version, mig.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(str(exc).strip(), version=mig.version) from exc


def _timescale_policies(conn: psycopg.Connection, retention: RetentionPolicy) -> None:
    """Replace retention, compression and refresh policies with the configured ones."""
    for table, days in (("readings", retention.readings_days), ("accel_chunks", retention.accel_days)):
        conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (table,))
        if days > 0:
            conn.execute(
                "SELECT add_retention_policy(%s, make_interval(days => %s))", (table, days)
            )
        conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (table,))
        if retention.compress_after_days > 0:
            conn.execute(
                "SELECT add_compression_policy(%s, make_interval(days => %s))",
                (table, retention.compress_after_days),
            )
    # The hourly aggregate holds each device's last position per hour: it must not outlive
    # the raw history it summarises (the readings retention), or positions stay forever.
    conn.execute("SELECT remove_retention_policy('device_hourly', if_exists => true)")
    if retention.readings_days > 0:
        conn.execute("SELECT add_retention_policy('device_hourly', make_interval(days => %s))",
                     (retention.readings_days,))
    conn.execute(
        "SELECT remove_continuous_aggregate_policy('device_hourly', if_exists => true)"
    )
    conn.execute(
        "SELECT add_continuous_aggregate_policy('device_hourly',"
        " start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 minute',"
        " schedule_interval => INTERVAL '5 minutes')"
    )


def prune(conn: psycopg.Connection, *, retention: RetentionPolicy, timescale: bool) -> dict[str, int]:
    """Delete data older than the retention periods; returns rows deleted per table.

    On TimescaleDB the hypertables are pruned by its own retention policies (dropping whole
    chunks); only ``dead_letters`` is pruned here. On plain PostgreSQL everything is.
    """
    jobs = [("dead_letters", "received_at", retention.dead_letter_days)]
    if not timescale:
        jobs += [("readings", "ts", retention.readings_days), ("accel_chunks", "ts", retention.accel_days)]
    deleted: dict[str, int] = {}
    try:
        for table, column, days in jobs:
            if days <= 0:
                continue
            cur = conn.execute(
                f"DELETE FROM {table} WHERE {column} < now() - make_interval(days => %s)", (days,)
            )
            deleted[table] = cur.rowcount
    except psycopg.Error as exc:
        raise StorageError(f"retention prune failed: {exc}") from exc
    return deleted
