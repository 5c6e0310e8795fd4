"""Finding wearers: the list and search behind ``GET /api/v1/wearers`` (issue #12).

One query string ``q`` matches any of the keys staff have at hand when a family calls: the
wearer id, a device id or IMEI bound to them, the phone of the wearer or the guardian (typed
any way: compared in E.164), an ID-card number (by its HMAC: the caller computes it, this
module never sees the number), or any part of the name. Filters narrow by region (a code
covers the codes below it, :func:`schemas.regions.sql_in_scope`, the same rule as the
caller's scopes), active, care category and living situation. Pages follow the wearer id
(keyset: ``after``).

How it stays fast at a city's 100,000 wearers without pg_trgm (not available everywhere):

- a ``q`` with a digit is a key (ids, phones, IMEIs and ID-card numbers have digits; names
  do not): one index probe per key (``wearers_pkey``, ``wearers_phone``,
  ``wearers_guardian_phone``, ``wearers_id_card_any``, ``devices_pkey``, ``devices_imei``;
  0011, 0013), no scan;
- any other ``q`` is a name (or an id without digits): the page walks the primary key in id
  order and stops at ``limit`` matches, so a common surname reads a few hundred rows and a
  rare full name reads the table once (benchmarks/registry_api.py has the figures);
- lists without ``q`` walk the primary key the same way, filters applied on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, LiteralString

import phonenumbers
import psycopg

from registry import records
from registry.model import CareCategory, LivingSituation
from schemas.regions import sql_in_scope

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class WearerQuery:
    """What a list or search asks for; None = no filter."""

    q: str | None = None
    region: str | None = None
    active: bool | None = None
    care_category: CareCategory | None = None
    living_situation: LivingSituation | None = None
    after: str | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1-{MAX_LIMIT}, got {self.limit}")


#: Filter fragment -> the parameter that enables it. Fixed SQL; values are bound parameters.
_FILTERS: Final = (
    (sql_in_scope("w.region", "scopes"), "scopes"),
    (sql_in_scope("w.region", "region"), "region"),
    ("w.active = %(active)s", "active"),
    ("%(care_category)s = ANY(w.care_categories)", "care_category"),
    ("w.living_situation = %(living_situation)s", "living_situation"),
    ("w.wearer_id > %(after)s", "after"),
    # A key with a digit (an id, a phone, an IMEI, an ID-card number) is looked up exactly,
    # each by its index; names have no digits, so only other text is a name to scan for.
    (("w.wearer_id IN (SELECT wearer_id FROM wearers WHERE wearer_id = %(q)s"
      " UNION ALL SELECT wearer_id FROM wearers WHERE phone = %(q_phone)s"
      " UNION ALL SELECT wearer_id FROM wearers WHERE guardian_phone = %(q_phone)s"
      " UNION ALL SELECT wearer_id FROM wearers WHERE id_card_hmac = %(q_card)s"
      " UNION ALL SELECT wearer_id FROM devices WHERE device_id = %(q)s"
      " UNION ALL SELECT wearer_id FROM devices WHERE imei = %(q)s)"), "q_key"),
    (("(w.name LIKE %(q_like)s OR w.wearer_id IN (SELECT wearer_id FROM devices"
      " WHERE device_id = %(q)s) OR w.wearer_id = %(q)s)"), "q_like"),
)


def search_wearers(cur: psycopg.Cursor[dict[str, Any]], query: WearerQuery, *,
                   scopes: Sequence[str] | None, card_hmac: str | None) -> list[dict[str, Any]]:
    """A page of wearer summaries (:data:`registry.records.SUMMARY_COLUMNS`) by id, of the
    wearers within ``scopes`` (None: all) matching ``query``; ``card_hmac`` is the HMAC of
    ``q`` when ``q`` is a valid ID-card number."""
    sql, params = search_sql(query, scopes=scopes, card_hmac=card_hmac)
    rows = cur.execute(sql, params).fetchall()
    return [{**r, "care_categories": list(r["care_categories"]),
             "device_ids": list(r["device_ids"])} for r in rows]


def search_sql(query: WearerQuery, *, scopes: Sequence[str] | None,
               card_hmac: str | None) -> tuple[LiteralString, dict[str, Any]]:
    """The statement and parameters of :func:`search_wearers` (tests read its plan)."""
    params: dict[str, Any] = {
        "scopes": None if scopes is None else list(scopes),
        "region": None if query.region is None else [query.region],
        "active": query.active, "care_category": query.care_category,
        "living_situation": query.living_situation, "after": query.after, "q": query.q,
        "limit": query.limit, "q_key": None, "q_like": None,
    }
    if query.q is not None and any(ch.isdigit() for ch in query.q):
        params.update(q_key=True, q_phone=_phone(query.q), q_card=card_hmac)
    elif query.q is not None:
        params["q_like"] = "%" + _like_escape(query.q) + "%"
    # The scope fragment is always there: it reads a NULL parameter as "every region".
    where = [fragment for fragment, key in _FILTERS if key == "scopes" or params[key] is not None]
    return (f"SELECT {records.SUMMARY_COLUMNS} FROM wearers w WHERE {' AND '.join(where)}"
            " ORDER BY w.wearer_id LIMIT %(limit)s"), params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _phone(text: str) -> str | None:
    """``text`` as an E.164 number if it reads as one (China by default), else None."""
    if not any(ch.isdigit() for ch in text):
        return None
    try:
        parsed = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
