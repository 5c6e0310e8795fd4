"""The GT06 codec on bytes alone.

Frames are real captures used as data: Traccar's Gt06ProtocolDecoderTest and the examples of
the Concox JM-VL03 protocol document (whose reply examples pin our replies byte for byte).
CRCs are checked against an oracle built on the standard library (``binascii.crc_hqx`` with
reflected bits), not against the codec's own table. Fuzz cases are counted and the total is
checked by the last test of this module.
"""

from __future__ import annotations

import binascii
import datetime as dt
import random
from collections import Counter

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.params import SupervisionParams
from foundation.errors import ConfigError, ValidationError
from gateway.codec import MAX_AHEAD_MS, Codec, Decoded, FrameError
from gateway.gt06 import Gt06Codec
from gateway.gt06_framing import MAX_LONG_FRAME, Gt06Framer, build_frame, crc_itu
from gateway.gt06_tables import BATTERY_PCT, RSSI_DBM
from schemas.readings import (
    Cell,
    DeviceAlarm,
    Fall,
    Heartbeat,
    Location,
    RadioScan,
    Reading,
    Sos,
)

NOW = int(dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC).timestamp()) * 1000
DEV = "864717003664467"
CELL = bytes.fromhex("01CC00287D001F71")  # MCC 460, MNC 0, LAC 0x287D, cell 0x001F71
#: The radio scan of a frame that carries CELL and no usable fix (device time one minute ago).
SCAN = RadioScan(device_id=DEV, ts=NOW - 60_000,
                 cells=[Cell(mcc=460, mnc=0, lac=0x287D, cid=0x1F71)])
CASES: Counter[str] = Counter()
PLANNED = {"framer": 10_000, "decode": 10_000, "round_trip": 3_000}


def _reflect(value: int, bits: int) -> int:
    return int(f"{value:0{bits}b}"[::-1], 2)


def x25(data: bytes) -> int:
    """CRC-16/X-25 from the stdlib's non-reflected CCITT CRC: reflect in, reflect out, invert."""
    crc = binascii.crc_hqx(bytes(_reflect(b, 8) for b in data), 0xFFFF)
    return _reflect(crc, 16) ^ 0xFFFF


def wire(protocol: int, content: bytes, serial: int, *, long: bool = False) -> bytes:
    """A frame built independently of the codec (the oracle CRC)."""
    length = len(content) + 5
    size = length.to_bytes(2 if long else 1, "big")
    body = size + bytes([protocol]) + content + serial.to_bytes(2, "big")
    return (b"yy" if long else b"xx") + body + x25(body).to_bytes(2, "big") + b"\r\n"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def decode(frame: bytes, *, codec: Gt06Codec | None = None, now: int = NOW,
           device: str | None = DEV) -> Decoded:
    d = (codec or Gt06Codec()).decode(frame, now_ms=now, session_device=device)
    for r in d.readings:  # every reading honours the wire contract's limits
        assert msgspec.json.decode(msgspec.json.encode(r), type=Reading) == r
    return d


def fix(*, when: dt.datetime | None = None, raw_time: bytes | None = None, lat: float = 23.1,
        lon: float = 114.4, speed: int = 0, positioned: bool = True, course: int = 0) -> bytes:
    """The 18-byte GPS block: time, GPS info, latitude, longitude, speed, course/status."""
    w = when or dt.datetime(2024, 6, 1, 11, 59, 0)
    time = raw_time or bytes([w.year - 2000, w.month, w.day, w.hour, w.minute, w.second])
    flags = (course & 0x3FF) | (0x1000 if positioned else 0) | (0x0400 if lat >= 0 else 0) \
        | (0x0800 if lon < 0 else 0)
    return (time + b"\xc9" + round(abs(lat) * 1_800_000).to_bytes(4, "big")
            + round(abs(lon) * 1_800_000).to_bytes(4, "big") + bytes([speed])
            + flags.to_bytes(2, "big"))


def alarm_content(code: int, *, bits: int = 0, level: int = 4, gsm: int = 4,
                  gps: bytes | None = None) -> bytes:
    return (gps or fix()) + b"\x09" + CELL + bytes([bits << 3, level, gsm, code, 0x02])


def kinds(d: Decoded) -> list[tuple[str, str | None]]:
    """(reading type, alarm kind) of each reading."""
    return [(type(r).__name__, r.alarm if isinstance(r, DeviceAlarm) else None)
            for r in d.readings]


# --- CRC and replies -------------------------------------------------------------------------

def test_crc_is_x25_check_value_and_matches_the_stdlib_oracle() -> None:
    assert crc_itu(b"123456789") == 0x906E == x25(b"123456789")
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    for _ in range(500):
        data = rng.randbytes(rng.randrange(0, 300))
        assert crc_itu(data) == x25(data)


@pytest.mark.parametrize(("protocol", "content", "serial", "expected"), [
    (0x01, b"", 0x0005, "7878050100059FF80D0A"),  # JM-VL03 login response
    (0x01, b"", 0x0001, "787805010001D9DC0D0A"),  # GT06 manual login response
    (0x13, b"", 0x0100, "787805130100E1A00D0A"),  # JM-VL03 heartbeat response
    (0x26, b"", 0x001C, "78780526001C9D860D0A"),  # JM-VL03 alarm response
    (0x8A, h("0F0C1D000015"), 0x0006, "78780B8A0F0C1D0000150006F0860D0A"),  # time response
])
def test_build_frame_reproduces_the_vendor_reply_examples(
        protocol: int, content: bytes, serial: int, expected: str) -> None:
    assert build_frame(protocol, content, serial) == h(expected) == wire(protocol, content, serial)


# --- Login -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("frame", "imei", "reply"), [
    ("78780D01012345678901234500018CDD0D0A", "123456789012345", "787805010001D9DC0D0A"),
    ("78781101075253367890024270003201000512790D0A", "752533678900242",
     "7878050100059FF80D0A"),
    ("787811010864717003664467100f190a0002c6d20d0a", "864717003664467", None),
    ("78780D01086471700328358100093F040D0A", "864717003283581", None),
])
def test_login_names_the_imei_and_is_answered_at_once(frame: str, imei: str,
                                                      reply: str | None) -> None:
    d = decode(h(frame), device=None)
    serial = int.from_bytes(h(frame)[-6:-4], "big")
    assert (d.login, d.device_id, d.command, d.readings) == (True, imei, "0x01", ())
    assert d.reply == (h(reply) if reply else wire(0x01, b"", serial))
    assert d.reply_when == "now"


def test_login_keeps_a_sixteenth_digit_and_refuses_non_bcd() -> None:
    assert decode(wire(0x01, h("1234567890123456"), 1), device=None).device_id \
        == "1234567890123456"
    with pytest.raises(ValidationError, match="not BCD"):
        decode(wire(0x01, h("0864717003664A67"), 1), device=None)
    with pytest.raises(ValidationError, match="before the IMEI"):
        decode(wire(0x01, h("08647170"), 1), device=None)


# --- Heartbeat / status ----------------------------------------------------------------------

def test_heartbeat_vendor_example() -> None:
    d = decode(h("78780A134004040001000FDCEE0D0A"))
    assert d.readings == (Heartbeat(device_id=DEV, ts=NOW, battery_pct=60.0, rssi_dbm=-73.0),)
    assert d.reply == wire(0x13, b"", 0x000F) and d.reply_when == "now"
    assert d.extra["gps_tracking"] is True and d.extra["charging"] is False


def test_heartbeat_with_every_terminal_flag() -> None:
    d = decode(h("78780a13c40604000201298f5b0d0a"))  # Traccar: oil cut, GPS, charging
    assert d.readings == (Heartbeat(device_id=DEV, ts=NOW, battery_pct=100.0, rssi_dbm=-73.0),)
    assert {k: d.extra[k] for k in ("oil_cut", "gps_tracking", "charging", "acc", "defence")} \
        == {"oil_cut": True, "gps_tracking": True, "charging": True, "acc": False,
            "defence": False}


def test_heartbeat_alarm_byte_depends_on_the_model() -> None:
    frame = h("78780a13400503020100741c3b0d0a")  # a real heartbeat reporting a power cut
    assert kinds(decode(frame)) == [("Heartbeat", None), ("DeviceAlarm", "power_cut")]
    assert decode(frame).readings[1] == DeviceAlarm(device_id=DEV, ts=NOW, alarm="power_cut",
                                                    code="GT06 0x13/0x02")
    vl03 = Gt06Codec(device_models={DEV: "jm-vl03"})
    assert kinds(decode(frame, codec=vl03)) == [("Heartbeat", None)]
    assert kinds(decode(frame, codec=vl03, device="other")) == kinds(decode(frame))


@pytest.mark.parametrize(("bits", "expected"), [
    (0, []), (1, [("DeviceAlarm", "vibration")]), (2, [("DeviceAlarm", "power_cut")]),
    (3, [("DeviceAlarm", "low_battery")]), (4, [("Sos", None)]), (5, [("DeviceAlarm", "other")]),
    (6, [("DeviceAlarm", "other")]), (7, [("DeviceAlarm", "cover_removed")]),
])
def test_heartbeat_terminal_alarm_bits(bits: int, expected: list[tuple[str, str | None]]) -> None:
    d = decode(wire(0x13, bytes([bits << 3 | 0x40, 4, 4, 0, 2]), 7))
    assert kinds(d)[1:] == expected


@pytest.mark.parametrize("level", range(9))
def test_voltage_and_gsm_levels(level: int) -> None:
    d = decode(wire(0x13, bytes([0x40, level, level]), 3))
    beat = d.readings[0]
    assert isinstance(beat, Heartbeat)
    assert beat.battery_pct == {0: 0, 1: 5, 2: 15, 3: 35, 4: 60, 5: 80, 6: 100}.get(level)
    assert beat.rssi_dbm == {0: -113, 1: -103, 2: -93, 3: -83, 4: -73}.get(level)
    assert (d.extra["voltage_level"], d.extra["gsm_level"]) == (level, level)


def test_low_battery_levels_sit_under_the_detector_threshold() -> None:
    params = SupervisionParams()
    assert [p < params.low_battery_pct for p in BATTERY_PCT.values()] \
        == [True, True, True, False, False, False, False]
    assert [p < params.rearm_battery_pct for p in BATTERY_PCT.values()] \
        == [True, True, True, True, False, False, False]
    assert sorted(RSSI_DBM.values()) == list(RSSI_DBM.values())


def test_status_of_another_layout_is_a_keepalive_only() -> None:
    d = decode(h("7878151330802b00000642014f0008720000802b5ee4d4c90d0a"))  # Traccar, 16 bytes
    assert d.readings == (Heartbeat(device_id=DEV, ts=NOW),)
    assert d.reply == wire(0x13, b"", 0x5EE4) and d.extra["status_raw"].startswith("30802b")


# --- Location and LBS ------------------------------------------------------------------------

def test_location_0x12_real_frame_with_old_clock() -> None:
    d = decode(h("78781f120f0a140e150bc505e51e780293a9e800540000f601006e0055da00035f240d0a"))
    (loc,) = d.readings
    assert isinstance(loc, Location)
    assert (round(loc.lat, 5), round(loc.lon, 5)) == (54.94535, 24.01762)  # Traccar's values
    assert (loc.ts, loc.source, loc.speed_mps) == (NOW, "gps", 0.0)
    assert d.device_time == "2015-10-20T14:21:11Z" and d.reply is None
    assert d.extra["cell"] == {"mcc": 246, "mnc": 1, "lac": 110, "cid": 21978}


def test_location_0x22_vendor_example() -> None:
    d = decode(h("787822220F0C1D023305C9027AC8180C46586000140001CC00287D001F71000001000820860D0A"))
    (loc,) = d.readings
    assert isinstance(loc, Location)
    assert (loc.lat, loc.lon) == (0x027AC818 / 1_800_000, 0x0C465860 / 1_800_000)
    assert (d.extra["reupload"], d.extra["acc"], d.extra["satellites"]) == (True, 0, 9)
    assert d.device_time == "2015-12-29T02:51:05Z" and d.reply is None


def test_location_speed_hemispheres_and_mileage() -> None:
    content = fix(lat=-33.5, lon=-70.25, speed=90, course=181) + CELL + b"\x01\x00\x00" \
        + (1234).to_bytes(4, "big")
    d = decode(wire(0x22, content, 9))
    assert d.readings == (Location(device_id=DEV, ts=NOW - 60_000, lat=-33.5, lon=-70.25,
                                   speed_mps=25.0, source="gps"),)
    assert (d.extra["course"], d.extra["mileage"], d.extra["reupload"]) == (181, 1234, False)


def test_unpositioned_location_yields_its_tower_as_a_radio_scan() -> None:
    d = decode(h("787822221106160a1016c60278019407c7783800040001940504700046fc01030100065f570d0a"))
    assert d.extra["cell"] == {"mcc": 404, "mnc": 5, "lac": 1136, "cid": 18172}
    # No fix: no position, and the serving tower for a geolocation provider (device time
    # 2017, implausible, so the receipt time).
    assert d.readings == (RadioScan(device_id=DEV, ts=NOW,
                                    cells=[Cell(mcc=404, mnc=5, lac=1136, cid=18172)]),)


def test_positioned_location_out_of_range_is_malformed() -> None:
    content = fix()[:7] + b"\xff\xff\xff\xff" + fix()[11:] + CELL
    with pytest.raises(ValidationError, match="out of range"):
        decode(wire(0x12, content, 1))


def test_lbs_0x28_vendor_example_carries_towers_only() -> None:
    d = decode(h("78783B2810010D02020201CC00287D001F713E287D001F7231287D001E232D287D001F4018"
                 "000000000000000000000000000000000000FF00020005B14B0D0A"))
    assert d.reply is None and not d.unknown
    # The four towers (the zero slots are empty); their RSSI byte is not dBm, so not kept.
    (scan,) = d.readings
    assert scan == RadioScan(device_id=DEV, ts=NOW, cells=[
        Cell(mcc=460, mnc=0, lac=0x287D, cid=cid) for cid in (0x1F71, 0x1F72, 0x1E23, 0x1F40)])
    assert [c["cid"] for c in d.extra["cells"]] == [0x1F71, 0x1F72, 0x1E23, 0x1F40]
    assert d.extra["cells"][0] == {"mcc": 460, "mnc": 0, "lac": 0x287D, "cid": 0x1F71,
                                   "rssi": 0x3E}
    assert (d.extra["timing_advance"], d.extra["language"]) == (0xFF, 2)


# --- Alarms ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("frame", "expected"), [
    ("787825260F0C1D030B26C9027AC8180C4658600004000901CC00287D001F718004041302000C472A0D0A",
     [("DeviceAlarm", "cover_removed"), ("RadioScan", None)]),  # JM-VL03: tamper, no fix
    ("787825160F0C1D0A2B21C8027AC8040C46581000146F0901CC00287D001F714804040301001C84CF0D0A",
     [("Location", None), ("DeviceAlarm", "vibration")]),  # byte and bits agree: once
    ("78782516110819110208d402f264dc08289a4058d4c70901944600d300c0954606040600014057e90d0a",
     [("Location", None), ("DeviceAlarm", "overspeed")]),
    ("7878251610051b0f1c34c5022515d504b5dcd20738080902d4022bdf009cba5006640201006759680d0a",
     [("Location", None), ("DeviceAlarm", "power_cut")]),
    ("7878251613020C12141AC5027951430C2A16F60014000900000000001A00007C550300020002F1E70D0A",
     [("Location", None), ("DeviceAlarm", "cover_removed")]),  # status bits 111 (Traccar)
    ("7878252612030C063816C3026C10540C38C9700144030901CC002866000EEE0C06040302000DA2DB0D0A",
     [("DeviceAlarm", "vibration"), ("RadioScan", None)]),
    ("78782727110c0b0e170f850450059107f461ae001c7e0a81360104cb8a00bef32806030c02ff000316b10d0a",
     [("Location", None), ("DeviceAlarm", "other")]),  # 0x0C powered on: no alarm
    ("787825160B051B093523CF027AC8360C4657B30014000901CC00266A001E1740050400020008D7B10D0A",
     [("Location", None)]),  # alarm byte 0x00: normal
])
def test_real_alarm_frames_reply_after_publish(frame: str,
                                               expected: list[tuple[str, str | None]]) -> None:
    raw = h(frame)
    d = decode(raw)
    assert kinds(d) == expected
    assert d.reply == wire(raw[3], b"", int.from_bytes(raw[-6:-4], "big"))
    assert d.reply_when == "after_publish" and d.device_time is not None


def test_alarm_0x27_keeps_fence_two_byte_mnc_and_codes() -> None:
    d = decode(h("78782727110c0b0e170f850450059107f461ae001c7e0a81360104cb8a00bef328060"
                 "30c02ff000316b10d0a"))
    assert d.extra["fence"] == 0xFF
    assert d.extra["cell"] == {"mcc": 310, "mnc": 260, "lac": 0xCB8A, "cid": 0x00BEF3}
    assert [r.code for r in d.readings if isinstance(r, DeviceAlarm)] \
        == ["GT06 0x27/status 101"]   # 0x0C (powered on) is routine state, not an alarm


def test_alarm_position_is_carried_by_the_alarm() -> None:
    d = decode(wire(0x16, alarm_content(0x01, level=5, gps=fix(lat=31.2, lon=121.5)), 4))
    assert d.readings == (
        Location(device_id=DEV, ts=NOW - 60_000, lat=31.2, lon=121.5, speed_mps=0.0,
                 battery_pct=80.0, source="gps"),
        Sos(device_id=DEV, ts=NOW - 60_000, lat=31.2, lon=121.5))


def test_alarm_with_impossible_position_is_still_raised() -> None:
    gps = fix()[:7] + b"\xff\xff\xff\xff" + fix()[11:]
    d = decode(wire(0x16, alarm_content(0x23, gps=gps), 4))
    assert d.readings == (Fall(device_id=DEV, ts=NOW - 60_000), SCAN)
    assert d.extra["position_rejected"] == "coordinates out of range"


#: The issue's and the Concox JM-VL03 document's meanings, written out here independently.
SPEC_CODES = {0x01: ("Sos", None), 0x02: ("DeviceAlarm", "power_cut"),
              0x03: ("DeviceAlarm", "vibration"), 0x04: ("DeviceAlarm", "fence_enter"),
              0x05: ("DeviceAlarm", "fence_exit"), 0x06: ("DeviceAlarm", "overspeed"),
              0x0E: ("DeviceAlarm", "low_battery"), 0x0F: ("DeviceAlarm", "low_battery"),
              0x13: ("DeviceAlarm", "cover_removed"), 0x15: ("DeviceAlarm", "low_battery"),
              0x18: ("DeviceAlarm", "cover_removed"), 0x19: ("DeviceAlarm", "low_battery"),
              0x23: ("Fall", None)}
#: Routine state reports (ignition, driving style, GPS coverage, power-on, sleep): no alarm.
INFORMATIONAL = {0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x29, 0x2A, 0x2B, 0x30, 0xFE, 0xFF}


@pytest.mark.parametrize("code", range(256))
def test_every_alarm_code_gives_a_reading(code: int) -> None:
    d = decode(wire(0x26, alarm_content(code, gps=fix(positioned=False)), code))
    if code == 0x00 or code in INFORMATIONAL:
        assert d.readings == (SCAN,) and d.reply is not None   # answered all the same
        return
    reading, scan = d.readings
    assert kinds(d) == [SPEC_CODES.get(code, ("DeviceAlarm", "other")), ("RadioScan", None)]
    assert scan == SCAN  # no fix: the alarm's tower, after the alarm
    if isinstance(reading, DeviceAlarm):
        assert reading.code == f"GT06 0x26/0x{code:02X}"


def test_status_bits_table_per_model() -> None:
    frame = wire(0x16, alarm_content(0x00, bits=7), 2)
    assert kinds(decode(frame))[1:] == [("DeviceAlarm", "cover_removed")]
    vxt = Gt06Codec(model="vxt01")
    assert kinds(decode(frame, codec=vxt))[1:] == [("DeviceAlarm", "overspeed")]
    with pytest.raises(ConfigError, match="nope"):
        Gt06Codec(device_models={DEV: "nope"})


def test_alarm_byte_and_bits_that_differ_both_count() -> None:
    d = decode(wire(0x16, alarm_content(0x05, bits=4, gps=fix(positioned=False)), 2))
    assert kinds(d) == [("DeviceAlarm", "fence_exit"), ("Sos", None), ("RadioScan", None)]


# --- Errors, unknowns, session ---------------------------------------------------------------

def test_crc_failure_is_a_specific_validation_error() -> None:
    good = bytearray(h("78780A134004040001000FDCEE0D0A"))
    for index in (-4, 5):
        bad = bytearray(good)
        bad[index] ^= 0x01
        with pytest.raises(ValidationError, match="CRC mismatch"):
            decode(bytes(bad))


@pytest.mark.parametrize("frame", ["78780c95130a071223200100013ad10d0a",
                                   "797900089400000002e852d70d0a", "7979000794050000c9b63e0d0a"])
def test_unknown_protocol_is_counted_not_fatal(frame: str) -> None:
    d = decode(h(frame))
    assert d.unknown and d.reply is None and d.readings == ()
    assert d.command == f"0x{h(frame)[3 if frame.startswith('78') else 4]:02X}"


def test_frames_before_login_are_refused() -> None:
    for frame in ("78780A134004040001000FDCEE0D0A", "78780c95130a071223200100013ad10d0a"):
        with pytest.raises(ValidationError, match="before login"):
            decode(h(frame), device=None)


def test_time_request_vendor_example() -> None:
    now = int(dt.datetime(2015, 12, 29, 0, 0, 21, tzinfo=dt.UTC).timestamp()) * 1000
    d = decode(h("7878058A000688290D0A"), now=now)
    assert d.reply == h("78780B8A0F0C1D0000150006F0860D0A") and not d.unknown


@pytest.mark.parametrize(("frame", "reason"), [
    (b"", "start bits"), (h("7777050100010000") + b"\r\n", "start bits"),
    (h("7878"), "too short"), (h("787806010001d9dc0d0a"), "says 11 bytes"),
    (h("787805010001d9dc0d0b"), "stop bits"), (wire(0x01, b"", 1)[:2] + h("0401d9dc0d0a"),
                                                "too short"),
    (h("78780401") + h("000100000d0a"), "length field 4"),
    (wire(0x12, fix()[:10], 1), "before the latitude"),
    # A short cell block costs the cell, never the alarm: this frame is cut short after it.
    (wire(0x16, fix() + b"\x05" + CELL, 1), "0x16: content ends before the language"),
    (wire(0x28, h("10010D020202") + CELL, 1), "0x28: content ends before the RSSI"),
    (wire(0x13, b"\x40", 1), "status_raw"),
])
def test_malformed_frames_name_their_fault(frame: bytes, reason: str) -> None:
    if reason == "status_raw":  # a 1-byte status is another layout, not an error
        assert reason in decode(frame).extra
        return
    with pytest.raises(ValidationError, match=reason):
        decode(frame)


# --- Clock -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "believed"), [
    (bytes([24, 6, 1, 11, 0, 0]), True),
    (bytes([24, 6, 1, 12, 5, 0]), True),  # exactly five minutes ahead
    (bytes([24, 6, 1, 12, 5, 1]), False),  # one second more
    (bytes([19, 12, 31, 23, 59, 59]), False),  # before 2020
    (bytes([24, 13, 1, 0, 0, 0]), False),  # no such month
    (bytes([24, 2, 30, 0, 0, 0]), False),  # no such day
    (bytes([24, 6, 1, 24, 0, 0]), False),  # no such hour
])
def test_device_time_is_believed_only_when_plausible(raw: bytes, believed: bool) -> None:
    d = decode(wire(0x22, fix(raw_time=raw) + CELL + b"\x00\x00\x00", 1))
    (loc,) = d.readings
    text = f"20{raw[0]:02d}-{raw[1]:02d}-{raw[2]:02d}T{raw[3]:02d}:{raw[4]:02d}:{raw[5]:02d}Z"
    if believed:
        assert d.device_time is None and loc.ts == int(dt.datetime(
            2000 + raw[0], *raw[1:], tzinfo=dt.UTC).timestamp()) * 1000
        assert loc.ts <= NOW + MAX_AHEAD_MS
    else:
        assert (loc.ts, d.device_time) == (NOW, text)


# --- Framing ---------------------------------------------------------------------------------

REAL = [h(x) for x in (
    "78780D01012345678901234500018CDD0D0A", "78780A134004040001000FDCEE0D0A",
    "787825260F0C1D030B26C9027AC8180C4658600004000901CC00287D001F718004041302000C472A0D0A",
    "797900089400000002e852d70d0a",
    ("78783B2810010D02020201CC00287D001F713E287D001F7231287D001E232D287D001F4018000000000000000000"
     "000000000000000000FF00020005B14B0D0A"),
)]
#: Garbage with false starts: a start with wrong stop bits, a lone 0x78, a half start at the end.
GARBAGE = [h("00ff"), h("78780501000100000d0b"), h("78"), h("0d0a1234"), h("79")]


def _stream() -> tuple[bytes, int]:
    data = b"".join(g + f for g, f in zip(GARBAGE, REAL, strict=True))
    return data, sum(map(len, GARBAGE))


def test_framer_byte_by_byte() -> None:
    data, garbage = _stream()
    framer = Gt06Framer()
    frames = [f for i in range(len(data)) for f in framer.feed(data[i:i + 1])]
    assert frames == REAL and framer.skipped_bytes == garbage and framer.pending_bytes == 0


def test_framer_random_chunks_and_one_segment() -> None:
    data, garbage = _stream()
    assert Gt06Codec().framer().feed(data + data) == REAL + REAL
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    for _ in range(300):
        framer, frames, pos = Gt06Framer(), [], 0
        while pos < len(data):
            step = rng.randint(1, 40)
            frames += framer.feed(data[pos:pos + step])
            pos += step
        assert frames == REAL and framer.skipped_bytes == garbage


def test_framer_keeps_a_half_start_and_resyncs_inside_a_false_start() -> None:
    framer = Gt06Framer()
    assert framer.feed(b"\x01\x78") == [] and framer.pending_bytes == 1
    frame = REAL[1]
    assert framer.feed(frame[1:]) == [frame] and framer.skipped_bytes == 1  # the kept 0x78
    # "78 [78 78 0A ...]": the first candidate has the wrong length; the real one follows.
    for stray in (b"\x78", b"\x79"):  # "78 [78 78 0A ...": a 125-byte candidate
        framer = Gt06Framer()
        assert framer.feed(stray + frame) == [frame] and framer.skipped_bytes == 1
    long_frame = REAL[3]  # "79 [79 79 00 08 ...]" declares 30,985 bytes: not fatal
    framer = Gt06Framer()
    assert [f for b in b"\x79" + long_frame for f in framer.feed(bytes([b]))] == [long_frame]
    # A frame with a bad CRC still goes to decode (which reports it), unless it hides a good one.
    bad = frame[:-3] + bytes([frame[-3] ^ 1]) + frame[-2:]
    assert Gt06Framer().feed(bad) == [bad]


def test_framer_over_the_limit_raises() -> None:
    framer = Gt06Framer()
    assert framer.feed(b"\x00yy\x10\x00" + bytes(4000)) == []  # a frame may yet follow
    with pytest.raises(FrameError, match="declares 4102 bytes, over the 4096-byte limit"):
        framer.feed(bytes(92))
    with pytest.raises(FrameError, match="over the 20-byte limit"):
        Gt06Framer(max_short=20).feed(REAL[2])
    framer = Gt06Framer()
    framer.feed(b"yy" + (MAX_LONG_FRAME - 6).to_bytes(2, "big") + bytes(3000))
    assert framer.pending_bytes == 3004 <= MAX_LONG_FRAME


def test_long_form_frame_is_framed_decoded_and_answered() -> None:
    content = alarm_content(0x01, gps=fix(lat=1.5, lon=2.5))
    long_frame = wire(0x26, content, 0x77, long=True)
    assert build_frame(0x26, content, 0x77, long=True) == long_frame
    (framed,) = Gt06Framer().feed(b"\x00" + long_frame)
    d = decode(framed)
    assert d.readings == decode(wire(0x26, content, 0x77)).readings
    assert kinds(d) == [("Location", None), ("Sos", None)]
    assert d.reply == wire(0x26, b"", 0x77)  # replies carry no content: the short form


def test_the_codec_satisfies_the_seam() -> None:
    codec: Codec = Gt06Codec()
    assert (codec.name, codec.max_frame_bytes) == ("gt06", MAX_LONG_FRAME)


# --- Fuzz ------------------------------------------------------------------------------------

FUZZ = settings(max_examples=2000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROTOCOLS = [0x01, 0x12, 0x13, 0x16, 0x22, 0x26, 0x27, 0x28, 0x8A]


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


NO_START = bytes(b for b in range(256) if b not in (0x78, 0x79))


def _garbage(rng: random.Random) -> bytes:
    """Bytes that hold no start bits, maybe ending in a stray half start before the frame."""
    return bytes(rng.choices(NO_START, k=rng.randint(0, 20))) + rng.choice([b"", b"x", b"y"])


@FUZZ
@given(data=st.binary(max_size=300), rng=st.randoms(use_true_random=False))
def test_fuzz_framer(data: bytes, rng: random.Random) -> None:
    """Arbitrary bytes in arbitrary chunks raise nothing but FrameError; real frames between
    garbage free of start bytes all come out, in order, with the garbage counted."""
    for case in range(5):
        CASES["framer"] += 1
        if case % 2 == 0:
            blob = data if case == 0 else rng.randbytes(rng.randint(0, 300))
            framer = Gt06Framer()
            try:
                for chunk in _chunks(rng, blob):
                    for frame in framer.feed(chunk):
                        assert frame[:2] in (b"xx", b"yy") and frame.endswith(b"\r\n")
                    assert framer.pending_bytes <= MAX_LONG_FRAME
            except FrameError:
                pass
        else:
            picked = [rng.choice(REAL) for _ in range(rng.randint(1, 4))]
            junk = [_garbage(rng) for _ in picked]
            framer = Gt06Framer()
            out = [f for chunk in _chunks(rng, b"".join(g + f for g, f in zip(junk, picked,
                                                                              strict=True)))
                   for f in framer.feed(chunk)]
            assert out == picked and framer.skipped_bytes == sum(map(len, junk))


@FUZZ
@given(content=st.binary(max_size=80), rng=st.randoms(use_true_random=False))
def test_fuzz_decode(content: bytes, rng: random.Random) -> None:
    """Framed bytes with a valid CRC and any content, or any bytes at all, decode or raise
    ValidationError; every reading decoded honours the wire contract."""
    codec = Gt06Codec()
    for case in range(5):
        CASES["decode"] += 1
        body = content if case == 0 else rng.randbytes(rng.randint(0, 80))
        protocol = rng.choice(PROTOCOLS) if case < 4 else rng.randrange(256)
        frame = wire(protocol, body, rng.randrange(65536), long=rng.random() < 0.2)
        if case == 3:
            frame = rng.randbytes(rng.randint(0, 40)) if rng.random() < 0.5 else \
                frame[:rng.randint(0, len(frame))]
        try:
            d = codec.decode(frame, now_ms=NOW, session_device=rng.choice([DEV, None]))
        except ValidationError:
            continue
        for r in d.readings:
            assert msgspec.json.decode(msgspec.json.encode(r), type=Reading) == r
        assert d.reply is None or (d.reply[:2] == b"xx" and d.reply.endswith(b"\r\n")
                                   and x25(d.reply[2:-4]) == int.from_bytes(d.reply[-4:-2]))


@settings(FUZZ, max_examples=1000)
@given(rng=st.randoms(use_true_random=False))
def test_fuzz_round_trip(rng: random.Random) -> None:
    """Frames built from random valid fields decode to those fields."""
    for _ in range(3):
        CASES["round_trip"] += 1
        imei = "".join(rng.choice("0123456789") for _ in range(15))
        assert decode(wire(0x01, bytes.fromhex("0" + imei), 1), device=None).device_id == imei
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        when = dt.datetime(2020, 1, 1) + dt.timedelta(seconds=rng.randrange(140_000_000))
        speed, serial, code = rng.randrange(256), rng.randrange(65536), rng.randrange(1, 256)
        gps = fix(when=when, lat=lat, lon=lon, speed=speed)
        loc = decode(wire(0x22, gps + CELL + b"\x01\x00\x00", serial)).readings[0]
        assert isinstance(loc, Location)
        assert abs(loc.lat - lat) <= 1e-6 and abs(loc.lon - lon) <= 1e-6
        assert loc.speed_mps == round(speed / 3.6, 2)
        assert loc.ts == int(when.replace(tzinfo=dt.UTC).timestamp()) * 1000
        d = decode(wire(0x16, alarm_content(code, gps=gps), serial))
        expected = [] if code in INFORMATIONAL else [
            SPEC_CODES.get(code, ("DeviceAlarm", "other"))]
        assert kinds(d)[1:] == expected
        assert d.reply == wire(0x16, b"", serial)


def test_zz_fuzz_case_count() -> None:
    """Runs last in this module: the fuzz tests above ran every case they planned."""
    if set(CASES) != set(PLANNED):
        pytest.skip("some fuzz tests were deselected")
    print(f"\nGT06 fuzz cases: {dict(CASES)} = {sum(CASES.values()):,}")
    assert all(CASES[name] >= n for name, n in PLANNED.items())
    assert sum(CASES.values()) >= 20_000


@pytest.mark.parametrize("lbs", [b"\x00", b"\x01", b"\x05" + CELL[:4]])
def test_an_alarm_without_a_readable_cell_is_still_the_alarm(lbs: bytes) -> None:
    """LBS length 0 or 1 means no cell (firmware sends both); a cell block too short to read
    is noted, and the SOS after it is decoded, not refused."""
    d = decode(wire(0x16, fix(positioned=False) + lbs + bytes([0, 4, 4, 0x01, 0x02]), 3))
    assert [k for k, _ in kinds(d)] == ["Sos"]
    assert d.reply_when == "after_publish"
    assert ("cell_unparsed" in d.extra) == (len(lbs) > 1)

