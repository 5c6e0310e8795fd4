"""The alert audit trail: one append-only row per step of an alert's life.

Every change to an alert, every queued, sent, failed or suppressed message and every escalation
writes a row here in the same transaction as the change itself, so the trail can neither miss
a step nor show one that did not happen. A trigger (``alerts/sql/0004_alerts.sql``) refuses
UPDATE and DELETE on the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

#: The actor of what the service does by itself.
SYSTEM: Final = "system"


def append(conn: psycopg.Connection, alert_id: int, at: datetime, action: str,
           detail: dict[str, Any], *, actor: str = SYSTEM) -> None:
    """Append one entry to ``alert_id``'s trail (inside the caller's transaction)."""
    conn.execute("INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
                 " VALUES (%s, %s, %s, %s, %s)", (alert_id, at, actor, action, Jsonb(detail)))
