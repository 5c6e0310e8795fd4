"""The database schema of the whole service: every component's migrations, in one order.

Each component owns its tables and the SQL files that make them (``ingest/sql``, ``alerts/sql``,
``console/sql``) and exposes them as a ``MigrationSource``; only the shell knows every component,
so the list of sources lives here. ``foundation.migrations`` applies them under one advisory lock,
then ingest's TimescaleDB policies run under the same lock (docs/schema.md).
"""

from __future__ import annotations

from typing import Final

import psycopg

import alerts.schema
import console.schema
import ingest.migrations
import registry.schema
from foundation.migrations import MigrationReport, TimescaleMode, apply_migrations
from ingest.migrations import RetentionPolicy, apply_timescale_policies

#: Every component's migration source. The order here does not matter: files apply by number.
SOURCES: Final = (ingest.migrations.MIGRATIONS, alerts.schema.MIGRATIONS, console.schema.MIGRATIONS,
           registry.schema.MIGRATIONS)
#: Ingest's defaults (a frozen value, shared safely as the default argument).
_DEFAULT_RETENTION: Final = RetentionPolicy()


def migrate(
    conn: psycopg.Connection,
    *,
    timescale: TimescaleMode = "auto",
    retention: RetentionPolicy = _DEFAULT_RETENTION,
) -> MigrationReport:
    """Bring the schema up to date and (re)apply ingest's data policies.

    ``conn`` must be in autocommit mode; it is used for this and nothing else meanwhile.

    Raises
    ------
    MigrationError
        A migration failed, an applied file was edited, two files claim one number, or
        ``timescale="on"`` without the extension.
    StorageError
        The database could not be reached, or refused a policy.
    """

    def policies(report: MigrationReport) -> None:
        if report.timescale:
            apply_timescale_policies(conn, retention=retention)

    return apply_migrations(conn, sources=SOURCES, timescale=timescale, then=policies)
