"""Fuzzing ``MessageDecoder`` with arbitrary input and with every field of every reading type.

Random bytes and JSON under any content type, limits and clock; valid readings in every framing
and encoding (all must come out intact); each field of each reading type made wrong in many
ways (that reading alone refused, with a reason naming the field, unless it is an alarm: then
kept, salvaged); and alarms with any mix of bad fields (each one reading, whatever else is
wrong). The invariants every output must satisfy are in ``tests/fuzz/wire.py``.
"""

from __future__ import annotations

import random
import re
from typing import Any, Final

import pytest
from hypothesis import strategies as st

from schemas.decode import DEFAULT_MAX_FUTURE_MS, MessageDecoder
from schemas.readings import ALARM_TYPES, DEVICE_ID_PATTERN, MAX_TS_MS, MIN_TS_MS, TYPE_NAMES
from tests.fuzz.budget import fuzz, randoms
from tests.fuzz.values import (
    JSON_TYPES,
    MISSING,
    MSGPACK_TYPES,
    Missing,
    breaks_json,
    encodings,
    r_id,
    r_json,
    r_number,
    r_text,
)
from tests.fuzz.wire import (
    DECODER,
    DEV,
    DEV_ID,
    GW,
    NOW,
    STRUCTS,
    expected,
    framings,
    names_field,
    r_doc,
    r_duplicate_keys,
    r_invalid,
    r_reading_like,
    r_valid,
    run_decode,
    salvaged,
)

# -- decoder: arbitrary input --------------------------------------------------------------------
content_types = st.sampled_from([*JSON_TYPES, *MSGPACK_TYPES, "text/plain", "",
                                 "application/json; charset=utf-8"]) | st.text(max_size=100)
decoders = st.builds(MessageDecoder, max_payload_bytes=st.integers(0, 4096),
                     max_future_ms=st.integers(0, 10**12)) | st.just(DECODER)
clocks = st.integers(MIN_TS_MS - 10**12, MAX_TS_MS + 10**12) | st.just(NOW)
MATRIX: Final = [(topic, ct) for topic in (DEV, GW) for ct in (None, "application/msgpack")]


@fuzz(1_200, cases=1_200 * 5, payload=st.binary(max_size=2048),
      topic=st.sampled_from([DEV, GW, "junk/topic"]), content_type=content_types,
      decoder=decoders, now_ms=clocks)
def test_decode_arbitrary_bytes(payload: bytes, topic: str, content_type: str | None,
                                decoder: MessageDecoder, now_ms: int) -> None:
    """Random bytes under any content type, limits and clock, and as JSON and MessagePack on
    both topic kinds: readings or reasons, nothing else."""
    run_decode(topic, payload, content_type, decoder=decoder, now_ms=now_ms)
    for t, ct in MATRIX:
        run_decode(t, payload, ct)


def arbitrary_json_case(rng: random.Random) -> None:
    """Random JSON, reading-shaped objects with wrong values (NaN literals and invalid UTF-8
    included) or repeated keys, in either encoding, on either topic, under random limits."""
    roll = rng.random()
    if roll < 0.15:
        dup = r_duplicate_keys(rng)
        payload, ct = (dup if rng.random() < 0.5 else b"[" + dup + b"," + dup + b"]"), None
    else:
        doc = (r_json(rng) if roll < 0.4 else r_reading_like(rng) if roll < 0.8
               else [r_reading_like(rng) for _ in range(rng.randint(1, 4))])
        payload, ct = rng.choice(encodings(doc, rng.randrange(6)))
    decoder, now = DECODER, NOW
    if rng.random() < 0.2:  # deployments configure the limits; the clock is anything
        decoder = MessageDecoder(max_payload_bytes=rng.randint(0, 4096),
                                 max_future_ms=rng.randint(0, 10**12))
        now = rng.randint(MIN_TS_MS - 10**12, MAX_TS_MS + 10**12)
    run_decode(rng.choice((DEV, GW)), payload, ct, decoder=decoder, now_ms=now)


@fuzz(600, cases=600 * 16, **randoms)
def test_decode_arbitrary_json(drawn: random.Random, rng: random.Random) -> None:
    """Random JSON documents: one shrinkable, fifteen seeded."""
    arbitrary_json_case(drawn)
    for _ in range(15):
        arbitrary_json_case(rng)


# -- decoder: every field of every reading type --------------------------------------------------
def valid_cases(rng: random.Random) -> None:
    """Valid readings in every framing and encoding: all come out, intact."""
    docs = [r_doc(rng) for _ in range(rng.randint(1, 4))]
    style = rng.randrange(6)
    for framing in framings(docs, r_id(rng), names_itself=rng.random() < 0.5):
        for payload, ct in encodings(framing.payload_object(), style):
            out = run_decode(framing.topic, payload, ct)
            assert out.rejects == [], out.rejects
            assert out.readings == [expected(d) for d in framing.docs], payload


@fuzz(300, cases=300 * 5 * 4, **randoms)  # five calls, each 4-6 cases
def test_decode_valid_readings_are_accepted(drawn: random.Random, rng: random.Random) -> None:
    """The positive half: valid readings of every type are never refused."""
    valid_cases(drawn)
    for _ in range(4):
        valid_cases(rng)


FIELD_CASES: Final = [(cls, f.name) for cls, info in STRUCTS.items() for f in info.fields] + [
    (cls, "type") for cls in STRUCTS]


def r_bad_field(rng: random.Random, cls: type, field: str, *, gateway: bool) -> Any:
    """What ``field`` of ``cls`` must refuse, including the rules beyond its type."""
    if field == "type":
        return rng.choice((MISSING, None, r_number(rng), [TYPE_NAMES[cls]],
                           TYPE_NAMES[cls].upper(), r_text(rng) + "?"))
    info = next(f for f in STRUCTS[cls].fields if f.name == field)
    if field == "ts" and rng.random() < 0.2:  # further ahead than the decoder allows
        return rng.randint(NOW + DEFAULT_MAX_FUTURE_MS + 1, MAX_TS_MS)
    if field == "device_id" and rng.random() < 0.3:
        # A gateway must name each device; a device may not speak for another.
        return rng.choice((MISSING, None)) if gateway else DEV_ID + "-" + r_id(rng)
    return r_invalid(rng, info.type, required=info.required)


def _kept_alarm(cls: type, field: str, value: Any, framing: str) -> bool:
    """Whether an alarm with ``field`` made ``value`` must be kept (the alarm salvage): always,
    unless its type is gone or it names no device of its own (docs/wire-contract.md)."""
    if TYPE_NAMES[cls] not in ALARM_TYPES or field == "type":
        return False
    if field != "device_id":
        return True
    # A valid id of another device: spoofed. An id that is not an id: the topic's device.
    spoofed = isinstance(value, str) and re.search(DEVICE_ID_PATTERN, value) is not None
    return framing != "gateway" and not spoofed


def bad_field_cases(rng: random.Random, cls: type, field: str) -> None:
    """One field of an otherwise valid reading made wrong, in every framing and encoding: that
    reading alone is refused with a reason naming the field, or, an alarm, kept as salvaged and
    dead-lettered all the same; its neighbours are kept."""
    docs = [r_doc(rng) for _ in range(rng.randint(0, 3))]
    at = rng.randint(0, len(docs))
    docs.insert(at, r_doc(rng, cls))
    bad = {gateway: r_bad_field(rng, cls, field, gateway=gateway) for gateway in (False, True)}
    style = rng.randrange(6)
    for framing in framings(docs, r_id(rng), names_itself=rng.random() < 0.5):
        value = bad[framing.name == "gateway"]
        good = [expected(d) for i, d in enumerate(framing.docs) if i != at]
        alarm = _kept_alarm(cls, field, value, framing.name)
        kept = good[:at] + [salvaged(framing.docs[at], [field])] + good[at:] if alarm else good
        if isinstance(value, Missing):
            framing.docs[at].pop(field, None)
        else:
            framing.docs[at][field] = value
        for payload, ct in encodings(framing.payload_object(), style):
            out = run_decode(framing.topic, payload, ct)
            broken = ct not in MSGPACK_TYPES and breaks_json(value)
            whole = [r for r in out.rejects if r.raw == payload
                     and r.reason.startswith(("malformed JSON", "payload is not valid UTF-8"))]
            if broken and whole:
                # Refused whole, as malformed JSON may be (msgspec may also refuse the field's
                # type before it reads the broken string: then the checks below hold).
                assert not out.readings and len(out.rejects) == 1
                continue
            (reject,) = out.rejects
            # Not JSON at all: msgspec reads past a broken string it does not decode, but not
            # past a broken object key, so an alarm may or may not have anything to salvage.
            admitted = alarm and (reject.admitted if broken else True)
            assert reject.admitted == admitted, reject
            if admitted:
                assert "alarm admitted anyway" in reject.reason, reject
            assert out.readings == (kept if admitted else good), (framing.name, payload)
            assert names_field(reject.reason, field), (reject.reason, payload)
            if framing.name == "object":
                assert reject.raw == payload
            else:
                assert reject.reason.startswith(f"reading [{at}]: ") and reject.raw in payload


@pytest.mark.parametrize(("cls", "field"), FIELD_CASES,
                         ids=[f"{TYPE_NAMES[c]}.{f}" for c, f in FIELD_CASES])
# Four calls an example; a call runs 2-3 framings x 1-2 encodings, 4.5 cases on average.
@fuzz(13, cases=13 * 4 * len(FIELD_CASES) * 7 // 2, **randoms)
def test_decode_each_bad_field(cls: type, field: str, drawn: random.Random,
                               rng: random.Random) -> None:
    """Every field of every reading type, each wrong in many ways."""
    bad_field_cases(drawn, cls, field)
    for _ in range(3):
        bad_field_cases(rng, cls, field)


# -- decoder: an alarm is never lost to what else is wrong with it -------------------------------
ALARM_CLASSES: Final = [cls for cls in STRUCTS if TYPE_NAMES[cls] in ALARM_TYPES]


def r_alarm(rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """An alarm object (without ``device_id``) whose every field is valid, invalid or missing
    at random, some junk beside them, and the fields it got wrong."""
    cls = rng.choice(ALARM_CLASSES)
    doc: dict[str, Any] = {"type": TYPE_NAMES[cls]}
    bad: list[str] = []
    for f in STRUCTS[cls].fields:
        if f.name == "device_id":
            continue
        roll = rng.random()
        if roll < 0.4:
            doc[f.name] = (rng.randint(MIN_TS_MS, NOW + DEFAULT_MAX_FUTURE_MS) if f.name == "ts"
                           else r_valid(rng, f.type))
        elif roll < 0.8:
            value = (rng.choice((0, -1, MIN_TS_MS - 1, NOW + DEFAULT_MAX_FUTURE_MS + 1,
                                 MAX_TS_MS - 1, r_text(rng))) if f.name == "ts" and roll < 0.5
                     else r_invalid(rng, f.type, required=f.required))
            if not isinstance(value, Missing):
                doc[f.name] = value
            if f.required or not isinstance(value, Missing):
                bad.append(f.name)
        elif f.required:
            bad.append(f.name)
    for _ in range(rng.randint(0, 2)):
        doc["x-" + r_id(rng)[:8]] = r_json(rng, 2)  # unknown: ignored
    items = list(doc.items())
    rng.shuffle(items)
    return dict(items), bad


def alarm_cases(rng: random.Random) -> None:
    """Alarms with any mix of bad fields among valid readings, in every framing and encoding:
    each alarm whose device can be read comes out as exactly one reading, the others intact."""
    docs = [r_doc(rng) for _ in range(rng.randint(0, 2))]
    alarms = [r_alarm(rng) for _ in range(rng.randint(1, 2))]
    slots = sorted(rng.sample(range(len(docs) + len(alarms)), len(alarms)))
    bad: dict[int, list[str]] = {}
    for slot, (doc, wrong) in zip(slots, alarms, strict=True):
        docs.insert(slot, doc)
        bad[slot] = wrong
    style = rng.randrange(6)
    for framing in framings(docs, r_id(rng), names_itself=rng.random() < 0.5):
        want = [salvaged(d, bad[i]) if i in bad else expected(d)
                for i, d in enumerate(framing.docs)]
        for payload, ct in encodings(framing.payload_object(), style):
            if ct not in MSGPACK_TYPES and breaks_json(framing.docs):
                continue  # not JSON at all (a NaN literal, a lone surrogate): nothing to read
            out = run_decode(framing.topic, payload, ct)
            assert out.readings == want, (framing.name, payload)
            admitted = [j for j in out.rejects if j.admitted]
            assert len(admitted) == sum(bool(b) for b in bad.values()), out.rejects
            assert all(not j.admitted for j in out.rejects if j not in admitted)
            assert len(out.rejects) == len(admitted)


# Four calls an example, each 2-3 framings x 1-2 encodings: 13.5 cases an example on average.
@fuzz(250, cases=250 * 4 * 3, **randoms)
def test_decode_keeps_every_attributed_alarm(drawn: random.Random, rng: random.Random) -> None:
    """The alarm rule: whatever else is wrong with it, an alarm yields one reading."""
    alarm_cases(drawn)
    for _ in range(3):
        alarm_cases(rng)
