"""Fuzzing every decoder and parser at eldercare's edges (issue #7, "Bad input").

Whatever arrives must be accepted or refused with a reason: never a crash, never a hang.

* ``MessageDecoder`` (MQTT payloads, JSON and MessagePack): arbitrary bytes and JSON, byte-level
  mutations of valid payloads, every field of every reading type replaced by a wrong type or an
  out-of-range value (derived from the schema with ``msgspec.inspect``, so a new field is fuzzed
  without editing this file), duplicate keys, topics of every wrong shape (unicode, wildcards),
  and explicit pathological payloads (10,000-deep nesting, 1e400, 10**400, -0, 1e-400,
  NaN/Infinity, 10^6-element arrays, non-UTF-8, oversized). Invariants: something always comes
  out; reject reasons are non-empty text a dead-letter row can store; accepted readings carry the
  topic's device id, hold no NaN/inf, re-validate against the schema and lie in the clock window;
  decoding is deterministic.
* File parsers, fed structural and textual mutations of the shipped examples, random documents
  and random bytes: only the documented error may escape ``parse_registry`` (RegistryError),
  ``parse_tokens``, ``parse_scenario``, ``load_policy``, ``load_config`` (ConfigError),
  ``read_recording``, ``load_labels`` and ``load_events`` (ValidationError).
* ``alerts.templates.render``: arbitrary JSON bodies never raise.

Case budget. A *case* is one input run through a decoder or parser and checked. Hypothesis
spends 0.7 ms per example on the 2-core machine this runs on before any work, and 5 ms drawing
one nested JSON value, so 100,000 examples cannot fit in a minute and a half. The generators are
therefore plain functions of a ``random.Random``, and each example fans out: its first case
draws from ``st.randoms()`` (every choice a hypothesis draw, so it shrinks), the others from
``st.randoms(use_true_random=True)`` (seeded by hypothesis: cheap, and a failure reproduces from
the seed and blob hypothesis prints; the failing input is in the assertion message). Every test
counts its cases; the last test prints the table and fails if any test ran fewer than planned
or the total drops below ``MIN_TOTAL_CASES``. Each example has a hypothesis deadline (the hang
guard; pytest-timeout backs it up) and the giant explicit inputs assert their CPU time. No
example database is written (``database=None``), so runs stay private.

Bugs this suite found are listed in ``KNOWN_BUGS`` (parser crashes) and ``_newline_hole`` (a
decoder validation hole), each pinned by an ``xfail(strict=True)`` test with its smallest input.
The property tests tolerate (and count) exactly those signatures, so they keep hunting for new
ones; when a bug is fixed its xfail passes, which fails the run: then delete its entry.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import re
import struct
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alerts.auth import TokenTable, parse_tokens
from alerts.policy import Policy, load_policy
from alerts.templates import TYPE_WORDS, Rendered, render
from device_sim.recording import read_recording
from device_sim.scenario import Scenario, parse_scenario
from device_sim.score import load_events, load_labels
from eldercare.config import Config, load_config
from eldercare.errors import ConfigError, RegistryError, ValidationError
from schemas.decode import DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_PAYLOAD_BYTES, Decoded, MessageDecoder
from schemas.readings import (
    DEVICE_ID_PATTERN,
    MAX_TS_MS,
    MIN_TS_MS,
    READING_TYPES,
    TYPE_NAMES,
    Reading,
    Vitals,
)
from schemas.registry import Registry, parse_registry
from schemas.topics import parse_topic

ROOT: Final = Path(__file__).resolve().parents[1]
MIN_TOTAL_CASES: Final = 100_000
NOW: Final = 1_790_000_000_000  # a fixed clock (2026-09): every example is reproducible
REGION, DEV_ID = "371002", "BR-1"
DEV: Final = f"eldercare/v1/{REGION}/dev/{DEV_ID}"
GW: Final = f"eldercare/v1/{REGION}/gw/GW-1"
JSON_TYPES: Final = (None, "application/json", "text/json")
MSGPACK_TYPES: Final = ("application/msgpack", "application/x-msgpack")
DECODER: Final = MessageDecoder()
# The ingest limit is configurable ([ingest] max_payload_bytes), so 10^6-element arrays must
# also survive a decoder that lets them through.
BIG_DECODER: Final = MessageDecoder(max_payload_bytes=64 * 1024 * 1024)
_ROUNDTRIP: Final = msgspec.json.Decoder(Reading)
_TOPIC_ORACLE: Final = re.compile(r"eldercare/v1/[a-z0-9-]{1,32}/(dev|gw)/[A-Za-z0-9_.:-]{1,64}")

# -- case accounting --------------------------------------------------------------------------
TestFn = Callable[..., None]
BUDGET: dict[str, int] = {}  # test -> cases it plans to run
CASES: Counter[str] = Counter()  # test -> cases it ran
KNOWN_HITS: Counter[str] = Counter()  # known bug -> times the fuzzers hit it
_RUNNING = [""]  # the test whose cases are being counted
_FUZZ: Final = settings(
    deadline=timedelta(seconds=3),  # the hang guard: the slowest example takes tens of ms
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


def budget(cases: int) -> Callable[[TestFn], TestFn]:
    """Plan ``cases`` for the decorated test (all its parametrizations together), and count its
    cases under its name."""
    def apply(test: TestFn) -> TestFn:
        name = test.__name__
        BUDGET[name] = BUDGET.get(name, 0) + cases

        @functools.wraps(test)
        def running(*args: Any, **kwargs: Any) -> None:
            _RUNNING[0] = name
            test(*args, **kwargs)
        return running
    return apply


def fuzz(max_examples: int, *, cases: int,
         **strategies: st.SearchStrategy[Any]) -> Callable[[TestFn], TestFn]:
    """``@given(**strategies)`` with the suite's settings, planning ``cases`` cases."""
    def apply(test: TestFn) -> TestFn:
        running = budget(cases)(test)
        wrapped: TestFn = settings(_FUZZ, max_examples=max_examples)(given(**strategies)(running))
        return wrapped
    return apply


def one_case() -> None:
    """Count one input run through a decoder or parser."""
    CASES[_RUNNING[0]] += 1


# The first case of an example draws through `drawn` (shrinkable), the rest through `rng`.
randoms: Final = {"drawn": st.randoms(), "rng": st.randoms(use_true_random=True)}


# -- known bugs (reported; each has an xfail(strict=True) test at the end) ----------------------
@dataclass(frozen=True, slots=True)
class KnownBug:
    """A crash signature: exception types, message pattern, a file on the traceback."""

    key: str
    parsers: frozenset[str]
    exc: tuple[type[BaseException], ...]
    message: str
    raised_in: str


KNOWN_BUGS: Final = (
    # zoneinfo raises IsADirectoryError for "Asia" and OSError(ENAMETOOLONG) for long names;
    # the __post_init__ / check only catch ZoneInfoNotFoundError and ValueError.
    KnownBug("zoneinfo-oserror", frozenset({"registry", "scenario", "config"}), (OSError,), "",
             "zoneinfo"),
    # PyYAML's SafeConstructor raises ValueError (timestamps out of range, ints over 4300
    # digits, `!!int x`), AttributeError (`!!timestamp 1`) and KeyError (`!!bool x`), which
    # msgspec.yaml does not translate into DecodeError (it catches only YAMLError).
    KnownBug("yaml-constructor", frozenset({"registry", "tokens", "scenario", "policy"}),
             (ValueError, AttributeError, KeyError), "", "yaml/constructor.py"),
    # msgspec.json reports bad UTF-8 as a bare UnicodeDecodeError (schemas/decode.py knows).
    KnownBug("json-non-utf8", frozenset({"registry", "tokens", "scenario", "recording"}),
             (UnicodeDecodeError,), "", ""),
    # load_policy reads the file with read_text("utf-8") outside its try.
    KnownBug("policy-non-utf8", frozenset({"policy"}), (UnicodeDecodeError,), "", ""),
    # msgspec.toml decodes the bytes before its try; tomllib recurses per nesting level.
    KnownBug("toml-non-utf8", frozenset({"config"}), (UnicodeDecodeError,), "", ""),
    KnownBug("toml-recursion", frozenset({"config"}), (RecursionError,), "", "tomllib"),
    # check_scenario adds duration_s to a start near year 9999.
    KnownBug("scenario-overflow", frozenset({"scenario"}), (OverflowError,), "date value",
             "device_sim/scenario.py"),
    # msgspec.json raises RecursionError past its nesting limit (schemas/decode.py knows): in a
    # scenario it comes from skipping a deep value while looking for an incident's `type` tag;
    # parse_scenario and read_recording catch only DecodeError and ValidationError.
    KnownBug("json-recursion", frozenset({"scenario", "recording"}), (RecursionError,), "", ""),
)


def _known_bug(parser: str, exc: BaseException) -> str | None:
    """The key of the known bug ``exc`` is an instance of, in ``parser``, or None."""
    files = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
    for bug in KNOWN_BUGS:
        if (parser in bug.parsers and isinstance(exc, bug.exc)
                and re.search(bug.message, str(exc))
                and any(bug.raised_in in name for name in files)):
            return bug.key
    return None


def accept_or_refuse(parser: str, call: Callable[[], object], documented: type[Exception],
                     result: type, doc: object) -> None:
    """One parser case: ``result`` comes back or ``documented`` is raised with a message; a
    known bug is counted; anything else fails, showing the input."""
    one_case()
    try:
        value = call()
    except documented as exc:
        assert str(exc).strip(), "an error must say what is wrong"
        return
    except Exception as exc:  # anything but the documented error: is it a known bug?
        bug = _known_bug(parser, exc)
        if bug is None:
            raise AssertionError(f"{parser} raised {exc!r} for {doc!r:.3000}") from exc
        KNOWN_HITS[bug] += 1
        return
    assert isinstance(value, result)


# -- encoding -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Lit:
    """A JSON number literal Python cannot write (1e400, 10**5000); ``packed`` is its
    MessagePack stand-in, None when MessagePack has none."""

    text: str
    packed: float | int | None


class Missing:
    """Marks a field to delete rather than replace."""


MISSING: Final = Missing()
_MARK: Final = "\x00lit\x00"


def to_json(obj: object, *, ascii: bool = True, indent: int | None = None) -> bytes:
    """JSON with NaN/Infinity written as Python writes them (literals msgspec must refuse) and
    lone surrogates as CESU-8 bytes (invalid UTF-8)."""
    lits: list[Lit] = []

    def default(o: object) -> object:
        if isinstance(o, Lit):
            lits.append(o)
            return f"{_MARK}{len(lits) - 1}"
        raise TypeError(type(o).__name__)

    text = json.dumps(obj, default=default, ensure_ascii=ascii, indent=indent)
    for i, lit in enumerate(lits):
        text = text.replace(json.dumps(f"{_MARK}{i}", ensure_ascii=ascii), lit.text, 1)
    return text.encode("utf-8", "surrogatepass")


def to_msgpack(obj: object) -> bytes | None:
    """MessagePack, or None when ``obj`` holds something MessagePack cannot carry."""
    def hook(o: object) -> object:
        if isinstance(o, Lit) and o.packed is not None:
            return o.packed
        raise NotImplementedError
    try:
        return msgspec.msgpack.encode(obj, enc_hook=hook)
    except (NotImplementedError, OverflowError, TypeError, UnicodeEncodeError):
        return None


def packed(obj: object) -> bytes:
    """MessagePack of an explicit case (which must have one)."""
    out = to_msgpack(obj)
    assert out is not None
    return out


def encodings(obj: object, style: int) -> list[tuple[bytes, str | None]]:
    """``obj`` as JSON and, when it can carry it, MessagePack; ``style`` varies the content
    type, the whitespace around the JSON and whether it escapes non-ASCII."""
    pad = (b"", b" ", b"\n\t\r ")[style % 3]
    out = [(pad + to_json(obj, ascii=style % 2 == 0) + pad, JSON_TYPES[style % 3])]
    mp = to_msgpack(obj)
    if mp is not None:
        out.append((mp, MSGPACK_TYPES[style % 2]))
    return out


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def breaks_json(value: object) -> bool:
    """Whether ``to_json`` writes ``value`` so that the whole document is malformed: a NaN or
    infinite float (a bare literal) or a lone surrogate (an unpaired escape or CESU-8 bytes)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(breaks_json(k) or breaks_json(v) for k, v in value.items())
    if isinstance(value, list):
        return any(breaks_json(v) for v in value)
    return False


# -- the decoder's contract ---------------------------------------------------------------------
def _floats(reading: Reading) -> Iterable[float]:
    for value in msgspec.structs.astuple(reading):
        if isinstance(value, float):
            yield value
        elif isinstance(value, list):
            yield from value


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
        assert MIN_TS_MS <= r.ts <= now_ms + decoder.max_future_ms
        assert all(math.isfinite(v) for v in _floats(r)), r
        assert _ROUNDTRIP.decode(msgspec.json.encode(r)) == r  # within every schema limit
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


# -- generators: plain functions of a random.Random ---------------------------------------------
NASTY_STRINGS: Final = (
    "", " ", "\x00", "\n", "Asia", "UTC", "Asia/Shanghai", "../../etc/passwd", "a" * 300,
    "😀", "济南", "ＢＲ－１", "\u202e", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00-14:00",
    "2026-03-02T07:55:00+08:00", "24:00-06:00", "22:00-06:00", "dispatch", "family:0", "*",
    "sos", "BR-1\n", "true", "null", "NaN", "1e400", "\ud800",
)
NASTY_NUMBERS: Final = (
    0, -1, -0.0, 0.5, 2**31, 2**63, -(2**63) - 1, 2**64, 10**400, 1e308, 5e-324, math.nan,
    math.inf, -math.inf,
)
NESTED: Final[list[Any]] = []
_node = NESTED
for _ in range(60):  # json.dumps and PyYAML recurse too: the explicit cases go 10,000 deep
    _node.append([])
    _node = _node[0]
NASTY_POOL: Final[tuple[object, ...]] = (
    *NASTY_STRINGS, *NASTY_NUMBERS, None, True, False, [], {}, NESTED, [0] * 1000, "x" * 10_000,
    {"a": 1}, [None], ["Asia"], {"": ""}, [[1.0, 2.0]] * 3,
)
HUGE: Final = (Lit("1e400", math.inf), Lit("-1e400", -math.inf), Lit("1" + "0" * 400, None),
               Lit("-1" + "0" * 400, None), Lit("1" + "0" * 5000, None))
# Code point ranges: ASCII, controls, Latin-1, CJK, emoji, combining marks, bidi controls,
# full-width forms, lone surrogates.
_PLANES: Final = ((0x20, 0x7E), (0x00, 0x1F), (0x7F, 0xFF), (0x4E00, 0x9FFF), (0x1F600, 0x1F64F),
                  (0x0300, 0x036F), (0x200B, 0x202E), (0xFF01, 0xFF5E), (0xD800, 0xDFFF))
_ID_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"


def r_text(rng: random.Random, max_len: int = 12) -> str:
    """A short string, mostly ASCII, sometimes from one of the nastier planes."""
    lo, hi = _PLANES[0] if rng.random() < 0.6 else rng.choice(_PLANES)
    return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(0, max_len)))


def r_id(rng: random.Random) -> str:
    """A valid device id (1-64 of [A-Za-z0-9_.:-]), mostly short."""
    n = rng.choice((1, 2, 4, 8, 64, rng.randint(1, 64)))
    return "".join(rng.choice(_ID_CHARS) for _ in range(n))


def r_number(rng: random.Random) -> int | float:
    """Integers of every width and sign, and any double (NaN, inf, subnormal included)."""
    roll = rng.randrange(4)
    if roll == 0:
        return rng.choice(NASTY_NUMBERS)
    if roll == 1:
        return rng.getrandbits(rng.choice((4, 16, 32, 63, 64, 65, 200))) * rng.choice((1, -1))
    if roll == 2:
        return float(struct.unpack("<d", rng.randbytes(8))[0])
    return rng.uniform(-1e6, 1e6)


def r_json(rng: random.Random, depth: int = 3) -> Any:
    """A random JSON value: nasty scalars, numbers, strings, lists and objects."""
    roll = rng.random()
    if depth <= 0 or roll < 0.5:
        kind = rng.randrange(4)
        return (rng.choice(NASTY_POOL) if kind == 0 else r_number(rng) if kind == 1
                else r_text(rng) if kind == 2 else rng.choice((None, True, False)))
    if roll < 0.75:
        return [r_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {r_text(rng, 8): r_json(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def r_wrong(rng: random.Random) -> Any:
    """A value of a type no scalar reading field takes: a string, a bool, a list, an object."""
    return rng.choice((r_text(rng), rng.random() < 0.5, [r_number(rng)], {r_text(rng): 1}))


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
        assert t.pattern == DEVICE_ID_PATTERN, "a new string field needs a generator here"
        return r_id(rng)
    if isinstance(t, mi.LiteralType):
        return rng.choice(t.values)
    if isinstance(t, mi.BoolType):
        return rng.random() < 0.5
    if isinstance(t, mi.ListType):
        n = rng.randint(t.min_length or 0, min(t.max_length or 8, 8))
        return [r_valid(rng, t.item_type) for _ in range(n)]
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
        # re.search is what msgspec runs; strings its `$` lets through are a known bug.
        options += [lambda: next((s for s in (r_text(rng, 80) for _ in range(5))
                                  if re.search(t.pattern or "", s) is None), ""),
                    lambda: "x" * 65, lambda: r_number(rng), lambda: rng.random() < 0.5,
                    lambda: [r_id(rng)]]
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

        options += [list, lambda: r_text(rng), lambda: r_number(rng),
                    lambda: {"0": r_valid(rng, item)},
                    lambda: [0.0] * ((t.max_length or 8) + 1), one_bad_item]
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


def bad_field_cases(rng: random.Random, cls: type, field: str) -> None:
    """One field of an otherwise valid reading made wrong, in every framing and encoding: that
    reading alone is refused with a reason naming the field; its neighbours are kept."""
    docs = [r_doc(rng) for _ in range(rng.randint(0, 3))]
    at = rng.randint(0, len(docs))
    docs.insert(at, r_doc(rng, cls))
    bad = {gateway: r_bad_field(rng, cls, field, gateway=gateway) for gateway in (False, True)}
    style = rng.randrange(6)
    for framing in framings(docs, r_id(rng), names_itself=rng.random() < 0.5):
        value = bad[framing.name == "gateway"]
        good = [expected(d) for i, d in enumerate(framing.docs) if i != at]
        if isinstance(value, Missing):
            framing.docs[at].pop(field, None)
        else:
            framing.docs[at][field] = value
        for payload, ct in encodings(framing.payload_object(), style):
            out = run_decode(framing.topic, payload, ct)
            whole = [r for r in out.rejects if r.raw == payload
                     and r.reason.startswith(("malformed JSON", "payload is not valid UTF-8"))]
            if ct not in MSGPACK_TYPES and breaks_json(value) and whole:
                # Refused whole, as malformed JSON may be (msgspec may also refuse the field's
                # type before it reads the broken string: then the checks below hold).
                assert not out.readings and len(out.rejects) == 1
                continue
            assert out.readings == good, (framing.name, payload)
            (reject,) = out.rejects
            assert names_field(reject.reason, field), (reject.reason, payload)
            if framing.name == "object":
                assert reject.raw == payload
            else:
                assert reject.reason.startswith(f"reading [{at}]: ") and reject.raw in payload


@pytest.mark.parametrize(("cls", "field"), FIELD_CASES,
                         ids=[f"{TYPE_NAMES[c]}.{f}" for c, f in FIELD_CASES])
# Four calls an example; a call runs 2-3 framings x 1-2 encodings, 4.5 cases on average.
@fuzz(13, cases=13 * 4 * len(FIELD_CASES) * 7 // 2, **randoms)
def test_decode_refuses_each_bad_field(cls: type, field: str, drawn: random.Random,
                                       rng: random.Random) -> None:
    """Every field of every reading type, each wrong in many ways."""
    bad_field_cases(drawn, cls, field)
    for _ in range(3):
        bad_field_cases(rng, cls, field)


# -- decoder: mutated payloads and topics --------------------------------------------------------
TOKENS: Final = (
    b"NaN", b"Infinity", b"-Infinity", b"-0", b"1e400", b"1" + b"0" * 400, b"1e-400", b"null",
    b'"\\ud800"', b'"\\u0000"', b"[[[[", b"]]", b"{", b"}", b",", b":", b"\\", b'"', b"true",
    b'"type":"sos",', b'"ts":', b'"device_id":"BR-2",', b'"device_id":"BR-1\\n",',
    b"\xef\xbb\xbf", b"\xc0\x80", b"\xed\xa0\x80", b"\xff", b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff", b"\xc7\xff\x01", b"\xd6\xff\x00\x00\x00\x00", b"\xc1",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\x91" * 64,
)


def mutate_bytes(rng: random.Random, data: bytes, tokens: tuple[bytes, ...]) -> bytes:
    """One to four byte-level edits, as atheris's mutator makes them (without its coverage
    guidance): bit flips, random bytes, nasty tokens, deletion, truncation, repetition."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(out))
        if op == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            out[pos:pos] = rng.choice(tokens)
        elif op == 3:
            del out[pos:pos + rng.randint(1, 16)]
        elif op == 4:
            del out[pos:]
        else:
            out[pos:pos] = out[pos:pos + rng.randint(1, 32)] * rng.randint(1, 50)
    return bytes(out)


MUTANTS: Final = 80


@fuzz(500, cases=500 * MUTANTS, **randoms)
def test_decode_mutated_payloads(drawn: random.Random, rng: random.Random) -> None:
    """Valid payloads (drawn, so they shrink) with bytes flipped, cut, repeated or spliced with
    nasty tokens, sent with their own content type and now and then another."""
    docs = [r_doc(drawn) for _ in range(drawn.randint(1, 3))]
    seeds = [(framing.topic, payload, ct)
             for framing in framings(docs, r_id(drawn), names_itself=False)
             for payload, ct in encodings(framing.payload_object(), drawn.randrange(6))]
    for i in range(MUTANTS):
        r = drawn if i == 0 else rng
        topic, payload, ct = r.choice(seeds)
        if r.random() < 0.1:
            ct = r.choice([*JSON_TYPES, *MSGPACK_TYPES])
        run_decode(topic, mutate_bytes(r, payload, TOKENS), ct)


SEGMENTS: Final = ("+", "#", "", " ", REGION, DEV_ID, "dev", "gw", "DEV", "济南", "ＢＲ－１",
                   "\x00", "$SYS", "a" * 33, "a" * 65, "A" * 64, "BR-1\t", "371002 ", "BR-1\n",
                   "r-1", "a/b", "eldercare", "v1")
topics = st.one_of(
    st.tuples(st.sampled_from(SEGMENTS) | st.text(max_size=40),
              st.sampled_from(["dev", "gw", "DEV", "gateway", "+", "#"]),
              st.sampled_from(SEGMENTS) | st.text(max_size=70),
              ).map(lambda p: f"eldercare/v1/{p[0]}/{p[1]}/{p[2]}"),
    st.text(max_size=100),
    st.builds(lambda t, s: t + s, st.sampled_from([DEV, GW]), st.text(max_size=5)),
)


def r_topic(rng: random.Random) -> str:
    """A topic near the v1 forms: segments valid, nasty or random, sometimes too many."""
    def segment() -> str:
        roll = rng.randrange(3)
        return (rng.choice(SEGMENTS) if roll == 0 else r_id(rng) if roll == 1
                else r_text(rng, 20))
    parts = ["eldercare", "v1", segment(), rng.choice(("dev", "gw", segment())), segment()]
    if rng.random() < 0.2:
        parts = [segment() for _ in range(rng.randint(0, 7))]
    return "/".join(parts)


def _newline_hole(topic: str) -> bool:
    """The known bug: a region or id with one trailing newline passes the `$`-anchored checks."""
    parts = topic.split("/")
    return len(parts) == 5 and any(p.endswith("\n") for p in (parts[2], parts[4]))


def topic_cases(topic: str) -> None:
    """A reading on ``topic`` (alone and in an array): accepted exactly when the topic is of a
    v1 form (checked with an independent regex), and then carrying the topic's id."""
    source = topic.rsplit("/", 1)[-1]
    single = run_decode(topic, to_json({"type": "sos", "ts": NOW}))
    batch = run_decode(topic, to_json([{"type": "sos", "ts": NOW, "device_id": source}]))
    match = _TOPIC_ORACLE.fullmatch(topic)
    if match is None:
        if single.topic is not None and _newline_hole(topic):
            KNOWN_HITS["newline-ids"] += 1
            return
        for out in (single, batch):
            assert out.topic is None and out.rejects[0].reason.startswith("topic"), topic
        return
    assert [r.device_id for r in batch.readings] == [source], topic
    if match.group(1) == "dev":
        assert [r.device_id for r in single.readings] == [source], topic
    else:
        assert [r.reason for r in single.rejects] == [
            "gateway payload must be an array of readings"]


@example(topic="eldercare/v1/+/dev/#", rng=random.Random(0))
@example(topic="#", rng=random.Random(0))
@example(topic="eldercare/v1/371002/dev/BR-1/extra", rng=random.Random(0))
@example(topic="eldercare/v1/" + "9" * 10_000 + "/dev/x", rng=random.Random(0))
@fuzz(700, cases=700 * 10, topic=topics, rng=randoms["rng"])
def test_decode_topics(topic: str, rng: random.Random) -> None:
    """Topics of every wrong shape: unicode, wildcards, empty and extra levels, NUL, 10 KB."""
    topic_cases(topic)
    for _ in range(4):
        topic_cases(r_topic(rng))


# -- decoder: explicit pathological payloads -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Case:
    """One hand-made payload and what must come out of it."""

    id: str
    payload: bytes
    reason: str | None  # in the first and last reject's reason; None: all accepted
    topic: str = DEV
    content_type: str | None = None
    decoder: MessageDecoder = DECODER
    count: int = 1  # readings (accepted) or rejects expected


def _sos(**extra: object) -> bytes:
    return to_json({"type": "sos", "ts": NOW, **extra})


def _raw_field(name: str, literal: bytes, kind: str = "sos") -> bytes:
    return b'{"type":"%s","ts":%d,"%s":%s}' % (kind.encode(), NOW, name.encode(), literal)


N_DEEP: Final = 10_000
MILLION: Final = 10**6
MSGPACK: Final = "application/msgpack"
_DEEP_ARRAY: Final = b"[" * N_DEEP + b"]" * N_DEEP
_ZEROS: Final = b"[" + b",".join([b"0"] * MILLION) + b"]"
_SAMPLES: Final = b"[" + b",".join([b"0.5"] * MILLION) + b"]"
_GOOD_GW: Final = b'{"type":"sos","ts":%d,"device_id":"D1"}' % NOW
_ACCEL_NAN: Final = {"type": "accel", "ts": NOW, "rate_hz": 50, "x": [0.0, math.nan],
                     "y": [0.0, 0.0], "z": [0.0, 0.0]}
PATHOLOGICAL: Final = (
    Case("deep-array-10k", _DEEP_ARRAY, "nested deeper"),
    Case("deep-object-10k", b'{"a":' * N_DEEP + b"1" + b"}" * N_DEEP, "nested deeper"),
    Case("deep-in-unknown-field", _raw_field("zz", _DEEP_ARRAY), "nested deeper"),
    Case("deep-in-gateway-element", b"[" + _GOOD_GW + b"," + _DEEP_ARRAY + b"]", "nested deeper",
         topic=GW),
    Case("msgpack-deep-array", b"\x91" * N_DEEP + b"\xc0", "nested deeper", content_type=MSGPACK),
    Case("msgpack-deep-map", b"\x81\xa1a" * N_DEEP + b"\xc0", "nested deeper",
         content_type=MSGPACK),
    Case("ts-1e400", _raw_field("ts", b"1e400"), "`$.ts`"),
    Case("ts-10e400-int", b'{"type":"sos","ts":1' + b"0" * 400 + b"}", "`$.ts`"),
    Case("ts-minus-0", b'{"type":"sos","ts":-0}', "`$.ts`"),
    Case("ts-float", _sos(ts=float(NOW)), "`$.ts`"),
    Case("lat-1e400", _raw_field("lat", b"1e400"), "`$.lat`"),
    Case("lat-10e400-int", _raw_field("lat", b"1" + b"0" * 400), "`$.lat`"),
    Case("seq-minus-10e400", _raw_field("seq", b"-1" + b"0" * 400), "`$.seq`"),
    Case("lat-minus-0", _raw_field("lat", b"-0"), None),
    Case("lat-1e-400", _raw_field("lat", b"1e-400"), None),
    Case("rate-1e-400", b'{"type":"accel","ts":%d,"rate_hz":1e-400,"x":[0],"y":[0],"z":[0]}' % NOW,
         "`$.rate_hz`"),
    Case("unknown-10e5000-int", _raw_field("zz", b"1" + b"0" * 5000), None),
    Case("lat-NaN", _raw_field("lat", b"NaN"), "malformed JSON"),
    Case("lat-Infinity", _raw_field("lat", b"Infinity"), "malformed JSON"),
    Case("lat-minus-Infinity", _raw_field("lat", b"-Infinity"), "malformed JSON"),
    Case("unknown-nan", _raw_field("zz", b"nan"), "malformed JSON"),
    Case("msgpack-lat-nan", packed({"type": "sos", "ts": NOW, "lat": math.nan}), "`$.lat`",
         content_type=MSGPACK),
    Case("msgpack-accuracy-inf", packed({"type": "sos", "ts": NOW, "accuracy_m": math.inf}),
         "`$.accuracy_m`", content_type=MSGPACK),
    Case("msgpack-accel-nan-sample", packed(_ACCEL_NAN), "`$.x[1]`", content_type=MSGPACK),
    Case("dup-type-differs", b'{"type":"sos","ts":%d,"type":"fall"}' % NOW, "`$.type`"),
    Case("dup-type-same", b'{"type":"sos","type":"sos","ts":%d}' % NOW, None),
    Case("dup-ts-last-bad", b'{"type":"sos","ts":%d,"ts":"x"}' % NOW, "`$.ts`"),
    Case("dup-device-id-last-wins",
         b'{"type":"sos","ts":%d,"device_id":"BR-1","device_id":"X"}' % NOW, "spoofed"),
    Case("dup-device-id-last-good",
         b'{"type":"sos","ts":%d,"device_id":"X","device_id":"BR-1"}' % NOW, None),
    Case("million-ints-default-limit", _ZEROS, "exceeds the limit"),
    Case("million-ints-raised-limit", _ZEROS, "Expected `object`", topic=GW, decoder=BIG_DECODER,
         count=MILLION),
    Case("million-readings-raised-limit", b"[" + b",".join([_GOOD_GW] * MILLION) + b"]", None,
         topic=GW, decoder=BIG_DECODER, count=MILLION),
    Case("million-accel-samples", b'{"type":"accel","ts":%d,"rate_hz":50,"x":%s,"y":%s,"z":%s}'
         % (NOW, _SAMPLES, _SAMPLES, _SAMPLES), "`$.x`", decoder=BIG_DECODER),
    Case("million-in-unknown-field", _raw_field("zz", _ZEROS), None, decoder=BIG_DECODER),
    Case("msgpack-array32-claims-4g", b"\xdd\xff\xff\xff\xff\x80", "malformed MessagePack",
         content_type=MSGPACK),
    Case("msgpack-map32-claims-4g", b"\xdf\xff\xff\xff\xff", "malformed MessagePack",
         content_type=MSGPACK),
    Case("non-utf8-byte", b"\xff", "not valid UTF-8"),
    Case("non-utf8-overlong-nul", _raw_field("device_id", b'"\xc0\x80"'), "not valid UTF-8"),
    Case("non-utf8-cesu-surrogate", _raw_field("sensor", b'"\xed\xa0\x80"', "home_alarm"),
         "not valid UTF-8"),
    Case("non-utf8-latin1", _raw_field("device_id", '"Zürich"'.encode("latin-1")),
         "not valid UTF-8"),
    # msgspec skips ignored fields without checking their UTF-8; nothing of them is kept.
    Case("non-utf8-in-ignored-field", _raw_field("zz", b'"\xed\xa0\x80\xff"'), None),
    Case("utf16-json", '{"type":"sos"}'.encode("utf-16"), "not valid UTF-8"),
    Case("utf8-bom", b"\xef\xbb\xbf" + _sos(), "malformed JSON"),
    Case("lone-surrogate-escape", _raw_field("zz", b'"\\ud800"'), "malformed JSON"),
    Case("nul-escape-in-tag", b'{"type":"\\u0000","ts":%d}' % NOW, "`$.type`"),
    Case("msgpack-non-utf8-str", b"\x81\xa4type\xa2\xff\xfe", "malformed MessagePack",
         content_type=MSGPACK),
    Case("empty-json", b"", "malformed JSON"),
    Case("empty-msgpack", b"", "malformed MessagePack", content_type=MSGPACK),
    Case("json-null", b"null", "Expected `object`"),
    Case("oversized-by-one", b" " * (DEFAULT_MAX_PAYLOAD_BYTES + 1), "exceeds the limit"),
    Case("exactly-at-limit", _sos() + b" " * (DEFAULT_MAX_PAYLOAD_BYTES - len(_sos())), None),
    Case("content-type-with-charset", _sos(), "unsupported content type",
         content_type="application/json; charset=utf-8"),
    Case("content-type-huge", _sos(), "unsupported content type", content_type="x" * 100_000),
    Case("topic-wildcards", _sos(), "topic region '+'", topic="eldercare/v1/+/dev/#"),
    Case("topic-unicode-region", _sos(), "topic region", topic="eldercare/v1/济南/dev/BR-1"),
    Case("topic-fullwidth-id", _sos(), "topic device_id", topic=f"eldercare/v1/{REGION}/dev/ＢＲ"),
    Case("topic-64k", _sos(), "is not eldercare/v1", topic="x/" * 32_768),
)


@pytest.mark.parametrize("case", PATHOLOGICAL, ids=[c.id for c in PATHOLOGICAL])
@budget(len(PATHOLOGICAL))
def test_decode_pathological(case: Case) -> None:
    """Hand-made extremes: each refused with its own reason (or accepted), in bounded time."""
    start = time.process_time()
    # Re-decoding 10^6 elements only to compare would double the file's run time.
    out = run_decode(case.topic, case.payload, case.content_type, decoder=case.decoder,
                     again=len(case.payload) < 1_000_000)
    spent = time.process_time() - start
    assert spent < 30, f"{spent:.1f} s of CPU for one message"  # ~7 s for 10^6 rejects here
    if case.reason is None:
        assert out.rejects == [] and len(out.readings) == case.count
    else:
        assert out.readings == [] and len(out.rejects) == case.count
        assert case.reason in out.rejects[0].reason and case.reason in out.rejects[-1].reason


# -- file parsers --------------------------------------------------------------------------------
def _builtins(data: object) -> Any:
    """Plain JSON types only (YAML timestamps become ISO strings)."""
    return msgspec.json.decode(msgspec.json.encode(data))


def _fmt(fmt: str) -> Literal["yaml", "json"]:
    return "json" if fmt == "json" else "yaml"


def _write(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


# Raw scalars only YAML text can carry: timestamps (some out of range), huge ints, explicit
# tags (some impossible), anchors and aliases, flow and block syntax cut short.
YAML_TOKENS: Final = tuple(t.encode() for t in (
    "0000-01-01", "2001-13-01", "2001-02-30 25:61:61", "9999-12-31T23:59:59-23:59",
    "9" * 5000, "-9" * 10, ".nan", ".inf", "-.inf", "~", "0x1F", "0o17", "1_000", "+.5", "-0",
    "1e400", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "*nope", "&a x",
    "{<<: {a: 1}}", "[", "{", "'", '"\\ud800"', '"\\x00"', "!!set {a, b}", "? [a]", "|\n  x",
    "yes", "on", "null", "Asia", '"Asia"', "[" * 200 + "]" * 200, "!!timestamp 1", "@", "`",
    "!!int x", "!!float x", "!!bool x", "!!timestamp 2020-02-30", "!!str [a]",
)) + (b"\xff", b"\t")
JSON_TOKENS: Final = TOKENS + (b'"Asia"', b'"9999-12-31T23:59:59Z"', b"[]", b"{}", b"0",
                               b'"x"', _DEEP_ARRAY)
TOML_TOKENS: Final = tuple(t.encode() for t in (
    '"x"', "1", "-1", "0", "1.5", "nan", "inf", "-inf", "true", "[]", '[1, "a"]', "{}",
    "{ a = 1 }", "1979-05-27T07:32:00Z", "0000-01-01", "9999-12-31T23:59:59Z", "07:32:00",
    "9" * 30, "0x10", '"Asia"', '"\\u0000"', "[" * 2000 + "]" * 2000, "'''", '"\\xff"', "-0",
    "1e400", '"a"\n[detectors]\ntimezone = "Asia"',
)) + (b'"\xff"',)
SEPARATORS: Final = {"yaml": b": ", "json": b'": ', "toml": b" = "}
TOKEN_SETS: Final = {"yaml": YAML_TOKENS, "json": JSON_TOKENS, "toml": TOML_TOKENS}


def _paths(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair of a JSON tree."""
    out: list[tuple[Any, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        for k in (list(node) if isinstance(node, dict) else range(len(node))):
            out.append((node, k))
            if isinstance(node[k], dict | list) and node[k]:
                stack.append(node[k])
    return out


def mutate_tree(rng: random.Random, seed: Any) -> Any:
    """The seed document with one to three fields replaced by random or nasty values, deleted,
    given an unknown sibling, or duplicated: over many cases every field gets wrong types."""
    holder = [copy.deepcopy(seed)]
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(_paths(holder))
        op = rng.randrange(5)
        if op < 2:
            container[key] = copy.deepcopy(r_json(rng, 2))
        elif op == 2 and container is not holder:
            del container[key]
        elif op == 3 and isinstance(container[key], dict):
            container[key][rng.choice(("", "id", "x", r_text(rng, 8)))] = copy.deepcopy(
                r_json(rng, 1))
        elif op == 4 and isinstance(container[key], list) and container[key]:
            container[key].append(copy.deepcopy(container[key][0]))
    return holder[0]


def mutate_text(rng: random.Random, text: bytes, fmt: str) -> bytes:
    """The seed text with the values of one to three ``key: value`` lines swapped for raw
    tokens (JSON keeps its commas), or edited byte by byte."""
    tokens = TOKEN_SETS[fmt]
    if rng.random() < 0.3:
        return mutate_bytes(rng, text, tokens)
    sep = SEPARATORS[fmt]
    lines = text.split(b"\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        head, found, value = lines[i].partition(sep)
        comma = b"," if value.rstrip().endswith(b",") else b""
        lines[i] = head + sep + rng.choice(tokens) + comma if found else rng.choice(tokens)
    return b"\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else "inf" if v > 0 else "-inf"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    return json.dumps(v)


def to_toml(tree: Any) -> bytes:
    """A small TOML writer (tomli_w is not installed): tables for dicts, inline values else;
    None, which TOML cannot say, drops the key."""
    if not isinstance(tree, dict):
        return ("value = " + _toml_value(tree)).encode()
    lines: list[str] = []

    def table(path: list[str], node: dict[str, Any]) -> None:
        if path:
            lines.append("[" + ".".join(json.dumps(p) for p in path) + "]")
        for k, v in node.items():
            if not isinstance(v, dict) and v is not None:
                lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
        for k, v in node.items():
            if isinstance(v, dict):
                table([*path, k], v)

    table([], tree)
    return "\n".join(lines).encode()


def dump(tree: Any, fmt: str) -> bytes:
    """``tree`` written in ``fmt``."""
    if fmt == "json":
        return to_json(tree)
    if fmt == "toml":
        return to_toml(tree)
    try:
        return msgspec.yaml.encode(tree)
    except UnicodeEncodeError:  # a lone surrogate: PyYAML cannot write it, JSON (also YAML) can
        return to_json(tree)


@dataclass(frozen=True, slots=True)
class FileParser:
    """One parser of a file format, what it may raise and return, and its shipped example."""

    name: str
    formats: tuple[str, ...]
    call: Callable[[bytes, str, Path], object]  # (document, format, scratch dir)
    error: type[Exception]
    result: type
    example: bytes
    mutants: int  # seeded mutants per example: fewer for the slow loaders

    def seed(self) -> Any:
        """The example as a JSON tree."""
        if self.formats == ("toml",):
            return _builtins(tomllib.loads(self.example.decode()))
        return _builtins(msgspec.yaml.decode(self.example))

    def text(self, fmt: str) -> bytes:
        """The example as text in ``fmt`` (JSON one key per line, so lines can be swapped)."""
        return to_json(self.seed(), indent=1) if fmt == "json" else self.example


FILE_PARSERS: Final = (
    FileParser("registry", ("yaml", "json"), lambda d, f, _: parse_registry(d, fmt=_fmt(f)),
               RegistryError, Registry, (ROOT / "deploy/registry.example.yaml").read_bytes(), 16),
    FileParser("tokens", ("yaml", "json"), lambda d, f, _: parse_tokens(d, fmt=_fmt(f)),
               ConfigError, TokenTable, msgspec.yaml.encode([
                   {"name": "dispatch-centre", "token_sha256": "ab" * 32, "role": "dispatch",
                    "regions": ["*"]},
                   {"name": "officer.1", "token_sha256": "CD" * 32, "role": "officer",
                    "regions": ["371002", "371003"]}]), 16),
    FileParser("scenario", ("yaml", "json"), lambda d, f, _: parse_scenario(d, fmt=_fmt(f)),
               ConfigError, Scenario, (ROOT / "deploy/scenarios/small.yaml").read_bytes(), 16),
    FileParser("policy", ("yaml",), lambda d, f, tmp: load_policy(_write(tmp, "p.yaml", d)),
               ConfigError, Policy, (ROOT / "alerts/policy.yaml").read_bytes(), 8),
    FileParser("config", ("toml",),
               lambda d, f, tmp: load_config(path=_write(tmp, "c.toml", d), env={}),
               ConfigError, Config, (ROOT / "deploy/eldercare.example.toml").read_bytes(), 8),
)
SEEDS: Final = {p.name: p.seed() for p in FILE_PARSERS}
TEXTS: Final = {(p.name, f): p.text(f) for p in FILE_PARSERS for f in p.formats}
FILE_EXAMPLES: Final = 110


def file_case(rng: random.Random, parser: FileParser) -> tuple[str, bytes]:
    """One document for ``parser``: a structural or textual mutant of its example, a random
    document, or random bytes."""
    fmt = rng.choice(parser.formats)
    roll = rng.random()
    if roll < 0.45:
        return fmt, dump(mutate_tree(rng, SEEDS[parser.name]), fmt)
    if roll < 0.9:
        return fmt, mutate_text(rng, TEXTS[parser.name, fmt], fmt)
    if roll < 0.95:
        return fmt, dump(r_json(rng), fmt)
    return fmt, rng.randbytes(rng.randint(0, 256))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the loaders that take a path (module-scoped: hypothesis reuses it)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("parser", FILE_PARSERS, ids=[p.name for p in FILE_PARSERS])
@fuzz(FILE_EXAMPLES, cases=FILE_EXAMPLES * sum(p.mutants + 1 for p in FILE_PARSERS), **randoms)
def test_file_parsers(parser: FileParser, scratch: Path, drawn: random.Random,
                      rng: random.Random) -> None:
    """Registry, tokens, scenario, policy and configuration files: only the documented error
    may escape."""
    docs = [file_case(drawn, parser)] + [file_case(rng, parser) for _ in range(parser.mutants)]
    for fmt, doc in docs:
        accept_or_refuse(parser.name, functools.partial(parser.call, doc, fmt, scratch),
                         parser.error, parser.result, doc)


LINE_SEEDS: Final[dict[str, tuple[bytes, ...]]] = {
    "recording": (
        (b'{"msg":1,"sent_ms":1790000000000,"topic":"eldercare/v1/r1/dev/BR-1","type":"sos",'
         b'"ts":1790000000000}'),
        (b'{"msg":2,"sent_ms":1790000001000,"topic":"eldercare/v1/r1/gw/GW-1",'
         b'"device_id":"BR-2","type":"heartbeat","ts":1790000000500,"battery_pct":80}'),
        (b'{"msg":2,"sent_ms":1790000001000,"topic":"eldercare/v1/r1/gw/GW-1",'
         b'"device_id":"BR-3","type":"wear","ts":1790000000600,"worn":false}'),
        (b'{"msg":3,"sent_ms":1790000002000,"topic":"eldercare/v1/r1/dev/BR-4","array":true,'
         b'"type":"fall","ts":1790000001900}'),
    ),
    "labels": ((b'{"device_id":"BR-1","type":"sos","start_ms":1790000000000,"incident":"sos",'
                b'"wearer_id":"W-1","detail":{"presses":2}}'),),
    "events": ((b'{"device_id":"BR-1","type":"sos","ts":1790000000000,"severity":"critical",'
                b'"region":"371002","lat":37.5,"lon":122.1,"evidence":{"presses":2,"x":[1.0]}}'),),
}
LINE_READERS: Final[dict[str, Callable[[list[bytes]], object]]] = {
    "recording": lambda lines: list(read_recording(lines)),
    "labels": load_labels,
    "events": load_events,
}
LINE_MUTANTS: Final = 20


def lines_case(rng: random.Random, reader: str) -> list[bytes]:
    """The seed lines of ``reader``, one to three of them mutated (bytes or structure), random
    lines added, and sometimes shuffled."""
    lines = list(LINE_SEEDS[reader])
    for _ in range(rng.randint(0, 2)):
        lines.insert(rng.randint(0, len(lines)),
                     to_json(r_json(rng)) if rng.random() < 0.7 else rng.randbytes(32))
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        if rng.random() < 0.5:
            lines[i] = mutate_bytes(rng, lines[i], JSON_TOKENS)
        else:
            lines[i] = to_json(mutate_tree(rng, json.loads(rng.choice(LINE_SEEDS[reader]))))
    if rng.random() < 0.3:
        rng.shuffle(lines)
    return lines


@pytest.mark.parametrize("reader", sorted(LINE_READERS))
@fuzz(150, cases=150 * (LINE_MUTANTS + 1) * len(LINE_READERS), **randoms)
def test_jsonl_readers(reader: str, drawn: random.Random, rng: random.Random) -> None:
    """Simulator recordings (JSONL replay) and the scorer's labels and events: a list or a
    ValidationError."""
    for r in [drawn] + [rng] * LINE_MUTANTS:
        lines = lines_case(r, reader)
        accept_or_refuse(reader, functools.partial(LINE_READERS[reader], lines),
                         ValidationError, list, lines)


# -- templates -----------------------------------------------------------------------------------
TIMESTAMPS: Final = ("2026-03-02T07:55:00Z", "2026-03-02T07:55:00", "9999-12-31T23:59:59-23:59",
                     "0001-01-01T00:00:00+23:59", "2026-13-01", "", "now", "2026-03-02")
ZONES: Final = ("Asia/Shanghai", "UTC", "Asia", "Europe/London", "a" * 300, "\x00", "../x",
                "/etc/localtime", "")


def r_alert(rng: random.Random) -> Any:
    """An alert object: plausible fields, some of them random or of a wrong type."""
    plausible: dict[str, Callable[[], object]] = {
        "type": lambda: rng.choice([*TYPE_WORDS["en"], "teleport"]),
        "wearer": lambda: {"name": rng.choice(("张秀英", "", r_text(rng, 40)))},
        "device_id": lambda: r_id(rng), "map_link": lambda: "https://m.example/?q=1",
        "priority": lambda: rng.randint(0, 5), "event_count": lambda: rng.randint(-1, 10**6),
        "first_ts": lambda: rng.choice(TIMESTAMPS), "last_ts": lambda: rng.choice(TIMESTAMPS),
        "timezone": lambda: rng.choice(ZONES),
    }
    return {k: make() if rng.random() < 0.7 else r_json(rng, 2)
            for k, make in plausible.items() if rng.random() < 0.7}


def r_body(rng: random.Random) -> dict[str, Any]:
    """An alert document as the outbox holds it, or any JSON object."""
    if rng.random() < 0.1:
        junk = r_json(rng)
        return junk if isinstance(junk, dict) else {"alert": junk}
    body: dict[str, Any] = {"event": rng.choice(("alert.opened", "alert.grouped", "alert.resolved",
                                                 "alert.escalated", "alert.claim_expired",
                                                 "alert.acknowledged", None, r_text(rng)))}
    body["alert"] = r_alert(rng) if rng.random() < 0.8 else r_json(rng, 2)
    if rng.random() < 0.5:
        body["alerts"] = ([r_alert(rng) for _ in range(rng.randint(0, 4))]
                          if rng.random() < 0.7 else r_json(rng, 2))
    if rng.random() < 0.5:
        body["escalation"] = {"step": r_json(rng, 1)} if rng.random() < 0.7 else r_json(rng, 1)
    return body


RENDERS: Final = 10


@fuzz(300, cases=300 * (RENDERS + 1) * 3, **randoms)
def test_render_never_raises(drawn: random.Random, rng: random.Random) -> None:
    """Any JSON alert body renders, in every language (a text with a blank beats no alarm)."""
    for r in [drawn] + [rng] * RENDERS:
        body = json.loads(to_json(r_body(r)))  # what the outbox hands over: parsed JSON
        for lang in ("zh", "en", r_text(r, 6)):
            one_case()
            out = render(body, language=lang)
            assert isinstance(out, Rendered) and out.text and out.subject, body
            assert set(out.params) == {"name", "type", "time", "link"}


# -- known bugs, one minimal input each -----------------------------------------------------------
class KnownBugHit(Exception):
    """Raised by a known-bug test when the parser fails with exactly the pinned signature."""


_WEARER = b'{"wearers":[{"id":"W1","name":"a","region":"r1"%s}]}'
#: (bug key, parser, what, call, documented error); ``call`` takes the scratch directory.
BUG_CASES: Final[tuple[tuple[str, str, str, Callable[[Path], object], type[Exception]], ...]] = (
    ("zoneinfo-oserror", "registry", "registry tz Asia",
     lambda d: parse_registry(_WEARER % b',"timezone":"Asia"', fmt="json"), RegistryError),
    ("zoneinfo-oserror", "registry", "registry tz of 300 chars",
     lambda d: parse_registry(_WEARER % b',"timezone":"%s"' % (b"a" * 300), fmt="json"),
     RegistryError),
    ("zoneinfo-oserror", "scenario", "scenario tz Asia",
     lambda d: parse_scenario(b"name: x\ntimezone: Asia", fmt="yaml"), ConfigError),
    ("zoneinfo-oserror", "config", "config detectors.timezone Asia",
     lambda d: load_config(path=_write(d, "tz.toml", b'[detectors]\ntimezone = "Asia"'), env={}),
     ConfigError),
    ("yaml-constructor", "registry", "registry YAML year 0",
     lambda d: parse_registry(b"wearers: [{id: W1, name: 0000-01-01, region: r1}]", fmt="yaml"),
     RegistryError),
    ("yaml-constructor", "tokens", "tokens YAML int of 5000 digits",
     lambda d: parse_tokens(b"- {name: " + b"9" * 5000 + b"}", fmt="yaml"), ConfigError),
    ("yaml-constructor", "scenario", "scenario YAML month 13",
     lambda d: parse_scenario(b"name: 2001-13-01", fmt="yaml"), ConfigError),
    ("yaml-constructor", "registry", "registry YAML !!bool x",
     lambda d: parse_registry(b"wearers: !!bool x", fmt="yaml"), RegistryError),
    ("yaml-constructor", "policy", "policy YAML !!timestamp 1",
     lambda d: load_policy(_write(d, "t.yaml", b"ladders: !!timestamp 1")), ConfigError),
    ("json-non-utf8", "registry", "registry JSON non-UTF-8",
     lambda d: parse_registry(b'{"wearers":[{"id":"\xff"}]}', fmt="json"), RegistryError),
    ("json-non-utf8", "tokens", "tokens JSON non-UTF-8",
     lambda d: parse_tokens(b'[{"name":"\xff"}]', fmt="json"), ConfigError),
    ("json-non-utf8", "scenario", "scenario JSON non-UTF-8",
     lambda d: parse_scenario(b'{"name":"\xff"}', fmt="json"), ConfigError),
    ("policy-non-utf8", "policy", "policy file non-UTF-8",
     lambda d: load_policy(_write(d, "p.yaml", b"\xff")), ConfigError),
    ("toml-non-utf8", "config", "config file non-UTF-8",
     lambda d: load_config(path=_write(d, "u.toml", b"a = '\xff'"), env={}), ConfigError),
    ("toml-recursion", "config", "config array nested 10,000 deep",
     lambda d: load_config(path=_write(d, "r.toml", b"a = " + _DEEP_ARRAY), env={}),
     ConfigError),
    ("scenario-overflow", "scenario", "scenario start 9999-12-31",
     lambda d: parse_scenario(b"name: x\nstart: 9999-12-31T23:00:00Z\nduration_s: 86400",
                              fmt="yaml"), ConfigError),
    ("json-recursion", "scenario", "scenario JSON incident nested 10,000 deep",
     lambda d: parse_scenario(b'{"name":"x","incidents":[{"at_s":' + _DEEP_ARRAY
                              + b',"type":"sos"}]}', fmt="json"), ConfigError),
    ("json-recursion", "recording", "recording line nested 10,000 deep",
     lambda d: list(read_recording([b'{"msg":1,"x":' + _DEEP_ARRAY + b"}"])), ValidationError),
    ("json-non-utf8", "recording", "recording line non-UTF-8",
     lambda d: list(read_recording([b'{"msg":1,"x":"\xff"}'])), ValidationError),
)


@pytest.mark.parametrize(("bug", "parser", "call", "documented"), [
    pytest.param(bug, parser, call, documented, id=what, marks=pytest.mark.xfail(
        strict=True, raises=KnownBugHit, reason=f"known bug {bug}"))
    for bug, parser, what, call, documented in BUG_CASES])
def test_known_parser_bug(scratch: Path, bug: str, parser: str, call: Callable[[Path], object],
                          documented: type[Exception]) -> None:
    """Each known crash, minimal. It xfails only with the signature the fuzzers tolerate; once
    the parser raises its documented error the test passes, and strict XPASS fails the run."""
    try:
        call(scratch)
    except documented:
        return
    except Exception as exc:  # classify, then fail
        if _known_bug(parser, exc) == bug:
            raise KnownBugHit(f"{bug}: {exc!r}") from exc
        raise


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known bug newline-ids: `$` accepts one trailing newline")
@pytest.mark.parametrize(("topic", "payload"), [
    (DEV + "\n", _sos()),
    (f"eldercare/v1/{REGION}\n/dev/{DEV_ID}", _sos()),
    (GW, b'[{"type":"sos","ts":%d,"device_id":"D1\\n"}]' % NOW),
], ids=["topic-device-id", "topic-region", "json-device-id"])
def test_known_decoder_bug_trailing_newline(topic: str, payload: bytes) -> None:
    """Ids and regions are documented as [A-Za-z0-9_.:-]{1,64} / [a-z0-9-]{1,32}, but the
    patterns end in `$`, which also matches before a final newline: "BR-1\\n" is accepted as a
    device distinct from "BR-1"."""
    out = DECODER.decode(topic, payload, now_ms=NOW)
    assert not out.readings


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known bug newline-ids: `$` accepts one trailing newline")
@pytest.mark.parametrize("load", [
    lambda: parse_registry(b'{"wearers":[{"id":"W1","name":"a","region":"r1",'
                           b'"devices":[{"id":"BR-1\\n","kind":"watch"}]}]}', fmt="json"),
    lambda: parse_tokens(b'[{"name":"ops\\n","token_sha256":"' + b"a" * 64 + b'",'
                         b'"role":"admin","regions":["*"]}]', fmt="json"),
], ids=["registry-device-id", "token-name"])
def test_known_bug_trailing_newline_in_files(load: Callable[[], object]) -> None:
    """The same `$` hole in the files: a registry device "BR-1\\n" (a device distinct from
    "BR-1") and a token name "ops\\n" (the actor of its audit entries) are accepted."""
    try:
        load()
    except (RegistryError, ConfigError):
        return
    raise AssertionError("a trailing newline was accepted")


def _cpu_seconds(call: Callable[[], object], repeat: int = 1) -> float:
    """The least CPU time of ``repeat`` runs of ``call`` (errors are part of the run)."""
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        try:
            call()
        except RegistryError:
            pass
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known bug yaml-aliases: alias expansion is unbounded")
def test_known_bug_yaml_alias_expansion() -> None:
    """A 1.3 KB registry whose aliases expand to 101 wearers x 101 zones x 102 points (10^6
    points, refused only afterwards for its duplicate ids) must cost about what any 1.3 KB file
    costs, not 10^2 times more: 12 KB of the same would take minutes and tens of GB. Timed as a
    ratio to a plain file of the same size, so the machine's speed does not matter."""
    n = 100
    aliases = ("wearers: [&w {id: w1, name: a, region: r1, zones: [&z {id: z1, kind: polygon, "
               "points: [&p [1.0, 2.0], " + ", ".join(["*p"] * n) + "]}, "
               + ", ".join(["*z"] * n) + "]}, " + ", ".join(["*w"] * n) + "]").encode()
    plain = ("wearers: [{id: w1, name: a, region: r1, zones: [{id: z1, kind: polygon, "
             "points: [" + ", ".join(["[1.0, 2.0]"] * n) + "]}]}]").encode()
    baseline = max(_cpu_seconds(lambda: parse_registry(plain, fmt="yaml"), repeat=3), 1e-3)
    assert _cpu_seconds(lambda: parse_registry(aliases, fmt="yaml")) < 20 * baseline


# -- the budget ----------------------------------------------------------------------------------
def test_zz_case_budget(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last (file order): prints the cases per test and fails if the total falls short."""
    selected = {item.function.__name__ for item in request.session.items
                if isinstance(item, pytest.Function) and item.module is request.module}
    if not set(BUDGET) <= selected:
        pytest.skip("part of the fuzz suite was deselected: the budget is checked on the whole")
    total = sum(CASES[name] for name in BUDGET)
    with capsys.disabled():
        print(f"\nfuzz cases per test (at least {MIN_TOTAL_CASES:,} in all):")
        for name, planned in BUDGET.items():
            print(f"  {name:<42} {CASES[name]:>7,}  (planned {planned:,})")
        print(f"  {'total':<42} {total:>7,}")
        if KNOWN_HITS:
            print("  known bugs hit: " + ", ".join(f"{k} x{v}" for k, v in KNOWN_HITS.items()))
    assert not set(CASES) - set(BUDGET), "cases counted under a name outside the budget"
    short = {n: CASES[n] for n in BUDGET if CASES[n] < BUDGET[n]}
    assert not short, f"tests ran fewer cases than planned: {short}"
    assert total >= MIN_TOTAL_CASES
