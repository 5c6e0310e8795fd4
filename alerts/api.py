"""The authenticated HTTP API of the alerts (issue #5; reference in ``docs/api.md``).

:func:`create_app` builds a FastAPI app with everything under ``/api/v1``, the OpenAPI document
included (``/api/v1/openapi.json``, browsable at ``/api/v1/docs``). Duty officers' tools and
the 12349 dispatch platform list alerts, read one with its trail, and claim, annotate and
resolve them.

- **Who**: every endpoint but ``GET /api/v1/health`` needs a caller, resolved by
  :func:`require_principal`: either ``Authorization: Bearer <token>`` (:mod:`alerts.auth`;
  programs such as the dispatch platform) or, when ``create_app`` is given a
  :class:`SessionAuth`, a browser session in the ``ec_session`` cookie (the duty console's:
  :mod:`console.web` implements it and serves ``/console/login``, ``/logout`` and ``/me``;
  the API defines the seam and the console plugs into it, so alerts never import the
  console). The token's name or the console username is the actor in the audit trail. A cookie is an
  ambient credential, so a POST authenticated by it must also send ``X-CSRF-Token``
  (403 otherwise); a bearer token is not ambient and needs none. A caller only ever
  sees alerts of its regions, each covering the division codes below it
  (:mod:`schemas.regions`): an alert elsewhere answers 404 exactly like a missing one, so ids
  do not reveal what happens in other districts.
- **Writes** go through :class:`~alerts.store.AlertStore`, whose transaction rules decide
  conflicts; :class:`~alerts.store.AlertConflict` becomes 409 naming the owner and status.
  After each successful write ``on_change(alert_id)`` wakes the service's escalation and
  delivery workers (a claim stops the ladder at once instead of at the next poll).
- **Reads** use :mod:`alerts.queries` on a fresh read-only connection per request. Endpoints
  are plain ``def``: FastAPI runs them in its thread pool, so blocking psycopg calls never stall
  the event loop, and no connection is shared between threads.
- **Errors**: 401 without a valid token or session, 403 without the CSRF header (or the
  admin role, for unlocking a console user; or a role that acts on alerts, for claiming,
  resolving, annotating and commanding: the enrolment ``clerk`` only reads them), 404, 409 (``{detail, owner, status}``), 413 for
  a body over its route's limit (checked before it is read: :mod:`alerts.http_boundary`), 422
  for anything that fails validation, malformed JSON included (``{detail: [{loc, msg,
  type}]}``, never echoing the value sent), 503 with ``Retry-After`` when the database fails
  (:class:`~foundation.errors.StorageError`). Text that cannot be stored (U+0000, a lone
  surrogate) is 422 where it is decoded (:data:`alerts.http_types.Text`), never a 503.
- **Docs**: ``/api/v1/docs`` is Swagger UI served from the package (``alerts/static/swagger/``,
  from npm's ``swagger-ui-dist``), so it works offline and where public CDNs are blocked.

Timestamps are ISO 8601 in UTC (``2026-03-02T02:00:00Z``) whatever the database session's zone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Final, Protocol

from fastapi import (
    APIRouter,
    Body,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerts import probes, queries
from alerts.api_models import (
    AcknowledgeIn,
    Alert,
    AlertDetail,
    AlertPage,
    AlertType,
    CommandIn,
    Conflict,
    DeviceCommandList,
    Health,
    NoteIn,
    Problem,
    ResolveIn,
    Status,
)
from alerts.auth import ACTING_ROLES, Principal, TokenTable
from alerts.device_commands import ACTIONS, DeviceCommands, command_states
from alerts.http_boundary import BodyLimit, StrictRoute, on_http_error, on_validation_error
from alerts.http_types import RegionCode, ZonedDatetime
from alerts.probes import Liveness, ReadinessChecks, liveness_answer
from alerts.store import AlertConflict, AlertStore
from foundation.clock import Clock
from foundation.errors import BrokerError, StorageError
from schemas.commands import CommandArgs

log = logging.getLogger(__name__)

PREFIX: Final = "/api/v1"

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Alert id")]
#: Request bodies of the API: a note of 2000 characters, each escaped as a surrogate pair
#: (12 bytes), fits twice; the login's own limit is smaller (console/web.py).
API_BODY_LIMIT: Final = 64 * 1024
#: Swagger UI's files (swagger-ui-dist from npm; alerts/static/swagger/README.md).
SWAGGER_ASSETS: Final = f"{PREFIX}/docs/assets"
_SWAGGER_DIR: Final = str(resources.files("alerts").joinpath("static", "swagger"))




# --- Context and authentication ------------------------------------------------------------

#: The cookie holding a browser session's token, when the app has a :class:`SessionAuth`.
SESSION_COOKIE: Final = "ec_session"
#: Reads the session cookie (and declares it in the OpenAPI document); never refuses itself.
session_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, scheme_name="ConsoleSession",
                              description="The duty console's session (POST /console/login);"
                                          " POSTs must also send X-CSRF-Token")


class SessionAuth(Protocol):
    """Browser sessions, as the API accepts them beside bearer tokens (the duty console's:
    ``console.web.ConsoleSessions``).

    :meth:`resolve` is blocking (a database lookup): the API calls it in its thread pool.
    """

    def resolve(self, request: Request, token: str, *, now_ms: int) -> Principal | None:
        """The caller of the live session ``token`` names (refreshing its idle timer), or
        ``None`` when there is none. Raises ``HTTPException(403)`` when the request is not
        safe (GET, HEAD, OPTIONS) and lacks the session's CSRF token, before anything runs."""
        ...


@dataclass(frozen=True, slots=True)
class _Context:
    store: AlertStore
    database_url: str
    tokens: TokenTable
    clock: Clock
    on_change: Callable[[int], None] | None
    sessions: SessionAuth | None
    commands: DeviceCommands | None


async def _context(request: Request) -> _Context:
    ctx: _Context = request.app.state.alerts_api
    return ctx


_bearer = HTTPBearer(auto_error=False, description="An API token (docs/api.md)")

BEARER_REFUSED: Final = "missing or invalid bearer token"
SESSION_REFUSED: Final = "session expired or invalid; log in again"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def require_principal(
    request: Request,
    ctx: Annotated[_Context, Depends(_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session_token: Annotated[str | None, Depends(session_cookie)],
) -> Principal:
    """The caller, for any route of an app built by :func:`create_app`.

    Use it as ``caller: Annotated[Principal, Depends(require_principal)]`` (or
    :data:`Caller`) in any router included in that app: the SSE stream, the devices view. It
    accepts, in this order:

    1. ``Authorization: Bearer <token>``: if present it decides alone; a wrong token is 401
       even beside a valid cookie (a program's explicit credential must not silently turn
       into whatever the browser holds);
    2. the ``ec_session`` cookie, when the app has a :class:`SessionAuth`: the session must
       be live (the console's: absolute and idle expiry; its last-seen time is refreshed),
       else 401. On any method but GET, HEAD and OPTIONS the request must also carry the
       session's CSRF token (``X-CSRF-Token``), else 403, raised before the endpoint runs, so
       nothing is written. The console's session is then also available from
       ``console.web.console_session`` (language, expiry).

    Anything else is 401 ``missing or invalid bearer token``. Every 401 carries
    ``WWW-Authenticate: Bearer``. ``Principal.name`` is the actor to record in audit trails,
    and ``Principal.can_see(region)`` decides visibility. A long-lived response (a stream) is
    authenticated once, when it starts: it should end itself at the session's
    ``expires_at_ms``, or re-check the session now and then.
    """
    if credentials is not None:
        # async: hashing one token is cheaper than a hop to the thread pool.
        principal = ctx.tokens.authenticate(credentials.credentials)
        if principal is None:
            raise _unauthorized(BEARER_REFUSED)
        return principal
    if session_token and ctx.sessions is not None:
        # The session lookup is a blocking database call: keep it off the event loop.
        principal = await run_in_threadpool(ctx.sessions.resolve, request, session_token,
                                            now_ms=ctx.clock.now_ms())
        if principal is None:
            raise _unauthorized(SESSION_REFUSED)
        return principal
    raise _unauthorized(BEARER_REFUSED)


Ctx = Annotated[_Context, Depends(_context)]
#: The authenticated caller (:func:`require_principal`), as an endpoint parameter type.
Caller = Annotated[Principal, Depends(require_principal)]

#: Error responses of an authenticated route, for the OpenAPI document.
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
    503: {"model": Problem}}
_BODY_ERRORS: Final[dict[int | str, dict[str, Any]]] = {**ERRORS, 413: {"model": Problem}}
_WRITE_ERRORS: Final[dict[int | str, dict[str, Any]]] = {**_BODY_ERRORS,
                                                         409: {"model": Conflict}}

router = APIRouter(prefix=PREFIX, route_class=StrictRoute)


# --- Endpoints -----------------------------------------------------------------------------

@router.get("/health", tags=["service"], responses={503: {"model": Health}})
async def health(request: Request, response: Response) -> Health:
    """Liveness: answers without a token and without touching the database; 503 naming the
    dead workers once any long-lived worker thread of the service has died (as ``/healthz``;
    ``/readyz`` also checks the broker and the database: alerts/probes.py)."""
    return liveness_answer(request, response)


# HEAD answers like GET without a body (uptime checkers use HEAD): the same function serves
# both, so HEAD checks whatever GET checks. Not in the OpenAPI document, like every HEAD.
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)


@router.get("/alerts", tags=["alerts"], responses=ERRORS)
def list_alerts(
    ctx: Ctx, caller: Caller,
    status: Annotated[list[Status] | None, Query(description="repeat for several")] = None,
    type_: Annotated[AlertType | None, Query(alias="type")] = None,
    priority_max: Annotated[int | None, Query(ge=1, le=2**31 - 1,
                                              description="1 = only the most urgent")] = None,
    since: Annotated[ZonedDatetime | None, Query(description="opened at or after")] = None,
    until: Annotated[ZonedDatetime | None, Query(description="opened before")] = None,
    region: Annotated[list[RegionCode] | None,
                      Query(description="narrow to these regions")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = queries.DEFAULT_LIMIT,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1,
                                           description="next_before_id of the last page")] = None,
) -> AlertPage:
    """Alerts of the caller's regions: unresolved first, then by priority, newest first."""
    regions = caller.narrowed(region)   # narrowing never widens what the caller may see
    with queries.reading(ctx.database_url) as conn:
        rows = queries.list_alerts(conn, regions=regions, status=status, type=type_,
                                   priority_max=priority_max, since=since, until=until,
                                   limit=limit, before_id=before_id)
    return AlertPage(alerts=[Alert.model_validate(r) for r in rows],
                     next_before_id=rows[-1]["id"] if len(rows) == limit else None)


@router.get("/alerts/{alert_id}", tags=["alerts"], responses=ERRORS)
def get_alert(ctx: Ctx, caller: Caller, alert_id: AlertId) -> AlertDetail:
    """One alert with its wearer, audit trail, deliveries and the device's recent track."""
    with queries.reading(ctx.database_url) as conn:
        detail = queries.alert_detail(conn, alert_id)
    if detail is None or not caller.can_see(detail["region"]):
        raise _not_found(alert_id)
    return AlertDetail.model_validate(detail)


@router.post("/alerts/{alert_id}/acknowledge", tags=["alerts"], responses=_WRITE_ERRORS)
def acknowledge(ctx: Ctx, caller: Caller, alert_id: AlertId,
                body: Annotated[AcknowledgeIn | None, Body()] = None) -> Alert:
    """Claim the alert. Claiming one's own claim again is harmless (a note with it is kept as a
    note); someone else's claim or a resolved alert answers 409 naming the owner."""
    _require_acting(caller)
    before = _require_visible(ctx, caller, alert_id)
    note = body.note if body else None
    ctx.store.acknowledge(alert_id, by=caller.name, now_ms=ctx.clock.now_ms(), note=note)
    if note and before["status"] == "acknowledged" and before["acknowledged_by"] == caller.name:
        # The store treats a repeated claim as a no-op; its note must not vanish with it.
        ctx.store.add_note(alert_id, by=caller.name, note=note, now_ms=ctx.clock.now_ms())
    return _after_write(ctx, alert_id)


@router.post("/alerts/{alert_id}/resolve", tags=["alerts"], responses=_WRITE_ERRORS)
def resolve(ctx: Ctx, caller: Caller, alert_id: AlertId, body: ResolveIn) -> Alert:
    """Resolve the alert with an outcome; 409 if it is already resolved, or if an officer
    tries to resolve an alert someone else has claimed (supervisors, admins and the dispatch
    platform may: they take over)."""
    _require_acting(caller)
    _require_visible(ctx, caller, alert_id)
    ctx.store.resolve(alert_id, by=caller.name, outcome=body.outcome,
                      now_ms=ctx.clock.now_ms(), note=body.note,
                      owner_only=caller.role == "officer")
    return _after_write(ctx, alert_id)


@router.post("/alerts/{alert_id}/notes", tags=["alerts"], responses=_BODY_ERRORS)
def add_note(ctx: Ctx, caller: Caller, alert_id: AlertId, body: NoteIn) -> Alert:
    """Append a note to the alert's trail."""
    _require_acting(caller)
    _require_visible(ctx, caller, alert_id)
    ctx.store.add_note(alert_id, by=caller.name, note=body.note, now_ms=ctx.clock.now_ms())
    return _after_write(ctx, alert_id)


@router.get("/alerts/{alert_id}/commands", tags=["devices"], responses=ERRORS)
def list_commands(ctx: Ctx, caller: Caller, alert_id: AlertId) -> DeviceCommandList:
    """Commands sent to the alert's device and what became of each (from the alert's trail)."""
    _require_visible(ctx, caller, alert_id)
    settings = _commands(ctx).settings
    with queries.reading(ctx.database_url) as conn:
        trail = queries.command_trail(conn, alert_id, list(ACTIONS.values()))
    states = command_states(trail, now_ms=ctx.clock.now_ms(),
                            result_timeout_s=settings.result_timeout_s)
    return DeviceCommandList.model_validate({"commands": states,
                                             "callback_number": settings.callback_number})


@router.post("/alerts/{alert_id}/commands", tags=["devices"], status_code=202,
             responses={**_BODY_ERRORS, 409: {"model": Problem}})
def send_command(ctx: Ctx, caller: Caller, alert_id: AlertId,
                 body: CommandIn) -> DeviceCommandList:
    """Send a command to the alert's device through its gateway: ``locate`` (report a position
    now), ``call_back`` (the device dials the dispatch centre, or ``number``), ``find`` (it
    rings). 202 once the broker has it; the gateway's answers follow in the alert's trail and
    in ``GET .../commands``. 409 for call_back without a number (none given, none configured);
    503 when the broker does not take it (recorded as not sent)."""
    _require_acting(caller)
    commands = _commands(ctx)
    alert = _require_visible(ctx, caller, alert_id)
    args = CommandArgs()
    if body.command == "call_back":
        number = body.number or commands.settings.callback_number
        if number is None:
            # 409, not 422: the request is well-formed; this service lacks what it needs.
            raise HTTPException(409, "call_back needs a number: none given and no"
                                     " [alerts.commands] callback_number configured")
        args = CommandArgs(number=number)
    try:
        commands.request(alert_id=alert_id, region=alert["region"],
                         device_id=alert["device_id"], command=body.command, args=args,
                         by=caller.name)
    except BrokerError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    finally:
        _after_write(ctx, alert_id)
    return list_commands(ctx, caller, alert_id)


def _commands(ctx: _Context) -> DeviceCommands:
    if ctx.commands is None:
        raise HTTPException(503, "commands to devices are not enabled on this service"
                                 " ([alerts.commands] enabled, and a broker)")
    return ctx.commands


def _not_found(alert_id: int) -> HTTPException:
    # One message for "missing" and "not yours": the answer must not reveal which.
    return HTTPException(404, f"alert {alert_id} not found")


def _require_acting(caller: Principal) -> None:
    # Before the visibility check: a refusal for the role says nothing about the alert.
    if not caller.may_act():
        raise HTTPException(403, f"the {caller.role} role reads alerts but may not act on them;"
                                 f" only {', '.join(ACTING_ROLES)} may")


def _require_visible(ctx: _Context, caller: Principal, alert_id: int) -> dict[str, Any]:
    with queries.reading(ctx.database_url) as conn:
        alert = queries.get_alert(conn, alert_id)
    # The region never changes after an alert opens, so checking before the write is safe.
    if alert is None or not caller.can_see(alert["region"]):
        raise _not_found(alert_id)
    return alert


def _after_write(ctx: _Context, alert_id: int) -> Alert:
    if ctx.on_change is not None:
        try:
            ctx.on_change(alert_id)
        except Exception:  # the write is committed; the workers' own poll catches up
            log.warning("on_change(%d) failed", alert_id, exc_info=True)
    with queries.reading(ctx.database_url) as conn:
        alert = queries.get_alert(conn, alert_id)
    if alert is None:  # alerts are never deleted; this would be a bug elsewhere
        raise _not_found(alert_id)
    return Alert.model_validate(alert)


# --- Error translation and the factory -----------------------------------------------------

async def _on_conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AlertConflict)
    if exc.status == "missing":  # raced with nothing today (alerts are never deleted)
        return JSONResponse(status_code=404, content={"detail": str(exc)})
    return JSONResponse(status_code=409, content=Conflict(
        detail=str(exc), owner=exc.owner, status=exc.status).model_dump())


async def _on_storage_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("API %s %s: storage error: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=503, headers={"Retry-After": "5"},
                        content={"detail": "the alert database is unavailable; retry later"})


def create_app(*, store: AlertStore, database_url: str, tokens: TokenTable, clock: Clock,
               on_change: Callable[[int], None] | None = None,
               sessions: SessionAuth | None = None,
               body_limits: Mapping[str, int] | None = None,
               liveness: Liveness | None = None,
               readiness: ReadinessChecks | None = None,
               commands: DeviceCommands | None = None) -> FastAPI:
    """The alerts API app. ``on_change(alert_id)`` runs after every successful write (in a
    request thread: it must be quick, e.g. set an event).

    With ``sessions``, browser sessions are accepted beside bearer tokens (the console's; its
    own routes are added by whoever composes the app: ``console.app``). Every request body is
    limited before it is read (:class:`~alerts.http_boundary.BodyLimit`): to
    :data:`API_BODY_LIMIT`, or to ``body_limits[path]`` for the paths it names (routes added
    later, such as the console's login); validation errors never echo input. ``commands``
    carries the alert device commands (``/alerts/{id}/commands``; 503 without it)."""
    app = FastAPI(title="eldercare alerts API", version="1",
                  description="Alerts of the 12349 elderly-care platform (docs/api.md).",
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None)
    app.state.liveness = liveness  # /health: the supervisor's deaths (foundation/supervisor.py)
    app.state.readiness = readiness  # /readyz: the service's checks (alerts/probes.py)
    app.state.alerts_api = _Context(store=store, database_url=database_url, tokens=tokens,
                                    clock=clock, on_change=on_change, sessions=sessions,
                                    commands=commands)
    app.include_router(router)
    app.include_router(probes.router)
    _mount_docs(app)
    app.add_middleware(BodyLimit, default=API_BODY_LIMIT, paths=dict(body_limits or {}))
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(AlertConflict, _on_conflict)
    app.add_exception_handler(StorageError, _on_storage_error)
    return app


def _mount_docs(app: FastAPI) -> None:
    """``/api/v1/docs``: Swagger UI from the package's own copy, nothing from a CDN."""
    openapi_url, title = app.openapi_url or "", f"{app.title} - docs"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=title,
            swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon-32x32.png",
            # No badge from the public validator service: nothing leaves this server.
            swagger_ui_parameters={"validatorUrl": None})

    app.add_api_route(f"{PREFIX}/docs", docs, methods=["GET"], include_in_schema=False)
    app.mount(SWAGGER_ASSETS, StaticFiles(directory=_SWAGGER_DIR), name="swagger-ui")
