"""Provisional alerts (alerts/emergency.py) and the event journal of the detection stage."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from alerts.channels.webhook import WebhookChannel, WebhookConfig, verify_signature
from alerts.emergency import EmergencyDispatcher
from alerts.webhook_receiver import Receiver
from detectors.events import Event
from foundation.clock import SystemClock
from foundation.errors import StorageError
from ingest.spool import SegmentLog
from tests.conftest import now_ms, wait_for

SOS = Event(device_id="WT-9", type="sos", ts=1_795_420_812_100, severity="critical",
            region="371002", wearer_id="W-9", lat=37.5, lon=122.1)
LOW_BATTERY = Event(device_id="WT-9", type="low_battery", ts=1_795_420_812_200,
                    severity="low", region="371002")


def _dispatcher(receiver: Receiver) -> EmergencyDispatcher:
    channel = WebhookChannel(WebhookConfig(url=receiver.url, secret="s", timeout_s=2.0),
                             clock=SystemClock())
    return EmergencyDispatcher(channel=channel, url=receiver.url, clock=SystemClock(),
                               map_link=None, backoff_s=0.05)


def test_life_safety_events_are_sent_signed_retried_and_only_once(receiver: Receiver) -> None:
    failures = iter([503, 503])
    lock = threading.Lock()

    def answer(_: object) -> None:
        with lock:
            receiver.behaviour.status = next(failures, 200)
    receiver.on_request = answer
    d = _dispatcher(receiver)
    d.start()
    try:
        assert d.submit([SOS, LOW_BATTERY]) == 1  # a low battery waits for the database
        assert d.submit([SOS]) == 0               # same identity: already pending
        wait_for(lambda: d.sent == 1, 10, "the provisional SOS delivered")
        assert d.submit([SOS]) == 0               # and already sent
    finally:
        d.stop()
        d.channel.close()  # type: ignore[attr-defined]
    assert len(receiver.requests) == 3  # two 503s, then 200
    keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
    assert keys == {f"provisional:WT-9:sos:{SOS.ts}"}
    last = receiver.requests[-1]
    verify_signature(secret=b"s", timestamp=last.headers["X-Eldercare-Timestamp"],
                     signature=last.headers["X-Eldercare-Signature"], body=last.body,
                     now_s=now_ms() / 1000)
    doc = json.loads(last.body)
    assert doc["event"] == "alert.provisional"
    assert doc["provisional"]["wearer"] == {"id": "W-9"}
    assert doc["provisional"]["ts"] == "2026-11-23T08:00:12.100000+00:00"


def test_a_refused_provisional_alert_is_not_retried(receiver: Receiver) -> None:
    receiver.behaviour.status = 400
    d = _dispatcher(receiver)
    d.start()
    try:
        d.submit([SOS])
        wait_for(lambda: d.pending() == 0, 10, "the refusal taken")
    finally:
        d.stop()
        d.channel.close()  # type: ignore[attr-defined]
    assert len(receiver.requests) == 1 and d.sent == 0


class _FlakyStore:
    """An event store that fails until told otherwise (the database is down)."""

    def __init__(self) -> None:
        self.up = False
        self.rows: dict[tuple[str, str, int], Event] = {}

    def write(self, events: Sequence[Event], *, detected_ms: int) -> list[Event]:
        if not self.up:
            raise StorageError("database down")
        new = [e for e in events if (e.device_id, e.type, e.ts) not in self.rows]
        self.rows.update({(e.device_id, e.type, e.ts): e for e in new})
        return new

    def close(self) -> None:
        pass


def test_events_the_store_cannot_take_are_journaled_sent_provisionally_then_stored(
        tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from detectors.engine import DetectorEngine
    from ingest.batch import Batch
    from ingest.detection import DetectionMetrics, DetectionStage
    from schemas import MessageDecoder

    store = _FlakyStore()
    handed: list[Event] = []
    unstored: list[Event] = []

    class Sink:
        def handle(self, events: Sequence[Event]) -> None:
            handed.extend(events)

    journal = SegmentLog(tmp_path, name="events", max_bytes=1 << 20)
    stage = DetectionStage(engine=DetectorEngine(), store=store, sink=Sink(),
                           clock=SystemClock(), metrics=DetectionMetrics(CollectorRegistry()),
                           journal=journal, on_unstored=unstored.extend)
    decoded = MessageDecoder().decode("eldercare/v1/371002/dev/WT-9",
                                      json.dumps({"type": "sos", "ts": now_ms()}).encode(),
                                      now_ms=now_ms())
    batch = Batch()
    batch.add_readings(decoded.readings, region="371002", received_ms=now_ms())
    stage(batch)
    assert [e.type for e in unstored] == ["sos"] and handed == []
    assert journal.bytes > 0
    assert stage.flush_journal() == 0  # still down: kept
    store.up = True
    assert stage.flush_journal() == 1
    assert [e.type for e in handed] == ["sos"] and journal.bytes == 0
    assert list(store.rows) == [("WT-9", "sos", unstored[0].ts)]
