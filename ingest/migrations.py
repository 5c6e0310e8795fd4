"""Ingest's schema and data policies: its migration source, retention and pruning.

Ingest owns ``ingest/sql/NNNN_name.sql`` (readings, the device registry, detection events) and
``ingest/sql/timescale/`` (hypertables, compression, the hourly aggregate); the foundation's runner
(``foundation.migrations``) applies them with the other components' files, and the application
shell (``eldercare.schema``) lists the sources. What stays here is ingest's own: retention and
compression *policies*, which come from configuration and are re-applied on every start (so
changing a retention period needs no migration), and :func:`prune` for plain PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import psycopg

from foundation.errors import StorageError
from foundation.migrations import MigrationSource

#: Ingest's migration files, and its TimescaleDB-only ones.
MIGRATIONS: Final = MigrationSource(package="ingest", timescale="timescale")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionPolicy:
    """How long raw data is kept, in days (0 = keep forever)."""

    readings_days: int = 180
    accel_days: int = 7
    dead_letter_days: int = 90
    compress_after_days: int = 7


def apply_timescale_policies(conn: psycopg.Connection, *, retention: RetentionPolicy) -> None:
    """Replace retention, compression and refresh policies with the configured ones.

    Needs ingest's TimescaleDB migrations applied. Run it under the migration lock (the ``then``
    of ``foundation.migrations.apply_migrations``): two starters replacing policies at once
    would race between removing and adding one.

    Raises
    ------
    StorageError
        The database refused a policy or could not be reached.
    """
    try:
        tables = (("readings", retention.readings_days), ("accel_chunks", retention.accel_days))
        for table, days in tables:
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
    except psycopg.Error as exc:
        raise StorageError(f"timescale policies failed: {exc}") from exc


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
