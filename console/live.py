"""The duty console's live feed: alert changes pushed to the page as Server-Sent Events (issue #6).

Every change to an alert writes a row of ``alert_audit`` in the change's own transaction
(:mod:`alerts.audit`), so that table *is* the change log. One :class:`ChangeFeed` per process
polls it and fans each new row out to every open ``GET /api/v1/stream``:

- **One poller, an asyncio task.** It runs on the event loop that serves the streams, with
  psycopg's async driver, and is started and stopped by the app's lifespan. The subscribers'
  queues are asyncio queues read by the streaming responses on that same loop, so publishing
  is a plain ``put_nowait``: no locks, no ``call_soon_threadsafe`` hand-offs, no second place
  where state lives. The query is one primary-key range scan, awaited without blocking the loop.
  Polling rather than LISTEN/NOTIFY: the writers do not notify, and a poll of the primary key
  costs ~1 ms and cannot lose a notification across a reconnect.
- **Latency.** A committed change is seen at the next poll (``poll_s`` = 0.25 s by default), is
  rendered once and written to every socket at once: well inside the issue's 1 s from stored to
  shown (measured in ``tests/test_console_live.py``). Longer polls trade that margin away.
- **No gaps, ascending ids.** Ids come from a sequence at INSERT but transactions commit in any
  order: id 11 can be visible while id 10 is still in flight. Publishing 11 and moving on would
  lose 10 for good. :class:`GapTracker` holds back rows above a hole until the hole is explained:
  the row shows up, or every transaction that was running when the hole was seen has ended (read
  from ``pg_current_snapshot()``), so that id was rolled back. A hole still open after
  ``gap_timeout_s`` (a stuck writer) is given up with a warning, so one stuck transaction cannot
  freeze every console; its ids stay watched for 10 minutes and are published late if they ever
  commit. So ``id: N`` on the stream means "every change up to N you may see has been sent",
  and resuming from ``Last-Event-ID`` is exact.
- **Bounded fan-out.** Each subscriber has a bounded queue (1000) and sees only its regions'
  changes (filtered when published). A subscriber that falls that far behind is not fed
  partially: it is dropped from the fan-out and its stream ends with ``event: reset`` (reload
  the list), after which the browser reconnects.
- **Catch-up.** A reconnecting page sends ``Last-Event-ID`` (or ``?since=``). Its stream
  subscribes first, then reads the missed changes of its regions from the database up to the
  watermark at subscription (at most 1000; more, or an id the database never issued, answers
  ``event: reset`` instead), then follows the live queue, which holds everything after that.
- **Shutdown.** uvicorn waits for open responses before it runs the lifespan shutdown, and a
  stream never ends by itself: call :meth:`ChangeFeed.end_streams` (thread-safe) before stopping
  the server, or streams are cancelled only when the server's graceful timeout runs out.

The wire format and the endpoint are in console/stream.py; the hole tracking in console/gaps.py.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Self

import psycopg
import pydantic_core
from fastapi import FastAPI
from psycopg import sql
from psycopg.rows import dict_row

from alerts import queries
from console.gaps import GAP_TIMEOUT_S, GapTracker, Snapshot
from foundation.errors import EldercareError, StorageError
from schemas.regions import sql_in_scope

log = logging.getLogger(__name__)

#: The API's path prefix (``alerts.api.PREFIX``; not imported, so the API may import us).
PREFIX: Final = "/api/v1"
DEFAULT_POLL_S: Final = 0.25
QUEUE_SIZE: Final = 1000
_BATCH: Final = 1000
_QUERY_TIMEOUT_S: Final = 10.0
_CONNECT_TIMEOUT_S: Final = 5
_MAX_BACKOFF_S: Final = 5.0
#: Catch-up queries in flight at once: a restart reconnects every console together.
_HISTORY_SLOTS: Final = 4


# The listing's columns and masking rules, shared on purpose: a streamed row must look exactly
# like a listed one, and contact details must be masked by one set of rules, not two.
_ALERT_COLUMNS: Final = queries._ALERT_COLUMNS
_mask_detail: Final = queries._mask_addresses

_AUDIT_KEYS: Final = ("audit_id", "at", "actor", "action", "detail")
_FRESH: Final = sql.SQL(
    "SELECT au.id AS audit_id, au.at, au.actor, au.action, au.detail, {cols}"
    " FROM alert_audit au JOIN alerts a ON a.id = au.alert_id"
    " WHERE au.id > %(after)s ORDER BY au.id LIMIT %(limit)s").format(cols=_ALERT_COLUMNS)
_LATE: Final = sql.SQL(
    "SELECT au.id AS audit_id, au.at, au.actor, au.action, au.detail, {cols}"
    " FROM unnest(%(lo)s::bigint[], %(hi)s::bigint[]) AS g(lo, hi)"
    " JOIN alert_audit au ON au.id BETWEEN g.lo AND g.hi JOIN alerts a ON a.id = au.alert_id"
    " ORDER BY au.id LIMIT %(limit)s").format(cols=_ALERT_COLUMNS)
_RANGE: Final = sql.SQL(
    "SELECT au.id AS audit_id, au.at, au.actor, au.action, au.detail, {cols}"
    " FROM alert_audit au JOIN alerts a ON a.id = au.alert_id"
    " WHERE au.id > %(after)s AND au.id <= %(upto)s"
    " AND {in_scope} ORDER BY au.id LIMIT %(limit)s").format(
    cols=_ALERT_COLUMNS, in_scope=sql.SQL(sql_in_scope("a.region", "regions")))


# --- Changes and subscribers ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Change:
    """One audit row, rendered once as its SSE frame for every subscriber."""

    audit_id: int
    region: str
    frame: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The subscription is over: ``overflow`` (fell behind), ``error`` (a change could not be
    rendered) or ``shutdown``."""

    reason: str


class Subscription:
    """One stream's bounded queue of the changes it may see."""

    def __init__(self, number: int, can_see: Callable[[str], bool], start: int,
                 size: int) -> None:
        self.number = number
        self.can_see = can_see
        #: The feed's watermark when subscribed: changes up to it come from the database.
        self.start = start
        self.ended: str | None = None
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue(size)

    def offer(self, change: Change) -> bool:
        """Queue ``change``; False (and ended) when the queue is full."""
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.ended = "overflow"
            return False
        return True

    def end(self, reason: str) -> None:
        """End the subscription and wake its reader."""
        self.ended = self.ended or reason
        with suppress(asyncio.QueueFull):   # a full queue wakes the reader anyway
            self._queue.put_nowait(None)

    async def next(self, timeout_s: float) -> Change | Ended | None:
        """The next change, :class:`Ended`, or None when ``timeout_s`` passed without one."""
        if self.ended is None:
            try:
                async with asyncio.timeout(timeout_s):
                    item = await self._queue.get()
            except TimeoutError:
                return None
            if item is not None and self.ended is None:
                return item
        return Ended(self.ended or "shutdown")


class FeedState(enum.Enum):
    """Lifecycle of a :class:`ChangeFeed`; each instance runs once."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"     # streams ended, poller still running until the lifespan ends
    STOPPED = "stopped"


class ChangeFeed:
    """New ``alert_audit`` rows, polled every ``poll_s`` and fanned out to subscribers.

    An async context manager (or :meth:`lifespan`, which :func:`console.stream.stream_router` hands to the
    router so that including the router runs it).
    """

    def __init__(self, database_url: str, *, poll_s: float = DEFAULT_POLL_S,
                 queue_size: int = QUEUE_SIZE, gap_timeout_s: float = GAP_TIMEOUT_S) -> None:
        self.database_url = database_url
        self.poll_s = poll_s
        self.queue_size = queue_size
        self.state = FeedState.NEW
        self._gaps = GapTracker(0, timeout_s=gap_timeout_s)
        self._subs: set[Subscription] = set()
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._history_slots = asyncio.Semaphore(_HISTORY_SLOTS)

    @property
    def watermark(self) -> int:
        """Every change with an id up to this one has been published."""
        return self._gaps.watermark

    async def __aenter__(self) -> Self:
        if self.state is not FeedState.NEW:
            raise EldercareError(f"change feed already {self.state.value}")
        self._loop = asyncio.get_running_loop()
        self._conn = await self._connect()
        try:
            cur = await self._conn.execute("SELECT coalesce(max(id), 0) AS id FROM alert_audit")
            row = await cur.fetchone()
            await self._conn.rollback()
        except psycopg.Error as exc:
            await self._close_connection()
            raise StorageError(f"change feed: {exc}".strip()) from exc
        # Ids below the start are history: catch-up reads them from the database.
        self._gaps = GapTracker(int(row["id"]) if row else 0, timeout_s=self._gaps.timeout_s)
        self._task = asyncio.create_task(self._poll_loop(), name="console-feed-poll_loop")
        self.state = FeedState.RUNNING
        log.info("change feed started at audit id %d, polling every %.2f s",
                 self.watermark, self.poll_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._end_streams_now()
        self.state = FeedState.STOPPED
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):   # the task we just cancelled
                await self._task
        await self._close_connection()
        log.info("change feed stopped at audit id %d", self.watermark)

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """Run the feed for the app's lifetime (``APIRouter(lifespan=...)``)."""
        async with self:
            yield

    def subscribe(self, can_see: Callable[[str], bool]) -> Subscription:
        """A new subscription to changes of the regions ``can_see`` accepts."""
        if self.state is not FeedState.RUNNING:
            raise EldercareError(f"change feed is {self.state.value}")
        sub = Subscription(next(self._numbers), can_see, self.watermark, self.queue_size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop feeding ``sub`` (idempotent)."""
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        """Open subscriptions."""
        return len(self._subs)

    def end_streams(self) -> None:
        """End every open stream and refuse new ones; callable from any thread (call it before
        stopping the HTTP server: uvicorn waits for open responses before the lifespan ends)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._end_streams_now)

    def _end_streams_now(self) -> None:
        if self.state is FeedState.RUNNING:
            self.state = FeedState.CLOSING
        for sub in self._subs:
            sub.end("shutdown")
        self._subs.clear()

    async def history(self, *, after: int, upto: int, regions: list[str] | None,
                      limit: int) -> list[Change]:
        """Changes with ``after`` < id <= ``upto`` in ``regions`` (None: all; each region with
        the division codes below it, as ``can_see`` decides live), oldest first."""
        async with self._history_slots:
            try:
                async with asyncio.timeout(_QUERY_TIMEOUT_S), await self._connect() as conn:
                    cur = await conn.execute(_RANGE, {"after": after, "upto": upto,
                                                      "regions": regions, "limit": limit})
                    rows = await cur.fetchall()
            except (psycopg.Error, TimeoutError) as exc:
                raise StorageError(f"change feed history: {exc!r}") from exc
        return [_render(r) for r in rows]

    # --- The poller --------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            try:
                more = await self._poll()
                failures = 0
            except StorageError as exc:
                failures += 1
                delay = min(_MAX_BACKOFF_S, self.poll_s * 2 ** failures) * random.uniform(0.5, 1)
                log.warning("change feed: poll failed (%d in a row), retrying in %.1f s: %s",
                            failures, delay, exc)
                await self._close_connection()
                await asyncio.sleep(delay)
                continue
            except Exception:   # a bug; the consoles need the feed more than the traceback
                log.exception("change feed: poll failed")
                more = False
            if not more:
                await asyncio.sleep(self.poll_s)

    async def _poll(self) -> bool:
        """One poll; True when a full batch was published (poll again at once)."""
        try:
            async with asyncio.timeout(_QUERY_TIMEOUT_S):
                if self._conn is None:
                    self._conn = await self._connect()
                snapshot, fresh, late = await self._read(self._conn)
        except (psycopg.Error, TimeoutError) as exc:
            raise StorageError(f"change feed: {exc!r}") from exc
        rows = {r["audit_id"]: r for r in (*fresh, *late)}
        step = self._gaps.advance(sorted(rows), snapshot, time.monotonic())
        for audit_id in step.late:
            log.warning("change feed: audit id %d committed after it was given up; "
                        "published out of order", audit_id)
        for audit_id in (*step.ready, *step.late):
            try:
                change = _render(rows[audit_id])
            except Exception:   # a bug; never drop a change silently: every page reloads
                log.exception("change feed: audit id %d cannot be rendered; resetting every "
                              "stream", audit_id)
                self._reset_all()
                continue
            self._publish(change)
        return len(fresh) == _BATCH and bool(step.ready)

    async def _read(self, conn: psycopg.AsyncConnection[dict[str, Any]],
                    ) -> tuple[Snapshot, list[dict[str, Any]], list[dict[str, Any]]]:
        # One REPEATABLE READ transaction: the snapshot text describes exactly what the two
        # queries see, which is what lets GapTracker tell "in flight" from "rolled back".
        async with conn.transaction():
            cur = await conn.execute("SELECT pg_current_snapshot()::text AS s")
            row = await cur.fetchone()
            assert row is not None
            fresh = await (await conn.execute(
                _FRESH, {"after": self.watermark, "limit": _BATCH})).fetchall()
            late: list[dict[str, Any]] = []
            if ranges := self._gaps.late_ranges():
                late = await (await conn.execute(_LATE, {
                    "lo": [lo for lo, _ in ranges], "hi": [hi for _, hi in ranges],
                    "limit": _BATCH})).fetchall()
        return Snapshot.parse(row["s"]), fresh, late

    def _reset_all(self) -> None:
        for sub in self._subs:
            sub.end("error")
        self._subs.clear()

    def _publish(self, change: Change) -> None:
        for sub in list(self._subs):
            if sub.can_see(change.region) and not sub.offer(change):
                self._subs.discard(sub)
                log.warning("change feed: subscriber %d fell %d changes behind; reset",
                            sub.number, self.queue_size)

    async def _connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.database_url, connect_timeout=_CONNECT_TIMEOUT_S, row_factory=dict_row,
                application_name="eldercare-console-feed",
                options=f"-c statement_timeout={round(_QUERY_TIMEOUT_S * 1000)}")
            await conn.set_read_only(True)
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        except psycopg.Error as exc:
            raise StorageError(f"change feed: cannot connect: {exc}".strip()) from exc
        return conn

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                await conn.close()


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _render(row: dict[str, Any]) -> Change:
    alert = {k: _utc(v) for k, v in row.items() if k not in _AUDIT_KEYS}
    data = {"audit_id": row["audit_id"], "action": row["action"], "actor": row["actor"],
            "at": _utc(row["at"]), "detail": _mask_detail(row["detail"]), "alert": alert}
    body = pydantic_core.to_json(data).decode()
    return Change(row["audit_id"], alert["region"],
                  f"id: {row['audit_id']}\nevent: alert\ndata: {body}\n\n")
