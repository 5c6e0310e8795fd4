"""What a registry write or read can refuse, as the API and the importer report it.

Part of the one exception tree (:mod:`foundation.errors`)::

    RegistryError                   (foundation.errors)
    ├── RecordNotFound              no such wearer, device or zone *for this caller*: a record
    │                               outside the caller's regions is reported exactly like a
    │                               missing one (HTTP 404)
    ├── RecordConflict              the database's state forbids it: a stale ``version``, an id,
    │                               IMEI or ID-card number already taken, a device bound to
    │                               someone else, an inactive wearer, a region not in the tree
    │                               (HTTP 409)
    └── RegionForbidden             creating (or moving) a record into a region outside the
                                    caller's regions (HTTP 403)
    ValidationError                 (foundation.errors)
    └── InvalidRecord               a value is well-formed but wrong: a phone number that is no
                                    number, an ID-card check digit; ``field`` is its JSON path
                                    (HTTP 422)

Messages carry ids and codes only, never a name, a phone number or an ID-card number: they
reach logs and other people's screens.
"""

from __future__ import annotations

from foundation.errors import RegistryError, ValidationError


class RecordNotFound(RegistryError):
    """No such record for this caller (``kind``: wearer, device, zone; ``key``: its id)."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key} not found")
        self.kind = kind
        self.key = key


class RecordConflict(RegistryError):
    """The records as they stand forbid the change; the message says which and why."""


class RegionForbidden(RegistryError):
    """``region`` lies outside the caller's regions."""

    def __init__(self, region: str) -> None:
        super().__init__(f"region {region} is outside your regions")
        self.region = region


class InvalidRecord(ValidationError):
    """A value the schema cannot judge is wrong; ``field`` is its path (``("guardian",
    "phone")``), ``reason`` what is wrong (never the value)."""

    def __init__(self, field: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.field = field


__all__ = ["InvalidRecord", "RecordConflict", "RecordNotFound", "RegionForbidden"]
