"""Random values and their encodings: plain functions of a ``random.Random``.

Generic generators (nasty strings and numbers, random JSON, ids), the JSON and MessagePack
writers that can also write what Python's cannot (1e400, NaN literals, invalid UTF-8), and the
byte-level mutator every family uses.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from dataclasses import dataclass
from typing import Any, Final

import msgspec

JSON_TYPES: Final = (None, "application/json", "text/json")
MSGPACK_TYPES: Final = ("application/msgpack", "application/x-msgpack")
N_DEEP: Final = 10_000
DEEP_ARRAY: Final = b"[" * N_DEEP + b"]" * N_DEEP


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


# -- byte-level mutations -----------------------------------------------------------------------
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

