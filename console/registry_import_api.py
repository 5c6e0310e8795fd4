"""Bulk import and export of wearer lists over HTTP (issue #12; docs/registry-database.md,
"Import and export"): ``POST /api/v1/imports/wearers`` and ``GET /api/v1/exports/wearers.csv``
and ``.xlsx``, on :mod:`registry.importer`.

The upload is the file itself as the request body, not a multipart form: a page sends it with
one ``fetch(url, {method: "POST", body: file})``, a script with ``curl --data-binary @list.xlsx``,
and the body limit (:data:`IMPORT_BODY_LIMIT`, applied by the app's
:class:`~alerts.http_boundary.BodyLimit` before anything is read) bounds it directly. The format
is told by the content (a workbook is a ZIP or OLE file), because browsers label a ``.csv``
differently on every system (Windows says ``application/vnd.ms-excel``).
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoints'
# ``Annotated[Principal, Depends(principal)]`` (see console/devices.py).

import datetime as dt
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from alerts.auth import Principal
from alerts.http_boundary import StrictRoute
from alerts.http_types import PrincipalDependency
from registry.idcard import IdCardVault
from registry.importer import export_wearers, import_file, report_dict
from registry.tabular import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE

PREFIX: Final = "/api/v1"
IMPORT_PATH: Final = f"{PREFIX}/imports/wearers"
#: The largest upload: a city's list of 100,000 elders is ~15 MB as XLSX, ~25 MB as CSV.
IMPORT_BODY_LIMIT: Final = 50 * 1024 * 1024
#: What :func:`alerts.api.create_app` needs in ``body_limits`` for this router.
BODY_LIMITS: Final = {IMPORT_PATH: IMPORT_BODY_LIMIT}
IMPORT_ROLES: Final = ("clerk", "admin")
EXPORT_ROLES: Final = ("clerk", "supervisor", "admin")
#: Content types an upload may declare (the content decides the format).
UPLOAD_TYPES: Final = frozenset({
    "text/csv", "text/plain", "application/csv", "application/octet-stream", XLSX_MEDIA_TYPE,
    "application/vnd.ms-excel", "application/vnd.oasis.opendocument.spreadsheet"})


class ImportProblem(BaseModel):
    """One bad cell: its row as the spreadsheet numbers it (header = row 1 when first), its
    column as the file's header names it (null: the whole row or file), the cell's value
    (absent for ID-card numbers and when there is none) and what is wrong."""

    row: int
    column: str | None
    value: str | None = None
    message: str


class ValidationItem(BaseModel):
    """One invalid query parameter (FastAPI's validation error, as every route answers it)."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationFailure(BaseModel):
    """422 for an invalid query parameter (``dry_run=maybe``), before any file is read."""

    detail: list[ValidationItem]


class ImportAnswer(BaseModel):
    """What an import found and did; 200 when valid, 422 with the same body when not."""

    rows: int = Field(description="data rows in the file (empty rows skipped)")
    valid: int = Field(description="rows without an error")
    errors: list[ImportProblem]
    created: int = Field(description="wearers created (would be, on a valid dry run)")
    updated: int = Field(description="existing wearers updated")
    devices_bound: int = Field(description="devices newly bound to the row's wearer")
    dry_run: bool


def _refuse_role(caller: Principal, roles: tuple[str, ...], what: str) -> None:
    if caller.role not in roles:
        raise HTTPException(403, f"only {', '.join(roles)} may {what}")


def registry_import_router(database_url: str, principal: PrincipalDependency, *,
                           vault: IdCardVault) -> APIRouter:
    """The import and export routes, authenticated by ``principal``. The app must limit the
    import's body to :data:`IMPORT_BODY_LIMIT` (:data:`BODY_LIMITS`)."""
    router = APIRouter(prefix=PREFIX, route_class=StrictRoute)
    auth_errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "not authenticated"},
        403: {"description": "the caller's role may not do this"},
        503: {"description": "the database is unavailable"}}

    @router.post(
        "/imports/wearers", tags=["registry"], response_model=ImportAnswer,
        responses={**auth_errors,
                   413: {"description": f"body over {IMPORT_BODY_LIMIT} bytes"},
                   415: {"description": "not a CSV or spreadsheet content type"},
                   422: {"model": ImportAnswer | ValidationFailure,
                         "description": "the file has errors, nothing was written (the"
                         " report); or a query parameter is invalid ({detail})"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def import_wearers(
        request: Request,
        caller: Annotated[Principal, Depends(principal)],
        dry_run: Annotated[bool, Query(description="check only, write nothing")] = True,
        filename: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f]*$",
                                              description="recorded in the audit")] = None,
    ) -> Response:
        """Import a wearer list (CSV or XLSX as the raw body): every bad cell reported; a real
        import (``dry_run=false``) writes all of it in one transaction or nothing."""
        _refuse_role(caller, IMPORT_ROLES, "import wearers")
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype not in UPLOAD_TYPES:
            raise HTTPException(415, "send the file as the body with Content-Type text/csv or"
                                f" {XLSX_MEDIA_TYPE}")
        body = await request.body()
        report = await run_in_threadpool(
            import_file, database_url, body, vault=vault, scopes=list(caller.regions),
            actor=caller.name, dry_run=dry_run, filename=filename)
        return JSONResponse(report_dict(report), status_code=200 if report.ok else 422)

    def export(caller: Principal, fmt: Literal["csv", "xlsx"], lang: Literal["en", "zh"]
               ) -> Response:
        _refuse_role(caller, EXPORT_ROLES, "export wearers")
        data = export_wearers(database_url, fmt=fmt, regions=caller.region_filter(), lang=lang)
        name = f"wearers-{dt.date.today().isoformat()}.{fmt}"
        return Response(data, media_type=CSV_MEDIA_TYPE if fmt == "csv" else XLSX_MEDIA_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "Cache-Control": "no-store"})

    lang_query = Query(description="en: English headers and codes; zh: Chinese headers and"
                                    " labels (男, 独居...)")

    @router.get("/exports/wearers.csv", tags=["registry"], response_class=Response,
                responses={**auth_errors, 200: {"content": {CSV_MEDIA_TYPE: {}}}})
    def export_csv(caller: Annotated[Principal, Depends(principal)],
                   lang: Annotated[Literal["en", "zh"], lang_query] = "en") -> Response:
        """The active wearers of the caller's regions as CSV (UTF-8 with BOM), the import's
        columns, ID-card numbers masked."""
        return export(caller, "csv", lang)

    @router.get("/exports/wearers.xlsx", tags=["registry"], response_class=Response,
                responses={**auth_errors, 200: {"content": {XLSX_MEDIA_TYPE: {}}}})
    def export_xlsx(caller: Annotated[Principal, Depends(principal)],
                    lang: Annotated[Literal["en", "zh"], lang_query] = "en") -> Response:
        """The same as XLSX (identifiers and phones as text cells, dates as date cells)."""
        return export(caller, "xlsx", lang)

    return router
