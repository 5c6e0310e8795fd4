"""The device registry file: wearers, their devices, family contacts and safe zones.

YAML or JSON, validated into frozen structs with errors that give the path of the bad entry
(``$.wearers[3].zones[0].radius_m``). The format is documented in ``docs/registry.md``; an example
ships as ``deploy/registry.example.yaml``.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from eldercare.errors import RegistryError
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN, Latitude, Longitude

_WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")

Id = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
Region = Annotated[str, Meta(pattern=REGION_PATTERN)]
Phone = Annotated[str, Meta(pattern=r"^\+?[0-9 -]{3,20}$")]


class Point(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A WGS-84 position."""

    lat: Latitude
    lon: Longitude


class Zone(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A safe zone: a circle (``center`` + ``radius_m``) or a polygon (``points``, lat/lon pairs).

    ``active`` is an optional local-time window ``HH:MM-HH:MM`` (may wrap midnight).
    """

    id: Id
    kind: Literal["circle", "polygon"]
    center: Point | None = None
    radius_m: Annotated[float, Meta(gt=0, le=100_000)] | None = None
    points: list[tuple[Latitude, Longitude]] | None = None
    active: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "circle" and (self.center is None or self.radius_m is None):
            raise ValueError("a circle zone needs center and radius_m")
        if self.kind == "polygon" and (self.points is None or len(self.points) < 3):
            raise ValueError("a polygon zone needs at least 3 points")
        if self.active is not None and not _WINDOW_RE.match(self.active):
            raise ValueError(f"active must be HH:MM-HH:MM, got {self.active!r}")


class Device(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A device worn by (or installed for) the wearer."""

    id: Id
    kind: Literal["bracelet", "watch", "fall_sensor", "home_sensor", "pendant"]
    model: str | None = None


class Contact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A family contact, in calling order."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    phone: Phone
    relation: str | None = None
    #: Optional address for the email channel.
    email: Annotated[str, Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)] | None = None
    #: Language of the messages this contact receives.
    language: Literal["zh", "en"] = "zh"
    #: How alerts reach this contact (issue #5): SMS by default; ``voice`` (a text-to-speech
    #: call) for contacts who do not read SMS; ``email`` needs ``email``.
    channels: Annotated[tuple[Literal["sms", "voice", "email"], ...], Meta(min_length=1)] = ("sms",)

    def __post_init__(self) -> None:
        if "email" in self.channels and self.email is None:
            raise ValueError("the email channel needs an email address")


class Wearer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An elderly person under watch."""

    id: Id
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    region: Region
    birth_year: Annotated[int, Meta(ge=1900, le=2100)] | None = None
    conditions: list[str] = []
    timezone: str = "Asia/Shanghai"
    home: Point | None = None
    devices: list[Device] = []
    contacts: list[Contact] = []
    zones: list[Zone] = []

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc


class Registry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole registry file."""

    wearers: list[Wearer]


def parse_registry(data: bytes, *, fmt: Literal["yaml", "json"]) -> Registry:
    """Decode and validate a registry document. Raises RegistryError naming the bad entry."""
    try:
        if fmt == "yaml":
            reg = msgspec.yaml.decode(data, type=Registry)
        else:
            reg = msgspec.json.decode(data, type=Registry)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RegistryError(f"invalid registry: {exc}") from exc
    _check_unique(reg)
    return reg


def _check_unique(reg: Registry) -> None:
    seen_w: set[str] = set()
    seen_d: dict[str, str] = {}
    for i, w in enumerate(reg.wearers):
        if w.id in seen_w:
            raise RegistryError(f"invalid registry: duplicate wearer id {w.id!r} - at `$.wearers[{i}].id`")
        seen_w.add(w.id)
        for j, d in enumerate(w.devices):
            if d.id in seen_d:
                raise RegistryError(
                    f"invalid registry: device {d.id!r} is listed for both {seen_d[d.id]!r} and "
                    f"{w.id!r} - at `$.wearers[{i}].devices[{j}].id`")
            seen_d[d.id] = w.id
        zone_ids = [z.id for z in w.zones]
        if len(set(zone_ids)) != len(zone_ids):
            raise RegistryError(f"invalid registry: duplicate zone id in `$.wearers[{i}].zones`")


def load_registry(path: str | Path) -> Registry:
    """Read a ``.yaml``/``.yml``/``.json`` registry file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc}") from exc
    return parse_registry(data, fmt="json" if p.suffix.lower() == ".json" else "yaml")
