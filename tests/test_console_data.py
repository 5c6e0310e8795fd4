"""The console's data endpoints against the real PostgreSQL, served by a real HttpServer:
``GET /api/v1/devices`` (online/offline by last seen, battery, worn, position, regions, pages)
and ``GET /api/v1/alerts/{id}/evidence`` (zones, track window, fall trace, detection event,
404s); and the trace's numerics without a database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from fastapi import FastAPI

from alerts.auth import TokenTable, new_token
from alerts.store import AlertStore
from console.devices import devices_router
from console.evidence import evidence_router, magnitude_trace
from detectors.events import Event
from foundation.clock import ManualClock
from foundation.http_server import HttpServer
from ingest.event_store import PostgresEventStore
from ingest.registry_store import store_registry
from schemas.registry import Device, Point, Registry, Wearer, Zone
from tests.test_console_live import CALLERS, bearer_principal, token_table

A, B = "371002", "370102"
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)               # 10:00 in Shanghai
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)

REGISTRY = Registry(wearers=[
    Wearer(id="W-1", name="王秀英", region=A, birth_year=1941, devices=[
        Device(id="WT-1", kind="watch"), Device(id="BR-1", kind="bracelet"),
        Device(id="FS-1", kind="fall_sensor")],
        zones=[Zone(id="home", kind="circle", center=Point(37.5, 122.1), radius_m=200.0),
               Zone(id="park", kind="polygon", active="08:00-20:00",
                    points=[(37.50, 122.10), (37.51, 122.10), (37.51, 122.12)])]),
    Wearer(id="W-2", name="李建国", region=A, devices=[Device(id="HS-2", kind="home_sensor")]),
    Wearer(id="W-9", name="张桂兰", region=B, devices=[Device(id="WT-9", kind="watch")]),
])


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def insert_reading(url: str, device: str, type_: str, ts: datetime, region: str = A,
                   **values: Any) -> None:
    cols = ["ts", "device_id", "type", "region", "received_at", *values]
    with psycopg.connect(url) as c:
        c.execute(f"INSERT INTO readings ({', '.join(cols)})"  # column names from this file
                  f" VALUES ({', '.join(['%s'] * len(cols))})",
                  [ts, device, type_, region, ts, *values.values()])


def insert_accel(url: str, device: str, start: datetime, rate_hz: float,
                 xyz: np.ndarray[Any, Any], *, chunk: int = 50) -> None:
    """``xyz``: shape (n, 3) in g, sampled at ``rate_hz`` from ``start``, stored in chunks."""
    with psycopg.connect(url) as c:
        for k in range(0, len(xyz), chunk):
            part = xyz[k:k + chunk]
            c.execute("INSERT INTO accel_chunks (ts, device_id, region, received_at, rate_hz,"
                      " n_samples, x, y, z) VALUES (%s, %s, %s, now(), %s, %s, %s, %s, %s)",
                      (start + timedelta(seconds=k / rate_hz), device, A, rate_hz, len(part),
                       part[:, 0].tolist(), part[:, 1].tolist(), part[:, 2].tolist()))


@dataclass
class Api:
    db: str
    store: AlertStore
    tokens: dict[str, str]
    client: httpx.Client
    servers: list[HttpServer] = field(default_factory=list)

    def get(self, path: str, who: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.get(path, headers=headers, params=params)

    def devices(self, who: str, **params: Any) -> list[dict[str, Any]]:
        r = self.get("/devices", who, **params)
        assert r.status_code == 200, r.text
        devices: list[dict[str, Any]] = r.json()["devices"]
        return devices


@pytest.fixture
def make_api(store: AlertStore, migrated_db: str) -> Iterator[Callable[..., Api]]:
    with psycopg.connect(migrated_db) as conn:
        store_registry(conn, REGISTRY)
    servers: list[HttpServer] = []
    clients: list[httpx.Client] = []

    def make(**devices_kw: Any) -> Api:
        tokens = {name: new_token()[0] for name in CALLERS}
        table: TokenTable = token_table(tokens)
        app = FastAPI()
        principal = bearer_principal(table)
        app.include_router(devices_router(migrated_db, principal,
                                          clock=ManualClock(ms(NOW)), **devices_kw))
        app.include_router(evidence_router(migrated_db, principal))
        server = HttpServer(app, host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        clients.append(httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                                    timeout=10))
        return Api(migrated_db, store, tokens, clients[-1])

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


# --- Devices ---------------------------------------------------------------------------------

def _device_readings(url: str) -> None:
    insert_reading(url, "WT-1", "location", NOW - 20 * MIN, lat=37.51, lon=122.11,
                   battery_pct=64.0)
    insert_reading(url, "WT-1", "wear", NOW - 30 * MIN, worn=True)
    insert_reading(url, "WT-1", "wear", NOW - 10 * MIN, worn=False)
    insert_reading(url, "WT-1", "heartbeat", NOW - 5 * MIN, battery_pct=55.0)
    insert_reading(url, "WT-1", "location", NOW - 2 * MIN, lat=37.52, lon=122.12)  # no level
    insert_reading(url, "BR-1", "vitals", NOW - 12 * MIN, heart_rate_bpm=72.0)
    insert_accel(url, "FS-1", NOW - MIN, 50.0, np.tile([0.0, 0.0, 1.0], (50, 1)))
    insert_reading(url, "WT-9", "heartbeat", NOW - MIN, region=B, battery_pct=90.0)


def test_devices_of_the_callers_regions_with_their_latest_state(
        make_api: Callable[..., Api]) -> None:
    api = make_api(offline_after_s=600)                    # 10 min for every kind
    _device_readings(api.db)
    devices = {d["device_id"]: d for d in api.devices("officer-a")}
    assert list(devices) == ["BR-1", "FS-1", "HS-2", "WT-1"]      # by id; no WT-9 (region B)
    assert devices["WT-1"] == {
        "device_id": "WT-1", "kind": "watch", "region": A, "model": None,
        "wearer": {"id": "W-1", "name": "王秀英"},
        "last_seen": iso(NOW - 2 * MIN), "online": True, "offline_after_s": 600.0,
        "battery_pct": 55.0, "battery_at": iso(NOW - 5 * MIN),   # the latest that has one
        "worn": False, "worn_at": iso(NOW - 10 * MIN),
        "position": {"lat": 37.52, "lon": 122.12, "ts": iso(NOW - 2 * MIN)}}
    bracelet = devices["BR-1"]
    assert (bracelet["last_seen"], bracelet["online"]) == (iso(NOW - 12 * MIN), False)
    assert (bracelet["battery_pct"], bracelet["worn"], bracelet["position"]) == (None, None, None)
    assert devices["FS-1"]["last_seen"] == iso(NOW - MIN)         # raw accelerometer counts
    assert devices["FS-1"]["online"] is True
    silent = devices["HS-2"]
    assert (silent["last_seen"], silent["online"], silent["worn"]) == (None, False, None)
    assert silent["wearer"] == {"id": "W-2", "name": "李建国"}


def test_devices_filter_by_status_and_region_and_page_by_id(make_api: Callable[..., Api]) -> None:
    api = make_api(offline_after_s=600)
    _device_readings(api.db)

    def ids(who: str, **params: Any) -> list[str]:
        return [d["device_id"] for d in api.devices(who, **params)]

    assert ids("officer-a", status="online") == ["FS-1", "WT-1"]
    assert ids("officer-a", status="offline") == ["BR-1", "HS-2"]
    assert ids("officer-a", region=B) == []           # narrowing never widens
    assert ids("officer-b") == ["WT-9"]
    assert ids("dispatch", region=B) == ["WT-9"]
    assert ids("dispatch", status="online") == ["FS-1", "WT-1", "WT-9"]
    first = api.get("/devices", "officer-a", limit=3).json()
    assert [d["device_id"] for d in first["devices"]] == ["BR-1", "FS-1", "HS-2"]
    assert first["next_after"] == "HS-2"
    rest = api.get("/devices", "officer-a", limit=3, after=first["next_after"]).json()
    assert [d["device_id"] for d in rest["devices"]] == ["WT-1"] and rest["next_after"] is None
    assert api.get("/devices", None).status_code == 401
    assert api.get("/devices", "officer-a", status="asleep").status_code == 422


def test_offline_thresholds_default_to_the_supervisions_per_kind(
        make_api: Callable[..., Api]) -> None:
    api = make_api()
    _device_readings(api.db)
    insert_reading(api.db, "HS-2", "heartbeat", NOW - timedelta(hours=20))
    devices = {d["device_id"]: d for d in api.devices("officer-a")}
    # Bracelets: 15 min (seen 12 min ago: online); home sensors: 26 h (20 h ago: online).
    assert (devices["BR-1"]["online"], devices["BR-1"]["offline_after_s"]) == (True, 900.0)
    assert (devices["HS-2"]["online"], devices["HS-2"]["offline_after_s"]) == (True, 93600.0)
    per_kind = make_api(offline_after_s={"bracelet": 300.0})
    devices = {d["device_id"]: d for d in per_kind.devices("officer-a")}
    assert devices["BR-1"]["online"] is False                 # 12 min > 5 min
    assert devices["WT-1"]["offline_after_s"] == 1800.0        # others: the default


# --- Evidence --------------------------------------------------------------------------------

def _event(kind: str, ts: datetime, device: str, region: str = A, wearer: str = "W-1",
           **evidence: float) -> Event:
    return Event(device_id=device, type=kind, ts=ms(ts), severity="critical",  # type: ignore[arg-type]
                 region=region, wearer_id=wearer, lat=37.5, lon=122.1, evidence=dict(evidence))


def _detect(api: Api, *events: Event) -> None:
    """Store detection events (as the detection stage does)."""
    events_db = PostgresEventStore(api.db)
    try:
        events_db.write(list(events), detected_ms=ms(NOW))
    finally:
        events_db.close()


def _open(api: Api, *events: Event) -> list[int]:
    return [c.alert_id for c in api.store.fold(list(events), now_ms=ms(NOW))]


def _detect_and_open(api: Api, *events: Event) -> list[int]:
    _detect(api, *events)
    return _open(api, *events)


def test_a_falls_evidence_has_the_trace_the_zones_and_the_detection(
        make_api: Callable[..., Api]) -> None:
    api = make_api()
    fall_at = NOW - 5 * MIN
    rng = np.random.default_rng(6)
    print("seed 6")
    n = 30 * 50                                            # 30 s at 50 Hz from fall_at - 15 s
    xyz = np.tile([0.0, 0.0, 1.0], (n, 1)) + rng.normal(0, 0.01, (n, 3))
    impact = 15 * 50                                       # the sample at fall_at
    xyz[impact] = [0.6 * 3.5, 0.8 * 3.5, 0.0]              # |a| = 3.5 g
    xyz[impact - 10] = [0.0, 0.0, 0.05]                    # free fall just before
    insert_accel(api.db, "FS-1", fall_at - 15 * SEC, 50.0, xyz)
    insert_accel(api.db, "WT-1", fall_at - 5 * SEC, 50.0,  # another device: not in the trace
                 np.tile([9.0, 0.0, 0.0], (500, 1)))
    (fall,) = _detect_and_open(api, _event("fall", fall_at, "FS-1", peak_g=3.5, confidence=0.9))

    r = api.get(f"/alerts/{fall}/evidence", "officer-a")
    assert r.status_code == 200, r.text
    body = r.json()
    accel = body["accel"]
    t, g = np.array(accel["t_ms"]), np.array(accel["g"])
    assert accel["device_id"] == "FS-1"
    assert 450 <= len(t) <= 500 and len(t) == len(g)       # 1001 samples in the window, reduced
    assert np.all(np.diff(t) > 0)
    assert -10_000 <= t[0] <= -9_900 and 9_900 <= t[-1] <= 10_000
    assert g.max() == pytest.approx(3.5, abs=1e-3) and t[g.argmax()] == 0
    assert g.min() == pytest.approx(0.05, abs=1e-3) and t[g.argmin()] == -200
    assert np.median(g) == pytest.approx(1.0, abs=0.02)
    assert body["event"]["type"] == "fall" and body["event"]["device_id"] == "FS-1"
    assert body["event"]["evidence"] == {"peak_g": 3.5, "confidence": 0.9}
    assert body["event"]["ts"] == iso(fall_at)
    assert body["position"] == {"lat": 37.5, "lon": 122.1}
    assert body["zones"] == [
        {"zone_id": "home", "kind": "circle", "center": {"lat": 37.5, "lon": 122.1},
         "radius_m": 200.0, "points": None, "active_from": None, "active_to": None},
        {"zone_id": "park", "kind": "polygon", "center": None, "radius_m": None,
         "points": [[37.5, 122.1], [37.51, 122.1], [37.51, 122.12]],
         "active_from": "08:00", "active_to": "20:00"}]


def test_an_sos_has_its_track_window_no_trace_and_its_own_event(
        make_api: Callable[..., Api]) -> None:
    api = make_api()
    sos_at = NOW - 10 * MIN
    fixes = [(sos_at - 3 * timedelta(hours=1), 37.0), (sos_at - 90 * MIN, 37.1),
             (sos_at - 30 * MIN, 37.2), (sos_at, 37.3), (sos_at + 5 * MIN, 37.4)]
    for ts, lat in fixes:
        insert_reading(api.db, "WT-1", "location", ts, lat=lat, lon=122.1, accuracy_m=8.0)
    insert_reading(api.db, "BR-1", "location", sos_at - MIN, lat=30.0, lon=120.0)  # other device
    (sos,) = _detect_and_open(api, _event("sos", sos_at, "WT-1"))
    _detect(api, _event("fall", sos_at, "WT-1"),                  # another type
            _event("sos", sos_at + MIN, "BR-1"))                  # nearby, but not the nearest
    body = api.get(f"/alerts/{sos}/evidence", "dispatch").json()
    assert body["accel"] is None
    assert body["track"] == [
        {"ts": iso(ts), "lat": lat, "lon": 122.1, "accuracy_m": 8.0}
        for ts, lat in fixes[1:4]]                          # 2 h before last_ts, oldest first
    assert body["event"]["type"] == "sos" and body["event"]["ts"] == iso(sos_at)
    assert body["event"]["device_id"] == "WT-1" and body["event"]["evidence"] == {}


def test_a_fall_without_raw_samples_has_an_empty_trace(make_api: Callable[..., Api]) -> None:
    api = make_api()
    (fall,) = _open(api, _event("fall", NOW, "WT-1"))             # no detection event stored
    body = api.get(f"/alerts/{fall}/evidence", "officer-a").json()
    assert body["accel"] == {"device_id": "WT-1", "t_ms": [], "g": []}
    assert body["event"] is None and body["track"] == []


def test_evidence_of_another_region_or_a_missing_alert_is_404(
        make_api: Callable[..., Api]) -> None:
    api = make_api()
    (other,) = _open(api, _event("sos", NOW, "WT-9", region=B, wearer="W-9"))
    assert api.get(f"/alerts/{other}/evidence", "officer-b").status_code == 200
    for alert_id in (other, other + 1000):             # not theirs, missing: the same answer
        r = api.get(f"/alerts/{alert_id}/evidence", "officer-a")
        assert r.status_code == 404
        assert r.json() == {"detail": f"alert {alert_id} not found"}
    assert api.get(f"/alerts/{other}/evidence", None).status_code == 401
    assert api.get("/alerts/0/evidence", "dispatch").status_code == 422


# --- The trace's numerics --------------------------------------------------------------------

def test_magnitude_trace_clips_to_the_window_and_keeps_extremes() -> None:
    t0 = NOW
    chunks = [(t0 - 2 * SEC, 10.0, [0.0] * 20, [3.0] * 20, [4.0] * 20),   # |a| = 5, -2 s..-0.1 s
              (t0, 10.0, [1.0, 0.0], [0.0, 0.0], [0.0, 2.0])]               # 1 at 0, 2 at 100
    t, g = magnitude_trace(chunks, t0, before_ms=1000, after_ms=100)
    assert t.tolist() == [-1000, -900, -800, -700, -600, -500, -400, -300, -200, -100, 0, 100]
    assert g.tolist() == [5.0] * 10 + [1.0, 2.0]
    empty_t, empty_g = magnitude_trace([], t0, before_ms=1000, after_ms=1000)
    assert empty_t.size == 0 and empty_g.size == 0
    many = [(t0, 1000.0, np.sin(np.arange(5000) / 50).tolist(), [0.0] * 5000, [0.0] * 5000)]
    many[0][2][3333] = 7.0                                   # a spike among 5000 samples
    t, g = magnitude_trace(many, t0, before_ms=0, after_ms=5000, max_points=100)
    assert len(t) <= 100 and np.all(np.diff(t) > 0)
    assert g.max() == 7.0 and t[g.argmax()] == 3333
    assert g.min() == pytest.approx(0.0, abs=1e-3)
