"""The elderly information database's HTTP API under ``/api/v1`` (issue #12; the endpoint
list is docs/registry-database.md, "API").

Wearers, devices, bindings, contacts, zones and their audit trail, on
:class:`registry.store.RegistryStore`, which enforces the rules (scopes, versions, the region
tree, one transaction per change with its audit row). This module adds what belongs to HTTP:

- **Who.** Callers authenticate like every API route (the ``principal`` dependency:
  ``alerts.api.require_principal`` in the service). Every role reads within its regions; only
  :data:`WRITERS` write, anything else is 403 naming the roles that may. A caller's regions
  are its scopes (``Principal.region_filter()``; ``*`` = all).
- **Errors.** The store's refusals become answers: RecordNotFound 404, RegionForbidden 403,
  RecordConflict 409 (``{detail}``), InvalidRecord 422 shaped like every validation error
  (``{detail: [{loc, msg, type}]}``, the value never echoed).
- **Deactivation ends the alerts.** After the registry's transaction commits, the wearer's
  unresolved alerts are resolved through the alert store (``end_for_wearer``), which stops
  their escalation, and the escalator is woken. A deactivation repeated after a failure there
  ends them again before answering 409 (already deactivated), so a retry completes the job.

Endpoints are plain ``def`` (FastAPI's thread pool: the store blocks on psycopg).
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the endpoints'
# ``Annotated[Principal, Depends(principal)]``, and ``principal`` is the factory's argument.

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Final, Protocol, TypeVar

import msgspec
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response

from alerts.api_models import Problem
from alerts.auth import Principal
from alerts.http_boundary import StrictRoute
from alerts.http_types import PrincipalDependency, RegionCode, Text
from console import registry_models as m
from foundation.clock import Clock, SystemClock
from registry import model, records
from registry.errors import InvalidRecord, RecordConflict, RecordNotFound, RegionForbidden
from registry.search import DEFAULT_LIMIT, MAX_LIMIT, WearerQuery
from registry.store import AUDIT_MAX_LIMIT, RegistryStore

log = logging.getLogger(__name__)

PREFIX: Final = "/api/v1"
TAGS: Final[list[str | Any]] = ["registry"]
#: The roles that may change the registry (docs/registry-database.md, "Roles").
WRITERS: Final = ("clerk", "admin")

WearerId = Annotated[str, Path(pattern=m.ID_PATTERN, description="Wearer id")]
DeviceId = Annotated[str, Path(pattern=m.ID_PATTERN, description="Device id")]
ZoneId = Annotated[str, Path(pattern=m.ID_PATTERN, description="Zone id")]

_READ: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}}
_WRITE: Final[dict[int | str, dict[str, Any]]] = {
    **_READ, 403: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem}}
_LIST: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": Problem}, 503: {"model": Problem}}


class WearerAlerts(Protocol):
    """Ends a deactivated wearer's alerts (``alerts.store.AlertStore``)."""

    def end_for_wearer(self, wearer_id: str, *, by: str, reason: str, now_ms: int) -> list[int]:
        """Resolve the wearer's unresolved alerts; returns their ids."""
        ...


def registry_router(store: RegistryStore, principal: PrincipalDependency, *,
                    alerts: WearerAlerts | None = None,
                    on_alert_change: Callable[[int], None] | None = None,
                    clock: Clock | None = None) -> APIRouter:
    """The registry endpoints on ``store``, authenticated by ``principal``. ``alerts`` ends
    a deactivated wearer's alerts (None: the service has no alerts); ``on_alert_change``
    wakes the alert workers after (``AlertService.changed``)."""
    now_ms = (clock or SystemClock()).now_ms
    router = APIRouter(prefix=PREFIX, route_class=StrictRoute, tags=TAGS)
    Caller = Annotated[Principal, Depends(principal)]

    # --- Wearers ---------------------------------------------------------------------------

    @router.get("/wearers", responses=_LIST)
    def list_wearers(
        caller: Caller,
        q: Annotated[Text | None, Query(min_length=1, max_length=100, description=(
            "id, name (prefix or substring), phone, device id or IMEI, ID-card number"))] = None,
        region: Annotated[RegionCode | None, Query(description="this region and the regions"
                                                               " below it")] = None,
        active: Annotated[bool | None, Query(description="absent: both")] = None,
        care_category: Annotated[model.CareCategory | None, Query()] = None,
        living_situation: Annotated[model.LivingSituation | None, Query()] = None,
        after: Annotated[str | None, Query(pattern=m.ID_PATTERN,
                                           description="next_after of the last page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> m.WearerPage:
        """Wearers of the caller's regions matching every filter given, by id."""
        query = WearerQuery(q=q, region=region, active=active, care_category=care_category,
                            living_situation=living_situation, after=after, limit=limit)
        rows = store.search_wearers(query, scopes=caller.region_filter())
        return m.WearerPage(wearers=[m.WearerSummary.model_validate(r) for r in rows],
                            next_after=rows[-1]["id"] if len(rows) == limit else None)

    @router.post("/wearers", status_code=201, responses=_WRITE)
    def create_wearer(caller: Caller, body: m.WearerIn) -> m.Wearer:
        """Enrol a wearer (clerk, admin)."""
        _require_writer(caller)
        with _refusals():
            wearer = _convert(body.model_dump(mode="json"), model.WearerIn)
            return m.Wearer.model_validate(store.create_wearer(
                wearer, actor=caller.name, scopes=caller.region_filter()))

    @router.get("/wearers/{wearer_id}", responses=_READ)
    def get_wearer(caller: Caller, wearer_id: WearerId) -> m.Wearer:
        """One wearer with devices, contacts, zones and binding history."""
        with _refusals():
            return m.Wearer.model_validate(
                store.get_wearer(wearer_id, scopes=caller.region_filter()))

    @router.patch("/wearers/{wearer_id}", responses=_WRITE)
    def update_wearer(caller: Caller, wearer_id: WearerId, body: m.WearerPatch) -> m.Wearer:
        """Change the fields given, if ``version`` is still the stored one (else 409)."""
        _require_writer(caller)
        with _refusals():
            patch = _convert(body.model_dump(mode="json", exclude_unset=True), model.WearerPatch)
            return m.Wearer.model_validate(store.update_wearer(
                wearer_id, patch, actor=caller.name, scopes=caller.region_filter()))

    @router.post("/wearers/{wearer_id}/deactivate", responses=_WRITE)
    def deactivate_wearer(caller: Caller, wearer_id: WearerId, body: m.DeactivateIn
                          ) -> m.Wearer:
        """Deactivate (moved away, deceased): devices freed, alerts resolved, history kept."""
        _require_writer(caller)
        scopes = caller.region_filter()
        with _refusals():
            try:
                record = store.deactivate_wearer(wearer_id, reason=body.reason, note=body.note,
                                                 actor=caller.name, scopes=scopes)
            except RecordConflict:
                # Already inactive: a retry after the alerts could not be ended finishes that.
                _end_alerts(caller, wearer_id, body.reason)
                raise
            _end_alerts(caller, wearer_id, body.reason)
            return m.Wearer.model_validate(record)

    def _end_alerts(caller: Principal, wearer_id: str, reason: str) -> None:
        if alerts is None:
            return
        try:
            ended = alerts.end_for_wearer(wearer_id, by=caller.name,
                                          reason=f"wearer deactivated ({reason})",
                                          now_ms=now_ms())
        except Exception:
            # Deactivated, but their alerts still escalate: the caller gets 503 and retries
            # (the retry ends them, see the module docstring); say so where people look.
            log.error("wearer %s deactivated but their alerts could not be ended", wearer_id)
            raise
        if ended:
            log.info("wearer %s deactivated: alerts %s resolved", wearer_id, ended)
        for alert_id in ended:
            if on_alert_change is not None:
                try:
                    on_alert_change(alert_id)
                except Exception:  # committed; the workers' own poll catches up
                    log.warning("on_alert_change(%d) failed", alert_id, exc_info=True)

    @router.put("/wearers/{wearer_id}/contacts", responses=_WRITE)
    def replace_contacts(caller: Caller, wearer_id: WearerId, body: m.ContactsIn
                         ) -> m.ContactList:
        """Replace the wearer's contacts (ordered: the first is called first)."""
        _require_writer(caller)
        with _refusals():
            contacts = _convert([c.model_dump(mode="json") for c in body.contacts],
                                list[model.Contact], prefix=("contacts",))
            rows = store.replace_contacts(wearer_id, contacts, actor=caller.name,
                                          scopes=caller.region_filter())
        return m.ContactList(contacts=[m.Contact.model_validate(r) for r in rows])

    @router.put("/wearers/{wearer_id}/zones/{zone_id}", responses=_WRITE)
    def put_zone(caller: Caller, wearer_id: WearerId, zone_id: ZoneId,
                 body: Annotated[m.ZoneIn, Body()]) -> m.Zone:
        """Create or replace the wearer's zone ``zone_id`` (WGS-84)."""
        _require_writer(caller)
        with _refusals():
            zone = _convert({**body.model_dump(mode="json", exclude_none=True), "id": zone_id},
                            model.ZoneIn)
            return m.Zone.model_validate(store.put_zone(
                wearer_id, zone, actor=caller.name, scopes=caller.region_filter()))

    @router.delete("/wearers/{wearer_id}/zones/{zone_id}", status_code=204,
                   response_class=Response, responses=_WRITE)
    def delete_zone(caller: Caller, wearer_id: WearerId, zone_id: ZoneId) -> None:
        """Delete the wearer's zone ``zone_id``."""
        _require_writer(caller)
        with _refusals():
            store.delete_zone(wearer_id, zone_id, actor=caller.name,
                              scopes=caller.region_filter())

    @router.get("/wearers/{wearer_id}/audit", responses=_READ)
    def wearer_audit(
        caller: Caller, wearer_id: WearerId,
        before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description=(
            "next_before_id of the last page"))] = None,
        limit: Annotated[int, Query(ge=1, le=AUDIT_MAX_LIMIT)] = 50,
    ) -> m.AuditPage:
        """The wearer's changes, newest first (their devices' bindings included)."""
        with _refusals():
            rows = store.wearer_audit(wearer_id, scopes=caller.region_filter(),
                                      before_id=before_id, limit=limit)
        return m.AuditPage(entries=[m.AuditEntry.model_validate(r) for r in rows],
                           next_before_id=rows[-1]["id"] if len(rows) == limit else None)

    # --- Devices ---------------------------------------------------------------------------

    @router.post("/devices", status_code=201, responses=_WRITE)
    def create_device(caller: Caller, body: m.DeviceIn) -> m.DeviceDetail:
        """Register a device as unbound stock (clerk, admin)."""
        _require_writer(caller)
        with _refusals():
            device = _convert(body.model_dump(mode="json"), model.DeviceIn)
            return m.DeviceDetail.model_validate(store.create_device(
                device, actor=caller.name, scopes=caller.region_filter()))

    @router.get("/devices/{device_id}", responses=_READ)
    def get_device(caller: Caller, device_id: DeviceId) -> m.DeviceDetail:
        """One device record with its binding history (its live state: ``GET /devices``)."""
        with _refusals():
            return m.DeviceDetail.model_validate(
                store.get_device(device_id, scopes=caller.region_filter()))

    @router.patch("/devices/{device_id}", responses=_WRITE)
    def update_device(caller: Caller, device_id: DeviceId, body: m.DevicePatch
                      ) -> m.DeviceDetail:
        """Change the fields given, if ``version`` is still the stored one (else 409)."""
        _require_writer(caller)
        with _refusals():
            patch = _convert(body.model_dump(mode="json", exclude_unset=True), model.DevicePatch)
            return m.DeviceDetail.model_validate(store.update_device(
                device_id, patch, actor=caller.name, scopes=caller.region_filter()))

    @router.post("/devices/{device_id}/bind", responses=_WRITE)
    def bind(caller: Caller, device_id: DeviceId, body: m.BindIn) -> m.DeviceDetail:
        """Bind the device to a wearer; it takes the wearer's region."""
        _require_writer(caller)
        with _refusals():
            return m.DeviceDetail.model_validate(store.bind(
                device_id, body.wearer_id, actor=caller.name, scopes=caller.region_filter()))

    @router.post("/devices/{device_id}/unbind", responses=_WRITE)
    def unbind(caller: Caller, device_id: DeviceId, body: m.UnbindIn) -> m.DeviceDetail:
        """End the device's current binding."""
        _require_writer(caller)
        with _refusals():
            return m.DeviceDetail.model_validate(store.unbind(
                device_id, reason=body.reason, actor=caller.name,
                scopes=caller.region_filter()))

    return router


def _require_writer(caller: Principal) -> None:
    if caller.role not in WRITERS:
        raise HTTPException(403, f"only {', '.join(WRITERS)} may change the registry"
                                 f" (you are {caller.role})")


T = TypeVar("T")


def _convert(data: Any, type_: type[T], *, prefix: tuple[str | int, ...] = ()) -> T:
    """The API's body as the registry's struct: its own rules (a polygon with a centre,
    dates that disagree, an unknown time zone) become InvalidRecord naming the field."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise records.invalid(exc, prefix=prefix) from None


@contextmanager
def _refusals() -> Iterator[None]:
    """The store's refusals as HTTP answers (see the module docstring)."""
    try:
        yield
    except RecordNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except RegionForbidden as exc:
        raise HTTPException(403, str(exc)) from None
    except RecordConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except InvalidRecord as exc:
        raise HTTPException(422, [{"loc": ["body", *exc.field], "msg": exc.reason,
                                   "type": "record_invalid"}]) from None


__all__ = ["WRITERS", "WearerAlerts", "registry_router"]
