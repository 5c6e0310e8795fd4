"""Faults: the dispatch webhook and the SMS provider failing or slow, then recovering (issue #7).

The service runs as in production with two alert channels: the dispatch webhook (a
:class:`DispatchPlatform` told to fail) and each wearer's family, by e-mail (a real SMTP server,
aiosmtpd) while the webhook is the one failing, or by SMS through Aliyun's API (a local stand-in
speaking its protocol, tests/aliyun_fake.py) when SMS is. The rig is in tests/faults/rig.py.
Each fault is one test and one row of the report:

- 5xx for a while: each alert is retried with the same Idempotency-Key and delivered once the
  platform answers 200 again; SMS errors (500, an HTML 502, throttling) likewise;
- timeouts (the platform reads the request and never answers): retried after the sender's
  timeout; the platform saw the unanswered attempt too, so it holds that key twice (received,
  answered once): the receiver deduplicates. SMS cannot be deduplicated by the carrier
  (SendSms is not idempotent), so before each retry the channel asks QuerySendDetails whether
  the message went out: an SMS whose answer was lost is never sent twice;
- connection refused (the platform or the SMS API down): retried until it listens again;
- escalation: an unclaimed alert climbs the next rung after the rung's ``wait_s``, not before;
  a delivery given up on (``max_attempts``) climbs it at once;
- in every case the other channel delivers while one fails: a failing or hanging channel never
  blocks another (docs/alerts.md, "Delivery").
"""
from __future__ import annotations

import time
from collections.abc import Callable

from tests.aliyun_fake import FakeAliyun
from tests.faults.conftest import FaultReport
from tests.faults.dispatch import DispatchPlatform
from tests.faults.harness import FaultRow, wait_until
from tests.faults.rig import Mailbox, Rig, family_mail_ok
from tests.held_port import HeldPort


def webhook_delivered(dispatch: DispatchPlatform, r: Rig, alerts: int, *,
                      since: float) -> float:
    """Wait until the dispatch webhook accepted ``alerts`` alerts' opening messages; returns
    the seconds from ``since`` (monotonic) to the last of them."""
    wait_until(lambda: len(dispatch.accepted("alert.opened")) >= alerts, timeout_s=30,
               service=r.service, what=f"{alerts} alerts at the dispatch webhook")
    return max(p.at for p in dispatch.accepted("alert.opened")) - since


def test_webhook_5xx_is_retried_with_the_same_key_until_the_platform_recovers(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, mailbox: tuple[Mailbox, int],
        fault_report: FaultReport) -> None:
    r = rig()
    dispatch.fail(status=503)
    failing_since = time.monotonic()
    for dev in r.devices:
        r.press(dev)
    r.tried(3, "failed")
    family_mail_ok(mailbox[0], r, 3, before=time.monotonic())
    dispatch.recover()
    recovered = time.monotonic()
    delivered_after_s = webhook_delivered(dispatch, r, 3, since=recovered)
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
    r.tried(3, "refused")
    family_mail_ok(mailbox[0], r, 3, before=time.monotonic())
    attempts = sum(d.attempts for d in r.opened())
    dispatch.come_back()
    back = time.monotonic()
    after_s = webhook_delivered(dispatch, r, 3, since=back)
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


# --- the SMS provider (Aliyun SendSms) failing ----------------------------------------------

SMS_TIMEOUT_S = 3.0


def family_sms_sent(fake: FakeAliyun, r: Rig, presses: int) -> int:
    """Wait until every alert's family SMS is ``sent`` in the outbox; return how many
    distinct messages reached phones, after checking none reached them twice."""
    wait_until(lambda: len(r.opened(channel="sms")) == presses
               and all(d.status == "sent" for d in r.opened(channel="sms")), timeout_s=60,
               service=r.service, what=f"{presses} family SMS sent")
    per_message = {m["OutId"]: sum(x["OutId"] == m["OutId"] for x in fake.sms) for m in fake.sms}
    assert all(n == 1 for n in per_message.values()), f"an SMS went out twice: {per_message}"
    return len(per_message)


def sms_row(fault: str, injections: int, r: Rig, dispatch: DispatchPlatform, sms_sent: int,
            note: str) -> FaultRow:
    alarms = r.ledger.alarms(r.devices, dispatch.received())
    assert alarms.delivered == alarms.presses == 3 and alarms.lost == 0, alarms
    assert alarms.duplicate_deliveries == 0 and alarms.reopened == 0, alarms
    return FaultRow(fault=fault, injections=injections, sent=alarms.presses, stored=alarms.events,
                    alerted=alarms.delivered, lost=alarms.lost + alarms.presses - sms_sent,
                    note=note)


def test_sms_provider_errors_are_retried_and_do_not_hold_back_the_webhook(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, aliyun: FakeAliyun,
        fault_report: FaultReport) -> None:
    aliyun.fail("SendSms", "500", "html_502", "throttle")
    r = rig(sms_endpoint=aliyun.url)
    first_press = min(r.press(dev) for dev in r.devices)
    webhook_s = webhook_delivered(dispatch, r, 3, since=first_press)
    r.tried(3, "failed", channel="sms")
    failed = len(aliyun.calls("SendSms"))
    assert aliyun.sms == [], "nothing reached a phone while the provider failed"
    aliyun.recover()
    recovered = time.monotonic()
    sent = family_sms_sent(aliyun, r, 3)
    fault_report.record(sms_row(
        "SMS provider answers 500 / 502 / throttled, then recovers", failed, r, dispatch, sent,
        f"{failed} SendSms calls failed; every family SMS sent once"
        f" {time.monotonic() - recovered:.1f} s after recovery (QuerySendDetails before each"
        f" retry); dispatch webhook had all alerts {webhook_s:.2f} s after the first press"))
    assert sent == 3


def test_sms_provider_timeouts_never_send_an_sms_twice(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, aliyun: FakeAliyun,
        fault_report: FaultReport) -> None:
    # Two messages go out but their answers never come; one request hangs without sending.
    aliyun.fail("SendSms", "accept_then_hang", "hang", "accept_then_hang", times=3)
    r = rig(sms_endpoint=aliyun.url, settings={"alerts.aliyun.timeout_s": SMS_TIMEOUT_S})
    first_press = min(r.press(dev) for dev in r.devices)
    webhook_s = webhook_delivered(dispatch, r, 3, since=first_press)
    sent = family_sms_sent(aliyun, r, 3)
    calls, queries = len(aliyun.calls("SendSms")), len(aliyun.calls("QuerySendDetails"))
    fault_report.record(sms_row(
        f"SMS provider accepts and never answers ({SMS_TIMEOUT_S:g} s sender timeout)", 3, r,
        dispatch, sent,
        f"3 SendSms requests hung (2 of them had sent); {queries} QuerySendDetails before the"
        f" retries found those 2, {calls} SendSms calls in all, every SMS reached its phone once;"
        f" dispatch webhook had all alerts {webhook_s:.2f} s after the first press"))
    assert sent == 3 and queries >= 3 and calls >= 4
    assert webhook_s < SMS_TIMEOUT_S, "the webhook waited behind a hanging SMS request"


def test_sms_provider_connection_refused_is_retried_until_it_listens(
        rig: Callable[..., Rig], dispatch: DispatchPlatform, fault_report: FaultReport) -> None:
    held = HeldPort()              # refused, and no other server can be given the port
    port = held.port
    r = rig(sms_endpoint=f"http://127.0.0.1:{port}/")
    down_since = time.monotonic()
    first_press = min(r.press(dev) for dev in r.devices)
    webhook_s = webhook_delivered(dispatch, r, 3, since=first_press)
    attempts = r.tried(3, "refused", channel="sms")
    held.release()
    fake = FakeAliyun(port=port)
    fake.start()
    back = time.monotonic()
    try:
        sent = family_sms_sent(fake, r, 3)
    finally:
        fake.stop()
    fault_report.record(sms_row(
        "SMS provider down (connection refused), then back", attempts, r, dispatch, sent,
        f"{attempts} refused attempts over {back - down_since:.1f} s; every family SMS sent"
        f" once {time.monotonic() - back:.1f} s after it listened again; dispatch webhook had"
        f" all alerts {webhook_s:.2f} s after the first press"))
    assert sent == 3
