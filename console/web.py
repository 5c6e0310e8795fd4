"""Console login over HTTP (issue #6): the session cookie, the CSRF header, and three endpoints.

:func:`login_router` gives ``POST /console/login``, ``POST /console/logout`` and
``GET /console/me``; :class:`ConsoleSessions` is the console's side of the alerts API's
:class:`~alerts.api.SessionAuth` seam, so the API's ``require_principal`` resolves the same
cookie for the alerts API and the console's other routes; :func:`accounts_admin_router` lets an
admin lift a login lockout. ``console.app`` puts them on the API's app.

Why these choices:

- **The cookie** ``ec_session`` holds the session token and nothing else. ``HttpOnly``: page
  scripts (and so an injected one) cannot read it. ``SameSite=Strict``: the browser never sends
  it with a request started by another site, which stops cross-site request forgery at the
  browser. ``Secure`` (over HTTPS only) unless the service is configured for plain HTTP on a
  trusted host (the demo, tests). ``Max-Age`` is the session's remaining absolute lifetime, so
  the browser forgets it at the end of the shift; the server enforces expiry regardless.
- **CSRF, defence in depth**: a cookie is an ambient credential, so every state-changing
  request authenticated by it must also carry ``X-CSRF-Token`` equal to the session's CSRF
  token (compared in constant time). A page of another origin can neither read that token
  (it comes in JSON bodies, which the same-origin policy hides) nor set custom headers without a
  CORS preflight, which this service never grants. Bearer-token callers carry no ambient
  credential and need no CSRF token.
- **Login** takes JSON only (``application/json``: an HTML form from another site cannot send
  it without a preflight, so nobody can log a victim into an attacker's account) and answers
  one message, ``wrong username or password``, for every refusal. The request model is lenient
  (any text: a malformed name is refused like a wrong one); only a value that is not text at
  all (a number, a NUL, a lone surrogate) is 422, and 422s never echo what was sent
  (:mod:`alerts.http_boundary`). A successful login always mints a new token (no session
  fixation) and ends the session the browser held before.
- Responses carrying the CSRF token are ``Cache-Control: no-store``.
- **Rate limiting** (issue #7, :mod:`console.ratelimit`): before the password is checked, the
  attempt is counted per client address and per account name *from that address*; over either
  limit the answer is ``429 too many login attempts; try again later`` with ``Retry-After``,
  the same for every name whether its account exists or not, and for the right password too.
  Before refusing a name, the endpoint asks the database whether an admin lifted that name's
  lockout since (``eldercare user unlock``, or the admin endpoint in :mod:`alerts.api`, which
  may run in another process); if so the failures counted until then are forgiven. Each
  refusal is logged at warning with the client address and a keyed hash of the name, never the
  name. The client address is the peer's, or the ``X-Forwarded-For`` client when the peer is a
  proxy uvicorn trusts (``FORWARDED_ALLOW_IPS``, default 127.0.0.1).
- The login body is at most :data:`LOGIN_BODY_LIMIT` bytes (413 before it is read whole;
  :class:`alerts.http_boundary.BodyLimit`).

Handlers are plain ``def``: argon2 and psycopg block, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Final

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from alerts.api import ERRORS, PREFIX, SESSION_COOKIE, Caller, session_cookie
from alerts.auth import Principal
from alerts.http_boundary import StrictRoute
from alerts.http_types import Text
from console.accounts import USERNAME_PATTERN, AccountError, AccountStore, Language, Session
from console.ratelimit import UNKNOWN_ADDRESS, Attempt, LoginLimiter, LoginLimits, Refused
from foundation.clock import Clock
from foundation.errors import StorageError

log = logging.getLogger(__name__)

#: The request header that must echo the session's CSRF token on state-changing requests.
CSRF_HEADER: Final = "X-CSRF-Token"
#: Methods that change nothing and so need no CSRF token (RFC 9110 "safe" methods).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

WRONG_CREDENTIALS: Final = "wrong username or password"
CSRF_REFUSED: Final = "missing or wrong CSRF token"
NOT_LOGGED_IN: Final = "not logged in, or the session expired; log in again"
TOO_MANY_ATTEMPTS: Final = "too many login attempts; try again later"
_NO_STORE: Final = {"Cache-Control": "no-store"}
#: The largest login body accepted: a 64-character name and a 1024-character password, each
#: character escaped as a surrogate pair (12 bytes), fit with room to spare.
LOGIN_BODY_LIMIT: Final = 16 * 1024

ADMIN_ONLY: Final = "only an admin may do this"


class LoginIn(BaseModel):
    """Credentials. Lenient on purpose: any text is taken, and a malformed name is refused like
    a wrong one, with 401. Only what is not text (a number, U+0000, a lone surrogate) is 422,
    which names the field and never echoes the value."""

    model_config = ConfigDict(extra="forbid")
    username: Text = ""
    password: Text = Field(default="", json_schema_extra={"format": "password"})


class ConsoleUser(BaseModel):
    """The logged-in person, as the console shows them."""

    name: str = Field(description="username; the actor in audit trails")
    display_name: str | None
    role: str = Field(description="officer, supervisor, admin or clerk (reads alerts, does not"
                                  " act on them)")
    regions: list[str] = Field(description='region codes, each covering the codes below it,'
                                           ' or ["*"] for all')
    language: Language


class Me(BaseModel):
    """The logged-in user and the CSRF token to send in ``X-CSRF-Token`` with every POST."""

    user: ConsoleUser
    csrf_token: str


class ConsoleProblem(BaseModel):
    """401, 403, 429: what went wrong."""

    detail: str


def me_of(session: Session) -> Me:
    """The public view of ``session`` (never its session token)."""
    p = session.principal
    return Me(user=ConsoleUser(name=p.name, display_name=session.display_name, role=p.role,
                               regions=list(p.regions), language=session.language),
              csrf_token=session.csrf_token)


def session_of(request: Request, accounts: AccountStore, *, now_ms: int) -> Session | None:
    """The live session named by the request's cookie, or ``None``. Blocking (database):
    call it from a worker thread in async code."""
    token = request.cookies.get(SESSION_COOKIE)
    return accounts.session(token, now_ms=now_ms) if token else None


def check_csrf(request: Request, session: Session) -> None:
    """Raise 403 unless the request is safe or carries the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    # Bytes: compare_digest refuses non-ASCII str, and a header may hold anything.
    if sent is None or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise HTTPException(403, CSRF_REFUSED)


def client_address(request: Request) -> str:
    """The address the request came from, as the login limits count it."""
    return request.client.host if request.client is not None else UNKNOWN_ADDRESS


def login_router(accounts: AccountStore, clock: Clock, *, secure_cookies: bool,
                 limits: LoginLimits | None = None,
                 limiter: LoginLimiter | None = None) -> APIRouter:
    """``/console/login``, ``/console/logout`` and ``/console/me`` on ``accounts``.

    ``secure_cookies`` marks the cookie ``Secure``; turn it off only for plain HTTP on a
    trusted host (a browser would not send a Secure cookie over ``http://``). ``limiter``
    bounds login attempts; without one, a limiter of ``limits`` (``[console.login_limits]``;
    the defaults when ``None``) is made, counting in this router's memory on ``clock``.
    """
    router = APIRouter(prefix="/console", tags=["console"], route_class=StrictRoute)
    if limiter is None:
        limiter = LoginLimiter(limits if limits is not None else LoginLimits(), clock=clock)
    problems: dict[int | str, dict[str, object]] = {
        401: {"model": ConsoleProblem}, 403: {"model": ConsoleProblem}}
    login_problems: dict[int | str, dict[str, object]] = {
        401: {"model": ConsoleProblem}, 413: {"model": ConsoleProblem}, 429: {
            "model": ConsoleProblem, "description": "too many attempts; see Retry-After",
            "headers": {"Retry-After": {"description": "seconds to wait",
                                        "schema": {"type": "integer"}}}}}
    # Declares the cookie in the OpenAPI document; the handlers read it themselves.
    cookie_auth = [Depends(session_cookie)]

    def set_cookie(response: Response, session: Session, now_ms: int) -> None:
        assert session.token is not None   # a login result always carries it
        response.set_cookie(SESSION_COOKIE, session.token,
                            max_age=max(0, (session.expires_at_ms - now_ms) // 1000), path="/",
                            secure=secure_cookies, httponly=True, samesite="strict")

    def require_session(request: Request) -> Session:
        session = session_of(request, accounts, now_ms=clock.now_ms())
        if session is None:
            raise HTTPException(401, NOT_LOGGED_IN)
        return session

    def admit(name: str, address: str) -> Attempt | Refused:
        attempt = limiter.admit(name, address)
        if not (isinstance(attempt, Refused) and attempt.scope == "name"):
            return attempt
        # Refused for its name: unless an admin lifted the lockout since (perhaps from another
        # process: the time is in the database). Only refusals pay for this query.
        try:
            unlocked_ms = accounts.unlocked_at_ms(name)
        except StorageError:
            return attempt          # the lockout ends by itself; a 429 is the safe answer
        if unlocked_ms is None or not limiter.forgive(name, upto_ms=unlocked_ms):
            return attempt
        return limiter.admit(name, address, address_counted=True)

    @router.post("/login", responses=login_problems)
    def login(body: LoginIn, request: Request, response: Response) -> Me:
        """Log in; sets the ``ec_session`` cookie and returns the user and the CSRF token.
        429 with ``Retry-After`` after too many attempts (docs/console.md)."""
        address = client_address(request)
        attempt = admit(body.username, address)
        if isinstance(attempt, Refused):
            log.warning("console login from %s refused unchecked for %d s: too many attempts"
                        " (per %s; name #%s)", address, attempt.retry_after_s, attempt.scope,
                        attempt.tag)
            raise HTTPException(429, TOO_MANY_ATTEMPTS,
                                headers={"Retry-After": str(attempt.retry_after_s)})
        now_ms = clock.now_ms()
        try:
            session = accounts.login(body.username, body.password, now_ms=now_ms)
        except StorageError:
            # 503: officers retrying through a database outage must not find their names
            # refused once it is over.
            limiter.unchecked(attempt)
            raise
        if session is None:
            log.info("console login from %s failed (name #%s)", address, attempt.tag)
            raise HTTPException(401, WRONG_CREDENTIALS)
        limiter.succeeded(attempt)
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:
            accounts.logout(previous)   # one browser, one session
        set_cookie(response, session, now_ms)
        response.headers.update(_NO_STORE)
        return me_of(session)

    @router.post("/logout", status_code=204, response_class=Response, responses=problems,
                 dependencies=cookie_auth)
    def logout(request: Request) -> Response:
        """End the session (needs its ``X-CSRF-Token``) and clear the cookie."""
        session = require_session(request)
        check_csrf(request, session)
        accounts.logout(request.cookies[SESSION_COOKIE])
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=secure_cookies, httponly=True,
                               samesite="strict")
        return response

    @router.get("/me", responses={401: problems[401]}, dependencies=cookie_auth)
    def me(request: Request, response: Response) -> Me:
        """The logged-in user and the CSRF token (e.g. after a page reload), or 401."""
        session = require_session(request)
        response.headers.update(_NO_STORE)
        return me_of(session)

    return router


class ConsoleSessions:
    """The console's sessions as the alerts API takes them (:class:`alerts.api.SessionAuth`):
    a live session of ``accounts`` (absolute and idle expiry; its last-seen time refreshed),
    with the CSRF check on unsafe methods. The session itself is kept on the request for
    :func:`console_session` (language, expiry)."""

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts

    def resolve(self, request: Request, token: str, *, now_ms: int) -> Principal | None:
        session = self.accounts.session(token, now_ms=now_ms)
        if session is None:
            return None
        check_csrf(request, session)
        request.state.console_session = session
        return session.principal


def console_session(request: Request) -> Session | None:
    """The console session ``alerts.api.require_principal`` resolved for this request, or
    ``None`` (a bearer caller, or the dependency has not run)."""
    session: Session | None = getattr(request.state, "console_session", None)
    return session


def accounts_admin_router(accounts: AccountStore, limiter: LoginLimiter,
                          clock: Clock) -> APIRouter:
    """``POST /api/v1/console-users/{username}/unlock``: an admin lifts a login lockout."""
    router = APIRouter(prefix=PREFIX, route_class=StrictRoute)

    @router.post("/console-users/{username}/unlock", tags=["console"], status_code=204,
                 response_class=Response, responses=ERRORS)
    def unlock_console_user(
        caller: Caller,
        username: Annotated[str, Path(pattern=rf"^{USERNAME_PATTERN.pattern}$")],
    ) -> Response:
        """Admins only: lift the login lockout of a console user at once, from every address
        (docs/console.md). Later failures count again. 404 if there is no such user."""
        if caller.role != "admin":
            raise HTTPException(403, ADMIN_ONLY)
        now_ms = clock.now_ms()
        try:
            accounts.unlock(username, now_ms=now_ms)   # for every process (and a restart)
        except AccountError:
            raise HTTPException(404, "no such console user") from None
        forgiven = limiter.forgive(username, upto_ms=now_ms)
        log.info("console login lockout of name #%s lifted by an admin (%d failures forgiven)",
                 limiter.tag(username), forgiven)
        return Response(status_code=204)

    return router
