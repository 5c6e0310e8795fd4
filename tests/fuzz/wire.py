"""The wire contract, for the decoder's fuzz tests: its invariants, and readings derived from it.

:func:`run_decode` runs one case through ``MessageDecoder`` and checks everything any output
must satisfy. The reading generators read every field, type and limit off the schema with
``msgspec.inspect``, so a new field is fuzzed without editing these files.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from foundation.errors import ValidationError
from schemas.decode import DEFAULT_MAX_FUTURE_MS, Decoded, MessageDecoder
from schemas.readings import (
    ALARM_TYPES,
    DEVICE_ID_PATTERN,
    MAC_PATTERN,
    MIN_TS_MS,
    READING_TYPES,
    TYPE_NAMES,
    VENDOR_CODE_PATTERN,
    RadioScan,
    Reading,
    Vitals,
)
from schemas.topics import parse_topic
from tests.fuzz.budget import one_case
from tests.fuzz.values import (
    HUGE,
    MISSING,
    Missing,
    r_id,
    r_json,
    r_number,
    r_text,
    r_wrong,
    to_json,
)

NOW: Final = 1_790_000_000_000  # a fixed clock (2026-09): every example is reproducible
REGION, DEV_ID = "371002", "BR-1"
DEV: Final = f"eldercare/v1/{REGION}/dev/{DEV_ID}"
GW: Final = f"eldercare/v1/{REGION}/gw/GW-1"
DECODER: Final = MessageDecoder()
# The ingest limit is configurable ([ingest] max_payload_bytes), so 10^6-element arrays must
# also survive a decoder that lets them through.
BIG_DECODER: Final = MessageDecoder(max_payload_bytes=64 * 1024 * 1024)
_ROUNDTRIP: Final = msgspec.json.Decoder(Reading)


# -- the decoder's contract ---------------------------------------------------------------------
def _floats(value: object) -> Iterable[float]:
    """Every float of a reading, in its lists and nested structs too."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)
    elif isinstance(value, msgspec.Struct):
        for item in msgspec.structs.astuple(value):
            yield from _floats(item)


def check_decoded(decoder: MessageDecoder, topic: str, payload: bytes, out: Decoded, *,
                  now_ms: int, content_type: str | None, again: bool) -> None:
    """The decoder's contract, for any input."""
    assert out.readings or out.rejects, "a message vanished: neither accepted nor rejected"
    for reject in out.rejects:
        assert isinstance(reject.reason, str) and reject.reason.strip()
        reject.reason.encode("utf-8")  # the dead-letter row stores it as text
        assert isinstance(reject.raw, bytes)
    try:
        parsed = parse_topic(topic)
    except ValidationError as exc:
        assert out.topic is None and not out.readings
        assert [r.reason for r in out.rejects] == [exc.reason]
        return
    assert out.topic == parsed
    if len(payload) > decoder.max_payload_bytes:
        assert not out.readings and len(out.rejects) == 1
        assert "exceeds the limit" in out.rejects[0].reason
    # Every reading of a normal message; a sample of a 10^6-reading one (the CPU budget).
    for r in out.readings if len(out.readings) <= 10_000 else out.readings[::997]:
        assert type(r) in READING_TYPES and r.device_id is not None
        if parsed.kind == "dev":
            assert r.device_id == parsed.source_id
        # Nothing beyond the clock's limit: an alarm from a clock far ahead has the receipt
        # time (which only a host clock before 2020 can leave ahead of itself, clamped).
        assert MIN_TS_MS <= r.ts <= max(now_ms + decoder.max_future_ms, MIN_TS_MS), r
        assert all(math.isfinite(v) for v in _floats(r)), r
        assert _ROUNDTRIP.decode(msgspec.json.encode(r)) == r  # within every schema limit
    # An admitted reject is an alarm kept (no admission here: one record per kept alarm).
    if decoder.admission is None:
        alarms = sum(TYPE_NAMES[type(r)] in ALARM_TYPES for r in out.readings)
        assert sum(j.admitted for j in out.rejects) <= alarms, out
    if again:  # deterministic: same input, same result
        assert decoder.decode(topic, payload, now_ms=now_ms, content_type=content_type) == out


def run_decode(topic: str, payload: bytes, content_type: str | None = None, *,
               decoder: MessageDecoder = DECODER, now_ms: int = NOW,
               again: bool = True) -> Decoded:
    """One decoder case: decode, check the contract, count."""
    one_case()
    out = decoder.decode(topic, payload, now_ms=now_ms, content_type=content_type)
    try:
        check_decoded(decoder, topic, payload, out, now_ms=now_ms,
                      content_type=content_type, again=again)
    except AssertionError as exc:
        raise AssertionError(f"{exc} | topic={topic!r:.300} content_type={content_type!r:.100}"
                             f" payload={payload!r:.3000} -> {out!r:.3000}") from exc
    return out


def names_field(reason: str, field: str) -> bool:
    """Whether a reject reason points at ``field`` (msgspec: ``$.f`` or ``field `f```)."""
    return f"$.{field}" in reason or f"`{field}`" in reason


# -- readings, from the schema ------------------------------------------------------------------
def _structs() -> dict[type, mi.StructType]:
    union = mi.type_info(Reading)
    assert isinstance(union, mi.UnionType)
    return {t.cls: t for t in union.types if isinstance(t, mi.StructType)}


STRUCTS: Final = _structs()  # each reading type's fields, limits included
FIELD_TYPES: Final = {f.name: f.type for info in STRUCTS.values() for f in info.fields}
READING_KEYS: Final = sorted([*FIELD_TYPES, "type"])
MEASUREMENTS: Final = ("heart_rate_bpm", "spo2_pct", "body_temp_c", "systolic_mmhg",
                       "diastolic_mmhg", "steps")
AXES: Final = ("x", "y", "z")


def _bounds(t: mi.IntType | mi.FloatType) -> tuple[float, float]:
    assert t.ge is not None and t.le is not None, "every numeric field has both limits"
    return t.ge, t.le


def r_valid(rng: random.Random, t: mi.Type) -> Any:
    """A value the schema type ``t`` accepts, often at its limits (lists kept short)."""
    if isinstance(t, mi.UnionType):
        (inner,) = [u for u in t.types if not isinstance(u, mi.NoneType)]
        return None if rng.random() < 0.3 else r_valid(rng, inner)
    if isinstance(t, mi.IntType):
        ilo, ihi = (int(b) for b in _bounds(t))
        return rng.choice((ilo, ihi, rng.randint(ilo, ihi)))
    if isinstance(t, mi.FloatType):
        lo, hi = _bounds(t)
        edges = [x for x in (-0.0, 5e-324) if lo <= x <= hi]
        return rng.choice((lo, hi, rng.uniform(lo, hi), rng.randint(math.ceil(lo), int(hi)),
                           *edges))
    if isinstance(t, mi.StrType):
        if t.pattern == VENDOR_CODE_PATTERN:  # printable ASCII, 1-64
            lo, hi = t.min_length or 1, t.max_length or 64
            return "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.choice((lo, hi,
                                                                                   rng.randint(lo, hi)))))
        if t.pattern == MAC_PATTERN:
            return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        assert t.pattern == DEVICE_ID_PATTERN, "a new string field needs a generator here"
        return r_id(rng)
    if isinstance(t, mi.LiteralType):
        return rng.choice(t.values)
    if isinstance(t, mi.BoolType):
        return rng.random() < 0.5
    if isinstance(t, mi.ListType):
        n = rng.randint(t.min_length or 0, min(t.max_length or 8, 8))
        return [r_valid(rng, t.item_type) for _ in range(n)]
    if isinstance(t, mi.StructType):  # a nested object (a radio scan's tower or access point)
        return {f.name: r_valid(rng, f.type) for f in t.fields
                if f.required or rng.random() < 0.5}
    raise TypeError(f"no generator for {t}")


def r_invalid(rng: random.Random, t: mi.Type, *, required: bool) -> Any:
    """A value the schema type ``t`` refuses: a wrong type, out of range, malformed.

    ``None`` and MISSING only where the field is required (for an optional one they are fine).
    """
    if isinstance(t, mi.UnionType):  # Optional[X]: anything X refuses except None
        (inner,) = [u for u in t.types if not isinstance(u, mi.NoneType)]
        return r_invalid(rng, inner, required=False)
    options: list[Callable[[], Any]] = [lambda: MISSING, lambda: None] if required else []
    bits = rng.choice((1, 8, 40, 70))
    if isinstance(t, mi.IntType):
        ilo, ihi = (int(b) for b in _bounds(t))
        options += [lambda: ilo - 1 - rng.getrandbits(bits),
                    lambda: ihi + 1 + rng.getrandbits(bits),
                    lambda: float(rng.randint(ilo, ihi)) + rng.choice((0.0, 0.5)),
                    lambda: rng.choice(HUGE), lambda: r_wrong(rng)]
    elif isinstance(t, mi.FloatType):
        lo, hi = _bounds(t)
        options += [lambda: rng.choice((math.nextafter(lo, -math.inf), lo - 1, -math.inf)),
                    lambda: rng.choice((math.nextafter(hi, math.inf), hi + 1, math.inf, 1e308)),
                    lambda: math.nan, lambda: math.ceil(lo) - 1 - rng.getrandbits(bits),
                    lambda: rng.choice(HUGE), lambda: r_wrong(rng)]
    elif isinstance(t, mi.StrType):
        assert t.pattern is not None
        # re.search is what msgspec runs. A valid id with a final newline is the near miss a
        # `$` anchor used to let through.
        options += [lambda: next((s for s in (r_text(rng, 80) for _ in range(5))
                                  if re.search(t.pattern or "", s) is None), ""),
                    lambda: "x" * 65, lambda: r_number(rng), lambda: rng.random() < 0.5,
                    lambda: [r_id(rng)],
                    # A near miss for this pattern (a space is fine in a vendor code).
                    lambda: next(s for s in (r_id(rng) + suffix for suffix in
                                             rng.sample(("\n", "\r\n", " "), 3))
                                 if re.search(t.pattern or "", s) is None)]
    elif isinstance(t, mi.LiteralType):
        options += [lambda: r_text(rng) + "?", lambda: str(rng.choice(t.values)).upper() + " ",
                    lambda: r_number(rng), lambda: True, lambda: [rng.choice(t.values)]]
    elif isinstance(t, mi.BoolType):
        options += [lambda: rng.choice((0, 1, 2)), lambda: rng.uniform(-2.0, 2.0),
                    lambda: rng.choice(("true", "false", "")), lambda: [True]]
    elif isinstance(t, mi.ListType):
        item = t.item_type

        def one_bad_item() -> list[Any]:
            bad: Any = MISSING
            while isinstance(bad, Missing):
                bad = r_invalid(rng, item, required=True)
            out: list[Any] = r_valid(rng, t)
            out.insert(rng.randint(0, len(out)), bad)
            return out

        # An empty list is wrong only where the schema asks for items.
        options += [*([list] if t.min_length else []), lambda: r_text(rng),
                    lambda: r_number(rng), lambda: {"0": r_valid(rng, item)},
                    lambda: [0.0] * ((t.max_length or 8) + 1), one_bad_item]
    elif isinstance(t, mi.StructType):
        fields = t.fields

        def one_bad_field() -> dict[str, Any]:
            obj: dict[str, Any] = r_valid(rng, t)
            f = rng.choice(fields)
            bad = r_invalid(rng, f.type, required=f.required)
            if isinstance(bad, Missing):
                obj.pop(f.name, None)
            else:
                obj[f.name] = bad
            return obj

        options += [lambda: r_text(rng), lambda: r_number(rng), lambda: [r_valid(rng, t)],
                    lambda: rng.random() < 0.5, one_bad_field]
    else:
        raise TypeError(f"no generator for {t}")
    return rng.choice(options)()


def r_doc(rng: random.Random, cls: type | None = None) -> dict[str, Any]:
    """A valid wire object of reading type ``cls`` (any when None) without ``device_id``, its
    keys in random order."""
    cls = cls or rng.choice(READING_TYPES)
    doc: dict[str, Any] = {"type": TYPE_NAMES[cls],
                           "ts": rng.choice((MIN_TS_MS, NOW + DEFAULT_MAX_FUTURE_MS,
                                             rng.randint(MIN_TS_MS, NOW)))}
    for f in STRUCTS[cls].fields:
        if f.name not in ("device_id", "ts", *AXES) and (f.required or rng.random() < 0.5):
            doc[f.name] = r_valid(rng, f.type)
    if cls is Vitals and not any(doc.get(m) is not None for m in MEASUREMENTS):
        doc["steps"] = rng.randint(0, 100_000)
    if cls is RadioScan and not (doc.get("cells") or doc.get("wifi")):
        wifi = next(f.type for f in STRUCTS[cls].fields if f.name == "wifi")
        assert isinstance(wifi, mi.ListType)
        doc["wifi"] = [r_valid(rng, wifi.item_type)]
    if any(f.name == "x" for f in STRUCTS[cls].fields):
        n = rng.randint(1, 8)  # accel: three axes of one length
        for axis in AXES:
            doc[axis] = [rng.choice((-200.0, 200.0, rng.uniform(-200, 200))) for _ in range(n)]
    items = list(doc.items())
    rng.shuffle(items)
    return dict(items)


def r_reading_like(rng: random.Random) -> dict[str, Any]:
    """Reading-shaped: a tag (maybe unknown), a ts, and random fields with valid or random
    values, so some pass and most fail somewhere."""
    doc: dict[str, Any] = {"type": rng.choice([*TYPE_NAMES.values(), "x", ""]),
                           "ts": rng.choice((NOW, r_number(rng)))}
    for key in rng.sample(READING_KEYS, rng.randint(0, 6)):
        doc[key] = (r_valid(rng, FIELD_TYPES[key]) if key in FIELD_TYPES and rng.random() < 0.5
                    else r_json(rng, 2))
    return doc


def r_duplicate_keys(rng: random.Random) -> bytes:
    """A reading-like JSON object whose keys repeat (JSON allows it; the last one wins)."""
    items = [("type", rng.choice(list(TYPE_NAMES.values()))), ("ts", NOW)]
    items += [(rng.choice(READING_KEYS), r_json(rng, 1)) for _ in range(rng.randint(1, 6))]
    rng.shuffle(items)
    return b"{" + b",".join(to_json(k) + b":" + to_json(v) for k, v in items) + b"}"


def expected(doc: dict[str, Any]) -> Reading:
    """The reading ``doc`` must decode to (``device_id`` from the device topic when absent)."""
    reading: Reading = msgspec.convert(dict(doc, device_id=doc.get("device_id") or DEV_ID),
                                       Reading)
    return reading


#: What an alarm's required field that cannot be read is taken as (docs/wire-contract.md,
#: alarm salvage): written out here rather than imported, an oracle of its own.
SAFE_SIDE: Final[dict[tuple[str, str], object]] = {
    ("wear", "worn"): False, ("home_alarm", "sensor"): "panic", ("home_alarm", "active"): True,
    ("device_alarm", "alarm"): "other"}


def salvaged(doc: dict[str, Any], bad: Iterable[str], *, now_ms: int = NOW) -> Reading:
    """The reading an alarm ``doc`` whose ``bad`` fields break the contract must be kept as:
    ``ts`` the receipt time, a required field its safe side, anything else dropped (an unreadable
    ``device_id`` included: then the device topic's)."""
    fixed = dict(doc)
    for name in bad:
        if name == "ts":
            fixed["ts"] = now_ms
        elif (doc["type"], name) in SAFE_SIDE:
            fixed[name] = SAFE_SIDE[doc["type"], name]
        else:
            fixed.pop(name, None)
    return expected(fixed)


@dataclass(frozen=True, slots=True)
class Framing:
    """How readings travel: alone on the device topic, an array there, or a gateway batch."""

    name: str
    topic: str
    docs: list[dict[str, Any]]

    def payload_object(self) -> object:
        """What is encoded: the one object, or the array."""
        return self.docs[0] if self.name == "object" else self.docs


def framings(docs: list[dict[str, Any]], gw_id: str, *, names_itself: bool) -> list[Framing]:
    """Every framing ``docs`` can travel in (in a gateway batch each doc names a device)."""
    own = [d | {"device_id": DEV_ID} if names_itself else dict(d) for d in docs]
    out = [Framing("array", DEV, own),
           Framing("gateway", GW, [d | {"device_id": f"{gw_id[:60]}-{i}"}
                                   for i, d in enumerate(docs)])]
    return [Framing("object", DEV, [dict(own[0])]), *out] if len(docs) == 1 else out

