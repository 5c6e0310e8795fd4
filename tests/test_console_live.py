"""The console's live feed (console/live.py) against the real PostgreSQL, served by a real
HttpServer and read as Server-Sent Events with httpx: latency from store to stream, region
isolation, exact catch-up after a reconnect, resets, ordering around uncommitted ids, masking,
shutdown; and the pure gap tracker with time as an input."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Self

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.types.json import Jsonb

from alerts import queries
from alerts.api_models import Alert
from alerts.auth import Principal, TokenEntry, TokenTable, hash_token, new_token
from alerts.store import AlertStore
from console.gaps import GapTracker, Snapshot
from console.live import ChangeFeed
from console.stream import stream_router
from detectors.events import Event
from foundation.http_server import HttpServer

A, B = "371002", "370102"
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
CALLERS: dict[str, tuple[str, list[str]]] = {
    "officer-a": ("officer", [A]), "officer-b": ("officer", [B]), "dispatch": ("dispatch", ["*"])}
HEARTBEAT_S = 0.2          # short, so readers notice a close quickly and cursors move


_bearer = HTTPBearer(auto_error=False)   # module level: annotations are resolved in globals


def bearer_principal(tokens: TokenTable) -> Callable[..., Awaitable[Principal]]:
    """A principal dependency from bearer tokens, as alerts.api authenticates."""

    async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(_bearer)]) -> Principal:
        principal = tokens.authenticate(credentials.credentials) if credentials else None
        if principal is None:
            raise HTTPException(401, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal

    return caller


def token_table(tokens: dict[str, str]) -> TokenTable:
    return TokenTable([TokenEntry(name=n, token_sha256=hash_token(tokens[n]), role=role,  # type: ignore[arg-type]
                                  regions=regions) for n, (role, regions) in CALLERS.items()])


def event(kind: str, ts: int = DAY, *, region: str = A, wearer: str = "W-1",
          device: str = "WT-1") -> Event:
    return Event(device_id=device, type=kind, ts=ts, severity="critical",  # type: ignore[arg-type]
                 region=region, wearer_id=wearer, lat=37.5, lon=122.1)


# --- Reading the stream ----------------------------------------------------------------------

@dataclass
class Sse:
    """One dispatched event, as EventSource would hand it to the page."""

    event: str
    data: Any
    id: str | None            # the id field of this event's own block, if it had one
    at: float                 # time.monotonic() when the blank line arrived


class SseReader:
    """Reads one stream in a thread; parses like a browser's EventSource."""

    def __init__(self, url: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        self.events: queue.Queue[Sse] = queue.Queue()
        self.last_id: str | None = None   # EventSource's lastEventId (id-only blocks too)
        self.comments = 0
        self.status: int | None = None
        self.body = ""
        self.ended = threading.Event()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers, params),
                                        name="test-sse-reader", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._connected.wait(5), "stream did not answer"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()

    def _run(self, url: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        try:
            with httpx.Client(timeout=10) as client, client.stream(
                    "GET", url, headers=headers, params=params) as r:
                self.status = r.status_code
                self._connected.set()
                if r.status_code != 200:
                    self.body = r.read().decode()
                    return
                self._parse(r.iter_lines())
        finally:
            self._connected.set()
            self.ended.set()

    def _parse(self, lines: Iterator[str]) -> None:
        name, id_ = "message", None
        data: list[str] = []
        for line in lines:
            if self._stop.is_set():
                return
            if line == "":
                if id_ is not None:
                    self.last_id = id_
                if data:
                    self.events.put(Sse(name, json.loads("\n".join(data)), id_,
                                        time.monotonic()))
                name, data, id_ = "message", [], None
            elif line.startswith(":"):
                self.comments += 1
            else:
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
                elif key == "id":
                    id_ = value

    def next(self, timeout_s: float = 5.0) -> Sse:
        try:
            return self.events.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout_s} s") from None

    def until(self, predicate: Callable[[Sse], bool], timeout_s: float = 5.0) -> list[Sse]:
        """Events up to and including the first that matches."""
        seen: list[Sse] = []
        deadline = time.monotonic() + timeout_s
        while True:
            seen.append(self.next(max(0.01, deadline - time.monotonic())))
            if predicate(seen[-1]):
                return seen

    def pending(self) -> list[Sse]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out


def is_change(alert_id: int, action: str) -> Callable[[Sse], bool]:
    return lambda e: (e.event == "alert" and e.data["alert"]["id"] == alert_id
                      and e.data["action"] == action)


def has_id(audit_id: int) -> Callable[[Sse], bool]:
    return lambda e: e.id == str(audit_id)


# --- The running feed ------------------------------------------------------------------------

@dataclass
class Live:
    base: str
    db: str
    tokens: dict[str, str]
    store: AlertStore
    feed: ChangeFeed
    server: HttpServer
    readers: list[SseReader] = field(default_factory=list)

    def headers(self, who: str | None, **extra: str) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return auth | extra

    def reader(self, who: str, *, last_event_id: str | None = None,
               **params: Any) -> SseReader:
        extra = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        return SseReader(f"{self.base}/stream", self.headers(who, **extra), params)

    def open(self, *events: Event) -> list[int]:
        return [c.alert_id for c in self.store.fold(list(events), now_ms=DAY + 60_000)]

    def settle(self) -> None:
        """Wait until the feed has published everything committed so far."""
        top = self.max_id()
        deadline = time.monotonic() + 5
        while self.feed.watermark < top:
            assert time.monotonic() < deadline, "the feed did not catch up"
            time.sleep(0.02)

    def max_id(self) -> int:
        with psycopg.connect(self.db) as c:
            row = c.execute("SELECT coalesce(max(id), 0) FROM alert_audit").fetchone()
        assert row is not None
        return int(row[0])

    def audit_ids(self, *, after: int, region: str) -> list[int]:
        with psycopg.connect(self.db) as c:
            return [int(r[0]) for r in c.execute(
                "SELECT au.id FROM alert_audit au JOIN alerts a ON a.id = au.alert_id"
                " WHERE au.id > %s AND a.region = %s ORDER BY au.id", (after, region))]


@pytest.fixture
def make_live(store: AlertStore, migrated_db: str) -> Iterator[Callable[..., Live]]:
    made: list[Live] = []

    def make(max_age_s: float | None = None, **feed_kw: Any) -> Live:
        tokens = {name: new_token()[0] for name in CALLERS}
        feed = ChangeFeed(migrated_db, **feed_kw)
        app = FastAPI()
        app.include_router(stream_router(feed, bearer_principal(token_table(tokens)),
                                         heartbeat_s=HEARTBEAT_S, max_age_s=max_age_s))
        server = HttpServer(app, host="127.0.0.1", port=0)
        server.start()
        made.append(Live(f"http://127.0.0.1:{server.port}/api/v1", migrated_db, tokens, store,
                         feed, server))
        return made[-1]

    yield make
    for live in made:
        live.feed.end_streams()
        live.server.stop()


@pytest.fixture
def live(make_live: Callable[..., Live]) -> Live:
    return make_live()       # the defaults: poll_s 0.25, queues of 1000


# --- Tests -----------------------------------------------------------------------------------

def test_an_sos_and_its_claim_reach_the_stream_within_a_second(live: Live) -> None:
    with live.reader("officer-a") as r:
        assert r.next().event == "hello"
        before = time.monotonic()
        (alert_id,) = live.open(event("sos"))            # returns once committed
        opened = r.until(is_change(alert_id, "opened"))[-1]
        latency = opened.at - before
        print(f"SOS stored -> on the stream: {latency * 1000:.0f} ms")
        assert latency < 1.0
        assert opened.data["actor"] == "system" and opened.data["audit_id"] == int(opened.id or 0)
        with queries.reading(live.db) as conn:
            row = queries.get_alert(conn, alert_id)
        # The same shape and values as GET /alerts lists.
        assert opened.data["alert"] == Alert.model_validate(row).model_dump(mode="json")

        before = time.monotonic()
        live.store.acknowledge(alert_id, by="officer-a", now_ms=DAY + 90_000, note="on it")
        claimed = r.until(is_change(alert_id, "acknowledged"))[-1]
        print(f"claim stored -> on the stream: {(claimed.at - before) * 1000:.0f} ms")
        assert claimed.at - before < 1.0
        assert claimed.data["actor"] == "officer-a"
        assert claimed.data["detail"] == {"note": "on it"}
        assert claimed.data["alert"]["status"] == "acknowledged"
        assert claimed.data["alert"]["acknowledged_by"] == "officer-a"
        assert claimed.data["at"] == "2026-03-02T02:01:30Z"


def test_hello_carries_the_max_id_and_sets_the_resume_point(live: Live) -> None:
    live.open(event("sos"), event("fall", wearer="W-2", device="WT-2"))
    live.settle()
    expected = live.max_id()
    assert expected > 0
    with live.reader("officer-b") as r:              # sees none of them
        hello = r.next()
        assert hello.event == "hello" and hello.data == {"max_id": expected}
        assert hello.id is None
        time.sleep(0.1)
        assert r.last_id == str(expected)


def test_an_officer_never_receives_another_regions_changes(live: Live) -> None:
    with (live.reader("officer-a") as ra, live.reader("officer-b") as rb,
          live.reader("dispatch") as rd):
        for r in (ra, rb, rd):
            assert r.next().event == "hello"
        (b1,) = live.open(event("sos", region=B, wearer="W-9", device="WT-9"))
        (a1,) = live.open(event("sos"))
        live.store.acknowledge(b1, by="officer-b", now_ms=DAY + 70_000)
        live.store.add_note(b1, by="officer-b", note="family on the way", now_ms=DAY + 71_000)
        (a2,) = live.open(event("fall", wearer="W-2", device="WT-2"))
        # The feed publishes in id order: once a2's opening arrives, every B change before it
        # has been through the fan-out.
        seen_a = ra.until(is_change(a2, "opened"))
        seen_b = rb.until(lambda e: e.event == "alert" and e.data["action"] == "note")
        seen_d = rd.until(is_change(a2, "opened"))
    deadline = time.monotonic() + 2
    while live.feed.subscribers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live.feed.subscribers == 0           # each disconnect ended its subscription
    assert {e.data["alert"]["region"] for e in seen_a if e.event == "alert"} == {A}
    assert {e.data["alert"]["id"] for e in seen_a if e.event == "alert"} == {a1, a2}
    assert {e.data["alert"]["region"] for e in seen_b if e.event == "alert"} == {B}
    assert {e.data["alert"]["id"] for e in seen_d if e.event == "alert"} == {a1, a2, b1}


def test_a_reconnect_with_last_event_id_gets_exactly_what_was_missed(live: Live) -> None:
    with live.reader("officer-a") as r1:
        r1.next()
        (a1,) = live.open(event("sos"))
        r1.until(is_change(a1, "opened"))
        top = live.max_id()
        deadline = time.monotonic() + 3
        while int(r1.last_id or 0) < top and time.monotonic() < deadline:
            time.sleep(0.05)       # the heartbeat's id moves the cursor past the last change
        assert int(r1.last_id or 0) >= top
        resume = r1.last_id
    assert resume is not None
    # Disconnected: changes in A and in B.
    live.store.acknowledge(a1, by="officer-a", now_ms=DAY + 70_000)
    live.open(event("sos", region=B, wearer="W-9", device="WT-9"))
    live.store.add_note(a1, by="officer-a", note="called the daughter", now_ms=DAY + 71_000)
    (a2,) = live.open(event("fall", wearer="W-2", device="WT-2"))
    missed = live.audit_ids(after=int(resume), region=A)
    assert len(missed) >= 3

    for kw in ({"last_event_id": resume}, {"since": int(resume)},
               {"last_event_id": resume, "since": 0}):      # the header wins over ?since=
        with live.reader("officer-a", **kw) as r2:
            hello = r2.next()
            assert hello.event == "hello"
            replayed = r2.until(has_id(missed[-1]))
            assert [int(e.id or 0) for e in replayed] == missed, kw
            live.store.add_note(a2, by="officer-a", note="live again", now_ms=DAY + 80_000)
            live_one = r2.until(lambda e: e.event == "alert")
            assert [e.data["action"] for e in live_one] == ["note"]
            assert int(live_one[0].id or 0) > missed[-1]
            missed.append(int(live_one[0].id or 0))
        resume_ids = [int(e.id or 0) for e in (*replayed, *live_one)]
        assert len(resume_ids) == len(set(resume_ids))              # no duplicates


def test_unauthenticated_requests_are_refused(live: Live) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"},
                    {"Authorization": f"Basic {live.tokens['dispatch']}"}):
        r = httpx.get(f"{live.base}/stream", headers=headers, timeout=5)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
    bad = httpx.get(f"{live.base}/stream", timeout=5,
                    headers=live.headers("dispatch", **{"Last-Event-ID": "x1"}))
    assert bad.status_code == 422
    assert live.feed.subscribers == 0


def _insert_audit(url: str, alert_id: int, n: int, detail: dict[str, Any] | None = None) -> None:
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
                  " SELECT %s, now(), 'system', 'note', %s FROM generate_series(1, %s)",
                  (alert_id, Jsonb(detail or {}), n))


def test_too_far_behind_or_an_unknown_id_resets_then_goes_live(live: Live) -> None:
    (a1,) = live.open(event("sos"))
    start = live.max_id()
    _insert_audit(live.db, a1, 1001)
    live.settle()
    top = live.max_id()
    for since, reason in ((start, "too_far_behind"), (top + 500, "unknown_id")):
        with live.reader("officer-a", since=since) as r:
            assert r.next().event == "hello"
            reset = r.next()
            assert reset.event == "reset" and reset.data == {"reason": reason, "max_id": top}
            assert reset.id == str(top)
            live.store.add_note(a1, by="officer-a", note="still here", now_ms=DAY + 80_000)
            assert r.next().data["action"] == "note"        # the stream goes on
        top = live.max_id()
    # 1000 missed changes is still a catch-up.
    with live.reader("officer-a", since=top - 1000) as r:
        r.next()
        assert len(r.until(lambda e: e.id == str(top), timeout_s=10)) == 1000


def test_a_subscriber_that_falls_behind_gets_a_reset_and_is_dropped(
        make_live: Callable[..., Live]) -> None:
    live = make_live(queue_size=3)
    (a1,) = live.open(event("sos"))
    live.settle()
    with live.reader("officer-a") as slow, live.reader("officer-b") as other:
        assert slow.next().event == "hello" and other.next().event == "hello"
        time.sleep(0.3)
        assert live.feed.subscribers == 2
        _insert_audit(live.db, a1, 5)     # one commit: five changes in one poll, queue of 3
        reset = slow.until(lambda e: e.event == "reset")[-1]
        assert reset.data["reason"] == "overflow" and reset.data["max_id"] >= live.max_id()
        assert slow.ended.wait(2)         # disconnected; the page reloads and reconnects
        assert not other.ended.is_set()   # region B saw nothing and stays
        time.sleep(0.3)
        assert live.feed.subscribers == 1


def test_ids_arrive_in_order_when_an_earlier_transaction_commits_late(live: Live) -> None:
    (a1,) = live.open(event("sos"))
    live.settle()
    with live.reader("officer-a") as r:
        r.next()
        with psycopg.connect(live.db) as held:
            row = held.execute(
                "INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
                " VALUES (%s, now(), 'officer-a', 'note', '{}') RETURNING id", (a1,)).fetchone()
            assert row is not None
            live.store.add_note(a1, by="officer-a", note="after the hole", now_ms=DAY + 70_000)
            time.sleep(0.8)
            assert r.pending() == []           # held back behind the uncommitted id
            held.commit()
            committed = time.monotonic()
        first, second = r.next(), r.next()
        assert [int(first.id or 0), int(second.id or 0)] == [row[0], row[0] + 1]
        assert second.at - committed < 1.0


def test_a_rolled_back_id_does_not_hold_the_stream(live: Live) -> None:
    (a1,) = live.open(event("sos"))
    live.settle()
    with live.reader("officer-a") as r:
        r.next()
        with psycopg.connect(live.db) as held:
            held.execute("INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
                         " VALUES (%s, now(), 'officer-a', 'note', '{}')", (a1,))
            live.store.add_note(a1, by="officer-a", note="after the hole", now_ms=DAY + 70_000)
            time.sleep(0.5)
            held.rollback()
            rolled_back = time.monotonic()
        after = r.next()
        assert after.data["detail"] == {"note": "after the hole"}
        assert after.at - rolled_back < 1.0
        time.sleep(0.5)
        assert r.pending() == []


def test_a_stuck_transaction_is_passed_after_the_timeout_and_published_late(
        make_live: Callable[..., Live]) -> None:
    live = make_live(gap_timeout_s=1.0)
    (a1,) = live.open(event("sos"))
    live.settle()
    with live.reader("officer-a") as r:
        r.next()
        with psycopg.connect(live.db) as held:
            row = held.execute("INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
                               " VALUES (%s, now(), 'system', 'note', '{}') RETURNING id",
                               (a1,)).fetchone()
            assert row is not None
            live.store.add_note(a1, by="officer-a", note="after the hole", now_ms=DAY + 70_000)
            passed = r.next(timeout_s=3)
            assert passed.data["detail"] == {"note": "after the hole"}
            held.commit()
        late = r.next(timeout_s=3)
        assert int(late.id or 0) == row[0]


def test_contact_details_in_audit_details_are_masked(live: Live) -> None:
    (a1,) = live.open(event("sos"))
    live.settle()
    with live.reader("dispatch") as r:
        r.next()
        _insert_audit(live.db, a1, 1, {"address": "+8613800000001",
                                       "error": "sms to +86 138 0000 0002 failed; li.na@x.cn"})
        detail = r.until(lambda e: e.event == "alert" and "address" in e.data["detail"])[-1]
    assert detail.data["detail"] == {"address": "+86138****0001",
                                     "error": "sms to +86138****0002 failed; l****@x.cn"}


def test_end_streams_closes_them_at_once_so_the_server_stops_quickly(live: Live) -> None:
    with live.reader("officer-a") as r:
        r.next()
        live.feed.end_streams()
        assert r.ended.wait(1.0)
    refused = httpx.get(f"{live.base}/stream", headers=live.headers("dispatch"), timeout=5)
    assert refused.status_code == 503
    started = time.monotonic()
    live.server.stop()
    assert time.monotonic() - started < 2.0
    assert live.feed.subscribers == 0


def test_streams_age_out_so_callers_are_authenticated_again(
        make_live: Callable[..., Live]) -> None:
    live = make_live(max_age_s=1.0)
    (a1,) = live.open(event("sos"))
    live.settle()
    with live.reader("officer-a") as r:
        opened = time.monotonic()
        r.next()
        live.store.add_note(a1, by="officer-a", note="before the end", now_ms=DAY + 70_000)
        assert r.next().data["detail"] == {"note": "before the end"}
        assert r.ended.wait(2.0)
        assert 0.8 <= time.monotonic() - opened < 2.0
        resume = r.last_id
    live.store.add_note(a1, by="officer-a", note="in between", now_ms=DAY + 80_000)
    with live.reader("officer-a", last_event_id=resume) as again:
        again.next()
        assert again.next().data["detail"] == {"note": "in between"}


# --- The gap tracker, with time as an input --------------------------------------------------

def snap(*running: int) -> Snapshot:
    return Snapshot(xmin=min(running, default=100), xmax=100, in_progress=frozenset(running))


def test_gap_tracker_holds_a_hole_until_its_transactions_end() -> None:
    g = GapTracker(10, grace_s=0.2, timeout_s=10)
    step = g.advance([11, 13, 14], snap(50), now=0.0)
    assert step.ready == [11] and g.watermark == 11
    assert g.advance([13, 14], snap(50), now=0.3).ready == []          # 50 still running
    step = g.advance([12, 13, 14], snap(), now=0.4)                     # 12 committed
    assert step.ready == [12, 13, 14] and g.watermark == 14


def test_gap_tracker_passes_a_rolled_back_id_after_the_grace_period() -> None:
    g = GapTracker(0, grace_s=0.2, timeout_s=10)
    assert g.advance([2], snap(), now=0.0).ready == []      # nobody running, but within grace
    # A writer that got id 1 before its transaction id shows up running at the grace check...
    assert g.advance([2], snap(77), now=0.25).ready == []
    # ...and once it has ended (rolled back: 1 never appears), 2 goes.
    assert g.advance([2], snap(), now=0.5).ready == [2]


def test_gap_tracker_gives_up_after_the_timeout_and_reports_a_late_commit() -> None:
    g = GapTracker(0, grace_s=0.2, timeout_s=1.0, late_watch_s=60)
    assert g.advance([1, 3], snap(9), now=0.0).ready == [1]
    assert g.advance([3], snap(9), now=0.9).ready == []
    step = g.advance([3], snap(9), now=1.1)
    assert step.ready == [3] and g.late_ranges() == [(2, 2)]
    step = g.advance([2, 4], snap(), now=2.0)
    assert step.late == [2] and step.ready == [4] and g.late_ranges() == []
    g.advance([6], snap(9), now=3.0)
    g.advance([6], snap(9), now=4.5)                        # 5 given up
    assert g.late_ranges() == [(5, 5)]
    g.advance([], snap(), now=70.0)
    assert g.late_ranges() == []                            # watched for late_watch_s only
