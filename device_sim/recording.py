"""Recordings: a Publication stream as JSON Lines, one line per reading.

One line per *reading*, not per message, so a recording is also valid input for
``eldercare detect FILE`` (which reads one reading object per line). Each line is the wire reading
object with an envelope of keys the wire contract does not use, written first::

    {"msg":7,"sent_ms":1795430012500,"topic":"eldercare/v1/r1/gw/GW-01","device_id":"BR-1",...}

``msg``
    message number, increasing through the file; the readings of one MQTT message share it and
    are consecutive lines, in payload order. A duplicate publication is a message of its own, so
    it gets a new number.
``sent_ms``
    publication time on the simulation's true clock (Unix ms); the reading's own ``ts`` is the
    device's clock.
``topic``
    the MQTT topic it was published on.
``array``
    only ``true``, and only on the one case the rest cannot tell: a single reading sent as a
    one-element array on a device topic (an outage burst of one). Otherwise a message is an array
    exactly when its topic is a gateway topic or it holds more than one reading.

Round trip: :func:`read_recording` gives back Publications whose payloads
(:func:`device_sim.publisher.encode_payload`) are byte for byte those of the originals; msgspec
keeps key order and writes floats in their shortest exact form. Readers that do not know the
envelope ignore it: the wire contract ignores unknown fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

import msgspec

from device_sim.types import Publication
from foundation.errors import ValidationError
from schemas.topics import TOPIC_ROOT

#: Keys the envelope adds to each reading object; a reading may not carry them itself.
ENVELOPE_KEYS: Final = frozenset({"msg", "sent_ms", "topic", "array"})

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
_GATEWAY_MARK: Final = f"{TOPIC_ROOT}/"


def _is_gateway_topic(topic: str) -> bool:
    # eldercare/v1/<region>/gw/<id>: cheaper than a full parse, and a recording of a foreign
    # topic must still round-trip.
    parts = topic.split("/")
    return len(parts) == 5 and topic.startswith(_GATEWAY_MARK) and parts[3] == "gw"


@dataclass(slots=True)
class RecordingStats:
    """What a recording holds: counts, bytes, and the span of publication times."""

    messages: int = 0
    readings: int = 0
    bytes: int = 0
    first_sent_ms: int | None = None
    last_sent_ms: int | None = None


class RecordingWriter:
    """Appends Publications to a binary stream, one line per reading; counts in :attr:`stats`.

    For callers that publish and record the same stream (``eldercare sim run --record``);
    :func:`write_recording` is the one-shot form.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.stats = RecordingStats()

    def write(self, pub: Publication) -> None:
        """Write one message; raises ``ValueError`` for one a recording cannot represent."""
        if not pub.readings:
            raise ValueError(f"message to {pub.topic} at {pub.t_ms} has no readings")
        gateway = _is_gateway_topic(pub.topic)
        if not pub.as_array and (gateway or len(pub.readings) > 1):
            raise ValueError(f"message to {pub.topic} at {pub.t_ms} must be an array")
        s = self.stats
        s.messages += 1
        head = (b'{"msg":%d,"sent_ms":%d,"topic":' % (s.messages, pub.t_ms)
                + _ENCODER.encode(pub.topic))
        if pub.as_array and not gateway and len(pub.readings) == 1:
            head += b',"array":true'
        lines = []
        for body in pub.readings:
            clash = ENVELOPE_KEYS.intersection(body)
            if clash:
                raise ValueError(f"reading carries envelope key(s) {sorted(clash)}: {body!r:.200}")
            encoded = _ENCODER.encode(body)
            # Splice the envelope into the object: {envelope,reading fields}.
            lines.append(head + (b"," + encoded[1:] if len(encoded) > 2 else b"}"))
        data = b"\n".join(lines) + b"\n"
        self.out.write(data)
        s.readings += len(pub.readings)
        s.bytes += len(data)
        if s.first_sent_ms is None:
            s.first_sent_ms = pub.t_ms
        s.last_sent_ms = pub.t_ms


def write_recording(pubs: Iterable[Publication], out: IO[bytes]) -> RecordingStats:
    """Write ``pubs`` to ``out`` in the recording format (module docstring); return counts."""
    writer = RecordingWriter(out)
    for pub in pubs:
        writer.write(pub)
    return writer.stats


def read_recording(lines: Iterable[bytes]) -> Iterator[Publication]:
    """The Publications of a recording, in file order; streams, holding one message at a time.

    Raises
    ------
    ValidationError
        A line is not a JSON object with a valid envelope, a message's lines are not consecutive
        or disagree on topic or time, or message numbers do not increase. The reason starts with
        the line number.
    """
    current: list[dict[str, Any]] = []
    msg = topic = None
    sent = 0
    array = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj, m, t, s, a = _envelope(line, number)
        if m == msg:
            if t != topic or s != sent or a != array:
                raise ValidationError(f"line {number}: message {m} changes its topic, sent_ms or"
                                      " array flag between lines")
            current.append(obj)
            continue
        if msg is not None:
            if m < msg:
                raise ValidationError(f"line {number}: message {m} after message {msg} "
                                      "(numbers must increase; a message's lines are consecutive)")
            yield _publication(sent, topic or "", current, array)
        current, msg, topic, sent, array = [obj], m, t, s, a
    if msg is not None:
        yield _publication(sent, topic or "", current, array)


def _envelope(line: bytes, number: int) -> tuple[dict[str, Any], int, str, int, bool]:
    """Decode one line and take its envelope off: (reading, msg, topic, sent_ms, array)."""
    try:
        obj = _DECODER.decode(line)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"line {number}: not a JSON object: {exc}") from exc
    except RecursionError as exc:  # msgspec recurses per nesting level of a hostile line
        raise ValidationError(f"line {number}: nested too deeply") from exc
    m, t, s, a = (obj.pop("msg", None), obj.pop("topic", None), obj.pop("sent_ms", None),
                  obj.pop("array", False))
    for key, value, kind in (("msg", m, int), ("sent_ms", s, int), ("topic", t, str),
                             ("array", a, bool)):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            what = "missing" if value is None else f"not {kind.__name__}: {value!r:.80}"
            raise ValidationError(f"line {number}: envelope key `{key}` {what}")
    return obj, m, t, s, a


def _publication(sent_ms: int, topic: str, readings: list[dict[str, Any]],
                 array: bool) -> Publication:
    as_array = array or len(readings) > 1 or _is_gateway_topic(topic)
    return Publication(sent_ms, topic, readings, as_array)
