"""Types shared by every HTTP endpoint module (alerts API, console stream, devices, evidence)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

from alerts.auth import Principal


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: A timestamp rendered in UTC ("Z"), whatever zone the database session returned it in.
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

#: A FastAPI dependency that authenticates the request (``alerts.api.require_principal``).
PrincipalDependency = Callable[..., Principal | Awaitable[Principal]]
