"""The documents of the registry API (console/registry_api.py): request and response bodies.

Pydantic models, so the OpenAPI document describes them (the house pattern of
alerts/api_models.py). The rules are those of :mod:`registry.model` (msgspec, shared with the
importer), written again here as JSON Schema constraints so clients and fuzzers know them; a
body is validated here and then converted into the registry's struct, which checks the rules
no schema can state (a phone number's validity, an ID-card check digit) and answers 422 the
same way. Text fields refuse what cannot be stored (U+0000, lone surrogates:
:data:`alerts.http_types.Text`).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from alerts.http_types import Text, UtcDatetime
from registry.model import (
    CareCategory,
    CoordSystem,
    DeactivationReason,
    DeviceKind,
    LivingSituation,
    Protocol,
    Sex,
)
from schemas.registry import EMAIL_PATTERN

#: Ids of wearers, devices and zones (schemas.readings.DEVICE_ID_PATTERN).
ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
REGION_PATTERN: Final = r"^[a-z0-9-]{1,32}$"
PHONE_PATTERN: Final = r"^\+?[0-9 ()-]{3,24}$"
#: The registry file's contact phone (schemas.registry.Phone): no parentheses.
CONTACT_PHONE_PATTERN: Final = r"^\+?[0-9 -]{3,20}$"
WINDOW_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Region = Annotated[str, StringConstraints(pattern=REGION_PATTERN)]
Name = Annotated[Text, StringConstraints(min_length=1, max_length=100)]
Phone = Annotated[str, StringConstraints(pattern=PHONE_PATTERN)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
# The vocabularies are the registry's own (one definition for API, import and console).
DeviceProtocol = Protocol
Imei = Annotated[str, StringConstraints(pattern=r"^[0-9]{14,16}$")]
IdCard = Annotated[str, StringConstraints(pattern=r"^[0-9]{17}[0-9Xx]$")]
Condition = Annotated[Text, StringConstraints(min_length=1, max_length=100)]
#: The IANA zones this machine knows, listed in the schema (what a client may send is exactly
#: what the server accepts).
TIMEZONES: Final = sorted(zoneinfo.available_timezones())


def _known_zone(value: str) -> str:
    if value not in TIMEZONES:
        raise PydanticCustomError("timezone_unknown", "Not an IANA time zone")
    return value


Timezone = Annotated[str, AfterValidator(_known_zone),
                     WithJsonSchema({"type": "string", "enum": TIMEZONES})]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Point(_In):
    """A WGS-84 position."""

    lat: Latitude
    lon: Longitude


class Guardian(_In):
    """The legal guardian or the relative who answers for the wearer (监护人)."""

    name: Name
    phone: Phone | None = None
    relation: Annotated[Text, StringConstraints(max_length=50)] | None = None


class WearerIn(_In):
    """A wearer to enrol. ``id_card`` is write-only (answered as ``id_card_masked``)."""

    id: Id
    name: Name
    region: Region = Field(description="a code of the region tree, within your regions")
    sex: Sex | None = None
    birth_year: Annotated[int, Field(ge=1900, le=2100)] | None = None
    birth_date: dt.date | None = Field(default=None, description="must agree with birth_year")
    address: Annotated[Text, StringConstraints(max_length=500)] | None = None
    phone: Phone | None = None
    living_situation: LivingSituation | None = None
    care_categories: list[CareCategory] = Field(default=[], max_length=5)
    conditions: list[Condition] = Field(default=[], max_length=20)
    guardian: Guardian | None = None
    notes: Annotated[Text, StringConstraints(max_length=2000)] | None = None
    id_card: IdCard | None = Field(default=None, description="resident ID-card number, 18"
                                   " characters (GB 11643); stored encrypted, never returned")
    timezone: Timezone = Field(default="Asia/Shanghai", description="IANA time zone")
    home: Point | None = None


class WearerPatch(_In):
    """An edit: ``version`` as read, and the fields to change (``null`` clears one)."""

    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    # Absent = unchanged (the API reads the fields set); the default is never stored.
    name: Annotated[Name, Field(default=None)]
    region: Annotated[Region, Field(default=None)]
    sex: Sex | None = None
    birth_year: Annotated[int, Field(ge=1900, le=2100)] | None = None
    birth_date: dt.date | None = None
    address: Annotated[Text, StringConstraints(max_length=500)] | None = None
    phone: Phone | None = None
    living_situation: LivingSituation | None = None
    care_categories: Annotated[list[CareCategory], Field(default=None, max_length=5)]
    conditions: Annotated[list[Condition], Field(default=None, max_length=20)]
    guardian: Guardian | None = None
    notes: Annotated[Text, StringConstraints(max_length=2000)] | None = None
    id_card: IdCard | None = None
    timezone: Annotated[Timezone, Field(default=None)]
    home: Point | None = None


class DeactivateIn(_In):
    """Why the wearer leaves the service."""

    reason: DeactivationReason
    note: Annotated[Text, StringConstraints(max_length=2000)] | None = None


class ContactIn(_In):
    """A family contact, in calling order."""

    name: Name
    phone: Annotated[str, StringConstraints(pattern=CONTACT_PHONE_PATTERN)]
    relation: Annotated[Text, StringConstraints(max_length=50)] | None = None
    email: Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=254)] | None = None
    language: Literal["zh", "en"] = "zh"
    channels: Annotated[list[Literal["sms", "voice", "email"]],
                        Field(min_length=1, max_length=3)] = ["sms"]


class ContactsIn(_In):
    """The whole list of contacts, first called first (an empty list removes them all)."""

    contacts: list[ContactIn] = Field(max_length=10)


Window = Annotated[str, StringConstraints(pattern=WINDOW_PATTERN)]
_WINDOW_DOC: Final = "local time window HH:MM-HH:MM (may wrap midnight); null = always"


class CircleZoneIn(_In):
    """A circle zone in WGS-84."""

    kind: Literal["circle"]
    name: Name | None = None
    center: Point
    radius_m: Annotated[float, Field(gt=0, le=100_000)]
    active: Window | None = Field(default=None, description=_WINDOW_DOC)


class PolygonZoneIn(_In):
    """A polygon zone in WGS-84: ``[lat, lon]`` points, the ring closed implicitly."""

    kind: Literal["polygon"]
    name: Name | None = None
    points: Annotated[list[tuple[Latitude, Longitude]], Field(min_length=3, max_length=500)]
    active: Window | None = Field(default=None, description=_WINDOW_DOC)


#: A zone as drawn: the schema says which fields each kind has.
ZoneIn = Annotated[CircleZoneIn | PolygonZoneIn, Field(discriminator="kind")]


class DeviceIn(_In):
    """A device to register, as unbound stock."""

    id: Id
    kind: DeviceKind
    region: Region
    model: Annotated[Text, StringConstraints(max_length=100)] | None = None
    protocol: DeviceProtocol | None = None
    imei: Imei | None = None
    sim: Phone | None = None
    handed_out_on: dt.date | None = None
    coord_system: CoordSystem = "wgs84"


class DevicePatch(_In):
    """An edit of a device: ``version`` as read, and the fields to change."""

    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    kind: Annotated[DeviceKind, Field(default=None)]
    region: Annotated[Region, Field(default=None, description="unbound devices only")]
    model: Annotated[Text, StringConstraints(max_length=100)] | None = None
    protocol: DeviceProtocol | None = None
    imei: Imei | None = None
    sim: Phone | None = None
    handed_out_on: dt.date | None = None
    coord_system: Annotated[CoordSystem, Field(default=None)]
    retired: Annotated[bool, Field(default=None, description="true retires an unbound device;"
                                                             " false returns it to stock")]


class BindIn(_In):
    """The wearer to bind the device to."""

    wearer_id: Id


class UnbindIn(_In):
    """Why the binding ends (returned, broken, lost...)."""

    reason: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


# --- Answers ---------------------------------------------------------------------------------

class PointOut(BaseModel):
    """A WGS-84 position."""

    lat: float
    lon: float


class GuardianOut(BaseModel):
    """The guardian; phone in E.164."""

    name: str
    phone: str | None
    relation: str | None


class Binding(BaseModel):
    """One binding of a device to a wearer (open while ``unbound_at`` is null)."""

    device_id: str
    wearer_id: str
    bound_at: UtcDatetime
    bound_by: str
    unbound_at: UtcDatetime | None
    unbound_by: str | None
    unbind_reason: str | None


class Device(BaseModel):
    """A device record."""

    id: str
    kind: str
    region: str
    model: str | None
    protocol: str | None
    imei: str | None
    sim: str | None = Field(description="E.164")
    handed_out_on: dt.date | None
    coord_system: str
    wearer_id: str | None = Field(description="bound now to")
    retired_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    version: int


class DeviceDetail(Device):
    """A device with its binding history, newest first."""

    bindings: list[Binding]


class Contact(BaseModel):
    """A contact; ``priority`` 1 is called first; phone in E.164."""

    priority: int
    name: str
    phone: str
    relation: str | None
    email: str | None
    language: str
    channels: list[str]


class ContactList(BaseModel):
    """The wearer's contacts, first called first."""

    contacts: list[Contact]


class Zone(BaseModel):
    """A zone in WGS-84."""

    id: str
    name: str | None
    kind: str
    center: PointOut | None
    radius_m: float | None
    points: list[list[float]] | None
    active: str | None


class WearerSummary(BaseModel):
    """A wearer as listed."""

    id: str
    name: str
    sex: str | None
    birth_year: int | None
    region: str
    phone: str | None
    living_situation: str | None
    care_categories: list[str]
    active: bool
    id_card_masked: str | None
    device_ids: list[str]
    version: int


class WearerPage(BaseModel):
    """A page of wearers by id; pass ``next_after`` as ``after`` for the next one."""

    wearers: list[WearerSummary]
    next_after: str | None


class Wearer(BaseModel):
    """A wearer with devices, contacts, zones and binding history."""

    id: str
    name: str
    sex: str | None
    birth_year: int | None
    birth_date: dt.date | None
    address: str | None
    region: str
    phone: str | None = Field(description="E.164")
    living_situation: str | None
    care_categories: list[str]
    conditions: list[str]
    guardian: GuardianOut | None
    notes: str | None
    id_card_masked: str | None = Field(description="3710**********1234; the number itself is"
                                                   " never returned")
    timezone: str
    home: PointOut | None
    active: bool
    deactivated_at: UtcDatetime | None
    deactivation_reason: str | None
    deactivation_note: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    version: int
    devices: list[Device]
    contacts: list[Contact]
    zones: list[Zone]
    bindings: list[Binding]


class AuditEntry(BaseModel):
    """One change: who, when, what, the record before and after (ID-card number masked)."""

    id: int
    at: UtcDatetime
    actor: str
    action: str
    wearer_id: str | None
    device_id: str | None
    region: str | None
    before: JsonValue
    after: JsonValue


class AuditPage(BaseModel):
    """Newest first; pass ``next_before_id`` as ``before_id`` for older entries."""

    entries: list[AuditEntry]
    next_before_id: int | None
