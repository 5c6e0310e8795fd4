"""A device's own alarm (wire type ``device_alarm``, issue #10): what vendor watches and trackers
raise themselves (a low-battery or fence bit, a power cut, a cover opened, an alarm the gateway
cannot classify) is an alarm like an SOS: urgent in the buffer, salvaged when broken, raised
once per episode as the event its kind means, and an alert a person sees."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from alerts.model import PRIORITY
from alerts.store import AlertStore
from detectors.engine import DetectorEngine
from detectors.events import Event
from eldercare.config import Config
from ingest.buffer import may_hold_alarm
from schemas import DeviceAlarm, MessageDecoder, device_topic
from tests.conftest import Publisher, count, now_ms, wait_for

T0 = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
TOPIC = device_topic("371002", "GT-1")
MINUTE = 60_000


def alarm(kind: str, ts: int = T0, **fields: object) -> bytes:
    return json.dumps({"type": "device_alarm", "ts": ts, "alarm": kind, **fields}).encode()


def raised(engine: DetectorEngine, *payloads: bytes, received_ms: int = T0) -> list[Event]:
    decoder = MessageDecoder()
    readings = [r for p in payloads
                for r in decoder.decode(TOPIC, p, now_ms=received_ms).readings]
    return engine.process(readings, ["371002"] * len(readings), [received_ms] * len(readings))


@pytest.mark.parametrize(("kind", "event_type", "severity"), [
    ("low_battery", "low_battery", "low"),
    ("fence_exit", "geofence_exit", "high"),
    ("fence_enter", "geofence_return", "info"),
    ("cover_removed", "device_removed", "high"),
    ("power_cut", "device_alarm", "high"),
    ("vibration", "device_alarm", "medium"),
    ("overspeed", "device_alarm", "medium"),
    ("other", "device_alarm", "high"),
])
def test_each_kind_raises_the_event_it_means_with_the_vendor_code(
        kind: str, event_type: str, severity: str) -> None:
    (event,) = raised(DetectorEngine(), alarm(kind, code="3G status 0x00040000", lat=37.5,
                                             lon=122.1))
    assert (event.type, event.severity, event.device_id) == (event_type, severity, "GT-1")
    assert event.evidence == {"source": "device", "alarm": kind, "code": "3G status 0x00040000"}
    assert (event.lat, event.lon) == (37.5, 122.1)


def test_a_repeated_alarm_is_one_episode_per_kind_and_a_later_one_is_new() -> None:
    engine = DetectorEngine()
    first = raised(engine, alarm("power_cut"), alarm("low_battery"))
    assert sorted(e.type for e in first) == ["device_alarm", "low_battery"]
    # A tracker repeating its unanswered alarm every few seconds pages nobody again...
    assert raised(engine, alarm("power_cut", T0 + 5_000), alarm("power_cut", T0 + 10_000),
                  received_ms=T0 + 10_000) == []
    # ...another kind is its own alarm, and so is the same kind after the window (600 s).
    assert [e.evidence["alarm"] for e in raised(engine, alarm("vibration", T0 + MINUTE),
                                                received_ms=T0 + MINUTE)] == ["vibration"]
    later = T0 + 20 * MINUTE
    assert [e.type for e in raised(engine, alarm("power_cut", later), received_ms=later)] == [
        "device_alarm"]


def test_an_unreadable_kind_is_salvaged_as_an_unclassified_alarm_and_the_defect_kept() -> None:
    out = MessageDecoder().decode(TOPIC, alarm("teleported", code="X"), now_ms=T0)
    (reading,) = out.readings
    assert isinstance(reading, DeviceAlarm) and reading.alarm == "other"
    assert reading.code == "X" and reading.device_id == "GT-1"
    assert len(out.rejects) == 1 and "taken as other" in out.rejects[0].reason


def test_device_alarms_take_the_urgent_lane() -> None:
    assert may_hold_alarm(alarm("power_cut"))
    assert not may_hold_alarm(json.dumps({"type": "heartbeat", "ts": T0}).encode())


def test_a_device_alarm_published_over_mqtt_opens_an_alert_a_person_sees(
        make_config: Callable[..., Config], publisher: Publisher, region: str,
        db_url: str) -> None:
    from eldercare.app import Application

    with Application(make_config()):
        publisher.publish(device_topic(region, "GT-9"), json.dumps(
            {"type": "device_alarm", "ts": now_ms(), "alarm": "power_cut",
             "code": "GT06 0x16/0x02"}).encode())
        wait_for(lambda: count(db_url, "SELECT count(*) FROM alerts") == 1, timeout_s=10,
                 what="the device alarm's alert")
    assert count(db_url, "SELECT count(*) FROM readings WHERE type = 'device_alarm'"
                 " AND alarm = 'power_cut' AND code = 'GT06 0x16/0x02'") == 1
    with AlertStore(db_url) as store:
        alert = store.get(count(db_url, "SELECT id FROM alerts"))
    assert (alert["type"], alert["priority"]) == ("device_alarm", PRIORITY["device_alarm"])
    assert alert["priority"] == 2
