"""Resolution cancels the ladder messages not sent yet, and the trail says how many.

The alert store runs its transactions in psycopg pipeline mode, where a statement's
``rowcount`` is read before its result has arrived (-1): every resolution used to audit
"pending messages cancelled -1". These tests go through the store, pipeline mode and all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from alerts.store import AlertStore
from detectors.events import Event
from eldercare.schema import migrate
from ingest.registry_store import store_registry
from schemas.registry import parse_registry
from tests.test_alert_routing import REGISTRY, ROUTING, T0, sos


@pytest.fixture
def routed_store(db_url: str) -> Iterator[AlertStore]:
    """A store on a migrated database holding WT-1's wearer and contacts, full routing."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
        with conn.transaction():
            store_registry(conn, parse_registry(REGISTRY, fmt="yaml"))
    with AlertStore(db_url, routing=ROUTING) as s:
        yield s


def _notify_status(url: str, alert_id: int) -> list[str]:
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT status FROM alert_deliveries WHERE alert_id = %s"
                         " AND kind = 'notify' ORDER BY id", (alert_id,)).fetchall()
    return [r[0] for r in rows]


def _cancelled_entries(store: AlertStore, alert_id: int) -> list[dict[str, Any]]:
    return [a["detail"] for a in store.get(alert_id)["audit"]
            if a["action"] == "deliveries_cancelled"]


@pytest.mark.parametrize("escalations", [0, 1])
def test_resolving_audits_how_many_pending_messages_it_cancelled(
        routed_store: AlertStore, db_url: str, escalations: int) -> None:
    (c,) = routed_store.fold([sos()], now_ms=T0)
    for k in range(escalations):  # each rung queues more ladder messages
        assert routed_store.escalate_due(now_ms=T0 + 60_000 * (k + 1)) == 1
    pending = _notify_status(db_url, c.alert_id).count("pending")
    assert pending >= 2  # dispatch and the first family contact, at least
    routed_store.resolve(c.alert_id, by="officer-a", outcome="false_alarm",
                         now_ms=T0 + 600_000)
    assert _cancelled_entries(routed_store, c.alert_id) == [{"count": pending}]
    assert _notify_status(db_url, c.alert_id).count("cancelled") == pending


def test_resolving_with_nothing_pending_audits_no_cancellation(
        routed_store: AlertStore, db_url: str) -> None:
    (c,) = routed_store.fold([sos()], now_ms=T0)
    with psycopg.connect(db_url) as conn:  # every ladder message went out already
        conn.execute("UPDATE alert_deliveries SET status = 'sent' WHERE alert_id = %s"
                     " AND kind = 'notify'", (c.alert_id,))
    routed_store.resolve(c.alert_id, by="officer-a", outcome="helped on site",
                         now_ms=T0 + 5_000)
    assert _cancelled_entries(routed_store, c.alert_id) == []
    assert set(_notify_status(db_url, c.alert_id)) == {"sent"}


def test_an_automatic_resolution_audits_the_count_too(
        routed_store: AlertStore, db_url: str) -> None:
    """The fold path (a device back online, a wearer back home) resolves in pipeline mode too."""
    exit_event = Event(device_id="WT-1", type="geofence_exit", ts=T0, severity="high",
                       region="371002", wearer_id="W-1", lat=37.5, lon=122.1)
    (c,) = routed_store.fold([exit_event], now_ms=T0)
    pending = _notify_status(db_url, c.alert_id).count("pending")
    back = Event(device_id="WT-1", type="geofence_return", ts=T0 + 60_000, severity="info",
                 region="371002", wearer_id="W-1", lat=37.5, lon=122.1)
    changes = routed_store.fold([back], now_ms=T0 + 60_000)
    assert [(ch.action, ch.alert_id) for ch in changes] == [("resolved", c.alert_id)]
    expected = [{"count": pending}] if pending else []
    assert _cancelled_entries(routed_store, c.alert_id) == expected
