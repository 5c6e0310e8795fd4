"""The alert model against the real PostgreSQL: folding, the one-unresolved rule under
concurrency, the lifecycle with claim conflicts, auto-resolution and the append-only trail."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from alerts.store import AlertConflict, AlertStore
from detectors.events import Event
from eldercare.config import Config
from schemas import device_topic
from tests.conftest import Publisher, count, now_ms, wait_for

# 2026-03-02 10:00 and 23:00 in Asia/Shanghai (UTC+8).
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
NIGHT = int(datetime(2026, 3, 2, 15, 0, tzinfo=UTC).timestamp() * 1000)


def event(kind: str, ts: int, *, wearer: str | None = "W-1", device: str = "WT-1",
          lat: float | None = 37.5) -> Event:
    severity = "critical" if kind in ("sos", "fall") else "high"
    return Event(device_id=device, type=kind, ts=ts, severity=severity,  # type: ignore[arg-type]
                 region="371002", wearer_id=wearer, lat=lat, lon=None if lat is None else 122.1)


#: The lifecycle steps of the trail (routing and delivery entries are tested in
#: tests/test_alert_routing.py).
LIFECYCLE = {"opened", "updated", "acknowledged", "note", "resolved"}


def lifecycle(alert: dict[str, Any]) -> list[str]:
    return [a["action"] for a in alert["audit"] if a["action"] in LIFECYCLE]


def test_repeated_events_update_one_alert_and_the_trail_records_each(store: AlertStore) -> None:
    first = store.fold([event("sos", DAY)], now_ms=DAY + 50)
    again = store.fold([event("sos", DAY + 60_000, lat=None)], now_ms=DAY + 60_050)
    assert [c.action for c in first + again] == ["opened", "updated"]
    assert first[0].alert_id == again[0].alert_id
    alert = store.get(first[0].alert_id)
    assert alert["event_count"] == 2 and alert["status"] == "open" and alert["priority"] == 1
    assert alert["lat"] == 37.5                       # an event without a fix keeps the last one
    assert lifecycle(alert) == ["opened", "updated"]
    # A device without a registered wearer is its own subject.
    other = store.fold([event("sos", DAY, wearer=None, device="WT-9")], now_ms=DAY)
    assert other[0].action == "opened" and other[0].alert_id != first[0].alert_id


def test_concurrent_workers_never_open_two_alerts_for_one_wearer_and_type(
        store: AlertStore, db_url: str) -> None:
    start = threading.Barrier(8)
    errors: list[Exception] = []

    def worker(k: int) -> None:
        try:
            start.wait()
            store.fold([event("fall", DAY + k)], now_ms=DAY + 100)
        except Exception as exc:  # noqa: BLE001 - collected and asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert count(db_url, "SELECT count(*) FROM alerts WHERE type = 'fall'") == 1
    assert count(db_url, "SELECT event_count FROM alerts WHERE type = 'fall'") == 8


def test_claim_conflict_resolution_and_a_new_alert_after_it(store: AlertStore) -> None:
    (change,) = store.fold([event("sos", DAY)], now_ms=DAY)
    store.acknowledge(change.alert_id, by="officer-a", now_ms=DAY + 5_000, note="calling back")
    store.acknowledge(change.alert_id, by="officer-a", now_ms=DAY + 6_000)   # no-op
    with pytest.raises(AlertConflict, match="acknowledged by officer-a") as conflict:
        store.acknowledge(change.alert_id, by="officer-b", now_ms=DAY + 6_000)
    assert conflict.value.owner == "officer-a"
    store.add_note(change.alert_id, by="officer-a", note="no answer; calling daughter",
                   now_ms=DAY + 60_000)
    store.resolve(change.alert_id, by="officer-a", outcome="helped on site",
                  now_ms=DAY + 600_000)
    with pytest.raises(AlertConflict, match="resolved"):
        store.resolve(change.alert_id, by="officer-b", outcome="false alarm", now_ms=DAY + 1)
    alert = store.get(change.alert_id)
    assert [(a["actor"], a["action"]) for a in alert["audit"] if a["action"] in LIFECYCLE] == [
        ("system", "opened"), ("officer-a", "acknowledged"), ("officer-a", "note"),
        ("officer-a", "resolved")]
    assert alert["outcome"] == "helped on site" and alert["resolved_by"] == "officer-a"
    (again,) = store.fold([event("sos", DAY + 700_000)], now_ms=DAY + 700_000)
    assert again.action == "opened" and again.alert_id != change.alert_id


def test_returns_resolve_their_alerts_and_night_exits_rank_higher(store: AlertStore) -> None:
    day_exit, = store.fold([event("geofence_exit", DAY, device="BR-1")], now_ms=DAY)
    assert store.get(day_exit.alert_id)["priority"] == 3
    back = store.fold([event("geofence_return", DAY + 300_000, device="BR-1")],
                      now_ms=DAY + 300_000)
    assert [(c.action, c.alert_id) for c in back] == [("resolved", day_exit.alert_id)]
    alert = store.get(day_exit.alert_id)
    assert alert["status"] == "resolved" and alert["resolved_by"] == "system"
    assert alert["outcome"] == "auto: geofence_return"
    night_exit, = store.fold([event("geofence_exit", NIGHT, device="BR-1")], now_ms=NIGHT)
    assert store.get(night_exit.alert_id)["priority"] == 2
    # Informational events open nothing; a return with nothing open resolves nothing.
    assert store.fold([event("online", NIGHT), event("geofence_return", NIGHT, wearer="W-2")],
                      now_ms=NIGHT) == []


def test_the_audit_trail_is_append_only(store: AlertStore, db_url: str) -> None:
    (change,) = store.fold([event("sos", DAY)], now_ms=DAY)
    before = store.get(change.alert_id)["audit"]
    with psycopg.connect(db_url) as conn:
        for sql in ("UPDATE alert_audit SET actor = 'someone else'", "DELETE FROM alert_audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql)
            conn.rollback()
    assert store.get(change.alert_id)["audit"] == before


def test_an_sos_published_over_mqtt_becomes_an_alert_with_its_trail(
        make_config: Callable[..., Config], publisher: Publisher, region: str,
        db_url: str) -> None:
    from eldercare.app import Application

    with Application(make_config()):
        publisher.publish(device_topic(region, "WT-7"),
                          json.dumps({"type": "sos", "ts": now_ms(), "lat": 37.5,
                                      "lon": 122.1}).encode())
        wait_for(lambda: count(db_url, "SELECT count(*) FROM alerts") == 1, timeout_s=10,
                 what="the SOS alert")
    with AlertStore(db_url) as store:
        alert = store.get(count(db_url, "SELECT id FROM alerts"))
    assert (alert["type"], alert["status"], alert["priority"]) == ("sos", "open", 1)
    assert alert["subject"] == "device:WT-7" and alert["region"] == region
    assert lifecycle(alert) == ["opened"]
    assert count(db_url, "SELECT count(*) FROM detection_events WHERE alerted_at IS NULL") == 0


def test_events_stored_while_no_folder_ran_are_folded_later_exactly_once(
        make_config: Callable[..., Config], publisher: Publisher, region: str,
        db_url: str) -> None:
    from eldercare.app import Application

    with Application(make_config(**{"alerts.enabled": False})):
        for dev in ("WT-1", "WT-2"):
            publisher.publish(device_topic(region, dev),
                              json.dumps({"type": "sos", "ts": now_ms()}).encode())
        wait_for(lambda: count(db_url, "SELECT count(*) FROM detection_events") == 2,
                 what="two SOS events")
    assert count(db_url, "SELECT count(*) FROM alerts") == 0
    with AlertStore(db_url) as store:
        changes = store.fold_pending(now_ms=now_ms())
        assert sorted(c.event.device_id for c in changes) == ["WT-1", "WT-2"]
        assert store.fold_pending(now_ms=now_ms()) == []      # marked in the same transaction
    assert count(db_url, "SELECT count(*) FROM alerts") == 2
