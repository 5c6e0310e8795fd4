"""The dispatch webhook against a real local HTTP server that verifies what it receives."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from alerts.channels.base import DeliveryFailed, Message
from alerts.channels.webhook import (
    SignatureError,
    WebhookChannel,
    WebhookConfig,
    sign,
    verify_signature,
)
from alerts.webhook_receiver import Receiver
from foundation import __version__
from foundation.clock import ManualClock
from foundation.errors import ConfigError
from foundation.ports import free_port

SECRET = "s3cret-for-tests"
NOW_MS = 1_700_000_000_123
NOW_S = NOW_MS // 1000


def make_channel(timeout_s: float = 2.0, secret: str = SECRET) -> WebhookChannel:
    return WebhookChannel(WebhookConfig(secret=secret, timeout_s=timeout_s),
                          clock=ManualClock(NOW_MS))


@pytest.fixture
def channel() -> Iterator[WebhookChannel]:
    c = make_channel()
    yield c
    c.close()


def message(url: str, **body: Any) -> Message:
    doc: dict[str, Any] = {"event": "alert.opened",
                           "alert": {"id": 42, "type": "fall", "wearer": {"id": 7, "name": "张三"}}}
    doc.update(body)
    return Message(delivery_id=901, alert_id=42, channel="webhook", recipient="dispatch",
                   address=url, language="zh", idempotency_key="alert-42-dispatch-" +
                   uuid.uuid4().hex[:6], attempt=1, body=doc)


def test_success_is_signed_with_idempotency_key_and_exact_json(
        receiver: Receiver, channel: WebhookChannel) -> None:
    msg = message(receiver.url)
    receipt = channel.send(msg)

    assert receipt.provider_id == "req-1"
    assert receipt.detail == {"status": 200, "body": '{"ok":true}'}
    [req] = receiver.requests
    assert req.path == "/hooks/12349"
    # Compact, sorted keys, Chinese as raw UTF-8: the bytes the signature covers.
    assert req.body == ('{"alert":{"id":42,"type":"fall","wearer":{"id":7,"name":"张三"}},'
                        '"event":"alert.opened"}').encode()
    h = req.headers
    assert h["Content-Type"] == "application/json"
    assert h["Idempotency-Key"] == msg.idempotency_key
    assert h["X-Eldercare-Delivery"] == "901"
    assert h["X-Eldercare-Timestamp"] == str(NOW_S)
    assert h["User-Agent"] == f"eldercare/{__version__}"
    # Pinned independently of sign(): what the 12349 platform computes on its side.
    mac = hmac.new(SECRET.encode(), f"{NOW_S}.".encode() + req.body, hashlib.sha256)
    assert h["X-Eldercare-Signature"] == "sha256=" + mac.hexdigest()
    verify_signature(secret=SECRET.encode(), timestamp=h["X-Eldercare-Timestamp"],
                     signature=h["X-Eldercare-Signature"], body=req.body, now_s=NOW_S + 10)


def test_signature_covers_the_timestamp(receiver: Receiver, channel: WebhookChannel) -> None:
    channel.send(message(receiver.url))
    [req] = receiver.requests
    with pytest.raises(SignatureError) as err:  # a replay re-stamped with a fresh time
        verify_signature(secret=SECRET.encode(), timestamp=str(NOW_S + 3600),
                         signature=req.headers["X-Eldercare-Signature"], body=req.body,
                         now_s=NOW_S + 3600)
    assert err.value.problem == "mismatch"


def test_retry_carries_the_same_idempotency_key(
        receiver: Receiver, channel: WebhookChannel) -> None:
    msg = message(receiver.url)
    channel.send(msg)
    channel.send(msg)
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert keys == [msg.idempotency_key] * 2


def test_wrong_secret_is_detected(receiver: Receiver) -> None:
    other = make_channel(secret="not-the-platform-secret")
    try:
        other.send(message(receiver.url))
    finally:
        other.close()
    [req] = receiver.requests
    with pytest.raises(SignatureError) as err:
        verify_signature(secret=SECRET.encode(), timestamp=req.headers["X-Eldercare-Timestamp"],
                         signature=req.headers["X-Eldercare-Signature"], body=req.body,
                         now_s=NOW_S)
    assert err.value.problem == "mismatch"


def test_altered_body_is_detected(receiver: Receiver, channel: WebhookChannel) -> None:
    channel.send(message(receiver.url))
    [req] = receiver.requests
    with pytest.raises(SignatureError) as err:
        verify_signature(secret=SECRET.encode(), timestamp=req.headers["X-Eldercare-Timestamp"],
                         signature=req.headers["X-Eldercare-Signature"],
                         body=req.body.replace(b"fall", b"sos_"), now_s=NOW_S)
    assert err.value.problem == "mismatch"


@pytest.mark.parametrize("skew_s", [-301, 301, 86_400])
def test_replayed_request_is_refused(
        receiver: Receiver, channel: WebhookChannel, skew_s: int) -> None:
    channel.send(message(receiver.url))
    [req] = receiver.requests

    def verify(now_s: float) -> None:
        verify_signature(secret=SECRET.encode(), timestamp=req.headers["X-Eldercare-Timestamp"],
                         signature=req.headers["X-Eldercare-Signature"], body=req.body,
                         now_s=now_s)

    verify(NOW_S + 300)  # the window's edge is still accepted
    with pytest.raises(SignatureError) as err:
        verify(NOW_S + skew_s)
    assert err.value.problem == "stale"


@pytest.mark.parametrize(("timestamp", "signature", "problem"), [
    (str(NOW_S), "sha1=" + "0" * 64, "malformed"),
    (str(NOW_S), "sha256=" + "z" * 64, "malformed"),
    (str(NOW_S), "sha256=" + "0" * 63, "malformed"),
    (str(NOW_S), "", "malformed"),
    ("1700000000.5", "sha256=" + "0" * 64, "malformed"),
    ("١٧٠٠٠٠٠٠٠٠", "sha256=" + "0" * 64, "malformed"),  # Arabic-Indic digits
    (str(NOW_S), "sha256=" + "0" * 64, "mismatch"),
])
def test_malformed_or_wrong_signatures(timestamp: str, signature: str, problem: str) -> None:
    with pytest.raises(SignatureError) as err:
        verify_signature(secret=b"k", timestamp=timestamp, signature=signature, body=b"{}",
                         now_s=NOW_S)
    assert err.value.problem == problem


def test_empty_secret_never_verifies() -> None:
    good = sign(secret=b"", timestamp=str(NOW_S), body=b"{}")
    with pytest.raises(SignatureError) as err:
        verify_signature(secret=b"", timestamp=str(NOW_S), signature=good, body=b"{}",
                         now_s=NOW_S)
    assert err.value.problem == "no-secret"


def test_uppercase_hex_is_accepted() -> None:
    good = sign(secret=b"k", timestamp=str(NOW_S), body=b"{}")
    verify_signature(secret=b"k", timestamp=str(NOW_S), signature=good.upper().replace(
        "SHA256", "sha256"), body=b"{}", now_s=NOW_S)


@pytest.mark.parametrize(("status", "retryable"), [
    (500, True), (503, True), (429, True), (408, True), (400, False), (401, False), (404, False),
])
def test_error_status_maps_to_retryable(
        receiver: Receiver, channel: WebhookChannel, status: int, retryable: bool) -> None:
    receiver.behaviour.status = status
    receiver.behaviour.body = b'{"wearer":"\xe5\xbc\xa0\xe4\xb8\x89"}'
    with pytest.raises(DeliveryFailed) as err:
        channel.send(message(receiver.url))
    assert err.value.retryable is retryable
    assert str(status) in err.value.reason
    assert "张三" not in err.value.reason  # response bodies may echo names: kept out of reasons
    assert len(receiver.requests) == 1


def test_connection_refused_is_retryable(channel: WebhookChannel) -> None:
    with pytest.raises(DeliveryFailed) as err:
        channel.send(message(f"http://127.0.0.1:{free_port()}/hook"))
    assert err.value.retryable is True


def test_slow_server_times_out_retryable_within_timeout(receiver: Receiver) -> None:
    receiver.behaviour.delay_s = 10.0
    slow = make_channel(timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryFailed) as err:
            slow.send(message(receiver.url))
    finally:
        slow.close()
    elapsed = time.monotonic() - started
    assert err.value.retryable is True
    assert "timed out" in err.value.reason
    assert 0.4 < elapsed < 1.5


def test_large_response_body_is_truncated(receiver: Receiver, channel: WebhookChannel) -> None:
    receiver.behaviour.body = "好".encode() * 100_000
    receipt = channel.send(message(receiver.url))
    assert receipt.detail["body"] == "好" * 500


def test_empty_address_falls_back_to_configured_url(receiver: Receiver) -> None:
    c = WebhookChannel(WebhookConfig(url=receiver.url, secret=SECRET), clock=ManualClock(NOW_MS))
    try:
        c.send(message(""))
    finally:
        c.close()
    assert len(receiver.requests) == 1


def test_no_url_and_bad_url_are_permanent(channel: WebhookChannel) -> None:
    for address in ("", "ftp://dispatch.example/hook"):
        with pytest.raises(DeliveryFailed) as err:
            channel.send(message(address))
        assert err.value.retryable is False


def test_missing_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        WebhookChannel(WebhookConfig(), clock=ManualClock(NOW_MS))
