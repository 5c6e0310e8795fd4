"""What the HTTP server refuses before any endpoint runs, and how it says so (issue #7).

Three gates stand between the bytes of a request and an endpoint of :func:`alerts.api.create_app`
(the alerts API and the duty console on one server):

- **Body size** (:class:`BodyLimit`, an ASGI middleware): each path has a byte limit, small
  everywhere since no request carries more than a note. A ``Content-Length`` over the limit is
  answered 413 at once, before the body is read or anything is parsed or authenticated; a body
  without one (chunked) is counted as it streams in and refused as soon as it passes the limit,
  so no more than the limit (plus one chunk) is ever held. The answer closes the connection
  (``Connection: close``): the rest of an oversized body is never read.
- **JSON syntax and query syntax** (:class:`StrictRoute`): bodies are decoded as strict UTF-8
  JSON. Python's ``json`` would take ``NaN`` and ``Infinity``, turn ``1e999`` into infinity and
  fail on 5,000-digit integers and deep nesting with errors FastAPI answers as an undocumented
  400; here every one of them is a JSON decode error, 422 like any other malformed body. A
  query parameter that takes one value but is given several (``?limit=1&limit=500``) is 422
  too, where FastAPI would silently take the last.
- **Validation errors** (:func:`on_validation_error`): 422 with ``{"detail": [{"loc", "msg",
  "type"}]}`` and nothing else. FastAPI's default also echoes the rejected ``input`` (a password,
  on ``/console/login``) and fails with a plain-text 500 when that input cannot be written as
  JSON (infinity, NaN, a lone surrogate); a location naming a key that is not valid Unicode is
  written with escapes.
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Annotated, Any, Final, Union, get_args, get_origin

from fastapi import HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The longest integer literal a body may hold (a 64-bit id has 19 digits); Python refuses to
#: convert more than 4,300 digits anyway, and spends quadratic time getting there.
MAX_INT_DIGITS: Final = 64


class BodyTooLarge(HTTPException):
    """413: the request body is over its path's limit (``limit`` bytes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: at most {limit} bytes",
                         headers={"Connection": "close"})
        self.limit = limit


class BodyLimit:
    """ASGI middleware: request bodies of at most ``paths[path]`` bytes, else ``default``.

    See the module docstring. Only ``http`` scopes are limited (there are no websockets).
    """

    def __init__(self, app: ASGIApp, *, default: int, paths: Mapping[str, int] | None = None
                 ) -> None:
        self.app = app
        self.default = default
        self.paths = dict(paths or {})

    def limit_of(self, path: str) -> int:
        """The body limit of ``path``, in bytes."""
        return self.paths.get(path, self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(BodyTooLarge(limit), scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: FastAPI passes it through its body parsing (anything
                    # else becomes a 400 there) to the app's handler, which answers 413.
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:
            # Read outside FastAPI's routes (a mount): answer here, if nothing was sent yet.
            if started:
                raise
            await _refuse(exc, scope, receive, send)


async def _refuse(exc: BodyTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None or not value.isdigit():
        return None   # absent, or malformed: the server refuses those itself
    return int(value)


# --- Strict JSON ---------------------------------------------------------------------------

def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError("number out of range", text, 0)
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise json.JSONDecodeError(f"integer longer than {MAX_INT_DIGITS} digits", text, 0)
    return int(text)


def decode_json(body: bytes) -> Any:
    """``body`` as JSON (RFC 8259: UTF-8, finite numbers), else :class:`json.JSONDecodeError`
    (which FastAPI answers 422 ``json_invalid``)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None


class StrictJsonRequest(Request):
    """A request whose ``json()`` is :func:`decode_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class StrictRoute(APIRoute):
    """An API route (``route_class`` of a router) that decodes its JSON body with
    :func:`decode_json` and refuses a single-valued query parameter given more than once."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        single = frozenset(_single_valued_query_params(self.dependant))

        async def strict(request: Request) -> Response:
            repeated = sorted(n for n in single if len(request.query_params.getlist(n)) > 1)
            if repeated:
                raise RequestValidationError([
                    {"type": "query_repeated", "loc": ("query", name),
                     "msg": "Give this parameter once", "input": None} for name in repeated])
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def _single_valued_query_params(dependant: Dependant) -> Iterator[str]:
    # The route's own query parameters and those of its dependencies, by their query names.
    for field in dependant.query_params:
        if not _is_sequence(field.field_info.annotation):
            yield field.alias
    for sub in dependant.dependencies:
        yield from _single_valued_query_params(sub)


def _is_sequence(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_sequence(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_sequence(a) for a in get_args(annotation) if a is not type(None))
    return origin in (list, set, frozenset, tuple) or annotation in (list, set, frozenset, tuple)


# --- Validation errors ---------------------------------------------------------------------

def _printable(text: str) -> str:
    # A key of the body may hold a lone surrogate, which JSON output cannot encode.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _location(part: Any) -> str | int:
    return part if isinstance(part, int) else _printable(str(part))


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", ""))
    ctx = error.get("ctx") or {}
    if error.get("type") == "json_invalid" and isinstance(ctx.get("error"), str):
        msg = f"{msg}: {ctx['error']}"     # json's own words; they never quote the input
    return _printable(msg)


async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field by location, message and type; never the rejected value."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": [
        {"loc": [_location(part) for part in error.get("loc", ())], "msg": _message(error),
         "type": _printable(str(error.get("type", "")))}
        for error in exc.errors()]})


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own handling, except that a 405's ``Allow`` names every documented method of
    the path: with one route per method (``GET`` and ``POST /alerts/{id}/commands``), Starlette
    answers from the first route that matched the path alone and lists only its methods."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        methods = _documented_methods(request)
        if methods:
            exc = StarletteHTTPException(405, exc.detail, headers={"Allow": ", ".join(methods)})
    return await http_exception_handler(request, exc)


def _documented_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document gives the request's path (none for undocumented
    routes, which keep Starlette's answer)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    for template, operations in paths.items():
        if compile_path(template)[0].match(request.url.path):
            return sorted(m.upper() for m in operations)
    return []
