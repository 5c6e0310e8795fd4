"""Commands to an alert's device (issue #10): "locate now" and "call the watch" from the alerts
API, through the broker and the device gateway to a watch on a real TCP connection, every step
in the alert's trail.

The service is the application as ``eldercare run`` builds it, the gateway runs as
``eldercare gateway watch`` runs it (its own loop), the watch is a plain socket speaking the real
protocol, and Mosquitto and PostgreSQL are real.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.auth import new_token
from alerts.device_commands import command_states
from eldercare.app import Application
from eldercare.config import Config
from tests.conftest import count, wait_for
from tests.services import Mosquitto
from tests.test_gateway_e2e import WATCH, Gateway, frame, gateway_config, port_of, report, watch

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def row(action: str, seconds: float, actor: str = "gateway", **detail: Any) -> dict[str, Any]:
    return {"at": T0 + timedelta(seconds=seconds), "actor": actor, "action": action,
            "detail": detail}


def states(*rows: dict[str, Any], now_s: float = 10, timeout_s: float = 660) -> list[
        tuple[str, str, str | None]]:
    now_ms = int((T0 + timedelta(seconds=now_s)).timestamp() * 1000)
    return [(s["id"], s["status"], s["reason"])
            for s in command_states(rows, now_ms=now_ms, result_timeout_s=timeout_s)]


def test_the_trail_folds_into_each_commands_latest_state() -> None:
    trail = [
        row("command_requested", 0, actor="王芳", id="a", command="locate", args={}),
        row("note", 1, actor="王芳", note="calling the family"),
        row("command_requested", 2, actor="王芳", id="b", command="call_back",
            args={"number": "12349"}),
        row("command_sent", 3, id="a", command="locate"),
        row("command_acknowledged", 4, id="a", command="locate"),
        row("command_failed", 5, id="b", command="call_back", reason="unsupported: no"),
        row("command_sent", 6, id="ghost", command="locate"),  # not ours: ignored
    ]
    assert states(*trail) == [("a", "acknowledged", None), ("b", "failed", "unsupported: no")]


def test_a_late_sent_never_hides_the_answer_that_overtook_it() -> None:
    trail = [row("command_requested", 0, actor="x", id="a", command="locate", args={}),
             row("command_acknowledged", 2, id="a", command="locate"),
             row("command_sent", 3, id="a", command="locate")]
    assert states(*trail) == [("a", "acknowledged", None)]


def test_no_result_in_time_means_no_gateway_holds_the_device() -> None:
    trail = [row("command_requested", 0, actor="x", id="a", command="locate", args={})]
    assert states(*trail, now_s=600)[0][1] == "requested"
    ((_, status, reason),) = states(*trail, now_s=700)
    assert status == "no_answer" and reason is not None and "no gateway" in reason
    # Once sent, only the gateway's own deadline ends it (it reports failed itself).
    sent = [*trail, row("command_sent", 1, id="a", command="locate")]
    assert states(*sent, now_s=7000)[0][1] == "sent"


REGISTRY = """
wearers:
  - id: W-CMD
    name: 张秀英
    region: "{region}"
    devices: [{{id: "{watch}", kind: watch}}]
"""


@pytest.fixture
def service_config(make_config: Callable[..., Config], tmp_path: Path,
                   region: str) -> Callable[..., tuple[Config, str]]:
    (tmp_path / "registry.yaml").write_text(REGISTRY.format(region=region, watch=WATCH))
    token, digest = new_token()
    (tmp_path / "tokens.yaml").write_text(
        f"- {{name: officer-wang, token_sha256: {digest}, role: officer, regions: ['*']}}\n")

    def make(**overrides: object) -> tuple[Config, str]:
        base: dict[str, object] = {"registry": str(tmp_path / "registry.yaml"),
                                   "api.tokens_file": str(tmp_path / "tokens.yaml")}
        base.update(overrides)
        return make_config(**base), token
    return make


def _alert_of(db_url: str) -> int:
    wait_for(lambda: count(db_url, "SELECT count(*) FROM alerts WHERE device_id = %s", WATCH),
             timeout_s=15, what="the SOS's alert")
    return count(db_url, "SELECT min(id) FROM alerts WHERE device_id = %s", WATCH)


def test_locate_now_and_call_the_watch_from_the_api_reach_the_watch_and_come_back(
        service_config: Callable[..., tuple[Config, str]], broker: Mosquitto, region: str,
        db_url: str) -> None:
    config, token = service_config(**{"alerts.commands.callback_number": "12349"})
    gw = gateway_config(broker.url, region)
    auth = {"Authorization": f"Bearer {token}"}
    with Application(config) as svc, Gateway(gw) as g, watch(port_of(gw)) as w:
        assert svc.http is not None and g.linked.wait(20)
        api = f"http://127.0.0.1:{svc.http.port}/api/v1"
        w.send(frame("LK,0,0,80"))
        assert w.reply() == frame("LK")
        w.send(report("AL", 1 << 16))  # SOS
        assert w.reply() == frame("AL")
        alert_id = _alert_of(db_url)

        r = httpx.post(f"{api}/alerts/{alert_id}/commands", headers=auth,
                       json={"command": "locate"})
        assert r.status_code == 202, r.text
        (locate,) = r.json()["commands"]
        assert (locate["command"], locate["requested_by"]) == ("locate", "officer-wang")
        assert w.reply() == frame("CR")             # the watch is asked for a position now
        w.send(frame("CR"))                         # ... and says it took the command

        def status(cid: str) -> str:
            doc = httpx.get(f"{api}/alerts/{alert_id}/commands", headers=auth).json()
            return next(c["status"] for c in doc["commands"] if c["id"] == cid)

        wait_for(lambda: status(locate["id"]) == "acknowledged", timeout_s=10,
                 what="the watch's answer recorded")

        # "Call the watch": it dials the dispatch centre's configured number.
        r = httpx.post(f"{api}/alerts/{alert_id}/commands", headers=auth,
                       json={"command": "call_back"})
        assert r.status_code == 202, r.text
        assert r.json()["callback_number"] == "12349"
        call = r.json()["commands"][-1]
        assert w.reply() == frame("CALL,12349")
        w.send(frame("CALL"))
        wait_for(lambda: status(call["id"]) == "acknowledged", timeout_s=10,
                 what="the call-back acknowledged")
        detail = httpx.get(f"{api}/alerts/{alert_id}", headers=auth).json()
    trail = [(a["actor"], a["action"], a["detail"].get("command")) for a in detail["audit"]
             if a["action"].startswith("command_")]
    assert trail == [("officer-wang", "command_requested", "locate"),
                     ("gateway", "command_sent", "locate"),
                     ("gateway", "command_acknowledged", "locate"),
                     ("officer-wang", "command_requested", "call_back"),
                     ("gateway", "command_sent", "call_back"),
                     ("gateway", "command_acknowledged", "call_back")]


def test_call_back_without_a_number_is_refused_and_a_broker_outage_is_a_503_on_the_trail(
        service_config: Callable[..., tuple[Config, str]], private_broker: Mosquitto,
        region: str, db_url: str, make_config: Callable[..., Config]) -> None:
    config, token = service_config(**{"mqtt.url": private_broker.url,
                                      "alerts.commands.publish_timeout_s": 1.0})
    gw = gateway_config(private_broker.url, region)
    auth = {"Authorization": f"Bearer {token}"}
    with Application(config) as svc, Gateway(gw), watch(port_of(gw)) as w:
        assert svc.http is not None
        api = f"http://127.0.0.1:{svc.http.port}/api/v1"
        w.send(report("AL", 1 << 16))
        assert w.reply() == frame("AL")
        alert_id = _alert_of(db_url)
        r = httpx.post(f"{api}/alerts/{alert_id}/commands", headers=auth,
                       json={"command": "call_back"})
        assert r.status_code == 409 and "callback_number" in r.json()["detail"]
        r = httpx.post(f"{api}/alerts/{alert_id}/commands", headers=auth,
                       json={"command": "monitor", "number": "12349"})
        assert r.status_code == 422  # listen-in is not offered on an alert
        private_broker.stop()
        try:
            r = httpx.post(f"{api}/alerts/{alert_id}/commands", headers=auth,
                           json={"command": "locate"}, timeout=15)
        finally:
            private_broker.start()
        assert r.status_code == 503 and "not sent" in r.json()["detail"]
        doc = httpx.get(f"{api}/alerts/{alert_id}/commands", headers=auth).json()
        assert w.reply(1.0) is None  # nothing reached the watch
    ((cmd),) = doc["commands"]
    assert cmd["status"] == "failed" and cmd["reason"].startswith("not sent")
