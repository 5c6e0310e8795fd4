"""Webhook signatures against replay and tampering (issue #7), on both sides of the window.

:func:`~alerts.channels.webhook.verify_signature` is stateless: it proves a request is ours,
unaltered and recent (``|now - timestamp| <= window_s``). It cannot tell an identical copy sent
again inside the window from the original; that is the receiver's job (it must remember what it
has seen for one window), and the stand-in receiver (``alerts/webhook_receiver.py``) does not
do it. The last tests pin what a receiver can rely on for that: the signature of an identical
copy is identical, while the ``Idempotency-Key`` header is not covered by the signature.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from alerts.channels.base import Message
from alerts.channels.webhook import (
    SignatureError,
    WebhookChannel,
    WebhookConfig,
    encode_body,
    sign,
    verify_signature,
)
from alerts.webhook_receiver import Receiver
from foundation.clock import ManualClock

SECRET = b"replay-window-secret"
NOW_S = 1_772_416_800            # 2026-03-02 02:00:00 UTC
BODY = encode_body({"event": "alert.opened", "alert": {"id": 42, "type": "sos"},
                    "sent_at": "2026-03-02T02:00:00+00:00"})


def signed(timestamp: int, body: bytes = BODY) -> tuple[str, str, bytes]:
    ts = str(timestamp)
    return ts, sign(secret=SECRET, timestamp=ts, body=body), body


def problem(timestamp: str, signature: str, body: bytes, *, now_s: float,
            window_s: float = 300) -> str | None:
    """The SignatureError's problem, or None if the request verifies."""
    try:
        verify_signature(secret=SECRET, timestamp=timestamp, signature=signature, body=body,
                         now_s=now_s, window_s=window_s)
    except SignatureError as exc:
        return exc.problem
    return None


@pytest.mark.parametrize("window_s", [300, 60, 5])
@pytest.mark.parametrize("side", [-1, 1], ids=["stamped-earlier", "stamped-later"])
def test_the_window_holds_both_ways_to_the_second(window_s: int, side: int) -> None:
    # side -1: a captured request replayed later; +1: one stamped ahead to be replayed later.
    ts, sig, body = signed(NOW_S + side * window_s)
    assert problem(ts, sig, body, now_s=NOW_S, window_s=window_s) is None
    ts, sig, body = signed(NOW_S + side * (window_s + 1))
    assert problem(ts, sig, body, now_s=NOW_S, window_s=window_s) == "stale"


@pytest.mark.parametrize("age_s", [301, 3600, 86_400 * 365, NOW_S])
def test_a_genuine_request_replayed_after_the_window_is_stale(age_s: int) -> None:
    ts, sig, body = signed(NOW_S)
    assert problem(ts, sig, body, now_s=NOW_S) is None
    assert problem(ts, sig, body, now_s=NOW_S + age_s) == "stale"


def test_a_request_stamped_far_ahead_is_refused_now_and_stale_later() -> None:
    ts, sig, body = signed(NOW_S + 10 * 86_400)
    assert problem(ts, sig, body, now_s=NOW_S) == "stale"


def test_re_stamping_a_captured_request_with_the_current_time_breaks_the_signature() -> None:
    _, sig, body = signed(NOW_S - 3600)
    assert problem(str(NOW_S), sig, body, now_s=NOW_S) == "mismatch"


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda b: b.replace(b'"sos"', b'"fall"'), id="changed-value"),
    pytest.param(lambda b: b.replace(b"42", b"43"), id="other-alert"),
    pytest.param(lambda b: b + b" ", id="trailing-space"),
    pytest.param(lambda b: b[:-1], id="truncated"),
    pytest.param(lambda b: b"", id="emptied"),
    pytest.param(lambda b: b'{"alert":{"type":"sos","id":42},' + b[b.index(b'"event"'):],
                 id="same-json-other-bytes"),
])
def test_any_change_to_the_body_breaks_the_signature(tamper: Callable[[bytes], bytes]) -> None:
    ts, sig, body = signed(NOW_S)
    altered = tamper(body)
    assert altered != body
    assert problem(ts, sig, altered, now_s=NOW_S) == "mismatch"


def test_the_separator_keeps_timestamp_and_body_apart() -> None:
    # "1772416800" + "." + "5{...}" must not verify as "17724168005" + "." + "{...}".
    ts, sig, _ = signed(NOW_S, b"5{}")
    assert problem(ts + "5", sig, b"{}", now_s=NOW_S, window_s=10**12) == "mismatch"
    assert problem(str(NOW_S) + ".5", sig, b"{}", now_s=NOW_S) == "malformed"


def test_an_identical_copy_inside_the_window_verifies_so_receivers_must_remember() -> None:
    ts, sig, body = signed(NOW_S)
    assert problem(ts, sig, body, now_s=NOW_S) is None
    assert problem(ts, sig, body, now_s=NOW_S + 299) is None   # stateless: no memory here


def test_a_copy_carries_the_same_signature_but_a_retry_a_new_one(receiver: Receiver) -> None:
    """What a receiver can remember: within the window an identical copy repeats the exact
    signature; a genuine retry of the same delivery is re-signed (new timestamp) but keeps its
    Idempotency-Key, and its body is the same signed bytes."""
    clock = ManualClock(NOW_S * 1000)
    channel = WebhookChannel(WebhookConfig(secret=SECRET.decode()), clock=clock)
    msg = Message(delivery_id=7, alert_id=42, channel="webhook", recipient="dispatch",
                  address=receiver.url, language="zh", idempotency_key="alert-42-dispatch-1",
                  attempt=1, body={"event": "alert.opened", "alert": {"id": 42}})
    try:
        channel.send(msg)
        clock.advance(30)
        channel.send(msg)
    finally:
        channel.close()
    first, retry = receiver.requests
    for req in (first, retry):
        assert problem(req.headers["X-Eldercare-Timestamp"], req.headers["X-Eldercare-Signature"],
                       req.body, now_s=NOW_S + 30) is None
    assert first.body == retry.body
    assert first.headers["Idempotency-Key"] == retry.headers["Idempotency-Key"]
    assert first.headers["X-Eldercare-Signature"] != retry.headers["X-Eldercare-Signature"]
    # The Idempotency-Key is a header outside the signature: a copy sent with another key
    # still verifies. Receivers deduplicate on the signed bytes (the signature, or a hash of
    # the body) too, not on that header alone (SECURITY.md, threat 4).
    assert msg.idempotency_key.encode() not in first.body
