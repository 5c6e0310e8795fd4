"""Types shared by every HTTP endpoint module (alerts API, console login, stream, devices,
evidence): what a timestamp, a piece of text, a region code and a time parameter are at the
boundary.

Text is checked once, where a request is decoded, so that a value that can never be stored
never reaches the database: PostgreSQL text cannot hold U+0000, and a lone surrogate (JSON
allows ``"\\ud800"``) cannot be encoded as UTF-8. Either answers 422 naming the field, as any
other validation error, instead of failing deep inside psycopg as "database unavailable".
The OpenAPI document says the same through a ``pattern``, so generated clients and fuzzers
know a NUL is invalid (a pattern cannot express lone surrogates; valid JSON text has none).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from alerts.auth import Principal


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: A timestamp rendered in UTC ("Z"), whatever zone the database session returned it in.
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

#: A FastAPI dependency that authenticates the request (``alerts.api.require_principal``).
PrincipalDependency = Callable[..., Principal | Awaitable[Principal]]

#: The JSON Schema pattern of :data:`Text`: no U+0000 anywhere (ECMA-262 syntax, which Python's
#: ``re`` and Rust's ``regex`` read the same way).
NO_NUL_PATTERN: Final = r"^[^\x00]*$"


class JsonPattern:
    """Annotated metadata that puts ``pattern`` into the JSON Schema only; the validators
    beside it enforce the same rule in Python (pydantic's own ``pattern`` would run a second
    regex engine whose reading of escapes and classes might differ)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


def check_text(value: str) -> str:
    """``value`` if it can be stored as text: no U+0000 and no lone surrogate."""
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "Text must not contain U+0000 (NUL)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "text_unicode", "Text must be valid Unicode (no lone surrogates)") from None
    return value


#: A string the service can store and show: use it for every text field of a request body and
#: every text query parameter (``list[Text]`` for repeated ones).
Text = Annotated[str, AfterValidator(check_text), JsonPattern(NO_NUL_PATTERN)]

#: A region code (administrative area code, as in the registry and the MQTT topics) given to
#: narrow a list: anything else can match nothing, and is 422 rather than an empty page.
RegionCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]

# RFC 3339 date-time (section 5.6): seconds required, zone required ("Z" or +hh:mm).
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII)


def _rfc3339(value: Any) -> Any:
    # pydantic alone also takes Unix seconds ("1700000000"), dates without a time and times
    # without seconds; the API documents RFC 3339 with a zone and means it.
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise PydanticCustomError(
            "datetime_rfc3339",
            "Input should be an RFC 3339 date-time with a zone, e.g. 2026-03-02T02:00:00Z")
    return value


#: A time parameter: RFC 3339 with a zone ("Z" or "+08:00"), as the OpenAPI ``date-time``
#: format says; anything else (no zone, Unix seconds, a bare date) is 422.
ZonedDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
