"""Alarm salvage: an alarm that broke the wire contract is rebuilt, never dropped.

An alarm (``ALARM_TYPES``: sos, fall, wear, home_alarm, device_alarm) that fails validation but names its
type and, through the payload or the topic, its device is kept (``docs/wire-contract.md``,
"Alarm salvage"). Each field is decoded alone from its raw bytes, so one bad value (a
5000-digit ``ts``, bad UTF-8) spoils only itself:

- ``ts`` missing or implausible (before 2020, beyond the future limit) becomes the receipt time
  (:data:`STAMPED`); the device's own value stays in the dead letter's raw bytes;
- an invalid optional field is dropped; an unreadable required field takes the value that
  makes a person look (:data:`_SAFE_SIDE`);
- the defects are returned, for one admitted dead letter beside the kept reading.

Pure and I/O-free; the decoder (``schemas/decode.py``) calls :func:`salvage_alarm` only after
validation failed, so the happy path does not pay for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, cast

import msgspec

from schemas.readings import (
    ALARM_TYPES,
    DEVICE_ID_PATTERN,
    MAX_TS_MS,
    MIN_TS_MS,
    TYPE_NAMES,
    DeviceAlarm,
    HomeAlarm,
    Reading,
    Wear,
)
from schemas.topics import Topic

#: Reading classes that are alarms (``ALARM_TYPES``): admitted even from unregistered devices.
ALARM_CLASSES: Final = frozenset(cls for cls, name in TYPE_NAMES.items() if name in ALARM_TYPES)
_ALARM_BY_NAME: Final = {name: cls for cls, name in TYPE_NAMES.items() if name in ALARM_TYPES}
#: What a salvaged alarm's unreadable required field is taken as, and why: the value that makes a
#: person look. A strap state nobody can read counts as taken off (``device_removed``); a home
#: sensor nobody can name is the home's panic button (an SOS: someone must go and see), and an
#: unreadable state of a sensor is an activation, not a "cleared"; a device alarm whose kind
#: nobody can read is shown as an unclassified device alarm.
_SAFE_SIDE: Final[dict[tuple[type, str], tuple[object, str]]] = {
    (Wear, "worn"): (False, "taken as false: removed"),
    (HomeAlarm, "sensor"): ("panic", "taken as panic: an SOS at this home"),
    (HomeAlarm, "active"): (True, "taken as true: active"),
    (DeviceAlarm, "alarm"): ("other", "taken as other: an unclassified device alarm"),
}
_DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
#: Every field of every alarm type, each as the raw bytes of its value (empty when absent), so
#: the salvage can decode each alone: a 5000-digit ``ts`` spoils only ``ts``.
_Probe: Final = msgspec.defstruct("_Probe", [
    (name, msgspec.Raw, msgspec.field(default_factory=msgspec.Raw))
    for name in sorted({"type", *(f for cls in ALARM_CLASSES for f in cls.__struct_fields__)})
])
# msgspec reports bad UTF-8 inside a JSON string as a bare UnicodeDecodeError and over-deep
# nesting as RecursionError, not as DecodeError: all three mean "malformed payload".
DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# A field decoded alone in the salvage: a value the whole-reading decoder never reached (it
# stopped at the first bad field) may still be bad UTF-8 or nested too deep.
_FIELD_ERRORS: Final = (msgspec.ValidationError, *DECODE_ERRORS)
#: Appended to a defect whose value was replaced by the receipt time.
STAMPED: Final = "(replaced by the receipt time)"
_WIRE_TYPES: Final[dict[type, str]] = {
    str: "a string", float: "a float", bool: "a boolean", type(None): "null", list: "an array",
    dict: "an object", bytes: "binary data",
}


class SalvageCodec:
    """The salvage's decoders of one encoding, built once: the fields as raw bytes, then each
    field's own type."""

    def __init__(self, module: Any) -> None:
        self.probe = module.Decoder(_Probe)
        self.text = module.Decoder(str)
        self.integer = module.Decoder(int)
        self.any = module.Decoder()
        self.fields = {cls: [(f.name, module.Decoder(f.type)) for f in msgspec.structs.fields(cls)
                             if f.name not in ("device_id", "ts")] for cls in ALARM_CLASSES}


@dataclass(frozen=True, slots=True)
class Salvaged:
    """An alarm rebuilt (``reading``, with the ``defects`` to dead-letter beside it), or one
    refused because no device can own it (``reading`` None; ``refusal`` says why)."""

    reading: Reading | None
    defects: list[str]
    refusal: str = ""


def salvage_alarm(raw: bytes, codec: SalvageCodec, *, topic: Topic, now_ms: int,
                  max_future_ms: int, error: str, framing: bool = False) -> Salvaged | None:
    """Rebuild the alarm in ``raw``, which failed validation with ``error`` (or, ``framing``,
    is an object on a gateway topic). None when ``raw`` is not an alarm with a readable type:
    the caller refuses it with ``error``."""
    try:
        probe = codec.probe.decode(raw)
        kind = codec.text.decode(probe.type) if probe.type else None
    except _FIELD_ERRORS:
        return None  # not an object, or no readable type: nothing to attribute
    cls = _ALARM_BY_NAME.get(kind) if kind is not None else None
    if cls is None:
        return None
    defects = [error] if framing else []
    device_id, why = _salvage_device(probe.device_id, codec, topic)
    if device_id is None:
        reason = f"{error}; {why}; {TYPE_NAMES[cls]} alarm not admitted: no device to own it"
        return Salvaged(None, [], reason)
    if why:
        defects.append(why)
    ts, why = _salvage_ts(probe.ts, codec, now_ms, max_future_ms)
    if why:
        defects.append(why)
    values: dict[str, Any] = {}
    for name, decoder in codec.fields[cls]:
        value = getattr(probe, name)
        try:
            if value:
                values[name] = decoder.decode(value)
            elif (cls, name) in _SAFE_SIDE:
                raise msgspec.ValidationError(f"Object missing required field `{name}`")
        except _FIELD_ERRORS as exc:
            fallback, fate = _SAFE_SIDE.get((cls, name), (None, "dropped"))
            if fallback is not None:
                values[name] = fallback
            defects.append(f"{_why(exc)} - at `$.{name}` ({fate})")
    if not defects:  # every field reads alone: the whole did not (say, a repeated tag)
        defects.append(error)
    return Salvaged(cast(Reading, cls(device_id=device_id, ts=ts, **values)), defects)


def _salvage_device(value: msgspec.Raw, codec: SalvageCodec,
                    topic: Topic) -> tuple[str | None, str | None]:
    """The salvaged alarm's device and the defect, if any. The topic's device on a device
    topic (a payload id that cannot be read is dropped; one that names another device is
    refused, as spoofed); on a gateway topic the payload's own, or None."""
    device_id: str | None = None
    why: str | None = None
    if value:
        try:
            device_id = codec.text.decode(value)
        except _FIELD_ERRORS as exc:
            why = _why(exc)
        else:
            if not _DEVICE_ID_RE.search(device_id):
                device_id, why = None, f"Expected `str` matching regex {DEVICE_ID_PATTERN!r}"
    if topic.kind == "gw":
        if device_id is None:
            why = why or "Object missing required field `device_id`"
            return None, f"{why} - at `$.device_id` (gateway readings must name their device)"
        return device_id, None
    if device_id is not None and device_id != topic.source_id:
        return None, spoofed_reason(device_id, topic.source_id)
    if why is not None:
        why = f"{why} - at `$.device_id` (dropped: the topic names the device)"
    return topic.source_id, why


def _salvage_ts(value: msgspec.Raw, codec: SalvageCodec, now_ms: int,
                max_future_ms: int) -> tuple[int, str | None]:
    """The salvaged alarm's ts: the device's when plausible, else the receipt time, with
    the defect."""
    if not value:
        return receipt_ts(now_ms), f"Object missing required field `ts` {STAMPED}"
    try:
        ts = codec.integer.decode(value)
    except _FIELD_ERRORS as exc:
        try:
            what = f"is {_WIRE_TYPES[type(codec.any.decode(value))]}, not an integer"
        except (KeyError, *_FIELD_ERRORS):
            what = f"cannot be read ({_why(exc)})"
        return receipt_ts(now_ms), f"ts {what} - at `$.ts` {STAMPED}"
    if ts.bit_length() > 63:
        return receipt_ts(now_ms), f"ts is an integer beyond int64 - at `$.ts` {STAMPED}"
    if ts < MIN_TS_MS:
        return receipt_ts(now_ms), f"ts {ts} is before 2020-01-01 - at `$.ts` {STAMPED}"
    if ts > now_ms + max_future_ms or ts > MAX_TS_MS:
        return receipt_ts(now_ms), f"{future_reason(ts, now_ms, max_future_ms)} {STAMPED}"
    return ts, None


def future_reason(ts: int, now_ms: int, max_future_ms: int) -> str:
    """Why ``ts`` is refused as too far ahead of ``now_ms``."""
    return (f"ts {ts} is {(ts - now_ms) // 1000} s in the future "
            f"(limit {max_future_ms // 1000} s) - at `$.ts`")


def spoofed_reason(claimed: str, device_id: str) -> str:
    """Why a reading naming another device than its topic's is refused."""
    return (f"device_id {claimed!r} does not match the topic's device {device_id!r} (spoofed"
            " or misrouted reading) - at `$.device_id`")


def receipt_ts(now_ms: int) -> int:
    """The ts a salvaged alarm gets: the receipt time, kept within the schema's limits (only a
    host clock outside 2020-2100 needs the clamp, and then no time would be right)."""
    return min(max(now_ms, MIN_TS_MS), MAX_TS_MS)


def _why(exc: Exception) -> str:
    """Why a field alone did not decode: msgspec's message without its ``- at `$...``` (the
    caller names the field), or what kind of malformed it is."""
    if isinstance(exc, msgspec.ValidationError):
        return str(exc).split(" - at `", 1)[0]
    return "nested too deep" if isinstance(exc, RecursionError) else f"malformed: {exc}"
