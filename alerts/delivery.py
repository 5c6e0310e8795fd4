"""Delivery workers: one per channel, sending the outbox's due messages (issue #5).

Each channel has its own named thread (``eldercare-delivery-<channel>``) and its own small
pool of sender threads, so a dispatch webhook that hangs until its timeout never delays an SMS,
and one slow send never delays the next alert on the same channel. The worker claims due rows
(most urgent first, ``alerts/outbox.py``) as senders come free, and each sender records its
outcome in its own transaction: a receipt, or a failure retried with backoff, or, after the
policy's attempts, given up, audited and escalated.

It sleeps until the earliest due row, at most ``poll_s`` (rows queued by another process), and
is woken at once by :meth:`wake` when this process queues work, which keeps an SOS's path from
the alert's commit to the webhook free of polling delays. The claiming thread is a
:class:`foundation.worker.Worker`; a sender that finishes wakes it (a sender came free).
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg

from alerts import outbox
from alerts.channels.base import Channel, DeliveryFailed, Message
from alerts.policy import DeliveryPolicy, delivery_of
from alerts.store import AlertStore
from foundation.clock import Clock
from foundation.errors import StorageError
from foundation.supervisor import Spawn, plain_spawn
from foundation.worker import Worker

log = logging.getLogger(__name__)


class DeliveryWorker:
    """Sends one channel's outbox rows; see the module docstring."""

    def __init__(self, *, channel: Channel, store: AlertStore, clock: Clock,
                 concurrency: int = 4, lease_s: float = 120.0, poll_s: float = 1.0,
                 on_given_up: threading.Event | None = None,
                 rng: random.Random | None = None, spawn: Spawn = plain_spawn) -> None:
        self.channel = channel
        self.store = store
        self.clock = clock
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        #: Set when a ladder message is given up on: the escalator then climbs at once.
        self.on_given_up = on_given_up
        self.sent = 0
        self.failed = 0
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._busy = 0  # messages with the senders
        self._worker = Worker(f"eldercare-delivery-{channel.name}", self._round, spawn=spawn,
                              on_error=self._round_failed)
        self._pool = ThreadPoolExecutor(concurrency,
                                        thread_name_prefix=f"eldercare-send-{channel.name}")

    def wake(self) -> None:
        """New rows are queued for this channel: look now."""
        self._worker.wake()

    def submit(self, messages: list[Message]) -> None:
        """Send messages already leased to this worker (written leased in the transaction that
        queued them, ``Routing.handoff``): no claim round trip on the SOS path."""
        with self._lock:
            self._busy += len(messages)
        for m in messages:
            self._pool.submit(self._deliver, m)

    def start(self) -> None:
        """Start the claiming thread; it claims at once what is due."""
        self._worker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop claiming; sends in flight finish (each bounded by its channel's timeout).
        Rows still leased are retried by the next run when the lease runs out."""
        self._worker.stop(timeout_s)
        # Messages already handed over are sent (each bounded by the channel timeout) rather
        # than left leased until the next run picks them up.
        self._pool.shutdown(wait=True, cancel_futures=False)
        self.channel.close()

    def run_once(self, *, wait: bool = False) -> int:
        """Claim as many due messages as there are free senders and hand them to the senders;
        returns how many. ``wait`` waits for their outcomes (tests). Raises StorageError when
        the database is unavailable."""
        with self._lock:
            free = self.concurrency - self._busy
        if free <= 0:
            return 0
        with self.store.transaction() as (conn, _):
            _relaxed(conn)
            claimed = outbox.claim(conn, self.channel.name, now=self._now(), limit=free,
                                   lease_s=self.lease_s)
        with self._lock:
            self._busy += len(claimed)
        futures = [self._pool.submit(self._deliver, m) for m in claimed]
        if wait:
            for f in futures:
                f.result()
        return len(claimed)

    def _deliver(self, m: Message) -> None:
        """Send one message and record the outcome (in a sender thread)."""
        try:
            try:
                receipt = self.channel.send(m)
            except DeliveryFailed as exc:
                self._failed(m, exc.reason, retryable=exc.retryable)
                return
            except Exception as exc:  # a channel bug must not stop the worker: retried, logged
                log.exception("channel %s failed on delivery %d", self.channel.name,
                              m.delivery_id)
                self._failed(m, f"internal error: {type(exc).__name__}: {exc}", retryable=True)
                return
            with self.store.transaction() as (conn, _):
                _relaxed(conn)
                outbox.record_sent(conn, m, receipt, now=self._now())
            self.sent += 1
            log.info("delivery %d (alert %d, %s, %s) sent, attempt %d", m.delivery_id,
                     m.alert_id, self.channel.name, m.recipient, m.attempt)
        except StorageError as exc:  # the outcome is lost; the lease runs out and it is resent
            log.warning("delivery %d: outcome not recorded: %s", m.delivery_id, exc)
        finally:
            with self._lock:
                self._busy -= 1
            self._worker.wake()

    def _failed(self, m: Message, reason: str, *, retryable: bool) -> None:
        with self.store.transaction() as (conn, _):
            row = conn.execute("SELECT policy FROM alerts WHERE id = %s",
                               (m.alert_id,)).fetchone()
            policy = delivery_of(row[0]) if row and row[0] else DeliveryPolicy()
            gave_up = outbox.record_failure(conn, m, reason, retryable=retryable, policy=policy,
                                            now=self._now(), rng=self._rng)
        self.failed += 1
        if gave_up:
            log.error("delivery %d (alert %d, %s, %s) given up after %d attempts: %s",
                      m.delivery_id, m.alert_id, self.channel.name, m.recipient, m.attempt,
                      reason)
            if self.on_given_up is not None:
                self.on_given_up.set()
        else:
            log.warning("delivery %d (alert %d, %s) attempt %d failed: %s", m.delivery_id,
                        m.alert_id, self.channel.name, m.attempt, reason)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, UTC)

    def _sleep_s(self) -> float:
        with self.store.transaction() as (conn, _):
            due = outbox.next_due(conn, self.channel.name)
        if due is None:
            return self.poll_s
        return min(self.poll_s, max(0.0, (due - self._now()).total_seconds()))

    def _round(self) -> float:
        if self.run_once():
            return 0.0  # more may be due
        return self._sleep_s()

    def _round_failed(self, exc: Exception) -> float:
        if isinstance(exc, StorageError):
            log.warning("delivery worker %s: %s; retrying in %.1f s", self.channel.name,
                        exc, self.poll_s)
        else:
            log.exception("delivery worker %s failed", self.channel.name, exc_info=exc)
        return self.poll_s


def _relaxed(conn: psycopg.Connection) -> None:
    """Commit without waiting for the WAL flush. Safe for leases and receipts: a lease lost in
    a crash leaves the row pending, so it is sent (again); a receipt lost leaves it leased, so
    it is sent again after the lease, and the receiver deduplicates by idempotency key. Either
    way nothing is lost, and the SOS path saves a disk flush before its webhook goes out."""
    conn.execute("SET LOCAL synchronous_commit = off")
