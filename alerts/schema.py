"""Alerts' schema: the tables this component owns, as a migration source.

``alerts/sql/``: ``alerts`` and its append-only ``alert_audit`` (0004), the fold mark on ingest's
``detection_events`` that the folder reads (0005), and routing: the escalation columns of
``alerts``, the outbox ``alert_deliveries`` and the contact columns routing needs (0006). The
application shell applies them with the other components' files (``eldercare.schema``), in one
order by number, so 0005 finds ingest's 0003 table in place.
"""

from __future__ import annotations

from typing import Final

from foundation.migrations import MigrationSource

#: The migration files of alerts (``alerts/sql/NNNN_name.sql``).
MIGRATIONS: Final = MigrationSource(package="alerts")
