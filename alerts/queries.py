"""Read-only SQL behind the alerts API (issue #5; ``docs/api.md``).

Writes go through :class:`alerts.store.AlertStore`, which owns the lifecycle rules; this module
only reads, on a connection from :func:`reading`: read-only, ``REPEATABLE READ`` (the several
queries of one alert's detail see one snapshot) and bounded by a statement timeout. Every value
is a bound parameter; the only SQL assembled at run time is the choice among fixed fragments.

Columns are named, never ``SELECT *``: escalation internals (the policy snapshot, which holds
contact addresses) must not reach API clients by accident when a migration adds a column.

Contact details leave the database masked (:func:`mask_address`, :func:`redact_text`): duty
staff need to see *that* the daughter's phone was texted, not her number. Every psycopg error
becomes :class:`~foundation.errors.StorageError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from foundation.errors import StorageError
from schemas.regions import sql_in_scope

#: Page size bounds of :func:`list_alerts`.
MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 100
#: Track shown with an alert: location readings this long before its latest event, at most
#: this many (the most recent ones): enough to see where someone walked, small enough to draw.
POSITIONS_WINDOW: Final = timedelta(hours=2)
POSITIONS_MAX: Final = 200
#: A query from the API that takes longer than this is a bug or an overload; fail it.
STATEMENT_TIMEOUT: Final = "10s"
CONNECT_TIMEOUT_S: Final = 5

_ALERT_COLUMNS: Final = sql.SQL(
    "a.id, a.type, a.status, a.severity, a.priority, a.region, a.device_id, a.wearer_id,"
    " a.first_ts, a.last_ts, a.event_count, a.lat, a.lon, a.opened_at, a.updated_at,"
    " a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.outcome")

@contextmanager
def reading(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A fresh read-only connection in one ``REPEATABLE READ`` transaction, closed on exit."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                sql.Literal(STATEMENT_TIMEOUT)))
            yield conn
    except psycopg.Error as exc:
        raise StorageError(f"alert queries: {exc}".strip()) from exc


def list_alerts(
    conn: psycopg.Connection[Any], *, regions: list[str] | None,
    status: Sequence[str] | None = None,
    type: str | None = None, priority_max: int | None = None, since: datetime | None = None,
    until: datetime | None = None, limit: int = DEFAULT_LIMIT, before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Alerts matching every given filter, unresolved first, then by priority, newest first.

    ``regions`` ``None`` means all regions (an empty list matches nothing), else each region
    and the division codes below it (``schemas.regions.sql_in_scope``); ``since`` (inclusive)
    and ``until`` (exclusive) bound ``opened_at``. ``before_id`` continues a listing after
    that alert (the last one of the previous page) in this order; an unknown id, or one outside
    ``regions``, gives an empty page. The cursor's *current* sort key is used, so an alert resolved between
    two pages moves, and the next page follows it.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_LIMIT}, got {limit}")
    params: dict[str, Any] = {"regions": regions,
                              "status": None if status is None else list(status), "type": type,
                              "priority_max": priority_max, "since": since, "until": until,
                              "before_id": before_id, "limit": limit}
    where = [sql.SQL(c) for c, key in _FILTERS if params[key] is not None]
    query = sql.SQL("SELECT {cols} FROM alerts a WHERE {where}"
                    " ORDER BY (a.status = 'resolved'), a.priority, a.opened_at DESC, a.id DESC"
                    " LIMIT %(limit)s").format(
        cols=_ALERT_COLUMNS, where=sql.SQL(" AND ").join(where or [sql.SQL("true")]))
    return _fetch_all(conn, query, params)


#: Filter fragment -> the parameter that enables it.
_FILTERS: Final = (
    # A region covers the division codes below it (schemas.regions: one rule with can_see).
    (sql_in_scope("a.region", "regions"), "regions"),
    ("a.status = ANY(%(status)s)", "status"),
    ("a.type = %(type)s", "type"),
    ("a.priority <= %(priority_max)s", "priority_max"),
    ("a.opened_at >= %(since)s", "since"),
    ("a.opened_at < %(until)s", "until"),
    # Keyset: rows whose sort key (the ORDER BY as one tuple compared ascending: unresolved
    # first, most urgent, newest, id as the tie-break that makes the order total) comes after
    # the cursor's. The cursor obeys the region filter too, so it reveals nothing of others.
    (("((a.status = 'resolved')::int, a.priority, -extract(epoch FROM a.opened_at), -a.id)"
      " > (SELECT (c.status = 'resolved')::int, c.priority, -extract(epoch FROM c.opened_at),"
      " -c.id FROM alerts c WHERE c.id = %(before_id)s"
      " AND " + sql_in_scope("c.region", "regions") + ")"), "before_id"),
)


def get_alert(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any] | None:
    """One alert's row (the listing's columns), or ``None``."""
    rows = _fetch_all(conn, sql.SQL("SELECT {cols} FROM alerts a WHERE a.id = %(id)s").format(
        cols=_ALERT_COLUMNS), {"id": alert_id})
    return rows[0] if rows else None


def alert_detail(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any] | None:
    """The alert with ``wearer`` (id, name, birth_year, conditions; no contact details),
    ``audit`` (oldest first), ``deliveries`` (addresses masked) and ``positions`` (the device's
    track before the latest event, oldest first), or ``None`` when it does not exist."""
    alert = get_alert(conn, alert_id)
    if alert is None:
        return None
    wearers = _fetch_all(conn, sql.SQL(
        "SELECT wearer_id AS id, name, birth_year, conditions FROM wearers"
        " WHERE wearer_id = %(w)s"), {"w": alert["wearer_id"]})
    alert["wearer"] = wearers[0] if wearers else None
    alert["audit"] = [
        {**row, "detail": _mask_addresses(row["detail"])}
        for row in _fetch_all(conn, sql.SQL(
            "SELECT id, at, actor, action, detail FROM alert_audit WHERE alert_id = %(id)s"
            " ORDER BY id"), {"id": alert_id})]
    alert["deliveries"] = [_masked_delivery(row) for row in _fetch_all(conn, sql.SQL(
        "SELECT id, kind, recipient, channel, address, status, attempts, created_at, sent_at,"
        " last_error, receipt FROM alert_deliveries WHERE alert_id = %(id)s ORDER BY id"),
        {"id": alert_id})]
    alert["positions"] = recent_positions(conn, alert["device_id"], until=alert["last_ts"])
    return alert


def command_trail(conn: psycopg.Connection[Any], alert_id: int,
                  actions: Sequence[str]) -> list[dict[str, Any]]:
    """The steps of the alert's trail whose action is one of ``actions`` (the device-command
    ones: alerts.device_commands), oldest first."""
    return _fetch_all(conn, sql.SQL(
        "SELECT at, actor, action, detail FROM alert_audit WHERE alert_id = %(id)s"
        " AND action = ANY(%(actions)s) ORDER BY id"), {"id": alert_id, "actions": list(actions)})


def recent_positions(conn: psycopg.Connection[Any], device_id: str, *,
                     until: datetime) -> list[dict[str, Any]]:
    """Location fixes of ``device_id`` in (``until`` - POSITIONS_WINDOW, ``until``], the
    latest POSITIONS_MAX of them, oldest first, as ``{ts, lat, lon, accuracy_m}``."""
    return _fetch_all(conn, sql.SQL(
        "SELECT ts, lat, lon, accuracy_m FROM ("
        " SELECT ts, lat, lon, accuracy_m FROM readings"
        " WHERE device_id = %(d)s AND type = 'location' AND ts > %(since)s AND ts <= %(until)s"
        " AND lat IS NOT NULL AND lon IS NOT NULL ORDER BY ts DESC LIMIT %(n)s) r ORDER BY ts"),
        {"d": device_id, "since": until - POSITIONS_WINDOW, "until": until, "n": POSITIONS_MAX})


def _fetch_all(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed,
               params: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"alert queries: {exc}".strip()) from exc


# --- Masking contact details --------------------------------------------------------------

_EMAIL: Final = re.compile(r"^([^@\s])[^@\s]*@([^@\s]+)$")
_PHONE: Final = re.compile(r"^\+?[0-9][0-9 ()-]{7,22}[0-9]$")
#: Inside free text (provider error messages): e-mail addresses, and runs of 9+ digits with
#: optional +, spaces and hyphens (phone numbers; a long numeric id is masked too, harmlessly).
_EMAIL_IN_TEXT: Final = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE_IN_TEXT: Final = re.compile(r"\+?\d(?:[ -]?\d){8,}")


def mask_address(address: str) -> str:
    """A delivery address fit to show: ``+8613800000001`` -> ``+86138****0001``,
    ``li.na@example.com`` -> ``l****@example.com``, a URL -> its scheme and host (paths and
    queries often carry secrets). Anything else (an MQTT topic) is returned as is."""
    if "://" in address:  # first: a URL's user info looks like an e-mail address
        parts = urlsplit(address)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        rest = "/..." if parts.path.strip("/") or parts.query else ""
        return f"{parts.scheme}://{host}{port}{rest}"
    if _PHONE.match(address):
        return _mask_phone(address)
    if m := _EMAIL.match(address):
        return f"{m.group(1)}****@{m.group(2)}"
    return address


def redact_text(text: str) -> str:
    """``text`` with phone numbers and e-mail addresses in it masked."""
    text = _EMAIL_IN_TEXT.sub(lambda m: mask_address(m.group(0)), text)
    return _PHONE_IN_TEXT.sub(lambda m: _mask_phone(m.group(0)), text)


def _mask_phone(phone: str) -> str:
    # Keep the last 4 digits and hide the 4 before them, the usual Chinese masking
    # (138****0001); the country code and operator prefix stay, to tell numbers apart.
    digits = re.sub(r"[ ()-]", "", phone)
    return digits[:-8] + "****" + digits[-4:] if len(digits) >= 9 else "****"


def _masked_delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "address": mask_address(row["address"]),
            "last_error": None if row["last_error"] is None else redact_text(row["last_error"]),
            "receipt": _redact_json(row["receipt"])}


def _redact_json(value: Any) -> Any:
    """Provider receipts may echo the number or address sent to: mask whole-string values
    that are one (free text inside them is left alone)."""
    if isinstance(value, dict):
        return {k: _redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    if isinstance(value, str) and (_PHONE.match(value) or _EMAIL.match(value)):
        return mask_address(value)
    return value


def _mask_addresses(detail: Any) -> Any:
    # Delivery entries of the trail may carry an "address" and a provider's "error" or
    # "reason" text that quotes one. Notes and event evidence are kept verbatim: staff wrote
    # the notes for each other, and a device id may well be a 15-digit IMEI.
    if not isinstance(detail, dict):
        return detail
    masked = dict(detail)
    if isinstance(masked.get("address"), str):
        masked["address"] = mask_address(masked["address"])
    for key in ("error", "reason"):
        if isinstance(masked.get(key), str):
            masked[key] = redact_text(masked[key])
    return masked
