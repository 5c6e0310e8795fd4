"""Alerts end to end over real Mosquitto, PostgreSQL and HTTP (issue #5, "Tests and figures").

A device publishes an SOS; the service stores it, opens an alert and POSTs it, signed, to a local
HTTP server standing in for the 12349 dispatch platform; the platform claims it through the
authenticated API; the audit trail holds every step. Then the hard cases: the platform down
(retries until it is back) and the service restarted in the middle of an escalation (the next
rung is climbed exactly once).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from msgspec import structs

from alerts.auth import new_token
from alerts.channels.webhook import verify_signature
from alerts.webhook_receiver import Receiver
from eldercare.app import Application
from eldercare.config import Config
from foundation.clock import ManualClock
from schemas import device_topic
from tests.conftest import Publisher, count, now_ms, wait_for
from tests.held_port import HeldPort

SECRET = "e2e-secret"
REGISTRY = """
wearers:
  - id: W-E2E
    name: 李桂兰
    region: "{region}"
    devices: [{{id: WT-E2E, kind: watch}}]
    contacts: [{{name: 李明, phone: "13800000001"}}]
"""


@pytest.fixture
def alert_config(make_config: Callable[..., Config], tmp_path: Path, region: str,
                 receiver: Receiver) -> Callable[..., tuple[Config, str]]:
    """A service config: the registry, a dispatch token, the webhook to ``receiver``."""
    (tmp_path / "registry.yaml").write_text(REGISTRY.format(region=region))
    token, digest = new_token()
    (tmp_path / "tokens.yaml").write_text(
        f"- {{name: dispatch-12349, token_sha256: {digest}, role: dispatch, regions: ['*']}}\n")

    def make(**overrides: object) -> tuple[Config, str]:
        base: dict[str, object] = {
            "registry": str(tmp_path / "registry.yaml"),
            "api.tokens_file": str(tmp_path / "tokens.yaml"),
            "alerts.webhook.url": receiver.url, "alerts.webhook.secret": SECRET,
            "alerts.webhook.timeout_s": 2.0}
        base.update(overrides)
        return make_config(**base), token
    return make


def received(receiver: Receiver, event: str | None = None) -> list[dict[str, Any]]:
    docs = [json.loads(r.body) for r in list(receiver.requests)]
    return [d for d in docs if event is None or d["event"] == event]


def sos(publisher: Publisher, region: str) -> None:
    publisher.publish(device_topic(region, "WT-E2E"), json.dumps(
        {"type": "sos", "ts": now_ms(), "lat": 37.51, "lon": 122.12}).encode())


def test_sos_reaches_dispatch_signed_is_claimed_through_the_api_and_fully_audited(
        alert_config: Callable[..., tuple[Config, str]], publisher: Publisher, region: str,
        receiver: Receiver, db_url: str) -> None:
    config, token = alert_config()
    with Application(config) as svc:
        sos(publisher, region)
        wait_for(lambda: received(receiver, "alert.opened"), what="the SOS at the webhook")
        (req,) = receiver.requests
        verify_signature(secret=SECRET.encode(), timestamp=req.headers["X-Eldercare-Timestamp"],
                         signature=req.headers["X-Eldercare-Signature"], body=req.body,
                         now_s=now_ms() / 1000)
        doc = json.loads(req.body)
        alert = doc["alert"]
        assert (alert["type"], alert["priority"], alert["wearer"]["name"]) == ("sos", 1, "李桂兰")
        assert doc["escalation"] == {"step": 0, "cycle": 0, "action": "notify"}
        assert req.headers["Idempotency-Key"].startswith(f"eldercare-{alert['id']}-")

        assert svc.http is not None
        api = f"http://127.0.0.1:{svc.http.port}/api/v1"
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{api}/alerts/{alert['id']}/acknowledge", headers=auth,
                       json={"note": "calling the elder back"})
        assert r.status_code == 200, r.text
        wait_for(lambda: received(receiver, "alert.acknowledged"),
                 what="the claim echoed to the dispatch platform")
        r = httpx.post(f"{api}/alerts/{alert['id']}/resolve", headers=auth,
                       json={"outcome": "helped_on_site", "note": "son arrived"})
        assert r.status_code == 200, r.text
        wait_for(lambda: received(receiver, "alert.resolved"), what="the resolution")
        detail = httpx.get(f"{api}/alerts/{alert['id']}", headers=auth).json()
    trail = [(a["actor"], a["action"]) for a in detail["audit"]]
    for step in [("system", "opened"), ("system", "routed"), ("system", "queued"),
                 ("system", "delivered"), ("dispatch-12349", "acknowledged"),
                 ("dispatch-12349", "resolved")]:
        assert step in trail, step
    assert trail.index(("system", "delivered")) < trail.index(("dispatch-12349", "acknowledged"))
    # The family SMS could not go out (no SMS provider configured here): audited, not lost.
    assert any(a["action"] == "undeliverable" and a["detail"]["channel"] == "sms"
               for a in detail["audit"])
    assert count(db_url, "SELECT count(*) FROM alert_deliveries WHERE channel = 'webhook'"
                 " AND status = 'sent'") == 3


def test_webhook_down_is_retried_until_it_comes_back(
        alert_config: Callable[..., tuple[Config, str]], publisher: Publisher, region: str,
        db_url: str, tmp_path: Path) -> None:
    policy = (Path(__file__).parent.parent / "alerts" / "policy.yaml").read_text()
    (tmp_path / "policy.yaml").write_text(policy.replace("backoff_s: 2 ", "backoff_s: 0.2 "))
    held = HeldPort()                # refused, and not given to the service's own API
    port = held.port
    config, _ = alert_config(**{"alerts.webhook.url": f"http://127.0.0.1:{port}/hook",
                                "alerts.policy_file": str(tmp_path / "policy.yaml")})
    attempts = ("SELECT coalesce(max(attempts), 0) FROM alert_deliveries"
                " WHERE channel = 'webhook'")
    with Application(config):
        sos(publisher, region)
        wait_for(lambda: count(db_url, attempts) >= 3, what="three failed attempts")
        assert count(db_url, "SELECT count(*) FROM alert_audit WHERE action ="
                     " 'delivery_failed'") >= 2
        held.release()
        platform = Receiver(port=port)                 # the platform comes back
        try:
            wait_for(lambda: received(platform, "alert.opened"), what="delivery after recovery")
        finally:
            platform.close()
    assert count(db_url, "SELECT count(*) FROM alert_deliveries WHERE channel = 'webhook'"
                 " AND status = 'sent'") == 1


def test_a_restart_mid_escalation_climbs_the_next_rung_exactly_once(
        alert_config: Callable[..., tuple[Config, str]], publisher: Publisher, region: str,
        receiver: Receiver, db_url: str) -> None:
    clock = ManualClock(now_ms())
    config, _ = alert_config()
    with Application(config, clock=clock):
        sos(publisher, region)
        wait_for(lambda: received(receiver, "alert.opened"), what="the first rung")
    assert received(receiver, "alert.escalated") == []
    clock.advance(61)                                  # the service was down past the timer
    # Two instances come back at once (a restart during a rolling deploy): both see the due
    # timer; the rung must still be climbed once.
    twin = structs.replace(config, mqtt=structs.replace(
        config.mqtt, client_id=config.mqtt.client_id + "-b"))
    with Application(config, clock=clock), Application(twin, clock=clock):
        wait_for(lambda: received(receiver, "alert.escalated"), what="the second rung")
        clock.advance(30)                              # not yet time for the third
        wait_for(lambda: count(db_url, "SELECT count(*) FROM alert_audit"
                               " WHERE action = 'escalated'") >= 1, what="audit")
    escalated = received(receiver, "alert.escalated")
    assert [d["escalation"]["action"] for d in escalated] == ["call_elder"]
    with psycopg.connect(db_url) as c:
        row = c.execute("SELECT step, cycle FROM alerts").fetchone()
    assert row == (2, 0)
