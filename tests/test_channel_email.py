"""The e-mail channel against a real SMTP server (aiosmtpd) on a free local port: what arrives,
and how 4xx/5xx replies, refused connections and missing extensions map to retryable or not."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from alerts.channels.base import Channel, DeliveryFailed, Message
from alerts.channels.email import EmailChannel, SmtpConfig
from foundation.ports import free_port

LINK = "https://uri.amap.com/marker?position=122.1,37.5"
SENDER = "alerts@eldercare.example"
FAMILY = "daughter@family.example"


class Mailbox:
    """An aiosmtpd handler that keeps what it receives, or refuses at a chosen step."""

    def __init__(self, *, refuse_rcpt: str | None = None, refuse_data: str | None = None) -> None:
        self.received: list[Envelope] = []
        self.refuse_rcpt = refuse_rcpt
        self.refuse_data = refuse_data

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_data:
            return self.refuse_data
        self.received.append(envelope)
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}X7"

    def message(self, i: int = 0) -> EmailMessage:
        content = self.received[i].original_content
        assert content is not None
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    """Start aiosmtpd servers on free ports; each call: (mailbox, port)."""
    controllers: list[Controller] = []

    def start(mailbox: Mailbox, **smtp_options: Any) -> tuple[Mailbox, int]:
        port = free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return mailbox, port

    yield start
    for controller in controllers:
        controller.stop()


def channel(port: int, **overrides: Any) -> EmailChannel:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": SENDER,
                              "timeout_s": 5.0}
    values.update(overrides)
    return EmailChannel(SmtpConfig(**values))


def message(*, key: str = "alert-7:email:family:1", language: str = "zh") -> Message:
    body = {"event": "alert.opened", "alert": {
        "id": 7, "type": "fall", "priority": 1, "severity": "critical", "status": "open",
        "region": "371002", "wearer": {"id": "W-1", "name": "张秀英"}, "device_id": "WT-1",
        "first_ts": "2026-03-02T01:58:00Z", "last_ts": "2026-03-02T01:58:00Z",
        "position": {"lat": 37.5, "lon": 122.1}, "map_link": LINK, "event_count": 1}}
    return Message(delivery_id=42, alert_id=7, channel="email", recipient="family:1",
                   address=FAMILY, language=language, idempotency_key=key, attempt=1,
                   body=body)


def test_delivers_a_utf8_message(smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server(Mailbox())
    sender: Channel = channel(port)
    receipt = sender.send(message())
    (envelope,) = mailbox.received
    assert envelope.mail_from == SENDER and envelope.rcpt_tos == [FAMILY]
    mail = mailbox.message()
    assert mail["Subject"] == "[紧急] 跌倒 - 张秀英"  # decoded from RFC 2047
    assert mail["To"] == FAMILY and mail["From"] == SENDER
    body = mail.get_content()
    assert "张秀英" in body and LINK in body and "03-02 09:58" in body and "120" in body
    assert receipt.provider_id == "Q1X7" and receipt.detail["code"] == 250
    sender.close()


def test_message_id_is_stable_across_attempts(
        smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server(Mailbox())
    sender = channel(port)
    first, again, other = (sender.send(message()), sender.send(message()),
                           sender.send(message(key="alert-8:email:family:1")))
    ids = [mailbox.message(i)["Message-ID"] for i in range(3)]
    assert ids[0] == ids[1] != ids[2] and ids[0].endswith("@eldercare.example>")
    assert first.detail["message_id"] == ids[0] and other.provider_id == "Q3X7"
    assert again.provider_id == "Q2X7"


def test_english_message(smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server(Mailbox())
    channel(port).send(message(language="en"))
    assert mailbox.message()["Subject"] == "[URGENT] Fall - 张秀英"


@pytest.mark.parametrize(("refusal", "retryable"), [
    ({"refuse_rcpt": "451 4.7.1 Greylisted, try again later"}, True),
    ({"refuse_rcpt": "550 5.1.1 No such user"}, False),
    ({"refuse_data": "452 4.3.1 Insufficient system storage"}, True),
    ({"refuse_data": "554 5.7.1 Message rejected as spam"}, False),
])
def test_smtp_replies_map_to_retryable_or_permanent(
        smtp_server: Callable[..., tuple[Mailbox, int]], refusal: dict[str, str],
        retryable: bool) -> None:
    mailbox, port = smtp_server(Mailbox(**refusal))
    with pytest.raises(DeliveryFailed) as failed:
        channel(port).send(message())
    assert failed.value.retryable is retryable, failed.value.reason
    assert mailbox.received == [] and FAMILY not in failed.value.reason


def test_an_address_smtp_cannot_carry_is_permanent(
        smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server(Mailbox())
    with pytest.raises(DeliveryFailed) as failed:
        channel(port).send(replace(message(), address="女儿@家.example"))
    assert not failed.value.retryable and mailbox.received == []


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(DeliveryFailed) as failed:
        channel(free_port()).send(message())
    assert failed.value.retryable


def test_a_silent_server_times_out_retryably() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as failed:
            channel(listener.getsockname()[1], timeout_s=0.3).send(message())
    assert failed.value.retryable and time.monotonic() - started < 3


def test_starttls_required_but_not_offered_is_permanent(
        smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server(Mailbox())
    with pytest.raises(DeliveryFailed) as failed:
        channel(port, starttls=True).send(message())
    assert not failed.value.retryable and mailbox.received == []


def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"relay"
          and auth_data.password == b"right")
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd sends the 535


@pytest.mark.parametrize(("password", "delivered"), [("right", True), ("wrong", False)])
def test_login(smtp_server: Callable[..., tuple[Mailbox, int]], password: str,
               delivered: bool) -> None:
    mailbox, port = smtp_server(Mailbox(), authenticator=authenticator,
                                auth_require_tls=False)
    sender = channel(port, username="relay", password=password)
    if delivered:
        sender.send(message())
        assert len(mailbox.received) == 1
    else:
        with pytest.raises(DeliveryFailed) as failed:
            sender.send(message())
        assert not failed.value.retryable and "535" in failed.value.reason
        assert mailbox.received == []


def test_config_is_strict_and_hides_the_password() -> None:
    cfg = msgspec.convert({"host": "smtp.example", "sender": SENDER, "password": "pw-123"},
                          SmtpConfig)
    assert (cfg.port, cfg.starttls, cfg.ssl, cfg.timeout_s) == (25, False, False, 10.0)
    assert "pw-123" not in repr(cfg)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"host": "h", "sender": SENDER, "tls": True}, SmtpConfig)
    with pytest.raises(msgspec.ValidationError, match="one of"):
        msgspec.convert({"host": "h", "sender": SENDER, "ssl": True, "starttls": True},
                        SmtpConfig)
