"""Wire contract: every reading type decodes; every class of bad input is rejected with a reason."""

from __future__ import annotations

import json

import msgspec
import pytest

from eldercare.errors import ValidationError
from schemas import (
    Accel,
    Fall,
    Heartbeat,
    HomeAlarm,
    Location,
    MessageDecoder,
    Sos,
    Vitals,
    Wear,
    parse_topic,
)

NOW = 1_790_000_000_000
DEV = "eldercare/v1/371002/dev/BR-1"
GW = "eldercare/v1/371002/gw/GW-1"
decoder = MessageDecoder()

VALID = {
    "location": ({"lat": 37.5, "lon": 122.1, "accuracy_m": 8, "speed_mps": 1.2, "battery_pct": 80,
                  "source": "gps"}, Location),
    "vitals": ({"heart_rate_bpm": 72, "spo2_pct": 97, "body_temp_c": 36.6, "systolic_mmhg": 130,
                "diastolic_mmhg": 85, "steps": 1200}, Vitals),
    "sos": ({}, Sos),
    "fall": ({"confidence": 0.8, "lat": 37.5, "lon": 122.1}, Fall),
    "accel": ({"rate_hz": 50, "x": [0.0, 0.1], "y": [0.0, 0.0], "z": [1.0, 0.98]}, Accel),
    "heartbeat": ({"battery_pct": 50, "rssi_dbm": -80}, Heartbeat),
    "wear": ({"worn": False}, Wear),
    "home_alarm": ({"sensor": "smoke", "active": True}, HomeAlarm),
}


def enc(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("kind", sorted(VALID))
def test_each_type_decodes_and_gets_device_id_from_topic(kind: str) -> None:
    fields, cls = VALID[kind]
    out = decoder.decode(DEV, enc(type=kind, ts=NOW, seq=7, unknown_future_field=1, **fields),
                         now_ms=NOW)
    assert out.rejects == []
    (r,) = out.readings
    assert type(r) is cls and r.device_id == "BR-1" and r.ts == NOW and r.seq == 7


def test_gateway_batch_keeps_each_device() -> None:
    payload = json.dumps([{"device_id": f"D{i}", "type": "heartbeat", "ts": NOW} for i in range(50)])
    out = decoder.decode(GW, payload.encode(), now_ms=NOW)
    assert [r.device_id for r in out.readings] == [f"D{i}" for i in range(50)]


def test_msgpack_by_content_type() -> None:
    payload = msgspec.msgpack.encode([{"type": "sos", "ts": NOW}])
    out = decoder.decode(DEV, payload, now_ms=NOW, content_type="application/msgpack")
    assert len(out.readings) == 1 and out.rejects == []


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"type":"location","ts":', "malformed JSON"),
    (b'\xff\xfe{"a":1}', "not valid UTF-8"),
    (b'{"type":"sos","ts":1790000000000,"device_id":"\xff"}', "not valid UTF-8"),
    (enc(type="teleport", ts=NOW), "`$.type`"),
    (enc(type="location", ts=NOW, lat=91, lon=0), "`$.lat`"),
    (enc(type="location", ts=NOW, lat="37.5", lon=0), "`$.lat`"),
    (b'{"type":"location","ts":1790000000000,"lat":1e400,"lon":0}', "`$.lat`"),
    (b'{"type":"location","ts":1790000000000,"lat":Infinity,"lon":0}', "malformed JSON"),
    (b'{"type":"location","ts":1790000000000,"lat":NaN,"lon":0}', "malformed JSON"),
    (enc(type="vitals", ts=NOW, heart_rate_bpm=300), "`$.heart_rate_bpm`"),
    (enc(type="vitals", ts=NOW), "no measurement"),
    (enc(type="accel", ts=NOW, rate_hz=50, x=[1, 2], y=[1], z=[1, 2]), "differ in length"),
    (enc(type="accel", ts=NOW, rate_hz=50, x=[0.0] * 2001, y=[0.0] * 2001, z=[0.0] * 2001), "`$.x`"),
    (enc(type="wear", ts=NOW, worn="no"), "`$.worn`"),
    (enc(type="heartbeat", ts=NOW + 301_000), "in the future"),
    (enc(type="sos", ts=1_500_000_000_000), "`$.ts`"),
    (enc(type="sos", ts=float(NOW)), "`$.ts`"),
    (enc(type="sos", ts=NOW, device_id="BR-2"), "spoofed"),
    (enc(type="sos", ts=NOW, seq=-1), "`$.seq`"),
    (b"[]", "empty array"),
    (b"[" * 50_000, "nested deeper"),
    (b"x" * (256 * 1024 + 1), "exceeds the limit"),
])
def test_bad_input_rejected_with_specific_reason(payload: bytes, reason: str) -> None:
    out = decoder.decode(DEV, payload, now_ms=NOW)
    assert out.readings == []
    (reject,) = out.rejects
    assert reason in reject.reason
    assert reject.raw == payload


def test_one_bad_reading_in_batch_keeps_the_others_and_its_own_bytes() -> None:
    good = {"device_id": "D1", "type": "sos", "ts": NOW}
    bad = {"device_id": "D2", "type": "location", "ts": NOW, "lat": 100, "lon": 0}
    payload = json.dumps([good, bad, good | {"device_id": "D3"}]).encode()
    out = decoder.decode(GW, payload, now_ms=NOW)
    assert [r.device_id for r in out.readings] == ["D1", "D3"]
    (reject,) = out.rejects
    assert reject.reason.startswith("reading [1]:") and "`$.lat`" in reject.reason
    assert json.loads(reject.raw) == bad


def test_gateway_reading_needs_device_id_and_array() -> None:
    out = decoder.decode(GW, json.dumps([{"type": "sos", "ts": NOW}]).encode(), now_ms=NOW)
    assert "device_id is required" in out.rejects[0].reason
    out = decoder.decode(GW, enc(type="sos", ts=NOW, device_id="D1"), now_ms=NOW)
    assert "must be an array" in out.rejects[0].reason


def test_sos_with_no_fix_and_old_timestamp_is_accepted() -> None:
    # An SOS is an SOS even without position and hours late (gateway buffering).
    out = decoder.decode(DEV, enc(type="sos", ts=NOW - 6 * 3600_000), now_ms=NOW)
    assert len(out.readings) == 1


@pytest.mark.parametrize(("topic", "reason"), [
    ("eldercare/v1/371002/dev", "not eldercare/v1"),
    ("eldercare/v2/371002/dev/x", "not eldercare/v1"),
    ("eldercare/v1/UPPER/dev/x", "region"),
    ("eldercare/v1/371002/dev/bad id", "device_id"),
    ("eldercare/v1/371002/gw/" + "g" * 65, "gateway_id"),
])
def test_bad_topics(topic: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_topic(topic)
    out = decoder.decode(topic, enc(type="sos", ts=NOW), now_ms=NOW)
    assert reason in out.rejects[0].reason


def test_an_alarm_from_a_clock_far_ahead_is_kept_and_its_clock_dead_lettered() -> None:
    """Alarms are never dropped: a watch whose clock runs 3 h ahead still raises its SOS."""
    payload = enc(type="sos", ts=NOW + 3 * 3_600_000)
    out = decoder.decode(DEV, payload, now_ms=NOW)
    assert [(type(r).__name__, r.ts) for r in out.readings] == [("Sos", NOW + 3 * 3_600_000)]
    (reject,) = out.rejects
    assert "in the future" in reject.reason and "alarm admitted anyway" in reject.reason
    assert reject.admitted and reject.raw == payload
