"""Detection in the service and in ``eldercare detect``: readings in, stored events out."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from detectors.engine import DetectorEngine
from detectors.events import Event, ListSink
from detectors.replay import run_detect
from eldercare.app import Application
from eldercare.config import Config
from eldercare.schema import migrate
from foundation.clock import SystemClock
from foundation.errors import StorageError
from ingest.batch import Batch
from ingest.detection import DetectionMetrics, DetectionStage
from ingest.event_store import PostgresEventStore
from schemas import device_topic, gateway_topic
from schemas.readings import Sos
from tests.conftest import Publisher, count, now_ms, wait_for
from tests.test_engine import fall_chunks

ROOT = Path(__file__).parent.parent

REGISTRY = """
wearers:
  - id: W1
    name: Test Wearer
    region: "371002"
    devices: [{id: BR-1, kind: bracelet}]
    zones:
      - {id: home, kind: circle, center: {lat: 37.5, lon: 122.1}, radius_m: 200}
"""


def test_sos_and_wandering_published_over_mqtt_become_stored_events_once(
    make_config: Callable[..., Config], publisher: Publisher, region: str, db_url: str,
    tmp_path: Path,
) -> None:
    reg = tmp_path / "registry.yaml"
    # Registered in the region it publishes in: registry admission refuses it elsewhere.
    reg.write_text(REGISTRY.replace('"371002"', f'"{region}"'))
    sink = ListSink()
    now = now_ms()
    sos = json.dumps({"type": "sos", "ts": now - 5000}).encode()
    walk = [{"device_id": "BR-1", "type": "location", "ts": now - 4000 + i * 1000,
             "lat": 37.5 + d / 111_195, "lon": 122.1, "accuracy_m": 10}
            for i, d in enumerate([0, 500, 600, 700])]
    with Application(make_config(registry=str(reg)), event_sink=sink) as svc:
        publisher.publish(device_topic(region, "BR-1"), sos)
        publisher.publish(gateway_topic(region, "GW-1"), json.dumps(walk).encode())
        wait_for(lambda: len(sink.events) >= 2, what="sos and geofence events")
        # Redelivered SOS (same reading): stored once, handed on once.
        publisher.publish(device_topic(region, "BR-1"), sos)
        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings WHERE type = 'sos'") == 1
                 and svc.ingest.metrics.value("eldercare_readings_duplicate_total") >= 1,
                 what="the duplicate to pass through")
        latency = svc.ingest.metrics.registry.get_sample_value("eldercare_alarm_latency_seconds_count")
    assert sorted(e.type for e in sink.events) == ["geofence_exit", "sos"]
    assert latency == 1.0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT type, device_id, region, wearer_id, severity, evidence,"
            " (extract(epoch from ts) * 1000)::int8 FROM detection_events ORDER BY ts").fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("sos", "BR-1", region, "W1", "critical"), ("geofence_exit", "BR-1", region, "W1", "high")]
    assert rows[0][6] == now - 5000
    assert rows[1][5]["zone_id"] == "home" and rows[1][5]["distance_m"] > 300


def test_a_fall_in_an_accelerometer_stream_over_mqtt_becomes_one_stored_event(
    make_config: Callable[..., Config], publisher: Publisher, region: str, db_url: str,
) -> None:
    sink = ListSink()
    t0 = now_ms() - 20_000
    chunks = fall_chunks("PEND-9", t0, 50.0)
    with Application(make_config(), event_sink=sink):
        for c in chunks + chunks[:3]:     # the first three messages delivered twice
            publisher.publish(device_topic(region, "PEND-9"), msgspec.json.encode(c))
        wait_for(lambda: count(db_url, "SELECT count(*) FROM accel_chunks") == len(chunks),
                 what="accelerometer chunks")
        wait_for(lambda: any(e.type == "fall" for e in sink.events), what="the fall event")
    assert [(e.type, e.device_id, e.region) for e in sink.events] == [("fall", "PEND-9", region)]
    assert abs(sink.events[0].ts - (t0 + 2400)) <= 300
    assert count(db_url, "SELECT count(*) FROM detection_events WHERE type = 'fall'"
                 " AND evidence->>'source' = 'accelerometer'") == 1


def test_event_store_returns_only_new_identities_and_wraps_errors(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    store = PostgresEventStore(db_url)
    e1 = Event(device_id="D1", type="sos", ts=1_800_000_000_000, severity="critical",
               region="r", evidence={"source": "sos_button"})
    e2 = Event(device_id="D1", type="fall", ts=1_800_000_000_000, severity="critical", region="r")
    try:
        assert store.write([e1, e1], detected_ms=1_800_000_000_500) == [e1]
        assert store.write([e1, e2], detected_ms=1_800_000_000_600) == [e2]
    finally:
        store.close()
    broken = PostgresEventStore(db_url.replace("dbname=", "dbname=nonexistent_")
                                if "dbname=" in db_url else db_url + "_nonexistent")
    with pytest.raises(StorageError, match="detection events not stored"):
        broken.write([e1], detected_ms=0)


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_detect_command_replays_a_file_with_a_registry(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    t0 = 1_795_000_000_000
    rows: list[dict[str, object]] = [
        {"device_id": "BR-1", "type": "location", "ts": t0 + i * 20_000,
         "lat": 37.5 + d / 111_195, "lon": 122.1, "region": "371002"}
        for i, d in enumerate([0, 0, 800, 900, 1000, 50])]
    rows.append({"device_id": "W-7", "type": "sos", "ts": t0 + 1000})
    rows.append({"device_id": "W-7", "type": "sos", "ts": t0 + 2000})
    data = tmp_path / "stream.jsonl"
    _write_jsonl(data, rows)
    (tmp_path / "bad.jsonl").write_text(data.read_text() + "{not json\n"
                                        + json.dumps({"type": "sos", "ts": t0}) + "\n")
    out = subprocess.run([sys.executable, "-m", "eldercare.cli", "detect", str(data),
                          "--registry", str(reg), "--batch", "3"],
                         capture_output=True, text=True, timeout=60, check=True)
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["type"], e["device_id"], e["ts"]) for e in events] == [
        ("geofence_exit", "BR-1", t0 + 60_000), ("geofence_return", "BR-1", t0 + 100_000),
        ("sos", "W-7", t0 + 1000)]
    assert events[0]["region"] == "371002" and events[2]["region"] == "unknown"
    assert "8 readings, 3 events, 0 rejected" in out.stderr
    strict = subprocess.run([sys.executable, "-m", "eldercare.cli", "detect", "-", "--strict"],
                            input=(tmp_path / "bad.jsonl").read_text(), capture_output=True,
                            text=True, timeout=60, check=False)
    assert strict.returncode == 1
    assert "line 9: rejected" in strict.stderr and "line 10: rejected" in strict.stderr
    assert "device_id" in strict.stderr


def test_detect_streams_a_large_file_in_bounded_memory(tmp_path: Path) -> None:
    n = 300_000
    data = tmp_path / "big.jsonl"
    with data.open("w") as f:
        for i in range(n):
            ts, battery = 1_795_000_000_000 + i * 60, 90 - (i // 1000) % 80
            f.write(f'{{"device_id":"H-{i % 1000}","type":"heartbeat","ts":{ts},'
                    f'"battery_pct":{battery}}}\n')
    # Peak RSS from VmHWM, not ru_maxrss: ru_maxrss survives execve, so the child would report
    # the peak of the pytest process it was forked from.
    code = ("import sys, io; from detectors.replay import run_detect;"
            f" r = run_detect(open({str(data)!r}, 'rb'), io.StringIO(), sys.stderr);"
            " hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0];"
            " print(r.readings, r.events, int(hwm.split()[1]) // 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, cwd=ROOT)
    readings, events, rss_mb = (int(x) for x in out.stdout.split())
    # Each device drains 90 → 11 % three times (charged in between) and to 31 % once.
    assert readings == n and events == 3000
    # The file is ~25 MB of JSON, i.e. hundreds of MB as Python objects: streaming keeps it small.
    # Measured: ~40 MB streaming; ~200 MB if the whole file were held as one batch.
    assert rss_mb < 100, rss_mb


class FlakyEventStore:
    """The real event store behind a switch that fails the first ``failures`` writes."""

    def __init__(self, inner: PostgresEventStore, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def write(self, events: Sequence[Event], *, detected_ms: int) -> list[Event]:
        self.calls += 1
        if self.calls <= self.failures:
            raise StorageError("injected outage")
        return self.inner.write(events, detected_ms=detected_ms)

    def close(self) -> None:
        self.inner.close()


def _sos_batch(device: str, ts: int) -> Batch:
    batch = Batch()
    batch.add_readings([Sos(device_id=device, ts=ts)], region="371002", received_ms=ts)
    return batch


def test_event_store_outage_is_retried_and_gives_up_only_at_shutdown(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    sink = ListSink()
    registry = CollectorRegistry()
    metrics = DetectionMetrics(registry)
    store = FlakyEventStore(PostgresEventStore(db_url), failures=3)
    stage = DetectionStage(engine=DetectorEngine(), store=store, sink=sink, clock=SystemClock(),
                           metrics=metrics, retry_max_s=0.2, shutdown_retry_s=0.0)
    t = now_ms()
    stage(_sos_batch("W-1", t))          # three failures, retried, then stored and handed on
    assert [(e.type, e.device_id) for e in sink.events] == [("sos", "W-1")]
    assert store.calls == 4 and count(db_url, "SELECT count(*) FROM detection_events") == 1
    assert registry.get_sample_value("eldercare_detection_store_errors_total") == 3
    # Shutting down with the store still failing: the stage gives up with StorageError, so the
    # pipeline leaves the batch unacknowledged (the broker redelivers it to the next run).
    store.failures = store.calls + 100
    stage.request_stop()
    with pytest.raises(StorageError, match="injected outage"):
        stage(_sos_batch("W-2", t))
    stage.stop()
    assert len(sink.events) == 1


class _BrokenEngine(DetectorEngine):
    def process(self, *args: object, **kw: object) -> list[Event]:
        raise ZeroDivisionError("a detector bug")


def test_a_detector_bug_is_counted_and_ingest_goes_on(db_url: str) -> None:
    registry = CollectorRegistry()
    stage = DetectionStage(engine=_BrokenEngine(), store=PostgresEventStore(db_url),
                           sink=ListSink(), clock=SystemClock(),
                           metrics=DetectionMetrics(registry))
    stage(_sos_batch("W-3", now_ms()))    # must not raise: the batch is still acknowledged
    stage.stop()
    assert registry.get_sample_value("eldercare_detection_failures_total") == 1


def test_detect_reports_a_failing_detector_and_still_writes_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> list[Event]:
        raise ValueError("geofence bug")

    monkeypatch.setattr(DetectorEngine, "_locations", broken)
    lines = [json.dumps(r).encode() for r in (
        {"device_id": "BR-1", "type": "location", "ts": 1_795_000_000_000, "lat": 37.5,
         "lon": 122.1},
        {"device_id": "W-7", "type": "sos", "ts": 1_795_000_001_000})]
    out, err = io.StringIO(), io.StringIO()
    report = run_detect(lines, out, err)
    assert report.detector_failures == 1 and "detector geofence failed" in err.getvalue()
    assert [json.loads(x)["type"] for x in out.getvalue().splitlines()] == ["sos"]
