"""Detection events cross to the alerts once, in memory (alerts/folder.py), against the real
PostgreSQL: the folder folds what the detection stage hands it by claiming each stored event
by its identity, reads the table back only for a backlog (start, a failed fold, an overflow),
and folds every event exactly once whichever path, or both, reaches it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

import alerts.folder
from alerts.folder import AlertFolder
from alerts.store import AlertChange, AlertStore
from detectors.events import Event
from foundation.clock import ManualClock
from foundation.errors import StorageError
from ingest.event_store import PostgresEventStore
from tests.conftest import count, wait_for

DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)


def sos(device: str, ts: int = DAY) -> Event:
    return Event(device_id=device, type="sos", ts=ts, severity="critical", region="371002",
                 wearer_id=None, lat=37.5, lon=122.1)


def stored(db: str, events: Sequence[Event]) -> list[Event]:
    """What the detection stage does before the hand-off."""
    writer = PostgresEventStore(db)
    try:
        return writer.write(events, detected_ms=DAY)
    finally:
        writer.close()


class Spy(AlertStore):
    """The real store, recording which fold each round used; ``fail_stored`` fails the next
    hand-off fold as a database outage would."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[str] = []
        self.fail_stored = 0

    def fold_pending(self, *, now_ms: int, limit: int = 1000) -> list[AlertChange]:
        self.calls.append("pending")
        return super().fold_pending(now_ms=now_ms, limit=limit)

    def fold_stored(self, events: Sequence[Event], *, now_ms: int) -> list[AlertChange]:
        self.calls.append(f"stored:{len(events)}")
        if self.fail_stored:
            self.fail_stored -= 1
            raise StorageError("injected: the database went away")
        return super().fold_stored(events, now_ms=now_ms)


def alerted(db: str) -> int:
    return count(db, "SELECT count(*) FROM detection_events WHERE alerted_at IS NOT NULL")


def test_fold_stored_claims_each_stored_event_once_and_ignores_the_unstored(
        store: AlertStore, migrated_db: str) -> None:
    events = stored(migrated_db, [sos("WT-1"), sos("WT-2")])
    changes = store.fold_stored([*events, sos("WT-never-stored")], now_ms=DAY + 10)
    assert sorted((c.event.device_id, c.action) for c in changes) == [
        ("WT-1", "opened"), ("WT-2", "opened")]
    assert store.fold_stored(events, now_ms=DAY + 20) == []      # claimed already
    assert store.fold_pending(now_ms=DAY + 30) == []             # and marked in the table
    assert alerted(migrated_db) == 2
    assert count(migrated_db, "SELECT count(*) FROM alerts") == 2


def test_two_folders_racing_for_the_same_events_fold_each_once(migrated_db: str) -> None:
    events = stored(migrated_db, [sos(f"WT-{i}") for i in range(40)])
    start = threading.Barrier(4)
    folded: list[list[AlertChange]] = []

    def race(path: str) -> None:
        with AlertStore(migrated_db) as s:
            start.wait()
            folded.append(s.fold_stored(events, now_ms=DAY) if path == "stored"
                          else s.fold_pending(now_ms=DAY))

    threads = [threading.Thread(target=race, args=(p,))
               for p in ("stored", "stored", "pending", "pending")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    devices = sorted(c.event.device_id for changes in folded for c in changes)
    assert devices == sorted(e.device_id for e in events)         # each folded exactly once
    assert count(migrated_db, "SELECT count(*) FROM alerts") == 40


def test_the_folder_folds_hand_offs_without_reading_back_and_recovers_from_the_table(
        migrated_db: str) -> None:
    spy = Spy(migrated_db)
    left = stored(migrated_db, [sos("WT-left-by-last-run")])
    folder = AlertFolder(store=spy, clock=ManualClock(DAY), poll_s=0.05)
    folder.start()
    try:
        wait_for(lambda: alerted(migrated_db) == 1, what="the backlog folded at start")
        assert spy.calls == ["pending", "pending"]      # read back until empty, once at start
        assert left

        folder.handle(stored(migrated_db, [sos("WT-1")]))
        wait_for(lambda: alerted(migrated_db) == 2, what="the hand-off folded")
        assert spy.calls[2:] == ["stored:1"]             # crossed once: no read-back

        # A failed hand-off fold: the event stays in the table, which the retry reads.
        spy.fail_stored = 1
        folder.handle(stored(migrated_db, [sos("WT-2")]))
        wait_for(lambda: alerted(migrated_db) == 3, what="the failed hand-off, recovered")
        assert spy.calls[3] == "stored:1" and "pending" in spy.calls[4:]
        assert folder.failures == 1
        assert count(migrated_db, "SELECT count(*) FROM alerts") == 3
    finally:
        folder.stop()
        spy.close()


def test_an_overflowing_hand_off_is_read_back_from_the_table(
        migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts.folder, "MAX_HELD", 3)
    spy = Spy(migrated_db)
    folder = AlertFolder(store=spy, clock=ManualClock(DAY), poll_s=0.05)
    # Not started: hand-offs pile up as while the folder is busy or the database stalls.
    for i in range(5):
        folder.handle(stored(migrated_db, [sos(f"WT-{i}")]))
    assert len(folder._held) <= 3
    folder.start()
    try:
        wait_for(lambda: alerted(migrated_db) == 5, what="every event, overflow included")
        assert count(migrated_db, "SELECT count(*) FROM alerts") == 5
    finally:
        folder.stop()
        spy.close()
