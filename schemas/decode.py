"""Decoding MQTT payloads into validated readings, once, at the boundary.

A payload is JSON (default) or MessagePack (MQTT 5 content type ``application/msgpack``). The fast
path decodes the whole payload in one msgspec call. Only when that fails does the slow path split an
array into its elements and decode each alone, so that one bad reading in a gateway batch is
rejected with its own bytes and reason while its neighbours are kept.

Nothing here raises for bad input: every problem becomes a :class:`Reject` naming the field.
The only exception callers may see is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from eldercare.errors import ValidationError
from schemas.readings import Reading
from schemas.topics import Topic, parse_topic

DEFAULT_MAX_PAYLOAD_BYTES: Final = 256 * 1024
DEFAULT_MAX_FUTURE_MS: Final = 5 * 60 * 1000
MSGPACK_CONTENT_TYPES: Final = frozenset({"application/msgpack", "application/x-msgpack"})
JSON_CONTENT_TYPES: Final = frozenset({"application/json", "text/json"})


@dataclass(frozen=True, slots=True)
class Reject:
    """A message or one reading of it that broke the contract: its raw bytes and why."""

    raw: bytes
    reason: str


@dataclass(slots=True)
class Decoded:
    """What one MQTT message yielded: valid readings (device_id filled in) and rejects."""

    topic: Topic | None
    readings: list[Reading] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class _Codec:
    """The decoders of one encoding, built once (msgspec decoders are reusable and fast)."""

    def __init__(self, module: Any, name: str) -> None:
        self.name = name
        self.one = module.Decoder(Reading)
        self.many = module.Decoder(list[Reading])
        self.raw_list = module.Decoder(list[msgspec.Raw])
        self.element = module.Decoder(Reading)


_JSON: Final = _Codec(msgspec.json, "JSON")
_MSGPACK: Final = _Codec(msgspec.msgpack, "MessagePack")
_JSON_WS: Final = b" \t\r\n"
# msgspec reports bad UTF-8 inside a JSON string as a bare UnicodeDecodeError and over-deep
# nesting as RecursionError, not as DecodeError: all three mean "malformed payload".
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


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
    """Turns (topic, payload) into validated readings and rejects. Pure: time comes in as ``now_ms``.

    Parameters
    ----------
    max_payload_bytes
        Larger payloads are rejected whole without being parsed.
    max_future_ms
        Readings whose ``ts`` lies further than this ahead of ``now_ms`` are rejected (device
        clock wrong); old readings down to 2020 are accepted, because gateways buffer.
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_future_ms = max_future_ms

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
        if _is_array(payload, codec):
            self._decode_array(payload, codec, now_ms, out)
        elif parsed.kind == "gw":
            out.rejects.append(Reject(payload, "gateway payload must be an array of readings"))
        else:
            try:
                reading = codec.one.decode(payload)
            except msgspec.ValidationError as exc:
                out.rejects.append(Reject(payload, f"invalid reading: {exc}"))
            except _DECODE_ERRORS as exc:
                out.rejects.append(Reject(payload, _malformed(payload, codec, exc)))
            else:
                reason = self._accept(reading, now_ms, out)
                if reason is not None:
                    out.rejects.append(Reject(payload, reason))
        return out

    def _decode_array(self, payload: bytes, codec: _Codec, now_ms: int, out: Decoded) -> None:
        readings: list[Reading] | None
        raws: list[msgspec.Raw] | None = None
        try:
            readings = codec.many.decode(payload)
        except msgspec.ValidationError:
            readings = None  # some element is bad: split the array and decode one by one
        except _DECODE_ERRORS as exc:
            out.rejects.append(Reject(payload, _malformed(payload, codec, exc)))
            return
        if readings is None:
            try:
                raws = codec.raw_list.decode(payload)
            except _DECODE_ERRORS as exc:
                out.rejects.append(Reject(payload, _malformed(payload, codec, exc)))
                return
        elif not readings:
            out.rejects.append(Reject(payload, "empty array: no readings"))
            return
        count = len(raws) if raws is not None else len(readings or ())
        for i in range(count):
            if readings is not None:
                reason = self._accept(readings[i], now_ms, out)
            else:
                assert raws is not None
                try:
                    reason = self._accept(codec.element.decode(raws[i]), now_ms, out)
                except msgspec.ValidationError as exc:
                    reason = f"invalid reading: {exc}"
                except _DECODE_ERRORS as exc:  # pragma: no cover - the element parsed once already
                    reason = _malformed(bytes(raws[i]), codec, exc)
            if reason is not None:
                if raws is None:  # fast path hit an identity or clock problem: find the bytes once
                    raws = codec.raw_list.decode(payload)
                out.rejects.append(Reject(bytes(raws[i]), f"reading [{i}]: {reason}"))

    def _accept(self, reading: Reading, now_ms: int, out: Decoded) -> str | None:
        """Check what the struct alone cannot (identity against the topic, clock skew).

        Appends the reading, with its device_id filled in, to ``out`` and returns None when it is
        good; otherwise returns the reason.
        """
        topic = out.topic
        assert topic is not None
        if topic.kind == "dev":
            if reading.device_id is None:
                reading = msgspec.structs.replace(reading, device_id=topic.source_id)
            elif reading.device_id != topic.source_id:
                return (
                    f"device_id {reading.device_id!r} does not match the topic's device "
                    f"{topic.source_id!r} (spoofed or misrouted reading) - at `$.device_id`"
                )
        elif reading.device_id is None:
            return "device_id is required in gateway batches - at `$.device_id`"
        if reading.ts > now_ms + self.max_future_ms:
            return (
                f"ts {reading.ts} is {(reading.ts - now_ms) / 1000:.0f} s in the future "
                f"(limit {self.max_future_ms / 1000:.0f} s) - at `$.ts`"
            )
        out.readings.append(reading)
        return None
