"""Region codes as a hierarchy (issue #12): China's administrative division codes.

A region code on a topic, a wearer, a device or an account is one string. The national codes
nest by prefix: province (2 digits) ``37``, city (4) ``3710`` Weihai, district/county (6)
``371002`` Huancui, street/township (9) ``371002001``, community/village (12)
``371002001001``. A role's region covers itself and everything below it: a city supervisor
(``3710``) sees every district, street and community of Weihai; a street officer
(``371002001``) sees that street and its communities, and nothing of the next street.

Codes that are not national division codes (``hz-west``, the test suite's ``t1a2b...``) stay
valid region names; they have no children and match only themselves, exactly as before the
hierarchy existed. So existing accounts, tokens, topics and registries keep their meaning.

This module is the one definition of "covers": :func:`covers` for Python (the live feed,
``Principal.can_see``) and :func:`sql_in_scope` for queries, which must agree (tested on the
same table of cases).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

#: ``*``: every region (dispatch centres, city-wide administrators).
ALL_REGIONS: Final = "*"

RegionLevel = Literal["province", "city", "district", "street", "community"]
#: Length of a national division code at each level.
LEVEL_LENGTHS: Final[dict[int, RegionLevel]] = {
    2: "province", 4: "city", 6: "district", 9: "street", 12: "community"}
_DIVISION = re.compile(r"[0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{9}|[0-9]{12}")


def is_division_code(code: str) -> bool:
    """Whether ``code`` is a national division code (2, 4, 6, 9 or 12 digits)."""
    return _DIVISION.fullmatch(code) is not None


def level_of(code: str) -> RegionLevel | None:
    """The level of a division code; None for any other region name."""
    return LEVEL_LENGTHS[len(code)] if is_division_code(code) else None


def parent_of(code: str) -> str | None:
    """The division code one level up (``371002001`` -> ``371002``); None at a province or for
    a code that is not a division code."""
    if not is_division_code(code) or len(code) == 2:
        return None
    lengths = sorted(LEVEL_LENGTHS)
    return code[: lengths[lengths.index(len(code)) - 1]]


def covers(scope: str, region: str) -> bool:
    """Whether a role holding ``scope`` sees ``region``: the same code, ``*``, or a division
    code below it (``3710`` covers ``371002001``; ``37100`` is not a code and covers nothing
    but itself)."""
    if scope == ALL_REGIONS or scope == region:
        return True
    return (is_division_code(scope) and is_division_code(region)
            and len(region) > len(scope) and region.startswith(scope))


def covers_any(scopes: Iterable[str], region: str) -> bool:
    """Whether any of ``scopes`` covers ``region``."""
    return any(covers(s, region) for s in scopes)


def ancestors_of(code: str) -> list[str]:
    """The division codes above ``code``, nearest first (``371002001`` -> ``371002``,
    ``3710``, ``37``); empty for a province or a code that is not a division code."""
    found: list[str] = []
    parent = parent_of(code)
    while parent is not None:
        found.append(parent)
        parent = parent_of(parent)
    return found


def narrow(scopes: Sequence[str] | None, requested: Iterable[str]) -> list[str]:
    """The part of ``requested`` (a ``?region=`` filter) that ``scopes`` may see, as regions
    for a query filter: never wider than ``scopes`` (``None``: every region).

    A requested region the scopes cover is kept whole; one above a scope is cut down to the
    scopes below it (a street officer asking for the city ``3710`` gets their street); any
    other gives nothing. The result is sorted and without repeats.
    """
    wanted = set(requested)
    if scopes is None or ALL_REGIONS in scopes:
        return sorted(wanted)
    kept = {r for r in wanted if covers_any(scopes, r)}
    kept |= {s for s in scopes for r in wanted if covers(r, s)}
    return sorted(kept)


def sql_in_scope(column: str, param: str) -> str:
    """A SQL condition: ``column`` lies within one of the regions of the ``text[]`` parameter
    ``%(param)s`` (psycopg named placeholders), by the rules of :func:`covers`.

    ``column`` is a column expression written by our code, never user input. A NULL parameter
    means no filter (every region), as ``Principal.region_filter()`` returns for ``*``.

    Written for speed on large tables (100,000 wearers): the prefix patterns are built once
    per query (an InitPlan: each division-code scope ``3710`` becomes ``3710_%``, at least one
    more character), each row costs one ``LIKE ANY`` and, only where that matched, a length
    and digits-only check (``translate``, cheaper than a regular expression) that keeps
    non-code names such as ``3710-west`` out. Only digit-only scopes become patterns, so no
    wildcard from a scope reaches ``LIKE``; a wildcard in the column fails the digits check.
    """
    p = f"%({param})s"
    return (f"({p}::text[] IS NULL OR {column} = ANY({p}::text[])"
            f" OR ({column} LIKE ANY (ARRAY("
            f"SELECT scope.code || '_%%' FROM unnest({p}::text[]) AS scope(code)"
            f" WHERE scope.code ~ '^([0-9]{{2}}|[0-9]{{4}}|[0-9]{{6}}|[0-9]{{9}})$'))"
            f" AND length({column}) IN (4, 6, 9, 12)"
            f" AND translate({column}, '0123456789', '') = ''))")
