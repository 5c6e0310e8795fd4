"""The alert-provider fault tests' rig: one service with the dispatch webhook and one family channel.

The family channel is e-mail to a real SMTP server (aiosmtpd, :class:`Mailbox`) or SMS through
Aliyun's API to :class:`tests.aliyun_fake.FakeAliyun`. Timescales come from a policy file and the
config (delivery backoff 0.2 s, sender timeouts of a few seconds, rungs of 2 s where escalation is
the point), so each test runs in seconds. The fixtures ``mailbox`` and ``rig`` are in conftest.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.aliyun_fake import KEY_ID, SECRET
from tests.conftest import now_ms
from tests.faults.harness import (
    AckedPublisher,
    Delivery,
    Ledger,
    ServiceProcess,
    device_message,
    registry_yaml,
    wait_until,
)

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


def family_settings(*, smtp_port: int | None = None, sms_endpoint: str | None = None,
                    sms_timeout_s: float = 2.0) -> dict[str, object]:
    """Service settings for the family channel: e-mail via ``smtp_port`` or SMS via the Aliyun
    stand-in at ``sms_endpoint`` (exactly one)."""
    assert (smtp_port is None) != (sms_endpoint is None), "one family channel"
    if sms_endpoint is not None:
        return {"alerts.aliyun": {
            "access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": "颐养平安",
            "sms_templates": {"default": "SMS_ALARM"}, "sms_endpoint": sms_endpoint,
            "timeout_s": sms_timeout_s}}
    return {"alerts.smtp.host": "127.0.0.1", "alerts.smtp.port": smtp_port,
            "alerts.smtp.sender": "alerts@eldercare.example", "alerts.smtp.timeout_s": 5.0}


@dataclass
class Rig:
    """One service with the webhook and a family channel, and what it needs to be driven."""

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

    def tried(self, attempts: int, what: str, *, channel: str = "webhook") -> int:
        """Wait until each pressed device's alert had its first ``channel`` message tried
        ``attempts`` times; returns the attempts in all."""
        wait_until(lambda: len(self.opened(channel=channel)) == len(self.devices)
                   and all(d.attempts >= attempts for d in self.opened(channel=channel)),
                   timeout_s=60, service=self.service,
                   what=f"{attempts} {what} {channel} attempts per alert")
        return sum(d.attempts for d in self.opened(channel=channel))

    def opened(self, type: str = "sos", *, channel: str = "webhook") -> list[Delivery]:
        """The outbox rows of the alerts' first message on ``channel``."""
        return [d for d in self.ledger.deliveries(channel=channel)
                if d.event == "alert.opened" and d.alert_id in
                {a for ids in self.ledger.alerts(type).values() for a in ids}]


def registry_file(path: Path, region: str, devices: list[str], *, sms: bool) -> Path:
    """One wearer per device, whose one family contact gets SMS (``sms``) or e-mail."""
    path.write_text(registry_yaml(region, devices, contact_email=None if sms else FAMILY),
                    encoding="utf-8")
    return path


def family_mail_ok(box: Mailbox, rig: Rig, presses: int, *, before: float) -> None:
    """Every press's family e-mail arrived, the first before ``before`` (monotonic)."""
    wait_until(lambda: box.count() >= presses, timeout_s=30, service=rig.service,
               what=f"{presses} family e-mails")
    assert box.first_at() < before, "the e-mail channel waited for the failing webhook"
