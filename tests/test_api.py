"""The alerts HTTP API against the real PostgreSQL, served by a real HttpServer on a free port:
authentication, region isolation, filters and pagination, the claim/resolve lifecycle with its
conflicts, validation, the detail view's masking and track, OpenAPI, and the tokens file."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerts.api import create_app
from alerts.api_models import OUTCOMES
from alerts.auth import (
    Principal,
    TokenEntry,
    TokenTable,
    hash_token,
    load_tokens,
    new_token,
)
from alerts.queries import mask_address, redact_text
from alerts.store import AlertStore
from detectors.events import Event
from foundation.errors import ConfigError, EldercareError
from foundation.http_server import THREAD_NAME, HttpServer
from foundation.ports import free_port

A, B = "371002", "370102"                 # two districts
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)   # 10:00 in Shanghai
#: name -> (role, regions) of the test tokens.
CALLERS: dict[str, tuple[str, list[str]]] = {
    "officer-a": ("officer", [A]), "officer-a2": ("officer", [A]),
    "officer-b": ("officer", [B]), "dispatch": ("dispatch", ["*"]),
}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def event(kind: str, ts: int, *, region: str = A, wearer: str | None = "W-1",
          device: str = "WT-1") -> Event:
    return Event(device_id=device, type=kind, ts=ts, severity="critical",  # type: ignore[arg-type]
                 region=region, wearer_id=wearer, lat=37.5, lon=122.1)


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


@dataclass
class Api:
    """A running API and a client that calls it as one of CALLERS."""

    client: httpx.Client
    tokens: dict[str, str]
    clock: FakeClock
    store: AlertStore
    changes: list[int] = field(default_factory=list)
    fail_on_change: bool = False

    def on_change(self, alert_id: int) -> None:
        self.changes.append(alert_id)
        if self.fail_on_change:
            raise RuntimeError("worker wake-up failed")

    def as_(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def get(self, path: str, who: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=self.as_(who), **kw)

    def post(self, path: str, who: str, body: Any = None) -> httpx.Response:
        return self.client.post(path, headers=self.as_(who), json=body)

    def open(self, *events: Event, at: int = DAY) -> list[int]:
        return [c.alert_id for c in self.store.fold(list(events), now_ms=at)]


def token_table(tokens: dict[str, str]) -> TokenTable:
    return TokenTable([TokenEntry(name=n, token_sha256=hash_token(tokens[n]), role=role,  # type: ignore[arg-type]
                                  regions=regions) for n, (role, regions) in CALLERS.items()])


@pytest.fixture
def api(store: AlertStore, db_url: str) -> Iterator[Api]:
    tokens = {name: new_token()[0] for name in CALLERS}
    clock = FakeClock(DAY + 60_000)
    holder: list[Api] = []
    app = create_app(store=store, database_url=db_url, tokens=token_table(tokens), clock=clock,
                     on_change=lambda alert_id: holder[0].on_change(alert_id))
    server = HttpServer(app, host="127.0.0.1", port=0)
    server.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v1", timeout=10)
    holder.append(Api(client, tokens, clock, store))
    yield holder[0]
    client.close()
    server.stop()


#: The lifecycle steps of the trail; routing and delivery entries (queued, undeliverable...)
#: come and go with the routing policy and are tested in tests/test_alert_routing.py.
LIFECYCLE = {"opened", "updated", "acknowledged", "note", "resolved"}


def trail(store: AlertStore, alert_id: int) -> list[tuple[str, str]]:
    return [(a["actor"], a["action"]) for a in store.get(alert_id)["audit"]
            if a["action"] in LIFECYCLE]


# --- Authentication ------------------------------------------------------------------------

def test_health_is_open_and_every_other_endpoint_needs_a_valid_token(api: Api) -> None:
    (alert_id,) = api.open(event("sos", DAY))
    health = api.client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "failed_workers": []}
    calls = [("GET", "/alerts", None), ("GET", f"/alerts/{alert_id}", None),
             ("POST", f"/alerts/{alert_id}/acknowledge", {}),
             ("POST", f"/alerts/{alert_id}/resolve", {"outcome": "safe"}),
             ("POST", f"/alerts/{alert_id}/notes", {"note": "hello"})]
    bad_headers: list[dict[str, str]] = [
        {}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer"},
        {"Authorization": f"Basic {api.tokens['dispatch']}"},      # right token, wrong scheme
        {"Authorization": f"Bearer {api.tokens['dispatch']}x"}]
    for method, path, body in calls:
        for headers in bad_headers:
            r = api.client.request(method, path, headers=headers, json=body)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json() == {"detail": "missing or invalid bearer token"}
    assert trail(api.store, alert_id) == [("system", "opened")]
    assert api.changes == []
    assert api.get("/alerts", "dispatch").status_code == 200


# --- Listing -------------------------------------------------------------------------------

def test_list_orders_filters_and_pages_within_the_callers_regions(api: Api) -> None:
    sos, = api.open(event("sos", DAY, wearer="W-1"), at=DAY)
    battery, = api.open(event("low_battery", DAY, wearer="W-2"), at=DAY + 1000)
    exit_, = api.open(event("geofence_exit", DAY, wearer="W-3"), at=DAY + 2000)
    fall, = api.open(event("fall", DAY, wearer="W-4"), at=DAY + 3000)
    api.store.resolve(fall, by="officer-a", outcome="safe", now_ms=DAY + 4000)
    other, = api.open(event("sos", DAY, region=B, wearer="W-9", device="WT-9"), at=DAY + 5000)

    def ids(who: str, **params: Any) -> list[int]:
        r = api.get("/alerts", who, params=params)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["alerts"]]

    # Unresolved first, then priority (sos 1, exit 3, battery 4), then the resolved fall.
    assert ids("officer-a") == [sos, exit_, battery, fall]
    assert ids("officer-b") == [other]
    assert ids("dispatch") == [other, sos, exit_, battery, fall]     # same priority: newest first
    assert ids("officer-a", status=["open", "acknowledged"]) == [sos, exit_, battery]
    assert ids("officer-a", status="resolved") == [fall]
    assert ids("officer-a", type="sos") == [sos]
    assert ids("officer-a", priority_max=3) == [sos, exit_, fall]
    assert ids("officer-a", since=iso(DAY + 1000), until=iso(DAY + 3000)) == [exit_, battery]
    assert ids("officer-a", region=B) == []           # narrowing cannot widen the token's view
    assert ids("dispatch", region=B) == [other]
    listed = api.get("/alerts", "officer-a").json()["alerts"]
    assert listed[0]["opened_at"] == iso(DAY) and listed[0]["type"] == "sos"
    assert listed[0]["acknowledged_by"] is None and listed[0]["priority"] == 1


def test_pages_follow_each_other_and_a_foreign_cursor_gives_nothing(api: Api) -> None:
    opened = [api.open(event("sos", DAY, wearer=f"W-{k}"), at=DAY + k)[0] for k in range(5)]
    other, = api.open(event("sos", DAY, region=B, wearer="W-9", device="WT-9"))
    seen: list[int] = []
    cursor: int | None = None
    for _ in range(4):
        params: dict[str, Any] = {"limit": 2} | ({"before_id": cursor} if cursor else {})
        page = api.get("/alerts", "officer-a", params=params).json()
        seen += [a["id"] for a in page["alerts"]]
        cursor = page["next_before_id"]
        if cursor is None:
            break
    assert seen == opened[::-1]                      # newest first, each exactly once
    foreign = api.get("/alerts", "officer-a", params={"before_id": other}).json()
    assert foreign == {"alerts": [], "next_before_id": None}


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 501}, {"type": "bogus"}, {"status": "closed"},
    {"priority_max": 0}, {"since": "2026-03-02T10:00:00"},          # a time without a zone
    {"before_id": "x"},
])
def test_bad_list_parameters_are_422_naming_the_parameter(api: Api,
                                                          params: dict[str, Any]) -> None:
    r = api.get("/alerts", "dispatch", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["query", next(iter(params))]


# --- Regions -------------------------------------------------------------------------------

def test_alerts_of_other_regions_do_not_exist_for_the_caller(api: Api) -> None:
    theirs, = api.open(event("sos", DAY, region=B, wearer="W-9", device="WT-9"))
    missing = api.get("/alerts/999999", "officer-a")
    hidden = api.get(f"/alerts/{theirs}", "officer-a")
    assert missing.status_code == hidden.status_code == 404
    assert hidden.json() == {"detail": f"alert {theirs} not found"}   # same shape as missing
    for path, body in (("acknowledge", {}), ("resolve", {"outcome": "safe"}),
                       ("notes", {"note": "hello"})):
        r = api.post(f"/alerts/{theirs}/{path}", "officer-a", body)
        assert r.status_code == 404 and r.json() == {"detail": f"alert {theirs} not found"}
    assert trail(api.store, theirs) == [("system", "opened")]
    assert api.store.get(theirs)["status"] == "open" and api.changes == []
    assert api.post(f"/alerts/{theirs}/acknowledge", "officer-b").status_code == 200
    assert api.get(f"/alerts/{theirs}", "dispatch").status_code == 200


# --- Lifecycle -----------------------------------------------------------------------------

def test_claim_conflict_note_and_resolution_are_recorded_under_token_names(api: Api) -> None:
    alert_id, = api.open(event("sos", DAY))
    api.clock.now = DAY + 90_000
    r = api.post(f"/alerts/{alert_id}/acknowledge", "officer-a", {"note": "calling back"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_by"] == "officer-a"
    assert r.json()["acknowledged_at"] == iso(DAY + 90_000)
    again = api.post(f"/alerts/{alert_id}/acknowledge", "officer-a", {"note": "no answer"})
    assert again.status_code == 200 and again.json()["acknowledged_at"] == iso(DAY + 90_000)
    conflict = api.post(f"/alerts/{alert_id}/acknowledge", "officer-a2")
    assert conflict.status_code == 409
    assert conflict.json() == {"detail": f"alert {alert_id} is acknowledged by officer-a",
                               "owner": "officer-a", "status": "acknowledged"}
    assert api.post(f"/alerts/{alert_id}/notes", "officer-a2",
                    {"note": "  daughter on her way  "}).status_code == 200
    # Another officer cannot resolve what officer-a holds (a supervisor or dispatch could).
    taken = api.post(f"/alerts/{alert_id}/resolve", "officer-a2", {"outcome": "false_alarm"})
    assert taken.status_code == 409 and taken.json()["owner"] == "officer-a"
    done = api.post(f"/alerts/{alert_id}/resolve", "officer-a",
                    {"outcome": "helped_on_site", "note": "she is fine"})
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["outcome"], done.json()["resolved_by"]) == (
        "resolved", "helped_on_site", "officer-a")
    for path, body in (("resolve", {"outcome": "safe"}), ("acknowledge", None)):
        late = api.post(f"/alerts/{alert_id}/{path}", "officer-a2", body)
        assert late.status_code == 409 and late.json()["status"] == "resolved"
    audit = [e for e in api.get(f"/alerts/{alert_id}", "officer-a").json()["audit"]
             if e["action"] in LIFECYCLE]
    assert [(e["actor"], e["action"], e["detail"].get("note")) for e in audit] == [
        ("system", "opened", None), ("officer-a", "acknowledged", "calling back"),
        ("officer-a", "note", "no answer"),                 # the repeated claim's note is kept
        ("officer-a2", "note", "daughter on her way"), ("officer-a", "resolved", "she is fine")]
    assert audit[-1]["detail"]["outcome"] == "helped_on_site"
    assert audit[1]["at"] == iso(DAY + 90_000)
    assert api.changes == [alert_id] * 4             # every successful write, no failed one


def test_a_failing_wake_up_does_not_fail_the_committed_write(api: Api) -> None:
    alert_id, = api.open(event("fall", DAY))
    api.fail_on_change = True
    r = api.post(f"/alerts/{alert_id}/acknowledge", "officer-a")
    assert r.status_code == 200 and api.changes == [alert_id]
    assert api.store.get(alert_id)["acknowledged_by"] == "officer-a"


def test_invalid_bodies_are_422_and_change_nothing(api: Api) -> None:
    alert_id, = api.open(event("sos", DAY))
    base = f"/alerts/{alert_id}"
    invalid: list[tuple[str, Any, list[str | int]]] = [
        ("resolve", {"outcome": "fixed"}, ["body", "outcome"]),
        ("resolve", {}, ["body", "outcome"]),
        ("resolve", {"outcome": "safe", "outcom": "x"}, ["body", "outcom"]),
        ("notes", {"note": "x" * 2001}, ["body", "note"]),
        ("notes", {"note": "   "}, ["body", "note"]),
        ("notes", None, ["body"]),
        ("acknowledge", {"note": "x" * 2001}, ["body", "note"]),
    ]
    for path, body, loc in invalid:
        r = api.post(f"{base}/{path}", "officer-a", body)
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["detail"][0]["loc"] == loc
    garbled = api.client.post(f"{base}/notes", content=b"{not json",
                              headers=api.as_("officer-a") | {"content-type": "application/json"})
    assert garbled.status_code == 422
    assert api.post("/alerts/0/acknowledge", "officer-a").status_code == 422
    assert api.get("/alerts/abc", "officer-a").status_code == 422
    assert trail(api.store, alert_id) == [("system", "opened")] and api.changes == []
    assert api.post(f"{base}/notes", "officer-a", {"note": "x" * 2000}).status_code == 200


# --- Detail --------------------------------------------------------------------------------

def _insert_readings(db_url: str, rows: list[tuple[str, int, float, float]]) -> None:
    with psycopg.connect(db_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO readings (ts, device_id, type, region, received_at, lat, lon, accuracy_m)"
            " VALUES (%s, %s, 'location', %s, now(), %s, %s, 12.5)",
            [(datetime.fromtimestamp(ts / 1000, UTC), dev, A, lat, lon)
             for dev, ts, lat, lon in rows])


def _insert_delivery(db_url: str, alert_id: int, k: int, channel: str, address: str, *,
                     receipt: Any = None, last_error: str | None = None) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO alert_deliveries (alert_id, kind, recipient, channel, address, priority,"
            " body, idempotency_key, status, attempts, created_at, next_attempt_at, receipt,"
            " last_error) VALUES (%s, 'notify', %s, %s, %s, 1, '{}', %s, 'sent', 1, now(),"
            " now(), %s, %s)",
            (alert_id, f"test:{k}", channel, address, f"k-{alert_id}-{k}",
             None if receipt is None else Jsonb(receipt), last_error))


def test_detail_has_wearer_trail_masked_deliveries_and_the_recent_track(
        api: Api, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO wearers (wearer_id, name, region, birth_year, conditions)"
                     " VALUES ('W-1', '王秀英', %s, 1941, '{dementia,diabetes}')", (A,))
        conn.execute("INSERT INTO contacts (wearer_id, priority, name, phone, email)"
                     " VALUES ('W-1', 1, '李娜', '+8613800000001', 'li.na@example.com')")
    last = DAY + 7_200_000
    minute = 60_000
    _insert_readings(db_url, [
        ("WT-1", last - 180 * minute, 37.0, 122.0),    # older than 2 h: not shown
        ("WT-1", last - 90 * minute, 37.1, 122.1), ("WT-1", last - 30 * minute, 37.2, 122.2),
        ("WT-1", last, 37.3, 122.3),                   # the alert's own time: shown
        ("WT-1", last + 10 * minute, 37.4, 122.4),     # after the alert's latest event: not shown
        ("WT-2", last - 10 * minute, 30.0, 120.0)])    # another device: not shown
    alert_id = api.open(event("sos", DAY), event("sos", last))[0]
    _insert_delivery(db_url, alert_id, 1, "sms", "+8613800000001",
                     receipt={"to": "+8613800000001", "biz_id": "9006^0"},
                     last_error="first try: +86 138 0000 0001 busy")
    _insert_delivery(db_url, alert_id, 2, "email", "li.na@example.com")
    _insert_delivery(db_url, alert_id, 3, "webhook", "https://dispatch.example.cn:8443/h?key=s3")
    _insert_delivery(db_url, alert_id, 4, "mqtt", "eldercare/371002/alerts")
    r = api.get(f"/alerts/{alert_id}", "officer-a")
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["wearer"] == {"id": "W-1", "name": "王秀英", "birth_year": 1941,
                                "conditions": ["dementia", "diabetes"]}
    for secret in ("13800000001", "138 0000 0001", "li.na", "key=s3", "李娜"):
        assert secret not in r.text
    deliveries = [d for d in detail["deliveries"] if d["recipient"].startswith("test:")]
    assert [d["address"] for d in deliveries] == [
        "+86138****0001", "l****@example.com", "https://dispatch.example.cn:8443/...",
        "eldercare/371002/alerts"]
    assert deliveries[0]["receipt"] == {"to": "+86138****0001", "biz_id": "9006^0"}
    assert deliveries[0]["last_error"] == "first try: +86138****0001 busy"
    assert (deliveries[0]["recipient"], deliveries[0]["status"], deliveries[0]["attempts"]) == (
        "test:1", "sent", 1)
    assert detail["positions"] == [
        {"ts": iso(last - 90 * minute), "lat": 37.1, "lon": 122.1, "accuracy_m": 12.5},
        {"ts": iso(last - 30 * minute), "lat": 37.2, "lon": 122.2, "accuracy_m": 12.5},
        {"ts": iso(last), "lat": 37.3, "lon": 122.3, "accuracy_m": 12.5}]
    audit = detail["audit"]
    assert [a["id"] for a in audit] == sorted(a["id"] for a in audit)       # oldest first
    assert [(e["actor"], e["action"]) for e in audit if e["action"] in LIFECYCLE] == [
        ("system", "opened"), ("system", "updated")]
    assert detail["last_ts"] == iso(last) and detail["event_count"] == 2


def test_the_track_is_the_latest_200_fixes(api: Api, db_url: str) -> None:
    _insert_readings(db_url, [("WT-1", DAY - k * 20_000, 37.0 + k / 1e4, 122.0)
                              for k in range(300)])          # 100 min of fixes every 20 s
    alert_id, = api.open(event("fall", DAY))
    positions = api.get(f"/alerts/{alert_id}", "dispatch").json()["positions"]
    assert len(positions) == 200
    assert positions[0]["ts"] == iso(DAY - 199 * 20_000) and positions[-1]["ts"] == iso(DAY)


# --- OpenAPI and failures ------------------------------------------------------------------

def test_openapi_documents_every_endpoint_outcome_and_error(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert {(p, m) for p, ops in doc["paths"].items() for m in ops} == {
        ("/api/v1/health", "get"), ("/healthz", "get"), ("/readyz", "get"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/{alert_id}", "get"), ("/api/v1/alerts/{alert_id}/acknowledge", "post"),
        ("/api/v1/alerts/{alert_id}/resolve", "post"), ("/api/v1/alerts/{alert_id}/notes", "post"),
        ("/api/v1/alerts/{alert_id}/commands", "get"), ("/api/v1/alerts/{alert_id}/commands", "post")}
    schemas = doc["components"]["schemas"]
    assert schemas["ResolveIn"]["properties"]["outcome"]["enum"] == list(OUTCOMES)
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    ack = doc["paths"]["/api/v1/alerts/{alert_id}/acknowledge"]["post"]
    assert ack["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Conflict")
    assert "security" not in doc["paths"]["/api/v1/health"]["get"]
    assert api.client.get("/docs").status_code == 200


def test_a_database_failure_is_503_with_retry_after() -> None:
    tokens = {name: new_token()[0] for name in CALLERS}
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with AlertStore(dead) as store:
        app = create_app(store=store, database_url=dead, tokens=token_table(tokens),
                         clock=FakeClock(DAY))
        with HttpServer(app, host="127.0.0.1", port=0) as server:
            headers = {"Authorization": f"Bearer {tokens['dispatch']}"}
            base = f"http://127.0.0.1:{server.port}/api/v1"
            for method, path in (("GET", "/alerts"), ("POST", "/alerts/1/notes")):
                r = httpx.request(method, base + path, headers=headers, json={"note": "x"})
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "5"
                assert r.json() == {"detail": "the alert database is unavailable; retry later"}


# --- HttpServer ----------------------------------------------------------------------------

async def _hi(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering "hi" to every request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def test_http_server_binds_a_free_port_in_a_named_thread_and_stops() -> None:
    server = HttpServer(_hi, host="127.0.0.1", port=0)
    server.start()
    assert server.port > 0
    assert THREAD_NAME in {t.name for t in threading.enumerate()}
    assert httpx.get(f"http://127.0.0.1:{server.port}/").text == "hi"
    with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}"):
        HttpServer(_hi, host="127.0.0.1", port=server.port).start()    # the port is taken
    with pytest.raises(EldercareError, match="already running"):
        server.start()
    server.stop()
    assert THREAD_NAME not in {t.name for t in threading.enumerate()}
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass


def test_http_server_connections_have_nagle_off() -> None:
    """Accepted connections have TCP_NODELAY: with Nagle on, each response's body waited for
    the client's delayed ACK of its headers (40 ms on every request; benchmarks/http_latency)."""
    server = HttpServer(_hi, host="127.0.0.1", port=0)
    server.start()
    try:
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{server.port}/").text == "hi"
            # The server runs in this process: find its end of the kept-alive connection
            # among this process' sockets (a dup of each; the server's own stays open).
            client_end = None
            accepted = []
            for fd in map(int, os.listdir("/proc/self/fd")):
                try:
                    dup = os.dup(fd)
                except OSError:
                    continue                            # gone meanwhile (listdir's own)
                try:
                    sock = socket.socket(fileno=dup)
                except OSError:
                    os.close(dup)
                    continue                            # not a socket
                with sock:
                    if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
                        continue
                    try:
                        local, peer = sock.getsockname(), sock.getpeername()
                    except OSError:
                        continue                        # a listener: no peer
                    if local[1] == server.port:
                        accepted.append((peer, sock.getsockopt(socket.IPPROTO_TCP,
                                                               socket.TCP_NODELAY)))
                    elif peer[1] == server.port:
                        client_end = local
        assert client_end is not None
        assert [nodelay for peer, nodelay in accepted if peer == client_end] == [1]
    finally:
        server.stop()


def test_http_server_start_raises_when_the_app_fails_to_start() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = HttpServer(app, host="127.0.0.1", port=0)
    with pytest.raises(EldercareError, match="did not start"):
        server.start(timeout_s=5)
    assert THREAD_NAME not in {t.name for t in threading.enumerate()}
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass


# --- Tokens --------------------------------------------------------------------------------

def test_tokens_file_yaml_and_json_authenticate_by_hash(tmp_path: Path) -> None:
    token, digest = new_token()
    assert len(token) >= 43 and digest == hash_token(token) and len(digest) == 64
    assert new_token()[0] != token
    yaml_file = tmp_path / "tokens.yaml"
    yaml_file.write_text(f"- name: dispatch-center\n  token_sha256: {digest.upper()}\n"
                         f"  role: dispatch\n  regions: ['*']\n"
                         f"- name: officer-li\n  token_sha256: '{'0' * 64}'\n"
                         f"  role: officer\n  regions: ['{A}']\n")
    table = load_tokens(yaml_file)
    assert len(table) == 2
    caller = table.authenticate(token)
    assert caller == Principal("dispatch-center", "dispatch", ("*",))
    assert caller.can_see(B) and caller.region_filter() is None
    assert table.authenticate(token + "x") is None and table.authenticate("") is None
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps([{"name": "officer-li", "token_sha256": digest,
                                      "role": "officer", "regions": [A]}]))
    officer = load_tokens(json_file).authenticate(token)
    assert officer is not None and officer.can_see(A) and not officer.can_see(B)
    assert officer.region_filter() == [A]


def entry(**fields: str) -> str:
    """One tokens-file entry in YAML flow style, valid unless ``fields`` break it."""
    values = {"name": "a", "token_sha256": "a" * 64, "role": "officer", "regions": "['1']"}
    return "- {" + ", ".join(f"{k}: {v}" for k, v in (values | fields).items()) + "}\n"


@pytest.mark.parametrize(("content", "where"), [
    (entry(token_sha256="abc"), "$[0].token_sha256"),
    (entry(role="boss"), "$[0].role"),
    (entry(regions="[]"), "$[0].regions"),
    (entry(regions="['*', '1']"), "$[0]"),
    (entry(name="system"), "reserved"),
    (entry(x="1"), "unknown field `x` - at `$[0]`"),
    (entry() + entry(token_sha256="b" * 64), "$[1].name"),
    (entry() + entry(name="b", token_sha256="A" * 64), "$[1].token_sha256"),   # same hash
    ("- [unclosed", "invalid tokens file"),
    ("", "null"),
])
def test_tokens_file_errors_name_the_file_and_the_field(tmp_path: Path, content: str,
                                                        where: str) -> None:
    path = tmp_path / "api-tokens.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_tokens(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_a_missing_tokens_file_is_named() -> None:
    with pytest.raises(ConfigError, match="cannot read tokens file /nonexistent/tokens.yaml"):
        load_tokens("/nonexistent/tokens.yaml")


# --- Masking -------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "shown"), [
    ("+8613800000001", "+86138****0001"), ("13800000001", "138****0001"),
    ("+86 138-0000-0001", "+86138****0001"), ("li.na@example.com", "l****@example.com"),
    ("https://user:pw@hook.example.cn/a/b?key=1", "https://hook.example.cn/..."),
    ("http://hook.example.cn", "http://hook.example.cn"),
    ("eldercare/371002/alerts", "eldercare/371002/alerts"), ("12349", "12349"),
])
def test_mask_address(address: str, shown: str) -> None:
    assert mask_address(address) == shown


def test_redact_text_masks_numbers_and_addresses_inside_messages() -> None:
    assert redact_text("550 li.na@example.com unknown; sms to 13800000001 failed (HTTP 503)") == (
        "550 l****@example.com unknown; sms to 138****0001 failed (HTTP 503)")


def test_dispatch_can_resolve_an_alert_an_officer_holds(api: Api) -> None:
    alert_id, = api.open(event("fall", DAY))
    assert api.post(f"/alerts/{alert_id}/acknowledge", "officer-a").status_code == 200
    r = api.post(f"/alerts/{alert_id}/resolve", "dispatch", {"outcome": "ambulance"})
    assert r.status_code == 200 and r.json()["resolved_by"] == "dispatch"
