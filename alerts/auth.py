"""API tokens: who may call the alerts API, in which role, for which regions (issue #5).

The tokens file (``[api] tokens_file``; YAML, or JSON by its ``.json`` suffix) is a list of
entries, each ``{name, token_sha256, role, regions}`` (``docs/api.md``). It is decoded once, at
start-up, into frozen structs; a bad entry raises :class:`~foundation.errors.ConfigError` naming
the file and the JSON path of the field (``$[2].token_sha256``).

Why SHA-256 and not argon2: API tokens are minted by :func:`new_token` with 256 bits from
``secrets``, so nobody can guess one from its hash, and a slow, salted password hash adds nothing
but a deliberate ~50 ms of CPU on every request. argon2 exists to slow down dictionary attacks
on *human-chosen* passwords; the duty console's password login (a later part of issue #5) uses
it. Only the hash is stored, so a leaked tokens file grants nothing. The presented token is
hashed and compared with :func:`hmac.compare_digest` against every entry, without stopping at
the first match, so timing says nothing about which entries exist.

A token's ``name`` is the actor written to the alert audit trail; ``system`` is reserved for the
service itself. ``regions: ["*"]`` sees every region (dispatch centres, supervisors); a
national division code sees itself and every code below it (``3710``, the city of Weihai, sees
its districts and streets: :mod:`schemas.regions`). The ``clerk`` role reads alerts but does not
act on them (:data:`ACTING_ROLES`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from foundation.documents import decode_document, format_of, read_document
from foundation.errors import ConfigError
from schemas.regions import ALL_REGIONS, covers_any, narrow

Role = Literal["dispatch", "officer", "supervisor", "admin", "clerk"]
#: The roles that act on alerts (docs/registry-database.md, "Roles"); ``clerk`` reads them.
ACTING_ROLES: Final[tuple[Role, ...]] = ("dispatch", "officer", "supervisor", "admin")
#: Reserved actor name of the service's own audit entries (``alerts.store.SYSTEM``).
_RESERVED_NAMES: Final = frozenset({"system"})

# \Z, not $: `$` also matches before a final newline ("ops\n" would be a second actor "ops").
TokenName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.@-]{1,64}\Z")]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}\Z")]
RegionOrAll = Annotated[str, Meta(pattern=r"^(\*|[a-z0-9-]{1,32})\Z")]


class TokenEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of the tokens file."""

    name: TokenName
    token_sha256: Sha256Hex
    role: Role
    regions: Annotated[list[RegionOrAll], Meta(min_length=1)]

    def __post_init__(self) -> None:
        if ALL_REGIONS in self.regions and len(self.regions) > 1:
            # "*" beside codes is almost certainly an editing mistake; refuse to guess.
            raise ValueError('regions must be ["*"] alone or a list of region codes')
        if self.name in _RESERVED_NAMES:
            raise ValueError(f"name {self.name!r} is reserved for the service")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: the token's name, role and regions (``("*",)`` = all)."""

    name: str
    role: Role
    regions: tuple[str, ...]

    @property
    def all_regions(self) -> bool:
        """Whether the caller sees every region."""
        return ALL_REGIONS in self.regions

    def can_see(self, region: str) -> bool:
        """Whether alerts (devices, wearers, changes) of ``region`` are visible to the caller:
        one of its regions is ``region`` or lies above it (``schemas.regions.covers``)."""
        return covers_any(self.regions, region)

    def region_filter(self) -> list[str] | None:
        """The caller's regions as a query filter for ``schemas.regions.sql_in_scope``
        (each covers the codes below it): ``None`` means no filter (all regions)."""
        return None if self.all_regions else list(self.regions)

    def narrowed(self, requested: Iterable[str] | None) -> list[str] | None:
        """The query filter for a ``?region=`` narrowing (None: none asked): the requested
        regions cut down to what the caller sees, never wider (``schemas.regions.narrow``)."""
        if requested is None:
            return self.region_filter()
        return narrow(None if self.all_regions else self.regions, requested)

    def may_act(self) -> bool:
        """Whether the caller may act on alerts (claim, resolve, annotate, command devices):
        every role but the enrolment clerk, who reads them."""
        return self.role in ACTING_ROLES


class TokenTable:
    """The known tokens, by hash. Empty when no tokens file is configured: every request
    but ``/health`` is then refused."""

    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        names: set[str] = set()
        hashes: set[str] = set()
        for i, e in enumerate(entries):
            digest = e.token_sha256.lower()
            if e.name in names:
                raise ConfigError(f"duplicate token name {e.name!r} - at `$[{i}].name`")
            if digest in hashes:
                # Two names for one token would make the audit trail's actor ambiguous.
                raise ConfigError(f"duplicate token_sha256 - at `$[{i}].token_sha256`")
            names.add(e.name)
            hashes.add(digest)
            self._entries.append(
                (digest.encode(), Principal(e.name, e.role, tuple(e.regions))))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose hash matches ``token``, or ``None``."""
        digest = hash_token(token).encode()
        found: Principal | None = None
        for expected, principal in self._entries:
            # No early exit: every request costs the same whichever entry (if any) matches.
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


def hash_token(token: str) -> str:
    """The lowercase hex SHA-256 of ``token`` (UTF-8), as written in the tokens file."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token (43 URL-safe characters, 256 random bits) and its SHA-256 for the file.

    Hand the token to its holder once; store only the hash.
    """
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def parse_tokens(data: bytes, *, fmt: Literal["yaml", "json"],
                 source: str | Path | None = None) -> TokenTable:
    """Decode and validate a tokens document. Raises ConfigError naming the bad field (and
    ``source``, the file it came from, when given)."""
    label = "invalid tokens file" if source is None else f"invalid tokens file {source}"
    entries = decode_document(data, fmt=fmt, type=list[TokenEntry], error=ConfigError,
                              label=label)
    try:
        return TokenTable(entries)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def load_tokens(path: str | Path) -> TokenTable:
    """Read a tokens file (JSON when its suffix is ``.json``, YAML otherwise); errors name the
    file and the field."""
    p = Path(path)
    data = read_document(p, error=ConfigError, label=f"cannot read tokens file {p}")
    return parse_tokens(data, fmt="json" if format_of(p) == "json" else "yaml", source=p)


def main() -> None:
    """``python -m alerts.auth``: print a new token and the hash to put in the tokens file."""
    token, digest = new_token()
    print(f"token (give to its holder, shown once): {token}")
    print(f"token_sha256 (for the tokens file):     {digest}")


if __name__ == "__main__":
    main()
