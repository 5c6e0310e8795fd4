"""``/healthz`` and ``/readyz``: the probes a process supervisor or load balancer asks.

- **Liveness** (``/healthz``, and ``/api/v1/health`` for existing clients): the process serves
  requests and no worker thread has died (``foundation/supervisor.py``). 503 means "restart me";
  the service is then already stopping, to exit 70 (docs/supervision.md).
- **Readiness** (``/readyz``): alive, *and* the service can do its job now: connected to the MQTT
  broker, the database answering a query within ``DB_PROBE_TIMEOUT_S``, every worker running.
  503 means "send no traffic, page nobody yet": a broker or database outage is ridden out by the
  service itself (reconnects, the spool) and restarting it would not help.

Both answer without credentials and carry no data but check names. The checks themselves are
the caller's (``readiness``): this module only shapes the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from fastapi import APIRouter, Request, Response

from alerts.api_models import Health, Readiness
from foundation.supervisor import Death

#: The checks of a readiness probe: name -> passing (``mqtt``, ``database``, ...).
ReadinessChecks = Callable[[], Mapping[str, bool]]
Liveness = Callable[[], Sequence[Death]]

router = APIRouter(tags=["service"])


def dead_workers(request: Request) -> list[str]:
    """The workers that died, as the app's ``liveness`` reports them (none without one)."""
    liveness: Liveness | None = request.app.state.liveness
    return [d.worker for d in liveness()] if liveness is not None else []


def liveness_answer(request: Request, response: Response) -> Health:
    """The liveness document, and 503 once a worker died."""
    dead = dead_workers(request)
    if dead:
        response.status_code = 503
        return Health(status="failed", failed_workers=dead)
    return Health(status="ok")


@router.get("/healthz", responses={503: {"model": Health}})
async def healthz(request: Request, response: Response) -> Health:
    """Liveness (Kubernetes ``livenessProbe``): touches neither the broker nor the database."""
    return liveness_answer(request, response)


@router.get("/readyz", responses={503: {"model": Readiness}})
def readyz(request: Request, response: Response) -> Readiness:
    """Readiness (``readinessProbe``): every check of the service passes. Plain ``def``: the
    database check blocks, so it runs in the thread pool."""
    readiness: ReadinessChecks | None = request.app.state.readiness
    checks = dict(readiness()) if readiness is not None else {}
    dead = dead_workers(request)
    checks["workers"] = not dead
    ready = all(checks.values())
    if not ready:
        response.status_code = 503
    return Readiness(ready=ready, checks=checks, failed_workers=dead)


# HEAD answers like GET without a body (uptime checkers use HEAD).
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)
