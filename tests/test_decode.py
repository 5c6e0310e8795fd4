"""Wire contract: every reading type decodes; every class of bad input is rejected with a reason."""

from __future__ import annotations

import json
import math
import re

import msgspec
import pytest

from foundation.errors import ValidationError
from schemas import (
    Accel,
    DeviceAlarm,
    Fall,
    Heartbeat,
    HomeAlarm,
    Location,
    MessageDecoder,
    RadioScan,
    Sos,
    Vitals,
    Wear,
    parse_topic,
)
from schemas.admission import REASON_SQL_PATTERN, refusal_reason
from schemas.readings import MAX_TS_MS, MIN_TS_MS

NOW = 1_790_000_000_000
DEV = "eldercare/v1/371002/dev/BR-1"
GW = "eldercare/v1/371002/gw/GW-1"
decoder = MessageDecoder()

VALID: dict[str, tuple[dict[str, object], type]] = {
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
    "device_alarm": ({"alarm": "power_cut", "code": "GT06 0x16/0x02", "lat": 37.5, "lon": 122.1},
                     DeviceAlarm),
    "radio": ({"cells": [{"mcc": 460, "mnc": 0, "lac": 9360, "cid": 4082, "signal_dbm": -71},
                         {"mcc": 460, "mnc": 0, "lac": 9360, "cid": 4092}],
               "wifi": [{"mac": "22:74:1d:39:64:ff", "signal_dbm": -46}]}, RadioScan),
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
    (enc(type="heartbeat", ts=NOW, battery_pct="full"), "`$.battery_pct`"),
    (enc(type="heartbeat", ts=NOW + 301_000), "in the future"),
    (enc(type="heartbeat", ts=1_500_000_000_000), "`$.ts`"),
    (enc(type="heartbeat", ts=float(NOW)), "`$.ts`"),
    (enc(type="location", ts=NOW, lat=1, lon=2, seq=-1), "`$.seq`"),
    (enc(type="radio", ts=NOW), "no cell tower and no access point"),
    (enc(type="radio", ts=NOW, cells=[], wifi=[]), "no cell tower and no access point"),
    (enc(type="radio", ts=NOW, wifi=[{"mac": "22:74:1D:39:64:FF"}]), "`$.wifi[0].mac`"),
    (enc(type="radio", ts=NOW, wifi=[{"mac": "22-74-1d-39-64-ff"}]), "`$.wifi[0].mac`"),
    (enc(type="radio", ts=NOW, cells=[{"mcc": 1000, "mnc": 0, "lac": 1, "cid": 1}]),
     "`$.cells[0].mcc`"),
    (enc(type="radio", ts=NOW, cells=[{"mcc": 460, "mnc": 0, "lac": 1}]), "`$.cells[0]`"),
    (enc(type="radio", ts=NOW, cells=[{"mcc": 460, "mnc": 0, "lac": 1, "cid": 1,
                                       "signal_dbm": 20}]), "`$.cells[0].signal_dbm`"),
    (enc(type="radio", ts=NOW, cells=[{"mcc": 460, "mnc": 0, "lac": 1, "cid": 1}] * 17),
     "`$.cells`"),
    # Alarms are kept whatever else is wrong with them (see the salvage tests below), but one
    # that names another device than its topic's is not the topic's to keep.
    (enc(type="sos", ts=NOW, device_id="BR-2"), "spoofed"),
    (enc(type="sos", ts=0, device_id="BR-2"), "spoofed"),
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


def test_radio_scan_carries_no_network_name() -> None:
    # Firmware that sends an SSID beside the BSSID: ignored as any unknown field, never kept.
    out = decoder.decode(DEV, enc(type="radio", ts=NOW, wifi=[
        {"mac": "22:74:1d:39:64:ff", "signal_dbm": -46, "ssid": "Zhang-family"}]), now_ms=NOW)
    (r,) = out.readings
    assert isinstance(r, RadioScan) and "Zhang" not in repr(r)
    assert msgspec.json.encode(r) == (b'{"type":"radio","wifi":[{"mac":"22:74:1d:39:64:ff",'
                                      b'"signal_dbm":-46.0}],"device_id":"BR-1","ts":'
                                      + str(NOW).encode() + b"}")


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
    """Alarms are never dropped: a watch whose clock runs 3 h ahead still raises its SOS, on
    the receipt time; its own ts is in the dead letter beside it."""
    payload = enc(type="sos", ts=NOW + 3 * 3_600_000)
    out = decoder.decode(DEV, payload, now_ms=NOW)
    assert [(type(r).__name__, r.ts) for r in out.readings] == [("Sos", NOW)]
    (reject,) = out.rejects
    assert "in the future" in reject.reason and "alarm admitted anyway" in reject.reason
    assert f"ts {NOW + 3 * 3_600_000} is 10800 s" in reject.reason
    assert "replaced by the receipt time" in reject.reason
    assert reject.admitted and reject.raw == payload


# -- alarm salvage: an alarm whose device can be read is kept, whatever else is wrong ------------
STAMPED = "replaced by the receipt time"
TS_2099 = 4_070_908_800_000  # 2099-01-01
SALVAGE = [
    # (id, payload, content type, type, field named in the reason, what the reading keeps)
    ("sos-ts-0", enc(type="sos", ts=0, lat=37.5, lon=122.1), None, Sos, "$.ts",
     {"ts": NOW, "lat": 37.5, "lon": 122.1}),
    ("sos-ts-2019-clock-reset", enc(type="sos", ts=1_546_300_800_000), None, Sos, "$.ts",
     {"ts": NOW}),
    ("sos-ts-missing", enc(type="sos", seq=4), None, Sos, "`ts`", {"ts": NOW, "seq": 4}),
    ("sos-ts-string", enc(type="sos", ts="2026-09-21T12:00:00Z"), None, Sos, "$.ts",
     {"ts": NOW}),
    ("sos-ts-float", enc(type="sos", ts=float(NOW)), None, Sos, "$.ts", {"ts": NOW}),
    ("sos-ts-10h-ahead", enc(type="sos", ts=NOW + 10 * 3_600_000), None, Sos, "$.ts",
     {"ts": NOW}),
    ("sos-ts-2099", enc(type="sos", ts=TS_2099), None, Sos, "$.ts", {"ts": NOW}),
    ("sos-ts-after-2100", enc(type="sos", ts=5_000_000_000_000), None, Sos, "$.ts", {"ts": NOW}),
    ("sos-ts-huge", b'{"type":"sos","ts":1' + b"0" * 5000 + b"}", None, Sos, "$.ts",
     {"ts": NOW}),
    ("sos-lat-91", enc(type="sos", ts=NOW, lat=91, lon=122.1), None, Sos, "$.lat",
     {"ts": NOW, "lat": None, "lon": 122.1}),
    ("sos-accuracy-negative", enc(type="sos", ts=NOW, lat=37.5, lon=122.1, accuracy_m=-1), None,
     Sos, "$.accuracy_m", {"lat": 37.5, "lon": 122.1, "accuracy_m": None}),
    ("sos-seq-negative", enc(type="sos", ts=NOW, seq=-1), None, Sos, "$.seq", {"seq": None}),
    ("sos-msgpack-nan-lat", msgspec.msgpack.encode({"type": "sos", "ts": NOW, "lat": math.nan,
                                                    "lon": 122.1}),
     "application/msgpack", Sos, "$.lat", {"lat": None, "lon": 122.1}),
    ("sos-msgpack-ts-0", msgspec.msgpack.encode({"type": "sos", "ts": 0}), "application/msgpack",
     Sos, "$.ts", {"ts": NOW}),
    ("fall-confidence-1.5", enc(type="fall", ts=NOW, confidence=1.5), None, Fall,
     "$.confidence", {"confidence": None}),
    ("fall-ts-0-and-lat-string", enc(type="fall", ts=0, lat="37.5", confidence=0.9), None, Fall,
     "$.lat", {"ts": NOW, "lat": None, "confidence": 0.9}),
    ("sos-bad-device-id-on-its-topic", enc(type="sos", ts=NOW, device_id="BR 1"), None, Sos,
     "$.device_id", {}),
    ("sos-repeated-tag", b'{"type":"sos","ts":%d,"type":"fall"}' % NOW, None, Fall, "$.type", {}),
    # Required fields: the value that makes a person look (schemas/decode.py, _SAFE_SIDE).
    ("wear-worn-string", enc(type="wear", ts=NOW, worn="no"), None, Wear, "$.worn",
     {"worn": False}),
    ("wear-worn-missing", enc(type="wear", ts=NOW), None, Wear, "$.worn", {"worn": False}),
    ("home-sensor-unknown", enc(type="home_alarm", ts=NOW, sensor="co", active=True), None,
     HomeAlarm, "$.sensor", {"sensor": "panic", "active": True}),
    ("home-sensor-unknown-cleared", enc(type="home_alarm", ts=NOW, sensor="co", active=False),
     None, HomeAlarm, "$.sensor", {"sensor": "panic", "active": False}),
    ("home-active-unreadable", enc(type="home_alarm", ts=NOW, sensor="smoke", active="yes"),
     None, HomeAlarm, "$.active", {"sensor": "smoke", "active": True}),
    ("home-only-a-type", enc(type="home_alarm"), None, HomeAlarm, "$.sensor",
     {"ts": NOW, "sensor": "panic", "active": True}),
]


@pytest.mark.parametrize(("payload", "content_type", "cls", "field", "kept"),
                         [c[1:] for c in SALVAGE], ids=[c[0] for c in SALVAGE])
def test_an_alarm_is_kept_whatever_else_is_wrong_with_it(
        payload: bytes, content_type: str | None, cls: type, field: str,
        kept: dict[str, object]) -> None:
    """Every case the review found dead-lettered and silent: now one reading of the device,
    its time the receipt time when its own is missing or implausible, bad optional fields
    dropped, and one admitted dead letter with the raw bytes naming each defect."""
    out = decoder.decode(DEV, payload, now_ms=NOW, content_type=content_type)
    (reading,) = out.readings
    assert type(reading) is cls and reading.device_id == "BR-1" and reading.ts == NOW
    assert {k: getattr(reading, k) for k in kept} == kept
    (reject,) = out.rejects
    assert reject.admitted and reject.raw == payload
    assert field in reject.reason and "alarm admitted anyway" in reject.reason
    # The time is replaced exactly when it is a defect (every case here decodes at NOW).
    ts_named = "$.ts" in reject.reason or "field `ts`" in reject.reason
    assert (STAMPED in reject.reason) == ts_named, reject.reason


def test_the_device_time_is_kept_as_evidence_in_the_dead_letter() -> None:
    """docs/wire-contract.md: the stored reading has the receipt time; what the device said is
    in the reason (an integer) and always in the raw bytes of the dead letter beside it."""
    for ts in (0, 1_546_300_800_000, TS_2099):
        out = decoder.decode(DEV, enc(type="sos", ts=ts), now_ms=NOW)
        assert out.readings[0].ts == NOW
        assert f"ts {ts} is" in out.rejects[0].reason
        assert json.loads(out.rejects[0].raw)["ts"] == ts


def test_salvage_in_a_gateway_batch_keeps_each_device_and_refuses_only_the_nameless() -> None:
    batch = [
        {"device_id": "D1", "type": "sos", "ts": 0},
        {"device_id": "D2", "type": "location", "ts": NOW, "lat": 91, "lon": 0},
        {"type": "sos", "ts": 0},                                   # no device: refused
        {"device_id": "bad id", "type": "fall", "ts": NOW},         # unreadable device: refused
        {"device_id": "D3", "type": "heartbeat", "ts": NOW},
        {"device_id": "D4", "type": "fall", "ts": "x", "confidence": 7},
    ]
    for payload, ct in ((json.dumps(batch).encode(), None),
                        (msgspec.msgpack.encode(batch), "application/msgpack")):
        out = decoder.decode(GW, payload, now_ms=NOW, content_type=ct)
        assert [(type(r).__name__, r.device_id, r.ts) for r in out.readings] == [
            ("Sos", "D1", NOW), ("Heartbeat", "D3", NOW), ("Fall", "D4", NOW)]
        reasons = [(r.reason.split(":", 1)[0], r.admitted) for r in out.rejects]
        assert reasons == [("reading [0]", True), ("reading [1]", False), ("reading [2]", False),
                           ("reading [3]", False), ("reading [5]", True)]
        assert "no device to own it" in out.rejects[2].reason
        assert "no device to own it" in out.rejects[3].reason
        assert "$.ts" in out.rejects[4].reason and "$.confidence" in out.rejects[4].reason
        assert [r.raw for r in out.rejects][4] in payload


def test_an_alarm_object_on_a_gateway_topic_is_kept_when_it_names_its_device() -> None:
    out = decoder.decode(GW, enc(type="sos", ts=0, device_id="D1"), now_ms=NOW)
    assert [(r.device_id, r.ts) for r in out.readings] == [("D1", NOW)]
    (reject,) = out.rejects
    assert reject.admitted and "must be an array" in reject.reason and "$.ts" in reject.reason
    out = decoder.decode(GW, enc(type="sos", ts=NOW), now_ms=NOW)
    assert out.readings == [] and "must be an array" in out.rejects[0].reason


def test_non_alarms_with_the_same_defects_are_still_refused() -> None:
    for doc in ({"type": "location", "ts": 0, "lat": 1, "lon": 1},
                {"type": "location", "ts": NOW, "lat": 91, "lon": 1},
                {"type": "heartbeat", "ts": NOW + 10 * 3_600_000},
                {"type": "vitals"}, {"type": "teleport", "ts": 0}, {"ts": 0}, [1]):
        out = decoder.decode(DEV, json.dumps(doc).encode(), now_ms=NOW)
        assert out.readings == [] and [r.admitted for r in out.rejects] == [False], doc


def test_a_salvaged_alarm_of_an_unregistered_device_is_kept_and_sighted() -> None:
    """Registry admission still sees it: the salvage's dead letter and the sighting (its own
    row, whose reason the console parses) both, and the alarm once."""
    class Admission:
        def __init__(self) -> None:
            self.regions = {"BR-9": "371002"}
            self.calls: list[str] = []

        def refused(self, *, device_id: str, topic_region: str, type_name: str,
                    alarm: bool) -> str:
            self.calls.append(device_id)
            return refusal_reason(device_id, topic_region=topic_region, registered=None,
                                  type_name=type_name, alarm=alarm)

    admission = Admission()
    dec = MessageDecoder(admission=admission)
    for payload in (enc(type="sos", ts=0), enc(type="sos", ts=NOW + 10 * 3_600_000)):
        out = dec.decode(DEV, payload, now_ms=NOW)
        assert [(r.device_id, r.ts) for r in out.readings] == [("BR-1", NOW)]
        assert [r.admitted for r in out.rejects] == [True, True]
        assert "$.ts" in out.rejects[0].reason
        assert re.match(REASON_SQL_PATTERN.replace("[0-9]", r"\d"), out.rejects[1].reason)
    assert admission.calls == ["BR-1", "BR-1"]


def test_the_receipt_time_stays_within_the_schema_when_the_host_clock_is_wrong() -> None:
    for now, stamp in ((0, MIN_TS_MS), (MAX_TS_MS + 10**9, MAX_TS_MS)):
        out = decoder.decode(DEV, enc(type="sos", ts="?"), now_ms=now)
        assert [r.ts for r in out.readings] == [stamp]
