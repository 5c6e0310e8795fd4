"""``GET /api/v1/unregistered-devices`` against the real PostgreSQL, served by a real HttpServer:
sightings made by the real decoder and registry admission, stored by the real store, read back
per device and topic region, for the caller's regions only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from alerts.auth import new_token
from console.devices import devices_router
from foundation.clock import ManualClock
from foundation.http_server import HttpServer
from ingest.admission import RegistryAdmission
from ingest.batch import Batch
from ingest.registry_store import store_registry
from ingest.storage import PostgresStore
from schemas import MessageDecoder, device_topic, gateway_topic
from schemas.registry import Device, Registry, Wearer
from tests.test_console_live import CALLERS, bearer_principal, token_table

A, B = "371002", "370102"
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
REGISTRY = Registry(wearers=[
    Wearer(id="W-1", name="王秀英", region=A, devices=[Device(id="BR-1", kind="bracelet")]),
    Wearer(id="W-2", name="李建国", region=B, devices=[Device(id="WT-2", kind="watch")]),
])


def ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Api:
    db: str
    tokens: dict[str, str]
    client: httpx.Client

    def get(self, who: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.get("/unregistered-devices", headers=headers, params=params)

    def seen(self, who: str, **params: Any) -> dict[tuple[str, str], dict[str, Any]]:
        r = self.get(who, **params)
        assert r.status_code == 200, r.text
        return {(d["device_id"], d["region"]): d for d in r.json()["devices"]}

    def publish(self, topic: str, readings: list[dict[str, Any]] | dict[str, Any],
                received: datetime, *, raw: bytes | None = None) -> None:
        """What the pipeline does with one message: decode with admission, store in one batch."""
        decoder = MessageDecoder(admission=RegistryAdmission(REGISTRY))
        out = decoder.decode(topic, raw if raw is not None else json.dumps(readings).encode(),
                             now_ms=ms(NOW))
        batch = Batch()
        if out.readings:
            assert out.topic is not None
            batch.add_readings(out.readings, region=out.topic.region, received_ms=ms(received))
        for reject in out.rejects:
            batch.add_dead_letter(topic, reject.raw, reject.reason, ms(received))
        store = PostgresStore(self.db)
        try:
            store.write(batch)
        finally:
            store.close()


@pytest.fixture
def api(migrated_db: str) -> Iterator[Api]:
    with psycopg.connect(migrated_db) as conn:
        store_registry(conn, REGISTRY)
    tokens = {name: new_token()[0] for name in CALLERS}
    app = FastAPI()
    app.include_router(devices_router(migrated_db, bearer_principal(token_table(tokens)),
                                      clock=ManualClock(ms(NOW))))
    server = HttpServer(app, host="127.0.0.1", port=0)
    server.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v1", timeout=10)
    try:
        yield Api(migrated_db, tokens, client)
    finally:
        client.close()
        server.stop()


def reading(kind: str, device: str | None = None, **fields: Any) -> dict[str, Any]:
    out = {"type": kind, "ts": ms(NOW - 5 * MIN), **fields}
    return out if device is None else {"device_id": device, **out}


def _sightings(api: Api) -> None:
    api.publish(device_topic(A, "BR-9"), reading("heartbeat"), NOW - 3 * HOUR)
    api.publish(device_topic(A, "BR-9"), reading("sos", lat=37.5, lon=122.1), NOW - 2 * HOUR)
    api.publish(gateway_topic(A, "GW-1"), [
        reading("location", "BR-1", lat=37.5, lon=122.1),      # registered here: stored
        reading("fall", "BR-9"), reading("heartbeat", "ZZ-3"),
        reading("heartbeat", "WT-2")], NOW - 10 * MIN)         # registered in B
    api.publish(device_topic(B, "ZZ-5"), reading("heartbeat"), NOW - MIN)
    api.publish(device_topic(A, "OLD-1"), reading("heartbeat"), NOW - 30 * HOUR)


def test_unregistered_devices_of_the_callers_regions_most_recent_first(api: Api) -> None:
    _sightings(api)
    r = api.get("officer-a")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["since"] == iso(NOW - 24 * HOUR) and page["truncated"] is False
    assert [(d["device_id"], d["region"]) for d in page["devices"]] == [
        ("BR-9", A), ("WT-2", A), ("ZZ-3", A)]          # by last seen, then id; OLD-1 too old
    assert page["devices"][0] == {
        "device_id": "BR-9", "region": A, "registered_region": None, "readings": 3,
        "alarms": 2, "alarm_types": ["fall", "sos"], "last_seen": iso(NOW - 10 * MIN)}
    wt2 = page["devices"][1]
    assert (wt2["registered_region"], wt2["readings"], wt2["alarms"], wt2["alarm_types"]) == (
        B, 1, 0, [])
    assert list(api.seen("officer-b")) == [("ZZ-5", B)]
    assert list(api.seen("dispatch")) == [("ZZ-5", B), ("BR-9", A), ("WT-2", A), ("ZZ-3", A)]
    # The alarms were stored as readings too; the registered bracelet's fix was not refused.
    with psycopg.connect(api.db) as c:
        stored = c.execute("SELECT device_id, type FROM readings ORDER BY type").fetchall()
    assert stored == [("BR-9", "fall"), ("BR-1", "location"), ("BR-9", "sos")]


def test_window_limit_and_region_narrowing(api: Api) -> None:
    _sightings(api)
    assert ("OLD-1", A) in api.seen("officer-a", hours=48)
    assert list(api.seen("officer-a", hours=1)) == [("BR-9", A), ("WT-2", A), ("ZZ-3", A)]
    assert api.seen("officer-a", hours=1)[("BR-9", A)]["readings"] == 1   # only the fall
    first = api.get("officer-a", limit=2).json()
    assert len(first["devices"]) == 2 and first["truncated"] is True
    assert api.seen("officer-a", region=B) == {}          # narrowing never widens
    assert list(api.seen("dispatch", region=B)) == [("ZZ-5", B)]
    assert api.get(None).status_code == 401
    assert api.get("officer-a", hours=0).status_code == 422
    assert api.get("officer-a", hours=24 * 8).status_code == 422
    assert api.get("officer-a", limit=5000).status_code == 422


def test_other_dead_letters_are_not_sightings(api: Api) -> None:
    api.publish(device_topic(A, "BR-9"), [], NOW - MIN, raw=b'{"type": "sos", "ts": ')
    api.publish(device_topic(A, "BR-1"), reading("sos", device_id="BR-9"), NOW - MIN)  # spoofed
    forged = 'unknown device "EVIL" (not in the registry): sos alarm admitted'
    api.publish(f"eldercare/v1/{A}/dev/{forged}", reading("sos"), NOW - MIN)
    assert api.seen("dispatch") == {}
    with psycopg.connect(api.db) as c:
        row = c.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert row == (3,)


def test_a_device_registered_after_its_sightings_shows_its_new_region(api: Api) -> None:
    api.publish(device_topic(A, "BR-NEW"), reading("heartbeat"), NOW - MIN)
    assert api.seen("officer-a")[("BR-NEW", A)]["registered_region"] is None
    with psycopg.connect(api.db) as conn:
        store_registry(conn, Registry(wearers=[Wearer(
            id="W-3", name="赵兰", region=A, devices=[Device(id="BR-NEW", kind="bracelet")])]))
    assert api.seen("officer-a")[("BR-NEW", A)]["registered_region"] == A

