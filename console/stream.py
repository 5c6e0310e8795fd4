"""``GET /api/v1/stream``: the live feed (console/live.py) as Server-Sent Events (issue #6).

A stream subscribes to the :class:`ChangeFeed`, sends the missed changes of the caller's
regions when it resumes (``Last-Event-ID`` or ``?since=``), then the live ones.

Wire format (``text/event-stream``; ``data`` is one line of JSON)::

    retry: 2000
    event: hello
    data: {"max_id": 41}                    the feed's watermark when the stream opened
    id: 41                                  (catch-up events, if any, come before this line)

    id: 42
    event: alert
    data: {"audit_id": 42, "action": "acknowledged", "actor": "officer-a", "at": "...Z",
           "detail": {...masked...}, "alert": {...the alert's current row, as GET /alerts...}}

    id: 57
    : keep-alive                            every heartbeat_s without a change

    id: 1234
    event: reset
    data: {"reason": "overflow" | "too_far_behind" | "unknown_id" | "error", "max_id": 1234}
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoints'
# ``Annotated[Principal, Depends(principal)]``, and ``principal`` is the factory's argument,
# which a postponed (string) annotation could not name.

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

import pydantic_core
from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from alerts.auth import Principal
from alerts.http_boundary import StrictRoute
from alerts.http_types import PrincipalDependency
from console.live import PREFIX, Change, ChangeFeed, Ended, FeedState, Subscription
from foundation.errors import EldercareError, StorageError

log = logging.getLogger(__name__)

#: Missed changes replayed on reconnect; beyond this reloading the list is cheaper.
CATCH_UP_MAX: Final = 1000
#: Proxies (nginx: 60 s) close connections idle for long; a comment line keeps them open.
HEARTBEAT_S: Final = 15.0
#: Reconnection delay the browser's EventSource uses after a dropped connection.
RETRY_MS: Final = 2000


def _event(name: str, data: dict[str, Any], *, id_: int | None = None) -> str:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {name}\ndata: {pydantic_core.to_json(data).decode()}\n\n"


def _reset(reason: str, max_id: int) -> str:
    return _event("reset", {"reason": reason, "max_id": max_id}, id_=max_id)


async def _opening(feed: ChangeFeed, sub: Subscription, caller: Principal,
                   resume: int | None) -> tuple[list[str], set[int]]:
    """The frames before the live ones, and the ids among them (the live queue may repeat a
    late one)."""
    hello = f"retry: {RETRY_MS}\n" + _event("hello", {"max_id": sub.start})
    if resume is not None and resume > sub.start:
        # An id this database never issued (restored from a backup?): the page's state is
        # from elsewhere.
        return [hello, _reset("unknown_id", sub.start)], set()
    changes: list[Change] = []
    if resume is not None and resume < sub.start:
        changes = await feed.history(after=resume, upto=sub.start,
                                     regions=caller.region_filter(), limit=CATCH_UP_MAX + 1)
        if len(changes) > CATCH_UP_MAX:
            return [hello, _reset("too_far_behind", sub.start)], set()
    # The closing id moves the browser's Last-Event-ID to the start even when the caller
    # could see none of the changes before it.
    return [hello, *(c.frame for c in changes), f"id: {sub.start}\n\n"], {
        c.audit_id for c in changes}


async def _frames(feed: ChangeFeed, caller: Principal, resume: int | None,
                  heartbeat_s: float, max_age_s: float | None) -> AsyncIterator[str]:
    # Subscribed here, not in the endpoint: only a generator that started can be sure its
    # ``finally`` runs, so no subscription outlives its connection.
    try:
        sub = feed.subscribe(caller.can_see)
    except EldercareError:   # the feed closed between the endpoint's check and now
        return
    try:
        try:
            frames, replayed = await _opening(feed, sub, caller, resume)
        except StorageError as exc:
            # Ending the stream makes the browser retry with the same Last-Event-ID, which an
            # error status would not (EventSource gives up on any non-200 answer).
            log.warning("stream %d: catch-up failed: %s", sub.number, exc)
            return
        for frame in frames:
            yield frame
        ends_at = time.monotonic() + max_age_s if max_age_s is not None else float("inf")
        while (left := ends_at - time.monotonic()) > 0:
            # Every frame yielded so far carried its id, so ending here loses nothing: the
            # browser reconnects from the last one, authenticated afresh.
            item = await sub.next(min(heartbeat_s, left))
            if item is None:
                if time.monotonic() >= ends_at:
                    return
                # Nothing queued: every change up to the watermark has been sent.
                yield f"id: {feed.watermark}\n: keep-alive\n\n"
            elif isinstance(item, Ended):
                if item.reason != "shutdown":   # overflow, error: the page must reload
                    yield _reset(item.reason, feed.watermark)
                return
            elif item.audit_id not in replayed:
                yield item.frame
    finally:
        feed.unsubscribe(sub)


def stream_router(feed: ChangeFeed, principal: PrincipalDependency, *,
                  heartbeat_s: float = HEARTBEAT_S, max_age_s: float | None = None) -> APIRouter:
    """``GET /api/v1/stream`` for ``feed``, authenticated by the ``principal`` dependency.

    The router carries the feed's lifespan: ``app.include_router`` runs the feed with the app.
    A stream is authenticated once, when it opens; ``max_age_s`` ends each stream after that
    long so the browser reconnects (resuming exactly) and is authenticated again: an expired
    session then stops receiving. Each end costs the page one reconnection delay (``retry``,
    2 s) during which new changes wait for the catch-up; None: streams never age out.
    """
    router = APIRouter(prefix=PREFIX, lifespan=feed.lifespan, route_class=StrictRoute)

    @router.get("/stream", tags=["console"], response_class=StreamingResponse, responses={
        200: {"content": {"text/event-stream": {}},
              "description": "Server-Sent Events (console/stream.py)"},
        401: {"description": "not authenticated"}, 503: {"description": "shutting down"}})
    async def stream(
        caller: Annotated[Principal, Depends(principal)],
        # "" rather than None when absent: an optional header documented as nullable would
        # invite clients (and fuzzers) to send the text "null".
        last_event_id: Annotated[str, Header(pattern=r"^\d{1,18}$")] = "",
        since: Annotated[int | None, Query(ge=0, le=2**63 - 1,
                                           description="resume after this audit id")] = None,
    ) -> StreamingResponse:
        """Alert changes of the caller's regions, live, after the missed ones."""
        if feed.state is not FeedState.RUNNING:
            raise HTTPException(503, "the live feed is not running", headers={"Retry-After": "5"})
        # The header wins: the browser sends it on every reconnect, while ?since= stays
        # whatever the page first asked for.
        resume = int(last_event_id) if last_event_id else since
        return StreamingResponse(
            _frames(feed, caller, resume, heartbeat_s, max_age_s), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router
