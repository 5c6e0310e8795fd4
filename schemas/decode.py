"""Decoding MQTT payloads into validated readings, once, at the boundary.

A payload is JSON (default) or MessagePack (MQTT 5 content type ``application/msgpack``). The fast
path decodes the whole payload in one msgspec call. Only when that fails does the slow path split an
array into its elements and decode each alone, so that one bad reading in a gateway batch is
rejected with its own bytes and reason while its neighbours are kept.

Nothing here raises for bad input: every problem becomes a :class:`Reject` naming the field.
The only exception callers may see is a bug.

Registry admission (issue #7, ``docs/registry.md``): given an :class:`Admission`, a reading whose
device is not registered in the topic's region is refused and counted, with one dict lookup per
reading on the hot path. Alarms are the exception: never dropped, they are kept *and* recorded as
a :class:`Reject` with ``admitted=True``, so the sighting is dead-lettered and shown all the same.

Alarm salvage (``schemas/salvage.py``, ``docs/wire-contract.md``): an alarm (``ALARM_TYPES``)
that breaks the contract but names its type and, through the payload or the topic, its device
is kept as well, on the receipt time ``now_ms`` when its own is missing or implausible, and one
admitted :class:`Reject` names every defect, with the raw bytes that keep the device's own
values. This runs only after validation failed: the happy path does not pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from foundation.errors import ValidationError
from schemas.readings import TYPE_NAMES, Reading
from schemas.salvage import (
    ALARM_CLASSES,
    DECODE_ERRORS,
    STAMPED,
    SalvageCodec,
    future_reason,
    receipt_ts,
    salvage_alarm,
    spoofed_reason,
)
from schemas.topics import Topic, parse_topic

DEFAULT_MAX_PAYLOAD_BYTES: Final = 256 * 1024
DEFAULT_MAX_FUTURE_MS: Final = 5 * 60 * 1000
MSGPACK_CONTENT_TYPES: Final = frozenset({"application/msgpack", "application/x-msgpack"})
JSON_CONTENT_TYPES: Final = frozenset({"application/json", "text/json"})


#: The verdicts on one reading that is not simply accepted: (dead-letter reason, admitted).
_Verdicts = list[tuple[str, bool]]


@dataclass(frozen=True, slots=True)
class Reject:
    """A message or one reading of it that broke the contract: its raw bytes and why."""

    raw: bytes
    reason: str
    #: True for an alarm kept despite the problem (a device not registered in the topic's
    #: region, an implausible clock, an invalid field): the reading is in ``Decoded.readings``
    #: too (alarms are never dropped); this record of it, with the device's own bytes, is
    #: dead-lettered so the problem is seen.
    admitted: bool = False


@dataclass(slots=True)
class Decoded:
    """What one MQTT message yielded: valid readings (device_id filled in) and rejects."""

    topic: Topic | None
    readings: list[Reading] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class Admission(Protocol):
    """Registry admission: which devices may publish in which region (``ingest.admission``)."""

    @property
    def regions(self) -> Mapping[str, str]:
        """Registered device id → its wearer's region. Read once, when the decoder is built."""
        ...

    def refused(self, *, device_id: str, topic_region: str, type_name: str, alarm: bool) -> str:
        """Note (count) one reading of a device not registered in ``topic_region``; returns
        the reason to dead-letter it with. ``alarm``: it is admitted all the same."""
        ...


class _Codec:
    """The decoders of one encoding, built once (msgspec decoders are reusable and fast)."""

    def __init__(self, module: Any, name: str) -> None:
        self.name = name
        self.one = module.Decoder(Reading)
        self.many = module.Decoder(list[Reading])
        self.raw_list = module.Decoder(list[msgspec.Raw])
        self.element = module.Decoder(Reading)
        self.salvage = SalvageCodec(module)


_JSON: Final = _Codec(msgspec.json, "JSON")
_MSGPACK: Final = _Codec(msgspec.msgpack, "MessagePack")
_JSON_WS: Final = b" \t\r\n"



def _is_array(payload: bytes, codec: _Codec) -> bool:
    if codec is _JSON:
        return payload.lstrip(_JSON_WS)[:1] == b"["
    first = payload[0] if payload else 0
    return 0x90 <= first <= 0x9F or first in (0xDC, 0xDD)


def _malformed(payload: bytes, codec: _Codec, exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return f"malformed {codec.name}: nested deeper than the decoder allows"
    if codec is _JSON:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as ue:
            return f"payload is not valid UTF-8 (byte 0x{payload[ue.start]:02x} at offset {ue.start})"
    return f"malformed {codec.name}: {exc}"


class MessageDecoder:
    """Turns (topic, payload) into validated readings and rejects. Pure: time comes in as ``now_ms``
    (the admission, when given, counts what it refuses: its only side effect).

    Parameters
    ----------
    max_payload_bytes
        Larger payloads are rejected whole without being parsed.
    max_future_ms
        Readings whose ``ts`` lies further than this ahead of ``now_ms`` are rejected (device
        clock wrong), alarms excepted: they are stamped with ``now_ms`` (see the module
        docstring); old readings down to 2020 are accepted, because gateways buffer.
    admission
        When given, readings of devices not registered in the topic's region are refused
        (alarms excepted, see the module docstring). None: every device id is accepted.
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
        admission: Admission | None = None,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_future_ms = max_future_ms
        self.admission = admission
        self._regions = None if admission is None else admission.regions

    def decode(
        self, topic: str, payload: bytes, *, now_ms: int, content_type: str | None = None
    ) -> Decoded:
        """Decode one MQTT message. Never raises for bad input."""
        try:
            parsed = parse_topic(topic)
        except ValidationError as exc:
            return Decoded(None, rejects=[Reject(payload, exc.reason)])
        out = Decoded(parsed)
        if len(payload) > self.max_payload_bytes:
            out.rejects.append(Reject(payload, (
                f"payload of {len(payload)} bytes exceeds the limit of {self.max_payload_bytes}"
            )))
            return out
        if content_type is None or content_type in JSON_CONTENT_TYPES:
            codec = _JSON
        elif content_type in MSGPACK_CONTENT_TYPES:
            codec = _MSGPACK
        else:
            out.rejects.append(Reject(payload, f"unsupported content type {content_type[:80]!r}"))
            return out
        verdicts: _Verdicts | None
        if _is_array(payload, codec):
            self._decode_array(payload, codec, now_ms, out)
            return out
        if parsed.kind == "gw":
            # An alarm object with its device_id is kept all the same; anything else refused.
            verdicts = self._salvage(payload, codec, now_ms, out,
                                     "gateway payload must be an array of readings",
                                     framing=True)
        else:
            try:
                reading = codec.one.decode(payload)
            except msgspec.ValidationError as exc:
                verdicts = self._salvage(payload, codec, now_ms, out, f"invalid reading: {exc}")
            except DECODE_ERRORS as exc:
                verdicts = [(_malformed(payload, codec, exc), False)]
            else:
                verdicts = self._accept(reading, now_ms, out)
        if verdicts is not None:
            out.rejects += [Reject(payload, reason, admitted) for reason, admitted in verdicts]
        return out

    def _decode_array(self, payload: bytes, codec: _Codec, now_ms: int, out: Decoded) -> None:
        readings: list[Reading] | None
        raws: list[msgspec.Raw] | None = None
        try:
            readings = codec.many.decode(payload)
        except msgspec.ValidationError:
            readings = None  # some element is bad: split the array and decode one by one
        except DECODE_ERRORS as exc:
            out.rejects.append(Reject(payload, _malformed(payload, codec, exc)))
            return
        if readings is None:
            try:
                raws = codec.raw_list.decode(payload)
            except DECODE_ERRORS as exc:
                out.rejects.append(Reject(payload, _malformed(payload, codec, exc)))
                return
        elif not readings:
            out.rejects.append(Reject(payload, "empty array: no readings"))
            return
        count = len(raws) if raws is not None else len(readings or ())
        for i in range(count):
            verdicts: _Verdicts | None
            if readings is not None:
                verdicts = self._accept(readings[i], now_ms, out)
            else:
                assert raws is not None
                try:
                    verdicts = self._accept(codec.element.decode(raws[i]), now_ms, out)
                except msgspec.ValidationError as exc:
                    verdicts = self._salvage(bytes(raws[i]), codec, now_ms, out,
                                             f"invalid reading: {exc}")
                except DECODE_ERRORS as exc:  # pragma: no cover - the element parsed once already
                    verdicts = [(_malformed(bytes(raws[i]), codec, exc), False)]
            if verdicts is not None:
                if raws is None:  # fast path hit an identity, clock or registry problem:
                    raws = codec.raw_list.decode(payload)  # find the bytes once
                raw = bytes(raws[i])
                out.rejects += [Reject(raw, f"reading [{i}]: {reason}", admitted)
                                for reason, admitted in verdicts]

    def _accept(self, reading: Reading, now_ms: int, out: Decoded) -> _Verdicts | None:
        """Check what the struct alone cannot (identity against the topic, clock skew, and the
        registry when admission is on).

        Appends the reading, with its device_id filled in, to ``out`` and returns None when it is
        good; otherwise returns the reasons to dead-letter it with and whether the reading was
        appended all the same (an alarm: from an unregistered device, or from a clock far ahead).
        """
        topic = out.topic
        assert topic is not None
        if topic.kind == "dev":
            device_id = topic.source_id
            if reading.device_id is None:
                reading = msgspec.structs.replace(reading, device_id=device_id)
            elif reading.device_id != device_id:
                return [(spoofed_reason(reading.device_id, device_id), False)]
        elif reading.device_id is None:
            return [("device_id is required in gateway batches - at `$.device_id`", False)]
        else:
            device_id = reading.device_id
        if reading.ts > now_ms + self.max_future_ms:
            reason = future_reason(reading.ts, now_ms, self.max_future_ms)
            if type(reading) not in ALARM_CLASSES:
                return [(reason, False)]
            # A watch whose clock runs hours ahead still has a wearer pressing SOS: the alarm
            # is kept, on the receipt time (a press stamped 2099 would otherwise hold its
            # episode and its alert in 2099), and the device's ts stays in the dead letter.
            stamped = msgspec.structs.replace(reading, ts=receipt_ts(now_ms))
            return self._admit_alarm(stamped, [f"{reason} {STAMPED}"], topic.region, out)
        regions = self._regions
        if regions is not None and regions.get(device_id) != topic.region:
            return [self._refuse(reading, device_id, topic.region, out)]
        out.readings.append(reading)
        return None

    def _admit_alarm(self, reading: Reading, defects: list[str], region: str,
                     out: Decoded) -> _Verdicts:
        """Keep an alarm that broke the contract: one admitted verdict naming its ``defects``,
        and the registry's own when its device is not registered in ``region`` (a separate
        dead letter: the console reads sightings by their reason, ``schemas/admission.py``)."""
        name = TYPE_NAMES[type(reading)]
        reason = f"{'; '.join(defects)}; {name} alarm admitted anyway (alarms are never dropped)"
        verdicts = [(reason, True)]
        device_id = reading.device_id
        assert device_id is not None
        regions = self._regions
        if regions is not None and regions.get(device_id) != region:
            verdicts.append(self._refuse(reading, device_id, region, out))
        else:
            out.readings.append(reading)
        return verdicts

    def _salvage(self, raw: bytes, codec: _Codec, now_ms: int, out: Decoded, error: str, *,
                 framing: bool = False) -> _Verdicts:
        """A reading that failed validation (``error``), or an object on a gateway topic
        (``framing``): an alarm whose device can be read is rebuilt and kept
        (``schemas/salvage.py``); anything else is refused with ``error``."""
        topic = out.topic
        assert topic is not None
        result = salvage_alarm(raw, codec.salvage, topic=topic, now_ms=now_ms,
                               max_future_ms=self.max_future_ms, error=error, framing=framing)
        if result is None:
            return [(error, False)]
        if result.reading is None:
            return [(result.refusal, False)]
        return self._admit_alarm(result.reading, result.defects, topic.region, out)

    def _refuse(self, reading: Reading, device_id: str, region: str,
                out: Decoded) -> tuple[str, bool]:
        """A reading of a device not registered in ``region``: refused and counted, except
        that an alarm is kept all the same (an SOS from a bracelet nobody registered is still a
        person in trouble; the broker authenticated its publisher)."""
        assert self.admission is not None
        alarm = type(reading) in ALARM_CLASSES
        reason = self.admission.refused(device_id=device_id, topic_region=region,
                                        type_name=TYPE_NAMES[type(reading)], alarm=alarm)
        if alarm:
            out.readings.append(reading)
        return reason, alarm
