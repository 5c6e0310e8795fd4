"""The device registry file: wearers, their devices, family contacts and safe zones.

YAML or JSON, decoded by :mod:`foundation.documents` (encoding, size, nesting and alias limits)
and validated into frozen structs with errors that give the path of the bad entry
(``$.wearers[3].zones[0].radius_m``). The format is documented in ``docs/registry.md``; an example
ships as ``deploy/registry.example.yaml``.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from foundation.documents import DocumentLimits, decode_document, format_of, read_document
from foundation.errors import RegistryError
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN, Latitude, Longitude

# Used with fullmatch: a `$` would also match before a final newline.
_WINDOW_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")

_SPACES: Final = r"\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_EMAIL_PART: Final = r"[^@\x00-\x20\x7f-\x9f" + _SPACES + "]+"
_EMAIL: Final = f"{_EMAIL_PART}@{_EMAIL_PART}"
#: A contact's email, in the API's models (JSON Schema: ECMAScript ``$``): one @, no controls and
#: no spaces on either side. Spelled out rather than ``\s``: the API's validator (Rust regex:
#: Unicode White_Space, with U+0085) and the schema's readers (ECMAScript: without U+0085, with
#: U+FEFF) disagree on ``\s``: the fuzzer sent as valid what the API refused.
EMAIL_PATTERN: Final = f"^{_EMAIL}$"

Id = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
Region = Annotated[str, Meta(pattern=REGION_PATTERN)]
Phone = Annotated[str, Meta(pattern=r"^\+?[0-9 -]{3,20}\Z")]

#: A city's registry: 100,000 wearers with zones of 32 points come to about 150 MB; aliases may
#: share a care home's zones among its residents.
REGISTRY_LIMITS: Final = DocumentLimits(max_bytes=256 * 1024 * 1024, max_aliases=100_000,
                                        max_alias_nodes=1_000_000)

# gc=False on every record: a city's registry is a million of them, reloaded live while
# ingest runs (ingest/registry_watch.py), and each collection of the cyclic GC walks every
# tracked object with the GIL held. Frozen records of plain values never form a cycle.


class Point(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """A WGS-84 position."""

    lat: Latitude
    lon: Longitude


class Zone(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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
        if self.active is not None and not _WINDOW_RE.fullmatch(self.active):
            raise ValueError(f"active must be HH:MM-HH:MM, got {self.active!r}")


class Device(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A device worn by (or installed for) the wearer."""

    id: Id
    kind: Literal["bracelet", "watch", "fall_sensor", "home_sensor", "pendant"]
    model: str | None = None
    #: What its positions are in: WGS-84 (most devices) or GCJ-02 (models that report Chinese
    #: map coordinates); ingest converts GCJ-02 positions to WGS-84 before storing them.
    coord_system: Literal["wgs84", "gcj02"] = "wgs84"


class Contact(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A family contact, in calling order."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    phone: Phone
    relation: str | None = None
    #: Optional address for the email channel (EMAIL_PATTERN, ending in ``\Z``: Python's ``$``
    #: would also match before a final newline).
    email: Annotated[str, Meta(pattern=f"^{_EMAIL}\\Z", max_length=254)] | None = None
    #: Language of the messages this contact receives.
    language: Literal["zh", "en"] = "zh"
    #: How alerts reach this contact (issue #5): SMS by default; ``voice`` (a text-to-speech
    #: call) for contacts who do not read SMS; ``email`` needs ``email``.
    channels: Annotated[tuple[Literal["sms", "voice", "email"], ...], Meta(min_length=1)] = ("sms",)

    def __post_init__(self) -> None:
        if "email" in self.channels and self.email is None:
            raise ValueError("the email channel needs an email address")


class Wearer(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # OSError: a directory ("Asia") or a name too long for the file system.
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc


class Registry(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """The whole registry file."""

    wearers: list[Wearer]


def parse_registry(data: bytes, *, fmt: Literal["yaml", "json"],
                   source: str | Path | None = None) -> Registry:
    """Decode and validate a registry document. Raises RegistryError naming the bad entry (and
    ``source``, the file it came from, when given)."""
    label = "invalid registry" if source is None else f"invalid registry {source}"
    reg = decode_document(data, fmt=fmt, type=Registry, error=RegistryError, label=label,
                          limits=REGISTRY_LIMITS)
    _check_unique(reg, label)
    return reg


def _check_unique(reg: Registry, label: str) -> None:
    seen_w: set[str] = set()
    seen_d: dict[str, str] = {}
    for i, w in enumerate(reg.wearers):
        if w.id in seen_w:
            raise RegistryError(f"{label}: duplicate wearer id {w.id!r} - at `$.wearers[{i}].id`")
        seen_w.add(w.id)
        for j, d in enumerate(w.devices):
            if d.id in seen_d:
                raise RegistryError(
                    f"{label}: device {d.id!r} is listed for both {seen_d[d.id]!r} and "
                    f"{w.id!r} - at `$.wearers[{i}].devices[{j}].id`")
            seen_d[d.id] = w.id
        zone_ids = [z.id for z in w.zones]
        if len(set(zone_ids)) != len(zone_ids):
            raise RegistryError(f"{label}: duplicate zone id in `$.wearers[{i}].zones`")


def load_registry(path: str | Path) -> Registry:
    """Read a registry file: JSON when its suffix is ``.json``, YAML otherwise."""
    p = Path(path)
    data = read_document(p, error=RegistryError, label=f"cannot read registry {p}",
                         limits=REGISTRY_LIMITS)
    return parse_registry(data, fmt="json" if format_of(p) == "json" else "yaml", source=p)
