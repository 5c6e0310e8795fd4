"""Routing, escalation, the outbox and delivery workers against real PostgreSQL (issue #5).

Time is a :class:`ManualClock`: escalation timers and retry backoff are tested without sleeping.
Channels here are fakes implementing the Channel protocol (the real channels have their own
tests against real servers); what is under test is the database side: what is queued, when,
to whom, and that restarts and concurrent workers neither lose nor repeat a step.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.channels.base import DeliveryFailed, Message, Receipt
from alerts.delivery import DeliveryWorker
from alerts.escalator import Escalator
from alerts.outbox import Queued, Routing
from alerts.policy import Staff, load_policy
from alerts.store import AlertStore
from detectors.events import Event
from eldercare.schema import migrate
from foundation.clock import ManualClock
from ingest.registry_store import store_registry
from schemas.registry import parse_registry
from tests.conftest import count, wait_for

T0 = 1_767_240_000_000  # 2026-01-01 04:00 UTC = 12:00 in Shanghai (day)
REGISTRY = b"""
wearers:
  - id: W-1
    name: "\xe7\x8e\x8b\xe7\xa7\x80\xe8\x8b\xb1"
    region: "371002"
    devices: [{id: WT-1, kind: watch}]
    contacts:
      - {name: Son, phone: "138 0000 0001"}
      - {name: Daughter, phone: "+86 138 0000 0002", email: d@example.com,
         channels: [sms, email]}
"""
HOOK = "http://dispatch.example/hook"


class FakeChannel:
    """Records messages; fails as scripted (a list of DeliveryFailed or None per attempt)."""

    def __init__(self, name: str, script: list[DeliveryFailed | None] | None = None) -> None:
        self.name = name
        self.script = list(script or [])
        self.sent: list[Message] = []
        self.lock = threading.Lock()

    def send(self, message: Message) -> Receipt:
        with self.lock:
            outcome = self.script.pop(0) if self.script else None
            if outcome is not None:
                raise outcome
            self.sent.append(message)
        return Receipt(provider_id=f"p-{message.delivery_id}", detail={"ok": True})

    def close(self) -> None:
        pass


def sos(ts: int = T0) -> Event:
    return Event(device_id="WT-1", type="sos", ts=ts, severity="critical", region="371002",
                 wearer_id="W-1", lat=37.5, lon=122.1)


@pytest.fixture
def migrated(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
        with conn.transaction():
            store_registry(conn, parse_registry(REGISTRY, fmt="yaml"))
    return db_url


ROUTING = Routing(dispatch_url=HOOK, channels=frozenset({"webhook", "sms", "email", "mqtt"}),
                  community={"371002": [Staff(name="Grid", phone="13900000000")]})


@pytest.fixture
def store(migrated: str) -> Iterator[AlertStore]:
    with AlertStore(migrated, routing=ROUTING) as s:
        yield s


def deliveries(url: str, alert_id: int) -> list[dict[str, Any]]:
    with psycopg.connect(url) as c, c.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM alert_deliveries WHERE alert_id = %s ORDER BY id",
                           (alert_id,)).fetchall()


def actions(store: AlertStore, alert_id: int) -> list[str]:
    return [a["action"] for a in store.get(alert_id)["audit"]]


def test_an_sos_and_its_first_deliveries_commit_together(store: AlertStore,
                                                         migrated: str) -> None:
    woken: list[Queued] = []
    store.wake = woken.append
    (change,) = store.fold([sos()], now_ms=T0 + 40)
    rows = deliveries(migrated, change.alert_id)
    got = {(r["kind"], r["recipient"], r["channel"], r["address"]) for r in rows}
    assert got == {("notify", "dispatch", "webhook", HOOK),
                   ("notify", "family:1", "sms", "+8613800000001"),       # E.164
                   ("state", "bus", "mqtt", f"eldercare/v1/371002/alerts/{change.alert_id}")}
    assert all(r["body"]["event"] == "alert.opened" for r in rows)
    doc = rows[0]["body"]["alert"]
    assert doc["wearer"]["name"] == "王秀英" and doc["type"] == "sos" and doc["priority"] == 1
    assert "position=122.100000,37.500000" in doc["map_link"]
    alert = store.get(change.alert_id)
    assert alert["policy"]["ladder"] == "life_safety" and alert["step"] == 1
    assert alert["next_action_at"].timestamp() * 1000 == T0 + 40 + 60_000
    # After the commit: the workers that have work (nothing is handed off in this routing).
    assert [(w.channels, w.messages) for w in woken] == [({"webhook", "sms", "mqtt"}, [])]
    assert actions(store, change.alert_id)[:2] == ["opened", "routed"]


def test_the_ladder_climbs_a_claim_pauses_it_and_an_expired_claim_resumes_it(
        store: AlertStore, migrated: str) -> None:
    (c,) = store.fold([sos()], now_ms=T0)
    assert store.escalate_due(now_ms=T0 + 59_000) == 0
    assert store.escalate_due(now_ms=T0 + 60_000) == 1            # dispatch: call the elder back
    (last,) = [r for r in deliveries(migrated, c.alert_id) if r["kind"] == "notify"][-1:]
    assert (last["recipient"], last["body"]["escalation"]["action"]) == ("dispatch", "call_elder")
    store.acknowledge(c.alert_id, by="officer-a", now_ms=T0 + 90_000)
    assert store.escalate_due(now_ms=T0 + 689_000) == 0           # the claim holds 600 s
    assert store.escalate_due(now_ms=T0 + 690_000) == 1           # then escalation resumes
    alert = store.get(c.alert_id)
    assert alert["status"] == "open" and alert["acknowledged_by"] is None
    new = [r for r in deliveries(migrated, c.alert_id)
           if r["created_at"].timestamp() * 1000 == T0 + 690_000 and r["kind"] == "notify"]
    assert {(r["recipient"], r["channel"]) for r in new} == {
        ("dispatch", "webhook"), ("family:1", "sms"), ("family:2", "sms"), ("family:2", "email")}
    trail = actions(store, c.alert_id)
    assert trail.index("acknowledged") < trail.index("claim_expired") < len(trail) - 1


def test_resolution_ends_escalation_and_cancels_what_is_not_sent(
        store: AlertStore, migrated: str) -> None:
    (c,) = store.fold([sos()], now_ms=T0)
    store.resolve(c.alert_id, by="officer-a", outcome="false_alarm", now_ms=T0 + 5_000)
    rows = deliveries(migrated, c.alert_id)
    assert {r["status"] for r in rows if r["kind"] == "notify"} == {"cancelled"}
    states = [(r["channel"], r["body"]["event"]) for r in rows if r["kind"] == "state"]
    assert ("webhook", "alert.resolved") in states and ("mqtt", "alert.resolved") in states
    assert store.escalate_due(now_ms=T0 + 3_600_000) == 0
    assert store.get(c.alert_id)["next_action_at"] is None


def test_a_restart_mid_escalation_neither_loses_nor_repeats_a_step(migrated: str) -> None:
    with AlertStore(migrated, routing=ROUTING) as first:
        (c,) = first.fold([sos()], now_ms=T0)
    # "Restart": new stores (two instances racing), same database, timer already due.
    stores = [AlertStore(migrated, routing=ROUTING) for _ in range(2)]
    barrier = threading.Barrier(2)
    climbed: list[int] = []

    def run(s: AlertStore) -> None:
        barrier.wait()
        climbed.append(s.escalate_due(now_ms=T0 + 61_000))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert sorted(climbed) == [0, 1]
    assert count(migrated, "SELECT count(*) FROM alert_deliveries WHERE alert_id = %s AND"
                 " body->'escalation'->>'action' = 'call_elder'", c.alert_id) == 1
    assert count(migrated, "SELECT step FROM alerts WHERE id = %s", c.alert_id) == 2


def test_failed_deliveries_are_retried_with_backoff_then_delivered(
        store: AlertStore, migrated: str) -> None:
    clock = ManualClock(T0)
    webhook = FakeChannel("webhook", [DeliveryFailed("HTTP 503", retryable=True),
                                      DeliveryFailed("timed out", retryable=True)])
    worker = DeliveryWorker(channel=webhook, store=store, clock=clock, rng=random.Random(1))
    (c,) = store.fold([sos()], now_ms=T0)
    assert worker.run_once(wait=True) == 1 and webhook.sent == []
    assert worker.run_once(wait=True) == 0                        # backoff: not due yet
    clock.advance(2.0)                                            # 1-2 s after attempt 1
    assert worker.run_once(wait=True) == 1 and webhook.sent == []
    clock.advance(4.0)                                            # 2-4 s after attempt 2
    assert worker.run_once(wait=True) == 1
    (sent,) = webhook.sent
    assert sent.attempt == 3 and sent.body["alert"]["id"] == c.alert_id
    row = next(r for r in deliveries(migrated, c.alert_id) if r["channel"] == "webhook")
    assert (row["status"], row["attempts"], row["receipt"]["provider_id"]) == (
        "sent", 3, f"p-{sent.delivery_id}")
    trail = actions(store, c.alert_id)
    assert trail.count("delivery_failed") == 2 and trail[-1] == "delivered"
    worker.stop()


def test_a_delivery_given_up_escalates_at_once(store: AlertStore, migrated: str) -> None:
    clock = ManualClock(T0)
    sms = FakeChannel("sms", [DeliveryFailed("invalid number", retryable=False)])
    escalator = Escalator(store=store, clock=clock)
    worker = DeliveryWorker(channel=sms, store=store, clock=clock,
                            on_given_up=escalator.wakeup)
    (c,) = store.fold([sos()], now_ms=T0)
    clock.advance(1.0)
    worker.run_once(wait=True)
    assert escalator.wakeup.is_set()
    assert "delivery_gave_up" in actions(store, c.alert_id)
    assert escalator.run_due() == 1                               # not 60 s later: now
    assert store.get(c.alert_id)["step"] == 2
    worker.stop()


def test_quiet_rules_suppress_repeats_and_group_low_priority_messages(
        migrated: str, tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "alerts" / "policy.yaml").read_text()
    text = text.replace("  offline: {ladder: offline}", "  offline: {ladder: battery}")
    text = text.replace("dedup_window_s: 60", "dedup_window_s: 300")
    (tmp_path / "p.yaml").write_text(text)
    with AlertStore(migrated, routing=ROUTING, policy=load_policy(tmp_path / "p.yaml")) as store:
        events = [Event(device_id="WT-1", type=t, ts=T0, severity="low", region="371002",
                        wearer_id="W-1") for t in ("low_battery", "offline")]
        changes = store.fold(events, now_ms=T0)
        rows = [r for c in changes for r in deliveries(migrated, c.alert_id)
                if r["kind"] == "notify"]
        assert len(rows) == 2 and len({r["group_key"] for r in rows}) == 1
        clock = ManualClock(T0)
        sms = FakeChannel("sms")
        worker = DeliveryWorker(channel=sms, store=store, clock=clock)
        assert worker.run_once(wait=True) == 0                    # held for the group window
        clock.advance(300)
        assert worker.run_once(wait=True) == 1
        (msg,) = sms.sent                                         # one message, both alerts
        assert msg.body["event"] == "alert.grouped"
        assert sorted(a["type"] for a in msg.body["alerts"]) == ["low_battery", "offline"]
        worker.stop()
        # Dedup: the same message to the same address inside the window is suppressed
        # (this policy's life-safety window is 300 s instead of 60 s).
        (c,) = store.fold([sos()], now_ms=T0)
        store.escalate_due(now_ms=T0 + 60_000)                    # dispatch: call_elder
        store.escalate_due(now_ms=T0 + 180_000)                   # dispatch + family:all
        rows = deliveries(migrated, c.alert_id)
        assert [r["status"] for r in rows if r["recipient"] == "family:1"] == [
            "pending", "suppressed"]                              # told 180 s ago
        assert [r["status"] for r in rows if r["recipient"] == "family:2"] == [
            "pending", "pending"]                                 # sms and email, first time
        assert [r["status"] for r in rows if r["recipient"] == "dispatch"
                and r["kind"] == "notify"] == ["pending", "pending", "suppressed"]
        assert "suppressed" in actions(store, c.alert_id)


def test_targets_without_a_channel_or_address_are_audited_not_dropped(migrated: str) -> None:
    with AlertStore(migrated, routing=Routing(channels=frozenset({"sms"}))) as store:
        (c,) = store.fold([sos()], now_ms=T0)
        audit = store.get(c.alert_id)["audit"]
    undeliverable = [a["detail"] for a in audit if a["action"] == "undeliverable"]
    assert undeliverable == [{"recipient": "dispatch", "reason": "no address for this target"}]
    assert count(migrated, "SELECT count(*) FROM alert_deliveries WHERE channel = 'sms'") == 1


def test_messages_handed_to_a_local_worker_are_sent_without_a_claim_and_exactly_once(
        migrated: str) -> None:
    routing = Routing(dispatch_url=HOOK, channels=frozenset({"webhook", "sms"}),
                      handoff=frozenset({"webhook"}), lease_s=30)
    clock = ManualClock(T0)
    webhook = FakeChannel("webhook")
    with AlertStore(migrated, routing=routing) as store:
        worker = DeliveryWorker(channel=webhook, store=store, clock=clock, lease_s=30)
        handed: list[Queued] = []
        store.wake = handed.append
        (c,) = store.fold([sos()], now_ms=T0)
        ((queued,),) = [w.messages for w in handed]
        assert (queued.channel, queued.attempt, handed[0].channels) == ("webhook", 1, {"sms"})
        row = next(r for r in deliveries(migrated, c.alert_id) if r["channel"] == "webhook")
        assert (row["status"], row["attempts"]) == ("sending", 1)   # leased in the same commit
        assert worker.run_once(wait=True) == 0                         # nobody else claims it
        worker.submit([queued])
        wait_for(lambda: count(migrated, "SELECT count(*) FROM alert_deliveries"
                               " WHERE status = 'sent'") == 1, what="the handed-off send")
        assert len(webhook.sent) == 1 and webhook.sent[0].delivery_id == queued.delivery_id
        # A handed-off message whose process died before sending: the lease runs out, and any
        # worker sends it (attempt 2, same idempotency key).
        (c2,) = store.fold([Event(device_id="WT-9", type="sos", ts=T0, severity="critical",
                                  region="371002")], now_ms=T0)
        clock.advance(31)
        assert worker.run_once(wait=True) == 1
        assert webhook.sent[-1].attempt == 2 and webhook.sent[-1].alert_id == c2.alert_id
        assert webhook.sent[-1].idempotency_key == handed[-1].messages[0].idempotency_key
        worker.stop()
