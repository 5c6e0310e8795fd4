"""Hand-made pathological payloads for ``MessageDecoder``: each refused with its own reason (or
accepted, or, an alarm, kept with its defect dead-lettered), in bounded time.

10,000-deep nesting (JSON and MessagePack), numbers no double holds (1e400, 10**400, -0,
1e-400), NaN and Infinity, duplicate keys, 10^6-element arrays under a raised limit, lengths
that claim 4 GB, every flavour of invalid UTF-8, and content types and topics of extreme size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

import pytest

from schemas.decode import DEFAULT_MAX_PAYLOAD_BYTES, MessageDecoder
from tests.fuzz.budget import budget
from tests.fuzz.values import DEEP_ARRAY, N_DEEP, packed, to_json
from tests.fuzz.wire import BIG_DECODER, DECODER, DEV, GW, NOW, REGION, run_decode


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
    #: An alarm kept despite ``reason`` (the alarm salvage): one reading, and ``count``
    #: admitted rejects naming the defect.
    salvaged: bool = False


def _sos(**extra: object) -> bytes:
    return to_json({"type": "sos", "ts": NOW, **extra})


def _raw_field(name: str, literal: bytes, kind: str = "sos") -> bytes:
    return b'{"type":"%s","ts":%d,"%s":%s}' % (kind.encode(), NOW, name.encode(), literal)


MILLION: Final = 10**6
MSGPACK: Final = "application/msgpack"
_ZEROS: Final = b"[" + b",".join([b"0"] * MILLION) + b"]"
_SAMPLES: Final = b"[" + b",".join([b"0.5"] * MILLION) + b"]"
_GOOD_GW: Final = b'{"type":"sos","ts":%d,"device_id":"D1"}' % NOW
_ACCEL_NAN: Final = {"type": "accel", "ts": NOW, "rate_hz": 50, "x": [0.0, math.nan],
                     "y": [0.0, 0.0], "z": [0.0, 0.0]}
PATHOLOGICAL: Final = (
    Case("deep-array-10k", DEEP_ARRAY, "nested deeper"),
    Case("deep-object-10k", b'{"a":' * N_DEEP + b"1" + b"}" * N_DEEP, "nested deeper"),
    Case("deep-in-unknown-field", _raw_field("zz", DEEP_ARRAY), "nested deeper"),
    Case("deep-in-gateway-element", b"[" + _GOOD_GW + b"," + DEEP_ARRAY + b"]", "nested deeper",
         topic=GW),
    Case("msgpack-deep-array", b"\x91" * N_DEEP + b"\xc0", "nested deeper", content_type=MSGPACK),
    Case("msgpack-deep-map", b"\x81\xa1a" * N_DEEP + b"\xc0", "nested deeper",
         content_type=MSGPACK),
    Case("ts-1e400", _raw_field("ts", b"1e400"), "`$.ts`", salvaged=True),
    Case("ts-10e400-int", b'{"type":"sos","ts":1' + b"0" * 400 + b"}", "`$.ts`",
         salvaged=True),
    Case("ts-minus-0", b'{"type":"sos","ts":-0}', "`$.ts`", salvaged=True),
    Case("ts-float", _sos(ts=float(NOW)), "`$.ts`", salvaged=True),
    Case("lat-1e400", _raw_field("lat", b"1e400"), "`$.lat`", salvaged=True),
    Case("lat-10e400-int", _raw_field("lat", b"1" + b"0" * 400), "`$.lat`", salvaged=True),
    Case("seq-minus-10e400", _raw_field("seq", b"-1" + b"0" * 400), "`$.seq`", salvaged=True),
    Case("lat-minus-0", _raw_field("lat", b"-0"), None),
    Case("lat-1e-400", _raw_field("lat", b"1e-400"), None),
    # The same numbers in a reading that is not an alarm: refused.
    Case("location-ts-1e400", _raw_field("ts", b"1e400", "location"), "`$.ts`"),
    Case("location-ts-10e400-int", b'{"type":"location","ts":1' + b"0" * 400 + b"}", "`$.ts`"),
    Case("location-lat-1e400", b'{"type":"location","ts":%d,"lat":1e400,"lon":0}' % NOW,
         "`$.lat`"),
    Case("msgpack-location-lat-nan", packed({"type": "location", "ts": NOW, "lat": math.nan,
                                             "lon": 0}), "`$.lat`", content_type=MSGPACK),
    Case("rate-1e-400", b'{"type":"accel","ts":%d,"rate_hz":1e-400,"x":[0],"y":[0],"z":[0]}' % NOW,
         "`$.rate_hz`"),
    Case("unknown-10e5000-int", _raw_field("zz", b"1" + b"0" * 5000), None),
    Case("lat-NaN", _raw_field("lat", b"NaN"), "malformed JSON"),
    Case("lat-Infinity", _raw_field("lat", b"Infinity"), "malformed JSON"),
    Case("lat-minus-Infinity", _raw_field("lat", b"-Infinity"), "malformed JSON"),
    Case("unknown-nan", _raw_field("zz", b"nan"), "malformed JSON"),
    Case("msgpack-lat-nan", packed({"type": "sos", "ts": NOW, "lat": math.nan}), "`$.lat`",
         content_type=MSGPACK, salvaged=True),
    Case("msgpack-accuracy-inf", packed({"type": "sos", "ts": NOW, "accuracy_m": math.inf}),
         "`$.accuracy_m`", content_type=MSGPACK, salvaged=True),
    Case("msgpack-accel-nan-sample", packed(_ACCEL_NAN), "`$.x[1]`", content_type=MSGPACK),
    Case("dup-type-differs", b'{"type":"sos","ts":%d,"type":"fall"}' % NOW, "`$.type`",
         salvaged=True),
    Case("dup-type-same", b'{"type":"sos","type":"sos","ts":%d}' % NOW, None),
    Case("dup-ts-last-bad", b'{"type":"sos","ts":%d,"ts":"x"}' % NOW, "`$.ts`", salvaged=True),
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
    elif case.salvaged:
        assert len(out.readings) == 1 and len(out.rejects) == case.count
        assert all(r.admitted and case.reason in r.reason for r in out.rejects), out.rejects
    else:
        assert out.readings == [] and len(out.rejects) == case.count
        assert case.reason in out.rejects[0].reason and case.reason in out.rejects[-1].reason

