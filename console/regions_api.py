"""The region tree over HTTP (issue #12): ``GET`` and ``PUT /api/v1/regions``.

- ``GET /api/v1/regions`` (any role): the nodes the caller's regions cover, with the
  ancestors of each (names for breadcrumbs: 山东省 › 威海市 › 环翠区), sorted by code; the
  console's region pickers read it. ``?under=CODE`` keeps the part of that at or below
  ``CODE`` (a picker opening one district), ``&depth=N`` at most N levels below it (below the
  province level without ``under``: ``depth=1`` is provinces and cities). Each node
  says whether the caller's regions cover it (``in_scope``): an ancestor shown for its name is
  not something the caller may pick. Region names are public (the national division list);
  what a scope hides is the data filed under the codes, not the codes.
- ``PUT /api/v1/regions`` (admin): the body is a tree file (``text/csv``, or
  ``application/yaml``), checked whole (422 listing every problem with its line) and upserted
  in one transaction, audited as ``regions_loaded`` (:mod:`registry.regions`).
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoints'
# annotations, which name the ``principal`` dependency of the enclosing function.

from typing import Annotated, Any, Final

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from alerts import queries
from alerts.auth import Principal
from alerts.http_boundary import StrictRoute
from alerts.http_types import PrincipalDependency
from console.web import ADMIN_ONLY
from foundation.errors import StorageError
from registry.regions import (
    LoadReport,
    RegionTreeError,
    TreeFormat,
    load_regions,
    parse_region_tree,
    regions_in_scope,
)

PREFIX: Final = "/api/v1"
PATH: Final = f"{PREFIX}/regions"
#: A province's tree down to its villages is ~4 MB of CSV; the whole country's does not
#: belong in one request (load it with ``eldercare regions load``).
REGIONS_BODY_LIMIT: Final = 16 * 1024 * 1024
#: Media types of an upload -> the tree format.
MEDIA_TYPES: Final[dict[str, TreeFormat]] = {
    "text/csv": "csv", "application/csv": "csv", "application/yaml": "yaml",
    "application/x-yaml": "yaml", "text/yaml": "yaml", "text/x-yaml": "yaml"}
_CODE_PATTERN: Final = r"^([0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{9}|[0-9]{12})$"
_UPLOAD_DOC: Final[dict[str, Any]] = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/yaml": {"schema": {"type": "string"}}}}}


class RegionOut(BaseModel):
    """One node of the region tree."""

    code: str = Field(description="national division code: 2, 4, 6, 9 or 12 digits")
    name: str = Field(description="Chinese name (山东省, 威海市, 环翠区, ...)")
    parent: str | None = Field(description="the code one level up; null for a province")
    level: str = Field(description="province, city, district, street or community")
    in_scope: bool = Field(description="the caller's regions cover it (false: an ancestor,"
                                       " listed for its name)")


class RegionTreeOut(BaseModel):
    """The part of the tree a caller sees."""

    regions: list[RegionOut]
    truncated: bool = Field(description="more nodes matched than one answer holds: ask with"
                                        " ?under= for a part")


class RegionProblemOut(BaseModel):
    """One problem of an uploaded tree file."""

    line: int | None
    code: str | None
    message: str


class RegionTreeInvalid(BaseModel):
    """422 for an invalid tree file: every problem found, each with its line."""

    detail: str
    problems: list[RegionProblemOut]


class RegionsLoaded(BaseModel):
    """What a load changed."""

    inserted: int
    updated: int
    unchanged: int


def regions_router(database_url: str, principal: PrincipalDependency) -> APIRouter:
    """``GET`` and ``PUT /api/v1/regions``, authenticated by ``principal``. The app must let
    ``PUT`` bodies up to :data:`REGIONS_BODY_LIMIT` through (``create_app(body_limits=)``)."""
    router = APIRouter(prefix=PREFIX, route_class=StrictRoute)

    @router.get("/regions", tags=["registry"], responses={
        401: {"description": "not authenticated"}, 503: {"description": "database"}})
    def regions(
        caller: Annotated[Principal, Depends(principal)],
        under: Annotated[str | None, Query(pattern=_CODE_PATTERN,
                                           description="only this node and below")] = None,
        depth: Annotated[int | None, Query(ge=0, le=4, description="at most this many levels"
                                           " below ``under`` (without it: below the province"
                                           " level, 0 = provinces only)")] = None,
    ) -> RegionTreeOut:
        """The region tree within the caller's regions, with the ancestors for breadcrumbs."""
        with queries.reading(database_url) as conn:
            tree = regions_in_scope(conn, caller.region_filter(), under=under, depth=depth)
        return RegionTreeOut(regions=[
            RegionOut(code=n.code, name=n.name, parent=n.parent, level=n.level, in_scope=seen)
            for n, seen in tree.nodes], truncated=tree.truncated)

    @router.put("/regions", tags=["registry"], openapi_extra=_UPLOAD_DOC,
                response_model=RegionsLoaded, responses={
        401: {"description": "not authenticated"}, 403: {"description": "not an admin"},
        413: {"description": "body too large"}, 415: {"description": "not CSV or YAML"},
        422: {"model": RegionTreeInvalid}, 503: {"description": "database"}})
    async def load(request: Request,
                   caller: Annotated[Principal, Depends(principal)]
                   ) -> RegionsLoaded | JSONResponse:
        """Load a region tree file (CSV or YAML, docs/registry-database.md "Regions"):
        checked whole, then upserted (nothing deleted) and audited. Admins only."""
        if caller.role != "admin":
            raise HTTPException(403, ADMIN_ONLY)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = MEDIA_TYPES.get(media)
        if fmt is None:
            raise HTTPException(415, "send the tree as text/csv or application/yaml")
        body = await request.body()
        try:
            report = await run_in_threadpool(_load, database_url, body, fmt, caller.name)
        except RegionTreeError as exc:
            return JSONResponse(status_code=422, content=RegionTreeInvalid(
                detail=str(exc), problems=[RegionProblemOut(line=p.line, code=p.code,
                                                            message=p.message)
                                           for p in exc.problems]).model_dump())
        return RegionsLoaded(inserted=report.inserted, updated=report.updated,
                             unchanged=report.unchanged)

    return router


def _load(database_url: str, body: bytes, fmt: TreeFormat, actor: str) -> LoadReport:
    tree = parse_region_tree(body, fmt=fmt, source="(upload)")
    try:
        with psycopg.connect(database_url, autocommit=True,
                             connect_timeout=queries.CONNECT_TIMEOUT_S) as conn:
            return load_regions(conn, tree, actor=actor)
    except psycopg.Error as exc:
        raise StorageError(f"region tree: {exc}".strip()) from exc
