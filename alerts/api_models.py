"""The documents of the alerts API (alerts/api.py): response and request bodies, and the enums
they are spelled with. Pydantic models, so the OpenAPI document (docs/api.md) describes them."""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StringConstraints
from pydantic_core import PydanticCustomError

from alerts.http_types import JsonPattern, UtcDatetime, check_text
from alerts.model import PRIORITY

#: How an alert ended, as the person who resolved it reports it (``POST .../resolve``).
OUTCOMES: Final[dict[str, str]] = {
    "false_alarm": "no emergency: pressed by mistake, a dropped device, a test",
    "safe": "the person was reached and is safe; no help needed",
    "helped_on_site": "staff, a volunteer or family went there and helped",
    "ambulance": "an ambulance (120) was sent",
    "police": "the police (110) were called, e.g. a missing person",
    "other": "anything else; say what in the note",
}
Outcome = Literal["false_alarm", "safe", "helped_on_site", "ambulance", "police", "other"]
AlertType = Literal["sos", "fall", "home_alarm", "heart_rate", "device_alarm", "geofence_exit",
                    "device_removed", "inactivity", "low_battery", "offline"]
Status = Literal["open", "acknowledged", "resolved"]
# The API's enums are spelled out for the OpenAPI document; fail at import if they drift.
assert set(get_args(Outcome)) == set(OUTCOMES)
assert set(get_args(AlertType)) == set(PRIORITY)

MAX_NOTE: Final = 2000
#: What a note may not consist of alone, and what is trimmed from its ends before it is stored.
#: Spelled out rather than "whitespace": every regex engine and every ``strip`` agrees on these.
BLANK: Final = " \t\n\v\f\r\u00a0\u3000"
#: The note rule as a JSON Schema pattern: no NUL, at least one character not in BLANK.
NOTE_PATTERN: Final = r"^[^\x00]*[^\x00\t\n\v\f\r " + "\u00a0\u3000" + r"][^\x00]*$"


def _not_blank(value: str) -> str:
    trimmed = value.strip(BLANK)
    if not trimmed:
        raise PydanticCustomError("note_blank", "A note must not be blank")
    return trimmed


#: A note: 1-2000 characters as sent, not blank, stored without its surrounding blanks. The
#: schema (minLength, maxLength, pattern) and the validation say exactly the same.
Note = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NOTE),
                 AfterValidator(check_text), AfterValidator(_not_blank), JsonPattern(NOTE_PATTERN)]


class Alert(BaseModel):
    """An alert, as listed. Device times: ``first_ts``/``last_ts``; the rest: service clock."""

    id: int
    type: AlertType
    status: Status
    severity: str
    priority: int = Field(description="1 most urgent (docs/alerts.md)")
    region: str
    device_id: str
    wearer_id: str | None
    first_ts: UtcDatetime
    last_ts: UtcDatetime
    event_count: int
    lat: float | None = Field(description="latest known position (WGS-84)")
    lon: float | None
    opened_at: UtcDatetime
    updated_at: UtcDatetime
    acknowledged_at: UtcDatetime | None
    acknowledged_by: str | None = Field(description="who holds the claim")
    resolved_at: UtcDatetime | None
    resolved_by: str | None
    outcome: str | None = Field(description="an OUTCOMES value, or 'auto: <event>'")


class Wearer(BaseModel):
    """The person the alert is about (no contact details)."""

    id: str
    name: str
    birth_year: int | None
    conditions: list[str]


class AuditEntry(BaseModel):
    """One step of the alert's trail."""

    id: int
    at: UtcDatetime
    actor: str = Field(description="'system', or the token name or console user that acted")
    action: str = Field(description="opened, updated, acknowledged, note, resolved, ...")
    detail: dict[str, JsonValue]


class Delivery(BaseModel):
    """One notification of the alert to one recipient over one channel."""

    id: int
    kind: str
    recipient: str = Field(description="dispatch, family:1, community, ...")
    channel: str
    address: str = Field(description="masked: +86138****0001, l****@example.com")
    status: str
    attempts: int
    created_at: UtcDatetime
    sent_at: UtcDatetime | None
    last_error: str | None
    receipt: JsonValue


class Position(BaseModel):
    """A location fix of the alert's device."""

    ts: UtcDatetime
    lat: float
    lon: float
    accuracy_m: float | None


class AlertDetail(Alert):
    """An alert with its wearer, trail (oldest first), deliveries and recent track."""

    wearer: Wearer | None
    audit: list[AuditEntry]
    deliveries: list[Delivery]
    positions: list[Position] = Field(
        description="the device's fixes in the 2 h before last_ts, oldest first, at most 200")


class AlertPage(BaseModel):
    """A page of alerts; pass ``next_before_id`` as ``before_id`` for the next page."""

    alerts: list[Alert]
    next_before_id: int | None


class AcknowledgeIn(BaseModel):
    """A claim: the caller takes the alert on."""

    model_config = ConfigDict(extra="forbid")
    note: Note | None = None


class ResolveIn(BaseModel):
    """How the alert ended."""

    model_config = ConfigDict(extra="forbid")
    outcome: Outcome = Field(description="; ".join(f"{k}: {v}" for k, v in OUTCOMES.items()))
    note: Note | None = None


class NoteIn(BaseModel):
    """A note for the trail (any status, also after resolution)."""

    model_config = ConfigDict(extra="forbid")
    note: Note


class Conflict(BaseModel):
    """409: the alert is claimed by someone else, or resolved."""

    detail: str
    owner: str | None
    status: str


class Problem(BaseModel):
    """401, 403, 404, 413, 503: what went wrong."""

    detail: str


class Health(BaseModel):
    """Whether the process is alive: it serves requests and every worker thread runs (no
    database check: see docs/api.md). ``failed`` (HTTP 503) names the workers that died; the
    process is then stopping, to be restarted by its supervisor."""

    status: Literal["ok", "failed"]
    failed_workers: list[str] = []


class Readiness(BaseModel):
    """Whether the service can do its job now (``/readyz``): each check by name (``mqtt``,
    ``database``, ``workers``) and whether all pass."""

    ready: bool
    checks: dict[str, bool]
    failed_workers: list[str] = []


#: Commands duty staff may send to an alert's device (docs/api.md, "Commands to devices"):
#: report a position now, dial the dispatch centre (or a number given), ring. Listen-in
#: (``monitor``) and the settings commands are not offered here: listening in unannounced is a
#: decision for a carer with consent, and settings belong to enrolment, not to an incident.
AlertCommand = Literal["locate", "call_back", "find"]
CommandState = Literal["requested", "sent", "acknowledged", "failed", "no_answer"]


class CommandIn(BaseModel):
    """A command for the alert's device."""

    model_config = ConfigDict(extra="forbid")
    command: AlertCommand
    number: Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{3,20}$")] | None = Field(
        default=None, description="call_back: the number the device dials; default: the"
                                  " dispatch centre's ([alerts.commands] callback_number)")


class DeviceCommandState(BaseModel):
    """A command sent to the alert's device, and what became of it: ``requested`` (the broker
    has it), ``sent`` (the gateway wrote it to the device), ``acknowledged`` (the device
    answered), ``failed`` (``reason`` says why), ``no_answer`` (no gateway holds the device)."""

    id: str
    command: str
    args: dict[str, JsonValue]
    requested_by: str
    requested_at: UtcDatetime
    status: CommandState
    reason: str | None
    updated_at: UtcDatetime


class DeviceCommandList(BaseModel):
    """The alert device's commands, oldest first, and the number "call the watch" dials."""

    commands: list[DeviceCommandState]
    callback_number: str | None
