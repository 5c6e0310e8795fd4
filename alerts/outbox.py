"""The transactional outbox of alert deliveries (issue #5; docs/alerts.md, "Delivery").

Writing side: :func:`notify` and :func:`announce` turn a ladder rung or a state change into
``alert_deliveries`` rows *inside the caller's transaction*, so an alert and its deliveries
commit together or not at all. Targets are resolved to addresses here, from the registry
(``contacts``), the policy (community staff) and :class:`Routing` (the dispatch webhook), and
each address is copied into its row, so the trail shows exactly who was told. Quiet rules apply
here: the same message (same alert, address and requested action) queued again within
``dedup_window_s`` is recorded as ``suppressed``; on grouped (low-priority) ladders a row waits
``group_window_s`` under a ``group_key`` so the worker sends one message per wearer.

Sending side: :func:`claim` leases due rows of one channel (``FOR UPDATE SKIP LOCKED``; a lease
that runs out, because its worker died, makes the row due again: at-least-once delivery, which
receivers deduplicate by ``idempotency_key``); :func:`record_sent` and :func:`record_failure`
store the outcome and audit it. A delivery given up on escalates its alert at once.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts.audit import SYSTEM
from alerts.audit import append as audit
from alerts.channels.base import Message, Receipt
from alerts.document import DEFAULT_MAP_LINK, alert_document
from alerts.policy import DeliveryPolicy, Ladder, Staff

_ROW_SQL = ("SELECT a.*, w.name AS wearer_name, w.timezone FROM alerts a"
            " LEFT JOIN wearers w ON w.wearer_id = a.wearer_id WHERE a.id = %s")


@dataclass(frozen=True, slots=True)
class Routing:
    """Where targets go: the configured channels and addresses (read once from configuration).

    ``channels`` are the channel names with a working configuration; a target that can only be
    reached over another channel is audited as undeliverable instead of queued forever.
    """

    dispatch_url: str | None = None
    channels: frozenset[str] = frozenset()
    map_link: str | None = DEFAULT_MAP_LINK
    community: Mapping[str, Sequence[Staff]] = field(default_factory=dict)
    default_region: str = "CN"
    #: Channels whose delivery worker runs in this process: their due rows are written already
    #: leased (``lease_s``) and handed to the worker after the commit (:class:`Queued`), so an
    #: SOS goes out without a claim transaction; should the process die first, the lease runs
    #: out and any worker sends the row.
    handoff: frozenset[str] = frozenset()
    lease_s: float = 30.0


@dataclass(slots=True)
class Queued:
    """What one transaction queued: channels whose workers must look at the outbox, and
    messages already leased to this process, to send as soon as the transaction commits."""

    channels: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.channels or self.messages)


@dataclass(frozen=True, slots=True)
class _Address:
    recipient: str
    channel: str
    address: str
    language: str


def alert_row(conn: psycopg.Connection, alert_id: int) -> dict[str, Any]:
    """The alert with its wearer's name and time zone (for documents and addressing)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_ROW_SQL, (alert_id,)).fetchone()
    if row is None:
        raise LookupError(f"alert {alert_id} does not exist")
    return row


def notify(conn: psycopg.Connection, row: Mapping[str, Any], *, targets: Sequence[str],
           escalation: Mapping[str, Any], ladder: Ladder, routing: Routing, now: datetime,
           event: str, queued: Queued) -> None:
    """Queue the rung's messages to ``targets`` (into ``queued``)."""
    doc = alert_document(row, event=event, now=now, map_link=routing.map_link,
                         escalation=escalation)
    for target in targets:
        addresses = _resolve(conn, row, target, routing)
        if not addresses:
            audit(conn, row["id"], now, "undeliverable",
                  {"recipient": target, "reason": "no address for this target"})
        for a in addresses:
            if a.channel not in routing.channels:
                audit(conn, row["id"], now, "undeliverable", {
                    "recipient": a.recipient, "channel": a.channel,
                    "reason": f"{a.channel} channel not configured"})
                continue
            _queue(conn, row, a, doc, kind="notify", ladder=ladder, now=now, routing=routing,
                   queued=queued)


def announce(conn: psycopg.Connection, row: Mapping[str, Any], *, event: str,
             routing: Routing, now: datetime, queued: Queued) -> None:
    """Queue a state change (opened, escalated, acknowledged, resolved...) on MQTT, and a
    claim or resolution to the dispatch webhook when the dispatch centre has been told of
    this alert."""
    doc = alert_document(row, event=event, now=now, map_link=routing.map_link)
    if "mqtt" in routing.channels:
        topic = f"eldercare/v1/{row['region']}/alerts/{row['id']}"
        _queue(conn, row, _Address("bus", "mqtt", topic, "zh"), doc, kind="state", now=now,
               routing=routing, queued=queued)
    # Openings and escalations reach dispatch as ladder messages already (when the rung names
    # it); what it must also learn is who claimed the alert and that it is over.
    if (routing.dispatch_url and "webhook" in routing.channels
            and event in ("alert.acknowledged", "alert.resolved")):
        told = conn.execute(
            "SELECT 1 FROM alert_deliveries WHERE alert_id = %s AND recipient = 'dispatch'"
            " LIMIT 1", (row["id"],)).fetchone()
        if told:
            _queue(conn, row, _Address("dispatch", "webhook", routing.dispatch_url, "zh"), doc,
                   kind="state", now=now, routing=routing, queued=queued)


def cancel_pending(conn: psycopg.Connection, alert_id: int, *, now: datetime) -> int:
    """Resolution: ladder messages not sent yet are cancelled (state messages still go).
    Returns how many were cancelled, as the audit entry records."""
    # Counted from RETURNING, not ``rowcount``: the alert store runs its transactions in
    # pipeline mode, where ``rowcount`` is read before the result has arrived and is -1.
    # Fetching the rows waits for the result (one round trip, on resolution only).
    n = len(conn.execute(
        "UPDATE alert_deliveries SET status = 'cancelled', lease_until = NULL"
        " WHERE alert_id = %s AND kind = 'notify' AND status = 'pending' RETURNING id",
        (alert_id,)).fetchall())
    if n:
        audit(conn, alert_id, now, "deliveries_cancelled", {"count": n})
    return n


def _resolve(conn: psycopg.Connection, row: Mapping[str, Any], target: str,
             routing: Routing) -> list[_Address]:
    if target == "dispatch":
        return [_Address("dispatch", "webhook", routing.dispatch_url, "zh")] \
            if routing.dispatch_url else []
    if target == "community":
        staff = routing.community.get(row["region"], ())
        return [_Address("community", ch, _e164(s.phone, routing), s.language)
                for s in staff for ch in s.channels]
    which = target.removeprefix("family:")
    if not row.get("wearer_id"):
        return []
    contacts = conn.execute(
        "SELECT priority, phone, email, language, channels FROM contacts WHERE wearer_id = %s"
        " AND (%s OR priority = %s) ORDER BY priority",
        (row["wearer_id"], which == "all", 0 if which == "all" else int(which))).fetchall()
    out = []
    for prio, phone, email, language, channels in contacts:
        for ch in channels:
            address = email if ch == "email" else _e164(phone, routing)
            if address:
                out.append(_Address(f"family:{prio}", ch, address, language))
    return out


def _e164(phone: str, routing: Routing) -> str:
    """E.164 form (+8613800000001); a number the library cannot parse is kept as written, and
    the SMS provider's rejection of it is audited."""
    try:
        parsed = phonenumbers.parse(phone, routing.default_region)
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# One statement per queued message, audit entry included: the SOS path runs this for every
# recipient inside the transaction that opens the alert, so round trips are latency.
_QUEUE_SQL = """
WITH dup AS (
    SELECT %(dedup)s AND EXISTS (
        SELECT 1 FROM alert_deliveries WHERE alert_id = %(alert)s AND channel = %(channel)s
           AND address = %(address)s AND kind = 'notify'
           AND status IN ('pending', 'sending', 'sent', 'grouped') AND created_at > %(since)s
           AND coalesce(body->'escalation'->>'action', '') = %(action)s) AS hit),
d AS (
    INSERT INTO alert_deliveries (alert_id, kind, recipient, channel, address, language, priority,
                                  body, idempotency_key, status, attempts, lease_until,
                                  created_at, next_attempt_at, group_key)
    SELECT %(alert)s, %(kind)s, %(recipient)s, %(channel)s, %(address)s, %(language)s,
           %(priority)s, %(body)s, %(key)s,
           CASE WHEN dup.hit THEN 'suppressed' ELSE %(status)s END,
           CASE WHEN dup.hit THEN 0 ELSE %(attempts)s END,
           CASE WHEN dup.hit THEN NULL ELSE %(lease)s::timestamptz END,
           %(now)s, %(due)s, %(group)s
    FROM dup
    RETURNING id, status)
INSERT INTO alert_audit (alert_id, at, actor, action, detail)
SELECT %(alert)s, %(now)s, %(actor)s,
       CASE WHEN d.status = 'suppressed' THEN 'suppressed' ELSE 'queued' END,
       jsonb_build_object('delivery_id', d.id) || %(detail)s
FROM d
RETURNING (detail->>'delivery_id')::bigint, action
"""


def _queue(conn: psycopg.Connection, row: Mapping[str, Any], a: _Address, doc: dict[str, Any],
           *, kind: str, now: datetime, routing: Routing, queued: Queued,
           ladder: Ladder | None = None) -> None:
    """Queue one message (suppressed if the same one went out within the dedup window)."""
    dedup = kind == "notify" and ladder is not None and ladder.dedup_window_s > 0
    due, group_key = now, None
    if kind == "notify" and ladder is not None and ladder.group_window_s:
        group_key = f"{a.channel}|{a.address}|{row['subject']}"
        due = now + timedelta(seconds=ladder.group_window_s)
    handoff = a.channel in routing.handoff and group_key is None
    key = f"eldercare-{row['id']}-{uuid.uuid4().hex}"
    cur = conn.execute(_QUEUE_SQL, {
        "alert": row["id"], "kind": kind, "recipient": a.recipient, "channel": a.channel,
        "address": a.address, "language": a.language, "priority": row["priority"],
        "body": Jsonb(doc), "key": key, "status": "sending" if handoff else "pending",
        "attempts": 1 if handoff else 0,
        "lease": now + timedelta(seconds=routing.lease_s) if handoff else None,
        "dedup": dedup, "since": now - timedelta(seconds=ladder.dedup_window_s if ladder else 0),
        "action": doc.get("escalation", {}).get("action", ""), "now": now, "due": due,
        "group": group_key, "actor": SYSTEM,
        "detail": Jsonb({"kind": kind, "recipient": a.recipient, "channel": a.channel,
                         "event": doc["event"]})})
    if not handoff:
        queued.channels.add(a.channel)
        return
    delivery_id, action = cur.fetchone() or (None, None)
    if action != "queued" or delivery_id is None:
        return  # suppressed: nothing to send
    queued.messages.append(Message(
        delivery_id=delivery_id, alert_id=row["id"], channel=a.channel, recipient=a.recipient,
        address=a.address, language=a.language, idempotency_key=key, attempt=1, body=doc))


_CLAIM_SQL = """
UPDATE alert_deliveries SET status = 'sending', attempts = attempts + 1, lease_until = %(lease)s
WHERE id IN (
    SELECT id FROM alert_deliveries
    WHERE channel = %(channel)s AND next_attempt_at <= %(now)s
      AND (status = 'pending' OR (status = 'sending' AND lease_until < %(now)s))
    ORDER BY priority, next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, alert_id, recipient, address, language, idempotency_key, attempts, body,
          group_key, priority
"""


def claim(conn: psycopg.Connection, channel: str, *, now: datetime, limit: int,
          lease_s: float) -> list[Message]:
    """Lease up to ``limit`` due deliveries of ``channel`` (most urgent first) for sending.

    A grouped row also takes the other pending rows of its group, which are marked ``grouped``
    into it, and its message body becomes one ``alert.grouped`` document listing them all.
    """
    rows = conn.execute(_CLAIM_SQL, {"lease": now + timedelta(seconds=lease_s),
                                     "channel": channel, "now": now, "limit": limit}).fetchall()
    claimed_ids = [r[0] for r in rows]
    absorbed: set[int] = set()
    out = []
    for (did, alert_id, recipient, address, language, key, attempts, body, group_key,
         _prio) in rows:
        if did in absorbed:
            continue
        if group_key is not None:
            body, taken = _absorb_group(conn, did, group_key, body, claimed_ids, now)
            absorbed |= taken
        out.append(Message(delivery_id=did, alert_id=alert_id, channel=channel,
                           recipient=recipient, address=address, language=language,
                           idempotency_key=key, attempt=attempts, body=body))
    return out


def _absorb_group(conn: psycopg.Connection, delivery_id: int, group_key: str,
                  body: dict[str, Any], claimed: list[int], now: datetime
                  ) -> tuple[dict[str, Any], set[int]]:
    """Fold the group's other rows (pending, or claimed in this same round) into this one."""
    others = conn.execute(
        "UPDATE alert_deliveries SET status = 'grouped', grouped_into = %s, lease_until = NULL"
        " WHERE group_key = %s AND id <> %s AND (status = 'pending' OR id = ANY(%s))"
        " RETURNING id, alert_id, body",
        (delivery_id, group_key, delivery_id, claimed)).fetchall()
    if not others:
        return body, set()
    alerts = list(body.get("alerts") or [body["alert"]]) + [b["alert"] for _, _, b in others]
    for _, alert_id, _ in others:
        audit(conn, alert_id, now, "grouped", {"into_delivery": delivery_id})
    grouped = {**body, "event": "alert.grouped", "alerts": alerts, "alert": alerts[0]}
    conn.execute("UPDATE alert_deliveries SET body = %s WHERE id = %s",
                 (Jsonb(grouped), delivery_id))
    return grouped, {i for i, _, _ in others}


def record_sent(conn: psycopg.Connection, m: Message, receipt: Receipt, *, now: datetime) -> None:
    """The provider took the message: store and audit its receipt."""
    conn.execute(
        "UPDATE alert_deliveries SET status = 'sent', sent_at = %s, lease_until = NULL,"
        " receipt = %s, last_error = NULL WHERE id = %s",
        (now, Jsonb({"provider_id": receipt.provider_id, **receipt.detail}), m.delivery_id))
    audit(conn, m.alert_id, now, "delivered", {
        "delivery_id": m.delivery_id, "channel": m.channel, "recipient": m.recipient,
        "attempt": m.attempt, "provider_id": receipt.provider_id})


def record_failure(conn: psycopg.Connection, m: Message, reason: str, *, retryable: bool,
                   policy: DeliveryPolicy, now: datetime, rng: random.Random) -> bool:
    """Store a failed attempt: retry later (backoff with jitter) or give up. Returns True when
    given up; a given-up ladder message escalates its alert at once."""
    give_up = not retryable or m.attempt >= policy.max_attempts
    detail = {"delivery_id": m.delivery_id, "channel": m.channel, "recipient": m.recipient,
              "attempt": m.attempt, "error": reason[:500]}
    if give_up:
        conn.execute("UPDATE alert_deliveries SET status = 'failed', lease_until = NULL,"
                     " last_error = %s WHERE id = %s", (reason[:2000], m.delivery_id))
        audit(conn, m.alert_id, now, "delivery_gave_up", detail)
        conn.execute("UPDATE alerts SET next_action_at = %s WHERE id = %s"
                     " AND status <> 'resolved' AND next_action_at IS NOT NULL"
                     " AND EXISTS (SELECT 1 FROM alert_deliveries WHERE id = %s"
                     " AND kind = 'notify')", (now, m.alert_id, m.delivery_id))
        return True
    retry_at = now + timedelta(seconds=backoff_s(m.attempt, policy, rng))
    conn.execute("UPDATE alert_deliveries SET status = 'pending', lease_until = NULL,"
                 " next_attempt_at = %s, last_error = %s WHERE id = %s",
                 (retry_at, reason[:2000], m.delivery_id))
    audit(conn, m.alert_id, now, "delivery_failed", {**detail, "retry_at": retry_at.isoformat()})
    return False


def backoff_s(attempt: int, policy: DeliveryPolicy, rng: random.Random) -> float:
    """Delay before attempt ``attempt + 1``: exponential, capped, with "equal jitter" (half
    fixed, half random), so retries of many deliveries after one outage spread out without
    ever retrying at once."""
    cap = min(policy.backoff_max_s, policy.backoff_s * 2 ** (attempt - 1))
    return float(cap / 2 + rng.uniform(0, cap / 2))


def next_due(conn: psycopg.Connection, channel: str) -> datetime | None:
    """When the earliest pending delivery of ``channel`` is due (for the worker's sleep)."""
    row = conn.execute(
        "SELECT min(coalesce(CASE WHEN status = 'sending' THEN lease_until END,"
        " next_attempt_at)) FROM alert_deliveries WHERE channel = %s"
        " AND status IN ('pending', 'sending')", (channel,)).fetchone()
    return row[0] if row else None
