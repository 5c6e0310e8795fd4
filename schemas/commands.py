"""Device commands: what duty staff ask of a device, and what became of it (wire contract v1).

The service publishes a :class:`DeviceCommand` at QoS 1 on ``eldercare/v1/<region>/cmd/<device>``;
the device gateway holding that device's connection turns it into the device's own protocol,
and publishes :class:`CommandResult` documents on ``.../cmd/<device>/result``: ``sent`` (written
to the device's connection), then ``acknowledged`` (the device answered it) or ``failed`` (with
a reason a person can read). A gateway that has never seen the device stays silent: several
gateways (one per protocol) read every command, and only the one that knows the device may
answer for it; the requester treats "no result in time" as "no gateway holds this device"
(docs/gateway.md, "Commands to devices").

Commands are a small closed set, the things a 12349 duty officer does with a watch in an
incident (locate it now, make it call the centre, make it ring), plus the settings staff change
when enrolling it. Each protocol maps them to its own words; one a protocol lacks fails with
``unsupported``, never silently.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, get_args

import msgspec
from msgspec import Meta

from foundation.errors import ValidationError
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN, DeviceId, TimestampMs
from schemas.topics import TOPIC_ROOT

#: ``locate``: report a position now (watch ``CR``, GT06 ``WHERE#``); ``set_interval``: the
#: position upload interval; ``set_sos_numbers`` / ``set_family_numbers``: the numbers the SOS
#: button calls / the phone book; ``find``: make the device ring; ``call_back``: the device
#: dials ``number`` (the dispatch centre: the elder can talk hands-free); ``monitor``: the device
#: calls ``number`` with its speaker muted (listen-in, for a carer who cannot get an answer);
#: ``power_off``.
CommandName = Literal["locate", "set_interval", "set_sos_numbers", "set_family_numbers", "find",
                      "call_back", "monitor", "power_off"]
COMMAND_NAMES: Final[tuple[str, ...]] = get_args(CommandName)
CommandStatus = Literal["sent", "acknowledged", "failed"]
#: Digits with an optional leading +: what a watch stores and dials. No spaces or dashes: they
#: would reach the device's dialler as they are.
PHONE_PATTERN: Final = r"^\+?[0-9]{3,20}\Z"
CommandId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}\Z")]
Phone = Annotated[str, Meta(pattern=PHONE_PATTERN)]
#: 10 s to a day: watches refuse shorter; longer is no position at all.
IntervalS = Annotated[int, Meta(ge=10, le=86_400)]
Reason = Annotated[str, Meta(max_length=300)]

#: What each command needs in its arguments.
_NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "set_interval": ("interval_s",), "set_sos_numbers": ("numbers",),
    "set_family_numbers": ("numbers",), "call_back": ("number",), "monitor": ("number",),
}


class CommandArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                  omit_defaults=True):
    """The arguments a command may take; which one needs which is checked by the command."""

    interval_s: IntervalS | None = None
    numbers: Annotated[list[Phone], Meta(min_length=1, max_length=10)] | None = None
    number: Phone | None = None


class DeviceCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                    omit_defaults=True):
    """A command for one device (the topic names the device)."""

    #: The requester's id for it; results repeat it.
    id: CommandId
    command: CommandName
    #: When it was requested (Unix ms): a gateway does not send a command older than its
    #: ``max_age_s`` (a "locate now" from an hour ago is not what anybody wants any more).
    ts: TimestampMs
    args: CommandArgs = msgspec.field(default_factory=CommandArgs)

    def __post_init__(self) -> None:
        missing = [name for name in _NEEDS.get(self.command, ())
                   if getattr(self.args, name) is None]
        if missing:
            raise ValueError(f"command {self.command} needs args.{', args.'.join(missing)}")


class CommandResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What became of a command, as the gateway saw it."""

    id: CommandId
    device_id: DeviceId
    command: CommandName
    status: CommandStatus
    ts: TimestampMs
    #: Why it failed (``failed`` only), for the person who asked.
    reason: Reason | None = None


_COMMAND_DECODER: Final = msgspec.json.Decoder(DeviceCommand)
_RESULT_DECODER: Final = msgspec.json.Decoder(CommandResult)
_ENCODER: Final = msgspec.json.Encoder()
_REGION_RE: Final = re.compile(REGION_PATTERN)
_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
#: What the gateway subscribes to, and the service for results.
COMMAND_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/cmd/+"
RESULT_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/cmd/+/result"


def command_topic(region: str, device_id: str) -> str:
    return f"{TOPIC_ROOT}/{region}/cmd/{device_id}"


def result_topic(region: str, device_id: str) -> str:
    return f"{command_topic(region, device_id)}/result"


def parse_command_topic(topic: str, *, result: bool = False) -> tuple[str, str]:
    """(region, device id) of a command topic (``result``: of its result topic)."""
    levels = topic.split("/")
    want = 6 if result else 5
    if (len(levels) != want or "/".join(levels[:2]) != TOPIC_ROOT or levels[3] != "cmd"
            or (result and levels[5] != "result")):
        raise ValidationError(f"topic {topic[:120]!r} is not {TOPIC_ROOT}/<region>/cmd/<device>"
                              + ("/result" if result else ""))
    region, device = levels[2], levels[4]
    if not _REGION_RE.match(region) or not _ID_RE.match(device):
        raise ValidationError(f"topic {topic[:120]!r} names no valid region and device id")
    return region, device


def decode_command(payload: bytes) -> DeviceCommand:
    """A command document; :class:`ValidationError` naming what is wrong."""
    try:
        return _COMMAND_DECODER.decode(payload)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"device command: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"device command is not JSON: {exc}") from None


def decode_result(payload: bytes) -> CommandResult:
    try:
        return _RESULT_DECODER.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValidationError(f"command result: {exc}") from None


def encode(document: DeviceCommand | CommandResult) -> bytes:
    return _ENCODER.encode(document)
