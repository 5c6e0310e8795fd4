"""The registry's records as staff write them: API bodies and import rows (issue #12).

One vocabulary for the API, the console, CSV/XLSX import and export (docs/registry-database.md).
Validation errors name the field (msgspec's ``$.guardian.phone``), so the API's 422 and the import's
per-row, per-column report say the same thing.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Final, Literal, get_args

import msgspec
import phonenumbers
from msgspec import UNSET, Meta, UnsetType

from registry.errors import InvalidRecord
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN, Latitude, Longitude
from schemas.registry import Contact, Point, Zone

Id = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
Region = Annotated[str, Meta(pattern=REGION_PATTERN)]
Name = Annotated[str, Meta(min_length=1, max_length=100)]
Text = Annotated[str, Meta(max_length=500)]
#: A phone number as people write it (``+86 138 0000 0001``, ``0631-5212345``); normalized to
#: E.164 by ``phonenumbers`` where the record is stored (registry/store.py).
Phone = Annotated[str, Meta(pattern=r"^\+?[0-9 ()-]{3,24}\Z")]

Sex = Literal["female", "male"]
LivingSituation = Literal["alone", "empty_nest", "with_family", "care_home"]
CareCategory = Literal["special_difficulty", "low_income", "disabled", "dementia", "over_80"]
DeviceKind = Literal["bracelet", "watch", "fall_sensor", "home_sensor", "pendant"]
Protocol = Literal["mqtt", "watch3g", "gt06"]
CoordSystem = Literal["wgs84", "gcj02"]
DeactivationReason = Literal["moved_away", "deceased", "other"]

SEXES: Final = get_args(Sex)
LIVING_SITUATIONS: Final = get_args(LivingSituation)
CARE_CATEGORIES: Final = get_args(CareCategory)
DEVICE_KINDS: Final = get_args(DeviceKind)
PROTOCOLS: Final = get_args(Protocol)
COORD_SYSTEMS: Final = get_args(CoordSystem)
DEACTIVATION_REASONS: Final = get_args(DeactivationReason)

#: Chinese labels, as the civil-affairs lists write them (import accepts either form).
LABELS_ZH: Final[dict[str, str]] = {
    "female": "女", "male": "男",
    "alone": "独居", "empty_nest": "空巢", "with_family": "与家人同住", "care_home": "养老机构",
    "special_difficulty": "特困", "low_income": "低保", "disabled": "失能", "dementia": "失智",
    "over_80": "80岁以上",
    "bracelet": "手环", "watch": "手表", "fall_sensor": "跌倒报警器", "home_sensor": "居家报警器",
    "pendant": "呼叫器",
    "moved_away": "迁出", "deceased": "去世", "other": "其他",
}


class Guardian(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The wearer's legal guardian or the relative who answers for them (监护人)."""

    name: Name
    phone: Phone | None = None
    relation: Annotated[str, Meta(max_length=50)] | None = None


class WearerIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A wearer as created (``POST /wearers``) or replaced by an import row."""

    id: Id
    name: Name
    region: Region
    sex: Sex | None = None
    birth_year: Annotated[int, Meta(ge=1900, le=2100)] | None = None
    birth_date: dt.date | None = None
    address: Text | None = None
    phone: Phone | None = None
    living_situation: LivingSituation | None = None
    care_categories: list[CareCategory] = []
    conditions: list[Annotated[str, Meta(min_length=1, max_length=100)]] = []
    guardian: Guardian | None = None
    notes: Annotated[str, Meta(max_length=2000)] | None = None
    #: Write-only: stored as HMAC + ciphertext + masked form (registry/idcard.py).
    id_card: Annotated[str, Meta(max_length=32)] | None = None
    timezone: str = "Asia/Shanghai"
    home: Point | None = None

    def __post_init__(self) -> None:
        if self.birth_date is not None and self.birth_year is not None \
                and self.birth_date.year != self.birth_year:
            raise ValueError("birth_year and birth_date disagree")
        _check_timezone(self.timezone)


class DeviceIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A device as registered (``POST /devices``); bound to a wearer separately."""

    id: Id
    kind: DeviceKind
    region: Region
    model: Annotated[str, Meta(max_length=100)] | None = None
    protocol: Protocol | None = None
    imei: Annotated[str, Meta(pattern=r"^[0-9]{14,16}\Z")] | None = None
    sim: Phone | None = None
    handed_out_on: dt.date | None = None
    coord_system: CoordSystem = "wgs84"


#: How many contacts a wearer may have, and points a polygon zone.
MAX_CONTACTS: Final = 10
MAX_ZONE_POINTS: Final = 500
ZoneName = Annotated[str, Meta(min_length=1, max_length=100)]


def _check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a directory ("Asia") or a name too long for the file system.
        raise ValueError(f"unknown timezone {name!r}") from exc


class WearerPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An edit of a wearer (``PATCH /wearers/{id}``): the fields given replace the stored ones
    (``None`` clears one), the others stay. ``version`` is the version the editor read: a save
    since then makes the edit a conflict instead of silently undoing it."""

    version: Annotated[int, Meta(ge=1)]
    name: Name | UnsetType = UNSET
    region: Region | UnsetType = UNSET
    sex: Sex | None | UnsetType = UNSET
    birth_year: Annotated[int, Meta(ge=1900, le=2100)] | None | UnsetType = UNSET
    birth_date: dt.date | None | UnsetType = UNSET
    address: Text | None | UnsetType = UNSET
    phone: Phone | None | UnsetType = UNSET
    living_situation: LivingSituation | None | UnsetType = UNSET
    care_categories: list[CareCategory] | UnsetType = UNSET
    conditions: list[Annotated[str, Meta(min_length=1, max_length=100)]] | UnsetType = UNSET
    guardian: Guardian | None | UnsetType = UNSET
    notes: Annotated[str, Meta(max_length=2000)] | None | UnsetType = UNSET
    id_card: Annotated[str, Meta(max_length=32)] | None | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    home: Point | None | UnsetType = UNSET


class DevicePatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An edit of a device record (``PATCH /devices/{id}``), as :class:`WearerPatch`.
    ``region`` moves only an unbound device (a bound one follows its wearer); ``retired``
    True takes an unbound device out of service, False returns it to stock."""

    version: Annotated[int, Meta(ge=1)]
    kind: DeviceKind | UnsetType = UNSET
    region: Region | UnsetType = UNSET
    model: Annotated[str, Meta(max_length=100)] | None | UnsetType = UNSET
    protocol: Protocol | None | UnsetType = UNSET
    imei: Annotated[str, Meta(pattern=r"^[0-9]{14,16}\Z")] | None | UnsetType = UNSET
    sim: Phone | None | UnsetType = UNSET
    handed_out_on: dt.date | None | UnsetType = UNSET
    coord_system: CoordSystem | UnsetType = UNSET
    retired: bool | UnsetType = UNSET


class ZoneIn(Zone, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A zone as drawn on the console map (``PUT /wearers/{id}/zones/{zone_id}``), in WGS-84:
    the file's :class:`~schemas.registry.Zone` with a name, and no stray geometry (a circle
    has no points, a polygon no centre)."""

    name: ZoneName | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind == "circle" and self.points is not None:
            raise ValueError("a circle zone has center and radius_m, not points")
        if self.kind == "polygon" and (self.center is not None or self.radius_m is not None):
            raise ValueError("a polygon zone has points, not center or radius_m")
        if self.points is not None and len(self.points) > MAX_ZONE_POINTS:
            raise ValueError(f"a polygon zone has at most {MAX_ZONE_POINTS} points")


def e164(number: str, *, field: tuple[str | int, ...], region: str = "CN") -> str:
    """``number`` in E.164 (``+8613800000001``), read as a number of ``region`` when it has
    no country code (``0631-5212345`` -> ``+866315212345``). InvalidRecord naming ``field``
    when it is not a valid number (the number itself is never put in the message)."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        raise InvalidRecord(field, "not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidRecord(field, "not a valid phone number (with a country code unless"
                                   f" it is a {region} number)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


__all__ = [
    "CARE_CATEGORIES", "COORD_SYSTEMS", "DEACTIVATION_REASONS", "DEVICE_KINDS", "LABELS_ZH",
    "LIVING_SITUATIONS", "MAX_CONTACTS", "MAX_ZONE_POINTS", "PROTOCOLS", "SEXES",
    "CareCategory", "Contact", "CoordSystem", "DeactivationReason", "DeviceIn", "DeviceKind",
    "DevicePatch", "Guardian", "Latitude", "LivingSituation", "Longitude", "Point", "Protocol",
    "Sex", "WearerIn", "WearerPatch", "Zone", "ZoneIn", "e164",
]
