"""Faults: the dispatch webhook failing or slow, then recovering (issue #7).

The service runs as in production with two alert channels: the dispatch webhook (a
:class:`DispatchPlatform` told to fail) and e-mail to each wearer's family (a real SMTP server,
aiosmtpd). Timescales come from a policy file and the config (delivery backoff 0.2 s, webhook
timeout 1-4 s, rungs of 2 s where escalation is the point), so the module runs in well under a
minute. Each fault is one test and one row of the report:

- 5xx for a while: each alert is retried with the same Idempotency-Key and delivered once the
  platform answers 200 again;
- timeouts (the platform reads the request and never answers): retried after the sender's
  timeout; the platform saw the unanswered attempt too, so it holds that key twice (received,
  answered once): the receiver deduplicates;
- connection refused (the platform down): retried until it listens again;
- escalation: an unclaimed alert climbs the next rung after the rung's ``wait_s``, not before;
  a delivery given up on (``max_attempts``) climbs it at once;
- in every case the family e-mail goes out while the webhook fails: a failing or hanging channel
  never blocks another (docs/alerts.md, "Delivery").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from eldercare.embedded import free_port
from tests.conftest import now_ms
from tests.faults.conftest import FaultReport
from tests.faults.dispatch import DispatchPlatform
from tests.faults.harness import (
    AckedPublisher,
    FaultRow,
    Ledger,
    ServiceProcess,
    device_message,
    registry_yaml,
    wait_until,
)
from tests.services import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
FAMILY = "family@eldercare.example"


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping each message's arrival time and subject."""

    arrived: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.arrived.append((time.monotonic(), content.decode("utf-8", "replace")))
        return "250 2.0.0 Ok: queued"

    def count(self) -> int:
        with self.lock:
            return len(self.arrived)

    def first_at(self) -> float:
        with self.lock:
            return min(t for t, _ in self.arrived)


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def policy_file(path: Path, *, sos_wait_s: int = 600, fall_wait_s: int = 600,
                max_attempts: int = 8) -> Path:
    """The built-in policy with fast retries, and SOS and falls on ladders of their own whose
    first rung waits the given time before the next (call the elder back)."""
    policy: dict[str, Any] = msgspec.yaml.decode((ROOT / "alerts" / "policy.yaml").read_bytes())
    policy["delivery"] = {"max_attempts": max_attempts, "backoff_s": 0.2, "backoff_max_s": 0.5}
    for name, wait in (("sos_ladder", sos_wait_s), ("fall_ladder", fall_wait_s)):
        policy["ladders"][name] = {
            "claim_timeout_s": 600, "repeat": 3, "dedup_window_s": 0,
            "steps": [{"notify": ["dispatch", "family:1"], "wait_s": wait},
                      {"notify": ["dispatch"], "action": "call_elder", "wait_s": 600}]}
    policy["routes"]["sos"] = {"ladder": "sos_ladder"}
    policy["routes"]["fall"] = {"ladder": "fall_ladder"}
    path.write_bytes(msgspec.yaml.encode(policy))
    return path


@dataclass
class Rig:
    """One service with the webhook and e-mail channels, and what it needs to be driven."""

    service: ServiceProcess
    publisher: AckedPublisher
    ledger: Ledger
    region: str
    devices: list[str]

    def press(self, device: str, type: str = "sos") -> float:
        """An alarm from ``device`` now; returns when the broker acknowledged it."""
        reading: dict[str, Any] = {"type": type, "ts": now_ms(), "seq": 1}
        if type == "fall":
            reading["confidence"] = 0.9
        self.publisher.publish(device_message(self.region, device, [reading]))
        self.publisher.wait_acked(timeout_s=30)
        return time.monotonic()

    def opened(self, type: str = "sos") -> list[Any]:
        """The outbox rows of the alerts' first webhook message."""
        return [d for d in self.ledger.deliveries(channel="webhook")
                if d.event == "alert.opened" and d.alert_id in
                {a for ids in self.ledger.alerts(type).values() for a in ids}]


@pytest.fixture
def rig(fault_broker: Mosquitto, db_url: str, fault_region: str, dispatch: DispatchPlatform,
        mailbox: tuple[Mailbox, int], service_factory: Callable[..., ServiceProcess],
        tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Start the service with ``policy`` options and ``settings``; yields a :class:`Rig`."""
    publishers: list[AckedPublisher] = []

    def make(*, devices: int = 3, settings: dict[str, object] | None = None,
             **policy: int) -> Rig:
        ids = [f"PW-{i:03d}" for i in range(devices)]
        registry = tmp_path / "registry.yaml"
        registry.write_text(registry_yaml(fault_region, ids, contact_email=FAMILY),
                            encoding="utf-8")
        service = service_factory(
            mqtt_url=fault_broker.url, database_url=db_url, registry=registry,
            webhook_url=dispatch.url,
            settings={"alerts.policy_file": str(policy_file(tmp_path / "policy.yaml", **policy)),
                      "alerts.poll_s": 0.2, "alerts.mqtt_publish": False,
                      "alerts.smtp.host": "127.0.0.1", "alerts.smtp.port": mailbox[1],
                      "alerts.smtp.sender": "alerts@eldercare.example",
                      "alerts.smtp.timeout_s": 5.0, **(settings or {})})
        service.start()
        publishers.append(AckedPublisher(fault_broker.url))
        return Rig(service, publishers[-1], Ledger(db_url, region=fault_region), fault_region,
                   ids)

    yield make
    for p in publishers:
        p.close()


def family_mail_ok(box: Mailbox, rig: Rig, presses: int, *, before: float) -> None:
    """Every press's family e-mail arrived, the first before ``before`` (monotonic)."""
    wait_until(lambda: box.count() >= presses, timeout_s=30, service=rig.service,
               what=f"{presses} family e-mails")
    assert box.first_at() < before, "the e-mail channel waited for the failing webhook"


def test_webhook_5xx_is_retried_with_the_same_key_until_the_platform_recovers(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, mailbox: tuple[Mailbox, int],
        fault_report: FaultReport) -> None:
    r = rig()
    dispatch.fail(status=503)
    failing_since = time.monotonic()
    for dev in r.devices:
        r.press(dev)
    wait_until(lambda: len(r.opened()) == 3 and all(d.attempts >= 3 for d in r.opened()),
               timeout_s=60, service=r.service, what="three failed attempts per alert")
    family_mail_ok(mailbox[0], r, 3, before=time.monotonic())
    dispatch.recover()
    recovered = time.monotonic()
    wait_until(lambda: len(dispatch.accepted("alert.opened")) >= 3, timeout_s=30,
               service=r.service, what="the alerts delivered after recovery")
    delivered_after_s = max(p.at for p in dispatch.accepted("alert.opened")) - recovered
    alarms = r.ledger.alarms(r.devices, dispatch.received())
    failed = [p for p in dispatch.received() if p.outcome == "503"]
    fault_report.record(FaultRow(
        fault="dispatch webhook answers 503, then recovers", injections=len(failed),
        sent=alarms.presses, stored=alarms.events, alerted=alarms.delivered, lost=alarms.lost,
        note=f"{len(failed)} POSTs refused over {recovered - failing_since:.1f} s; all"
             f" delivered {delivered_after_s:.1f} s after recovery, once per key; family"
             " e-mails sent meanwhile"))
    assert alarms.delivered == alarms.presses == 3 and alarms.lost == 0, alarms
    assert alarms.duplicate_deliveries == 0 and alarms.reopened == 0, alarms
    # Retries carry the key of the first attempt: the platform can deduplicate them.
    accepted_keys = {p.idempotency_key for p in dispatch.accepted("alert.opened")}
    assert {p.idempotency_key for p in failed} <= accepted_keys
    for d in r.opened():
        assert d.status == "sent" and d.attempts >= 4
        assert sum(a == "delivery_failed" for a, _ in r.ledger.audit(d.alert_id)) >= 3
    assert dispatch.bad_signatures() == 0


def test_webhook_timeouts_are_retried_and_do_not_hold_back_email(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, mailbox: tuple[Mailbox, int],
        fault_report: FaultReport) -> None:
    timeout_s = 4.0
    r = rig(settings={"alerts.webhook.timeout_s": timeout_s})
    dispatch.hang(times=3)  # each alert's first POST is read and never answered
    for dev in r.devices:
        r.press(dev)
    wait_until(lambda: len(dispatch.received()) >= 1, timeout_s=30, service=r.service,
               what="the first webhook POST")
    first_post = min(p.at for p in dispatch.received())
    family_mail_ok(mailbox[0], r, 3, before=first_post + timeout_s)
    wait_until(lambda: len(dispatch.accepted("alert.opened")) >= 3, timeout_s=60,
               service=r.service, what="the alerts delivered after the timeouts")
    alarms = r.ledger.alarms(r.devices, dispatch.received())
    hung = [p for p in dispatch.received() if p.outcome == "hung"]
    twice = {p.idempotency_key for p in hung} & {p.idempotency_key for p in dispatch.accepted()}
    delays = [min(p.at for p in dispatch.accepted() if p.idempotency_key == k)
              - min(p.at for p in hung if p.idempotency_key == k) for k in twice]
    fault_report.record(FaultRow(
        fault=f"dispatch webhook accepts and never answers ({timeout_s:g} s sender timeout)",
        injections=len(hung), sent=alarms.presses, stored=alarms.events,
        alerted=alarms.delivered, lost=alarms.lost,
        note=f"{len(twice)} keys received twice (unanswered, then answered): the platform"
             f" deduplicates; retry {min(delays):.1f}-{max(delays):.1f} s after the hung"
             f" POST; family e-mails {mailbox[0].first_at() - first_post:+.2f} s from it"))
    assert alarms.delivered == alarms.presses == 3 and alarms.lost == 0, alarms
    assert len(hung) == 3 and len(twice) == 3, "each hung POST was retried under its key"
    assert alarms.duplicate_deliveries == 0 and alarms.reopened == 0, alarms
    assert min(delays) >= timeout_s - 0.5, "retried before the sender's timeout ran out"


def test_webhook_connection_refused_is_retried_until_it_listens_again(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, mailbox: tuple[Mailbox, int],
        fault_report: FaultReport) -> None:
    dispatch.go_down()
    r = rig()
    down_since = time.monotonic()
    for dev in r.devices:
        r.press(dev)
    wait_until(lambda: len(r.opened()) == 3 and all(d.attempts >= 3 for d in r.opened()),
               timeout_s=60, service=r.service, what="three refused attempts per alert")
    family_mail_ok(mailbox[0], r, 3, before=time.monotonic())
    attempts = sum(d.attempts for d in r.opened())
    dispatch.come_back()
    back = time.monotonic()
    wait_until(lambda: len(dispatch.accepted("alert.opened")) >= 3, timeout_s=30,
               service=r.service, what="the alerts delivered once the platform listens")
    after_s = max(p.at for p in dispatch.accepted("alert.opened")) - back
    alarms = r.ledger.alarms(r.devices, dispatch.received())
    fault_report.record(FaultRow(
        fault="dispatch webhook down (connection refused), then back", injections=attempts,
        sent=alarms.presses, stored=alarms.events, alerted=alarms.delivered, lost=alarms.lost,
        note=f"{attempts} refused connection attempts over {back - down_since:.1f} s;"
             f" delivered {after_s:.1f} s after it listened again; family e-mails meanwhile"))
    assert alarms.delivered == alarms.presses == 3 and alarms.lost == 0, alarms
    assert alarms.duplicate_deliveries == 0 and alarms.reopened == 0, alarms
    assert all(p.accepted for p in dispatch.received()), "only the recovered platform answered"


def test_escalation_after_wait_s_and_at_once_after_a_delivery_is_given_up(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, fault_report: FaultReport) -> None:
    wait_s = 2
    r = rig(devices=2, sos_wait_s=wait_s, fall_wait_s=600, max_attempts=3)
    sos_dev, fall_dev = r.devices

    # 1. Unclaimed: the next rung (call the elder back) after the rung's wait_s, not before.
    r.press(sos_dev)
    wait_until(lambda: dispatch.accepted("alert.escalated"), timeout_s=30 + wait_s,
               service=r.service, what="the SOS's second rung")
    opened_at = dispatch.accepted("alert.opened")[0].at
    (escalated,) = dispatch.accepted("alert.escalated")
    timer_s = escalated.at - opened_at
    assert escalated.document["escalation"]["action"] == "call_elder"
    assert timer_s >= wait_s - 0.3, f"escalated {timer_s:.2f} s after opening, wait_s {wait_s}"

    # 2. Given up: the fall's first webhook message fails max_attempts times; the next rung
    # is climbed at once, long before its 600 s timer.
    dispatch.fail(status=503)
    fall_pressed = r.press(fall_dev, "fall")
    wait_until(lambda: any(d.action == "call_elder" for d in r.ledger.deliveries(
        channel="webhook") if d.alert_id in r.ledger.alerts("fall").get(fall_dev, [])),
        timeout_s=60, service=r.service, what="the fall's second rung after the give-up")
    (fall_alert,) = r.ledger.alerts("fall")[fall_dev]
    trail = [a for a, _ in r.ledger.audit(fall_alert)]
    gave_up_s = time.monotonic() - fall_pressed
    dispatch.recover()
    wait_until(lambda: any(p.alert_id == fall_alert for p in dispatch.accepted()),
               timeout_s=30, service=r.service, what="the fall's rung delivered after recovery")
    refused = sum(p.outcome == "503" for p in dispatch.received())
    delivered = {p.alert_id for p in dispatch.accepted()}
    alerted = sum(a in delivered for ids in (r.ledger.alerts("sos"), r.ledger.alerts("fall"))
                  for a in [x for v in ids.values() for x in v])
    fault_report.record(FaultRow(
        fault="escalation: rung timer, and a delivery given up on", injections=2, sent=2,
        stored=len(r.ledger.events("sos")) + len(r.ledger.events("fall")), alerted=alerted,
        lost=2 - alerted,
        note=f"unclaimed SOS climbed to call_elder {timer_s:.1f} s after opening (wait_s"
             f" {wait_s}); fall's opening message given up after 3 attempts ({refused} 503s),"
             f" next rung queued {gave_up_s:.1f} s after the press (its timer: 600 s) and"
             " delivered after recovery"))
    assert trail.index("delivery_gave_up") < trail.index("escalated"), trail
    assert gave_up_s < 60, "the given-up delivery must not wait for the 600 s timer"
    assert alerted == 2
