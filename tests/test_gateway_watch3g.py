"""The 3G watch codec (gateway/watch3g.py) on bytes alone.

Real frames are captures published in Traccar's WatchProtocolDecoderTest and
WatchFrameDecoderTest (traccar/traccar, Apache-2.0), used as test data. Expected readings are
written out by hand from the issue's bit table, not taken from the module's own tables.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation.errors import ValidationError
from gateway.codec import Codec, Decoded, FrameError
from gateway.watch3g import WatchCodec
from gateway.watch3g_framing import MAX_FRAME_BYTES, WatchFramer
from schemas.readings import (
    Cell,
    DeviceAlarm,
    Fall,
    Heartbeat,
    Location,
    RadioScan,
    Reading,
    Sos,
    Vitals,
    Wear,
    WifiAp,
)

NOW = int(datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()) * 1000
CODEC = WatchCodec()
FUZZ = settings(deadline=None, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def decode(frame: bytes | str, *, now_ms: int = NOW) -> Decoded:
    data = frame.encode("latin-1") if isinstance(frame, str) else frame
    decoded = CODEC.decode(data, now_ms=now_ms, session_device=None)
    for reading in decoded.readings:  # every reading must pass the wire contract's limits
        msgspec.json.decode(msgspec.json.encode(reading), type=Reading)
    return decoded


def escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        out += {0x7D: b"}\x01", 0x5B: b"}\x02", 0x5D: b"}\x03", 0x2C: b"}\x04",
                0x2A: b"}\x05"}.get(b, bytes([b]))
    return bytes(out)


def frame(content: str, *, vendor: str = "3G", device: str = "8800000015",
          index: str | None = None) -> str:
    idx = f"{index}*" if index else ""
    return f"[{vendor}*{device}*{idx}{len(content):04X}*{content}]"


def kinds(decoded: Decoded) -> list[str]:
    out = []
    for r in decoded.readings:
        out.append(r.alarm if isinstance(r, DeviceAlarm) else type(r).__name__)
    return out


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000  # type: ignore[misc]


# A UD/AL body with a valid fix; status and fields substituted per test.
def report(cmd: str = "UD", *, status: str = "00000000", fix: str = "A",
           lat: str = "22.571707,N", lon: str = "113.8613968,E", when: str = "010625,115900",
           speed: str = "36.0", battery: str = "90") -> str:
    return (f"{cmd},{when},{fix},{lat},{lon},{speed},0.0,100,7,60,{battery},1000,50,{status},"
            "4,1,460,0,9360,4082,131,9360,4092,148,9360,4091,143,9360,4153,141")


# --------------------------------------------------------------------------- real frames

REAL = [
    # (frame, reading kinds, reply)
    (("[3G*9031853319*004E*UD2,220322,055105,A,22.761162,N,114.360192,E,0,0,47,14,100,64,0,0,"
     "00000008,0,0]"), ["Location"], None),
    ("[3G*2104326058*000E*btemp2,1,35.29]", ["Vitals"], None),
    (("[SG*9059056143*0053*UD,251021,223408,A,41.46500,N,081.53128,W,0.926,000,0,00,70,70,0,50,"
     "00000000,0,1,,,,00]"), ["Location"], None),
    (("[3G*8809008845*00C0*AL,271219,094744,V,00.000000,N, 0.0000000,E,0.00,0.0,0.0,0,100,81,0,"
     "0,00010000,7,0,460,0,9336,3981,141,9336,3912,141,9336,3982,140,9765,4233,134,9765,4071,"
     "134,9765,4321,134,9336,4353,132,0,0.0]"), ["Sos", "RadioScan"],
     b"[3G*8809008845*0002*AL]"),
    (("[ZJ*014111001332708*0075*0064*AL,040418,052156,A,22.536207,N,113.938673,E,0,0,0,5,100,82,"
     "1000,50,00100000,1,255,460,0,9340,3663,35]"), ["Location", "Wear"],
     b"[ZJ*014111001332708*0075*0002*AL]"),
    ("[3G*4700609403*0013*bphrt,120,79,73,,,,]", ["Vitals"], None),
    ("[ZJ*357653059860416*0007*000c*BLOOD,109,68]", ["Vitals"], None),
    (("[3G*8308373902*0080*AL,230817,095346,A,47.083950,N,15.4821850,E,7.60,273.8,0.0,4,15,44,0,"
     "0,00200010,2,255,232,1,7605,42530,118,7605,58036,119,0,65.8]"), ["Location", "Fall"],
     b"[3G*8308373902*0002*AL]"),
    (("[SG*9051004074*0058*AL,120117,145602,V,40.058413,N,76.336618,W,11.519,188,99,00,01,80,0,50,"
     "00000000,0,1,0,0,,10]"), ["other"], b"[SG*9051004074*0002*AL]"),
    (("[SG*8800000015*0087*AL,220414,134652,A,22.571707,N,113.8613968,E,0.1,0.0,100,7,60,90,1000,"
     "50,0001,4,1,460,0,9360,4082,131,9360,4092,148,9360,4091,143,9360,4153,141]"),
     ["Location", "low_battery"], b"[SG*8800000015*0002*AL]"),
    (("[3G*358839237678820*0122*ALCUSTOMER1,251120,081821,V,0.0,N,0.0,E,2.58,317.462,35.147,14,"
     "100,2,11089,0,00100008,1,1,460,01,42308,101992452,100,5,shizhou1,44:56:e2:03:ea:2a,-69,"
     "FART3,30:0d:9e:bb:fa:4d,-70,ZKY-A209,88:c3:97:c1:f4:7f,-73,ChinaNet-HNeD,"
     "e8:84:c6:21:7c:dc,-77,,30:45:96:10:14:5d,-79,1.2035439]"), ["Wear", "RadioScan"],
     b"[3G*358839237678820*0002*AL]"),
    (("[3G*6005412902*011F*WT,170517,133811,V,18.512200,N,73.7750283,E,0.00,0.0,0.0,0,92,82,4262,"
     "0,00000010,2,1,404,22,10125,8301,141,10125,13921,122,5,Skynet,28:c6:8e:be:87:c0,-60,"
     "Intel Wi-Fi,4c:60:de:32:3d:38,-70,Nirvanic-2,40:e3:d6:4a:d9:c2,-73,A4-Guest,"
     "40:e3:d6:4a:d9:c4,-73,A4Idatix,40:e3:d6:4a:d9:c3,-73,13.8]"), ["RadioScan"], None),
    (("[3G*2104326058*00E9*UD_LTE,300621,135101,A,32.162652,N,34.888748,E,30.84,265.158,65.621,18,"
     "100,83,0,0,00000000,1,1,425,01,10223,8012811,100,3,ES4104,22:74:1d:39:64:ff,-46,"
     "metropoline-wifi,a8:3f:a1:e0:66:ba,-89,Egged.co.il,00:0c:42:51:cf:cd,-81,1.7055488]"),
     ["Location"], None),
    (("[3G*0304187088*0100*UD_WCDMA,100720,094202,V,0.0,N,0.0,E,22.0,0,-1,21,75,92,0,0,00000000,1,"
     "1,425,01,10192,1282125,75,5,Inet,04:f0:21:46:1f:57,-54,iNetSecurity,00:1e:42:25:2f:3e,-71,"
     "Gilad,58:d5:6e:9d:1b:af,-80,weekend,14:ae:db:cb:99:25,-82,advancemed1,04:f0:21:4c:c8:3e,"
     "-89,0.0]"), ["RadioScan"], None),
    # Trimmed after the first cell (the capture goes on with Wi-Fi).
    (("[3G*8308406279*00CC*UD3,170417,190930,V,54.739618,N,25.273213,E,0.0,323.53,175.1,6,51,83,0,"
     "0,00000000,1,1,246,01,200,13242758,51,0]"), ["RadioScan"], None),
    ("[SG*9081000548*0009*LK,0,100]", ["Heartbeat"], b"[SG*9081000548*0002*LK]"),
    ("[3G*4700186508*000B*LK,0,10,100]", ["Heartbeat", "Vitals"], b"[3G*4700186508*0002*LK]"),
    ("[SG*8800000015*0002*LK]", ["Heartbeat"], b"[SG*8800000015*0002*LK]"),
    ("[ZJ*014111001350304*0034*0009*LK,0,0,19]", ["Heartbeat", "Vitals"],
     b"[ZJ*014111001350304*0034*0002*LK]"),
    ("[3G*8800000015*0003*TKQ]", [], b"[3G*8800000015*0003*TKQ]"),
    ("[CS*8800000015*0008*PULSE,72]", ["Vitals"], None),
    ("[3G*6005412902*0007*heart,0]", [], None),
    ("[3G*6005412902*0008*heart,71]", ["Vitals"], None),
    (("[ZJ*014111001350304*0033*0064*UD,070318,020827,V,00.000000,N,000.000000,E,0,0,0,0,100,19,"
     "1000,50,00000000,1,255,460,0,9346,5223,42]"), ["RadioScan"], None),
]


@pytest.mark.parametrize(("raw", "expected", "reply"), REAL)
def test_real_frames(raw: str, expected: list[str], reply: bytes | None) -> None:
    decoded = decode(raw)
    assert kinds(decoded) == expected
    assert decoded.reply == reply
    assert not decoded.unknown
    assert decoded.device_id == raw.split("*")[1]


def test_real_position_values() -> None:
    d = decode(REAL[0][0], now_ms=utc_ms(2022, 3, 22, 6, 0, 0))
    loc = d.readings[0]
    assert isinstance(loc, Location)
    assert (loc.lat, loc.lon, loc.source) == (22.761162, 114.360192, "gps")
    assert loc.ts == utc_ms(2022, 3, 22, 5, 51, 5)  # device time is UTC
    assert loc.battery_pct == 64.0 and loc.speed_mps == 0.0
    assert d.device_time is None
    assert d.extra["status"] == "0x00000008" and d.extra["state_bits"] == ["worn"]


def test_real_network_goes_to_extra_without_network_names() -> None:
    d = decode(REAL[12][0])
    assert d.extra["cells"] == [{"mcc": 425, "mnc": 1, "lac": 10223, "cid": 8012811,
                                 "signal": 100}]
    assert d.extra["wifi"] == [{"mac": "22:74:1d:39:64:ff", "signal": -46},
                               {"mac": "a8:3f:a1:e0:66:ba", "signal": -89},
                               {"mac": "00:0c:42:51:cf:cd", "signal": -81}]
    assert "metropoline" not in repr(d.extra)
    cells_only = decode(REAL[3][0])
    assert len(cells_only.extra["cells"]) == 7  # type: ignore[arg-type]
    assert "wifi" not in cells_only.extra


def test_no_fix_publishes_towers_and_access_points_without_network_names() -> None:
    d = decode(REAL[13][0], now_ms=utc_ms(2020, 7, 10, 9, 45, 0))
    (scan,) = d.readings
    assert scan == RadioScan(
        device_id="0304187088", ts=utc_ms(2020, 7, 10, 9, 42, 2),
        # The tower level (75) is on the watch's own scale, not dBm: left out, not guessed.
        cells=[Cell(mcc=425, mnc=1, lac=10192, cid=1282125)],
        wifi=[WifiAp(mac="04:f0:21:46:1f:57", signal_dbm=-54),
              WifiAp(mac="00:1e:42:25:2f:3e", signal_dbm=-71),
              WifiAp(mac="58:d5:6e:9d:1b:af", signal_dbm=-80),
              WifiAp(mac="14:ae:db:cb:99:25", signal_dbm=-82),
              WifiAp(mac="04:f0:21:4c:c8:3e", signal_dbm=-89)])
    assert "Inet" not in repr(d) and "weekend" not in repr(d)


def test_a_valid_fix_publishes_no_scan() -> None:
    d = decode(REAL[12][0])  # the same layout with fix A: the fix says it better
    assert kinds(d) == ["Location"] and "wifi" in d.extra


def test_the_scan_follows_the_alarm_and_keeps_its_time() -> None:
    d = decode(frame(report("AL", status="00010000", fix="V")))
    sos, scan = d.readings
    assert isinstance(sos, Sos) and isinstance(scan, RadioScan)
    assert scan.ts == sos.ts == utc_ms(2025, 6, 1, 11, 59, 0)
    assert [(c.lac, c.cid, c.signal_dbm) for c in scan.cells] == [
        (9360, 4082, None), (9360, 4092, None), (9360, 4091, None), (9360, 4153, None)]


@pytest.mark.parametrize(("network", "cells", "wifi"), [
    # Towers in dBm are kept with their level; a tower with MCC 0 is an empty slot.
    ("2,1,460,0,9360,4082,-71,9360,4092,-150", [(4082, -71.0), (4092, -150.0)], 0),
    ("1,1,0,0,9360,4082,-71", [], 0),
    ("1,1,460,0,0,0,-71", [], 0),
    # Out of the contract's range: a negative cell id, an MNC over 999, a level of +5 dBm.
    ("2,1,460,0,9360,-1,-71,9360,7,5", [(7, None)], 0),
    ("1,1,460,1000,9360,4082,-71", [], 0),
    # Access points only (with or without the timing advance before their count).
    ("0,2,a,00:11:22:33:44:55,-60,b,00:11:22:33:44:56,-61", [], 2),
    ("0,0,2,a,00:11:22:33:44:55,-60,b,00:11:22:33:44:56,-61", [], 2),
    ("0,40," + ",".join(f"n{i},00:11:22:33:44:{i:02x},-60" for i in range(40)), [], 32),
])
def test_scan_keeps_what_the_contract_can_carry(network: str, cells: list[tuple[int, float]],
                                                wifi: int) -> None:
    body = report("UD", fix="V").split(",")[:17]
    d = decode(frame(",".join(body) + "," + network))
    scans = [r for r in d.readings if isinstance(r, RadioScan)]
    if not cells and not wifi:
        assert scans == []
        return
    (scan,) = scans
    assert [(c.cid, c.signal_dbm) for c in scan.cells] == cells
    assert len(scan.wifi) == wifi


def test_wrong_length_is_evidence_not_an_error() -> None:
    # SG firmware's lengths are off by three; the alarm must still come through.
    d = decode(REAL[9][0])
    assert d.extra["length_mismatch"] == {"declared": 0x87, "sent": 143}
    assert "length_mismatch" not in decode(REAL[0][0]).extra


# --------------------------------------------------------------------------- status bits

ALARM_BIT_READINGS = {
    16: Sos, 20: Wear, 21: Fall, 22: Fall,
}
ALARM_BIT_KINDS = {14: "power_cut", 17: "low_battery", 18: "fence_exit", 19: "fence_enter"}


@pytest.mark.parametrize("cmd", ["AL", "UD"])
@pytest.mark.parametrize("bit", [14, 16, 17, 18, 19, 20, 21, 22])
def test_each_alarm_bit(cmd: str, bit: int) -> None:
    status = f"{1 << bit:08X}"
    d = decode(frame(report(cmd, status=status)))
    alarms = [r for r in d.readings if not isinstance(r, Location)]
    assert len(alarms) == 1
    alarm = alarms[0]
    if bit in ALARM_BIT_READINGS:
        assert type(alarm) is ALARM_BIT_READINGS[bit]
    else:
        assert isinstance(alarm, DeviceAlarm)
        assert alarm.alarm == ALARM_BIT_KINDS[bit]
        assert alarm.code == f"3G status 0x{status}"
        assert (alarm.lat, alarm.lon) == (22.571707, 113.8613968)
    if isinstance(alarm, Wear):
        assert alarm.worn is False
    if isinstance(alarm, Sos | Fall):
        assert (alarm.lat, alarm.lon) == (22.571707, 113.8613968)
    assert alarm.ts == utc_ms(2025, 6, 1, 11, 59, 0)
    assert (d.reply is not None) == (cmd == "AL")


def test_sos_and_low_battery_give_both() -> None:
    d = decode(frame(report("AL", status="00030000")))
    assert kinds(d) == ["Location", "Sos", "low_battery"]
    assert d.reply == b"[3G*8800000015*0002*AL]" and d.reply_when == "after_publish"


def test_every_alarm_bit_at_once() -> None:
    d = decode(frame(report("AL", status="007F4000")))
    assert sorted(kinds(d)) == sorted(["Location", "power_cut", "Sos", "low_battery",
                                       "fence_exit", "fence_enter", "Wear", "Fall"])


def test_bits_21_and_22_are_one_fall() -> None:
    assert kinds(decode(frame(report("UD", status="00600000")))) == ["Location", "Fall"]


@pytest.mark.parametrize(("status", "expected"), [
    ("00000001", ["low_battery"]),
    ("00000002", ["fence_exit"]),
    ("00000004", ["fence_enter"]),
    ("00000007", ["low_battery", "fence_exit", "fence_enter"]),
    ("00000008", ["other"]),  # worn is a state, not an alarm
    ("00000000", ["other"]),
    ("00000010", ["other"]),
    ("00800000", ["other"]),  # an undocumented alarm bit
    ("00810000", ["Sos", "other"]),
    ("00010001", ["Sos"]),  # alarm bits win over state bits
])
def test_al_always_raises(status: str, expected: list[str]) -> None:
    d = decode(frame(report("AL", status=status, fix="V")))
    assert kinds(d) == [*expected, "RadioScan"]  # no fix: the towers follow the alarms
    for r in d.readings:
        if isinstance(r, DeviceAlarm):
            assert r.code == f"3G status 0x{status}"
            assert r.lat is None and r.lon is None


@pytest.mark.parametrize("status", ["00000001", "00000002", "00000004", "00000008",
                                    "00000000", "00800000", "0000BFF0"])
def test_ud_state_and_unknown_bits_raise_nothing(status: str) -> None:
    d = decode(frame(report("UD", status=status)))
    assert kinds(d) == ["Location"]
    assert d.reply is None
    assert d.extra["status"] == f"0x{status}"


@pytest.mark.parametrize("cmd", ["AL", "AL_LTE", "ALCUSTOMER1", "AL_WCDMA"])
def test_alarm_commands(cmd: str) -> None:
    d = decode(frame(report(cmd, status="00010000"), index="00A1"))
    assert kinds(d) == ["Location", "Sos"]
    assert d.reply == b"[3G*8800000015*00A1*0002*AL]"
    assert d.reply_when == "after_publish"


@pytest.mark.parametrize("cmd", ["UD", "UD2", "UD3", "UD_LTE", "UD_WCDMA", "WT"])
def test_position_commands(cmd: str) -> None:
    d = decode(frame(report(cmd)))
    assert kinds(d) == ["Location"] and d.reply is None and d.command == cmd
    loc = d.readings[0]
    assert isinstance(loc, Location)
    assert loc.speed_mps == pytest.approx(10.0) and loc.battery_pct == 90.0


def test_malformed_al_still_alarms() -> None:
    d = decode(frame("AL,010625,115900,A,xx,N,1.0,E,0,0,0,0,0,50,0,0,00010000,0"))
    assert kinds(d) == ["Sos"] and d.reply == b"[3G*8800000015*0002*AL]"
    assert "latitude" in str(d.extra["malformed"])
    bare = decode(frame("AL"))
    assert kinds(bare) == ["other"] and bare.reply is not None


# --------------------------------------------------------------------------- coordinates

@pytest.mark.parametrize(("lat", "lon", "expected"), [
    ("-33.480366,N", "-70.7630692,E", (-33.480366, -70.7630692)),
    ("38.000000,N", "-9.000000,W", (38.0, -9.0)),
    ("38.000000,N", "9.000000,W", (38.0, -9.0)),
    ("16.479064,S", "68.119072,", (-16.479064, 68.119072)),
    ("48.779045,N", " 9.1574736,E", (48.779045, 9.1574736)),
    ("-1.5,S", "2.5,E", (-1.5, 2.5)),
])
def test_signed_coordinates(lat: str, lon: str, expected: tuple[float, float]) -> None:
    loc = decode(frame(report(lat=lat, lon=lon))).readings[0]
    assert isinstance(loc, Location)
    assert (loc.lat, loc.lon) == expected


@pytest.mark.parametrize(("fix", "lat", "lon"), [
    ("V", "22.5,N", "113.9,E"), ("A", "0.0,N", "0.0,E"), ("A", "00.000000,N", " 0.0000000,E"),
    ("A", "95.0,N", "10.0,E"), ("A", "10.0,N", "181.0,E"),
])
def test_no_position_without_a_usable_fix(fix: str, lat: str, lon: str) -> None:
    d = decode(frame(report("AL", status="00410000", fix=fix, lat=lat, lon=lon)))
    assert kinds(d) == ["Sos", "Fall", "RadioScan"]
    for r in d.readings[:2]:
        assert isinstance(r, Sos | Fall) and r.lat is None and r.lon is None


def test_implausible_speed_and_battery_are_left_out() -> None:
    loc = decode(frame(report(speed="9999.0", battery="150"))).readings[0]
    assert isinstance(loc, Location)
    assert loc.speed_mps is None and loc.battery_pct is None and loc.lat == 22.571707


# --------------------------------------------------------------------------- time

@pytest.mark.parametrize(("when", "raw"), [
    ("000000,000000", "000000,000000"),  # unset clock
    ("010114,000512", "010114,000512"),  # 2014
    ("010100,000000", "010100,000000"),  # 2000
    ("010625,120600", "010625,120600"),  # six minutes ahead
    ("010625,200000", "010625,200000"),  # local time in China, taken for UTC
    ("320125,000000", "320125,000000"),  # no such day
])
def test_implausible_device_time(when: str, raw: str) -> None:
    d = decode(frame(report("AL", status="00010000", when=when)))
    assert d.device_time == raw
    assert all(r.ts == NOW for r in d.readings)


def test_plausible_device_time_is_utc() -> None:
    d = decode(frame(report(when="010625,120400")))  # four minutes ahead: believed
    assert d.device_time is None and d.readings[0].ts == utc_ms(2025, 6, 1, 12, 4, 0)


def test_frames_without_time_use_receipt_time() -> None:
    for raw in ("LK,100,2,80", "heart,70", "bphrt,120,80,70"):
        d = decode(frame(raw))
        assert d.readings and all(r.ts == NOW for r in d.readings)
        assert d.device_time is None


# --------------------------------------------------------------------------- commands

def test_lk() -> None:
    d = decode(frame("LK,5000,3,85", index="0042"))
    hb, vit = d.readings
    assert isinstance(hb, Heartbeat) and hb.battery_pct == 85.0
    assert isinstance(vit, Vitals) and vit.steps == 5000
    assert d.extra["tumbles"] == 3
    assert d.reply == b"[3G*8800000015*0042*0002*LK]" and d.reply_when == "now"


@pytest.mark.parametrize(("args", "battery", "steps"), [
    ("LK,x,y,z", None, None), ("LK,1,2,300", None, 1), ("LK,,,", None, None),
    ("LK,1", None, None), ("LK,-5,0,50", 50.0, None), ("LK,0,0,0", 0.0, 0),
])
def test_lk_junk_still_answered(args: str, battery: float | None, steps: int | None) -> None:
    d = decode(frame(args))
    assert d.reply == b"[3G*8800000015*0002*LK]"
    hb = d.readings[0]
    assert isinstance(hb, Heartbeat) and hb.battery_pct == battery
    assert [r.steps for r in d.readings if isinstance(r, Vitals)] == (
        [] if steps is None else [steps])


@pytest.mark.parametrize(("content", "expected"), [
    ("heart,71", {"heart_rate_bpm": 71.0}),
    ("HEART,71", {"heart_rate_bpm": 71.0}),
    ("PULSE,72", {"heart_rate_bpm": 72.0}),
    ("bphrt,120,79,73,,,,", {"systolic_mmhg": 120.0, "diastolic_mmhg": 79.0,
                             "heart_rate_bpm": 73.0}),
    ("BLOOD,109,68", {"systolic_mmhg": 109.0, "diastolic_mmhg": 68.0}),
    ("oxygen,97", {"spo2_pct": 97.0}),
    ("TEMP,36.6", {"body_temp_c": 36.6}),
    ("btemp2,1,35.29", {"body_temp_c": 35.29}),
    ("bphrt,400,79,73", {"diastolic_mmhg": 79.0, "heart_rate_bpm": 73.0}),
    ("bphrt,120,80,0", {"systolic_mmhg": 120.0, "diastolic_mmhg": 80.0}),
    ("oxygen,30", {}),
    ("TEMP,60.0", {}),
    ("TEMP,nan", {}),
    ("btemp2,0,35.29", {}),
    ("heart", {}),
    ("heart,abc", {}),
])
def test_health(content: str, expected: dict[str, float]) -> None:
    d = decode(frame(content))
    assert d.reply is None and not d.unknown
    if not expected:
        assert d.readings == ()
        return
    (vitals,) = d.readings
    assert isinstance(vitals, Vitals)
    got = {k: v for k, v in msgspec.structs.asdict(vitals).items()
           if k.endswith(("_bpm", "_pct", "_c", "_mmhg")) and v is not None}
    assert got == expected


@pytest.mark.parametrize(("content", "reply"), [
    ("INIT,13800000000,1,1", "INIT,1"),
    ("TKQ", "TKQ"),
    ("TKQ2", "TKQ2"),
    ("JXTK,0,watch_1,1,1,#!AMR", "JXTKR,1"),
])
def test_replies(content: str, reply: str) -> None:
    d = decode(frame(content, vendor="CS", index="0007"))
    assert d.reply == f"[CS*8800000015*0007*{len(reply):04X}*{reply}]".encode()
    assert d.reply_when == "now" and d.readings == ()


def test_unknown_command() -> None:
    d = decode(frame("rcapture"))
    assert d.unknown and d.reply is None and d.command == "rcapture"
    assert decode(frame("ALARMX,1")).unknown


def test_binary_voice_with_every_escape() -> None:
    audio = b"#!AMR\n" + bytes([0x7D, 0x5B, 0x5D, 0x2C, 0x2A, 0xFF, 0x00])
    content = b"TK," + escape(audio)
    wire = b"[CS*1234567890*%04X*" % len(content) + content + b"]"
    assert wire.count(b"[") == 1 and wire.count(b"]") == 1
    framer = CODEC.framer()
    (got,) = framer.feed(wire)
    d = decode(got)
    assert d.command == "TK" and d.extra["media_bytes"] == len(audio)
    assert "length_mismatch" not in d.extra  # the length counts bytes as sent
    unescaped_len = b"[CS*1234567890*%04X*TK,#!AMR\n" % (3 + len(audio))
    assert decode(unescaped_len + escape(audio[6:]) + b"]").extra["length_mismatch"]


# A real JXTK chunk from a ZJ watch (Traccar's WatchProtocolDecoderTest): three escapes.
JXTK_REAL = bytes.fromhex(
    "5b5a4a2a3738393436383035303034323639322a303033392a303065352a4a58544b2c302c77617463685f375f"
    "32303232303532363039333935342c362c362c8f5cf9f34fa6edceb18c0ca4ce436e7d02d329de94b63eb11a0c"
    "b894438f44cf753dbc1a83b4560cb8e44391eff729d4155a231bf40cb59443f373b4288492cd6e38160c5a4204"
    "9bfec8678ad42bce0c560cb12e39fec3d1fe24b5572ee0be0cb1ce35fe33688455aa74e3ffa40cb1d635df4b70"
    "4160ae864a7d03440cb10f3267dbf4a21d540ca1051c0cb11337724f8747f5547d054e91660cb1a73692df964f"
    "3bbb0758d41a0cfe05b60c314460297eae4185f20cad673ceb6dfa05ddbe0278d5de5d")


def test_real_jxtk_frame() -> None:
    framer = CODEC.framer()
    frames = [f for b in JXTK_REAL for f in framer.feed(bytes([b]))]
    assert frames == [JXTK_REAL]
    d = decode(JXTK_REAL)
    assert d.command == "JXTK" and d.extra["index"] == "0039"
    assert "length_mismatch" not in d.extra  # 0x00E5 = 229 bytes as sent, 226 unescaped
    assert d.reply == b"[ZJ*789468050042692*0039*0007*JXTKR,1]"


def test_img_is_known_media() -> None:
    d = decode(b"[3G*8800000015*0010*img,250601120000," + escape(b"\xff\xd8]") + b"]")
    assert not d.unknown and d.readings == () and d.reply is None


# --------------------------------------------------------------------------- malformed

@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "start with"),
    (b"[]", "vendor*id"),
    (b"3G*8800000015*0002*LK]", "start with"),
    (b"[3G*8800000015*0002*LK", "start with"),
    (b"[3G*8800000015]", "vendor*id"),
    (b"[3G-X*8800000015*0002*LK]", "vendor code"),
    (b"[TOOLONGVENDOR*8800000015*0002*LK]", "vendor code"),
    (b"[3G*88 00*0002*LK]", "device id"),
    (b"[3G**0002*LK]", "device id"),
    (b"[3G*\xff\xfe*0002*LK]", "device id"),
    (b"[3G*" + b"1" * 65 + b"*0002*LK]", "device id"),
    (b"[3G*8800000015*02*LK]", "content length"),
    (b"[3G*8800000015*00G2*LK]", "content length"),
    (b"[3G*8800000015*0000*]", "command"),
    (b"[3G*8800000015*0003*L K]", "command"),
    (b"[3G*8800000015*0003*\xffK]", "command"),
    (frame("UD,010625,115900,A,1.0,N").encode(), "16"),
    (frame(report(fix="X")).encode(), "fix validity"),
    (frame(report(lat="1.0,Q")).encode(), "hemisphere"),
    (frame(report(lat="1e5,N")).encode(), "latitude"),
    (frame(report(speed="fast")).encode(), "speed"),
    (frame(report(when="1a0625,115900")).encode(), "date/time"),
    (frame(report(status="0000000G")).encode(), "status"),
    (frame(report(status="000000001")).encode(), "status"),
])
def test_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        CODEC.decode(raw, now_ms=NOW, session_device=None)
    assert reason in info.value.reason


def test_vendor_codes_and_ids() -> None:
    for vendor in ("3G", "SG", "CS", "ZJ", "X", "ABCDEFGH"):
        assert decode(frame("LK", vendor=vendor)).extra["vendor"] == vendor
    assert decode(frame("LK", device="dev_1.a:b-c")).device_id == "dev_1.a:b-c"


# --------------------------------------------------------------------------- framing

STREAM_FRAMES = [r[0].encode() for r in REAL[:8]] + [JXTK_REAL]


def test_codec_satisfies_the_seam() -> None:
    codec: Codec = WatchCodec()
    assert codec.name == "watch" and codec.max_frame_bytes == MAX_FRAME_BYTES


def test_byte_by_byte_and_merged() -> None:
    stream = b"".join(STREAM_FRAMES)
    framer = WatchFramer()
    assert [f for b in stream for f in framer.feed(bytes([b]))] == STREAM_FRAMES
    assert framer.skipped_bytes == 0
    assert WatchFramer().feed(stream) == STREAM_FRAMES


def test_random_chunks_with_garbage() -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    garbage = [b"\r\n", b"GET / HTTP/1.1\r\n", b"]]", b"\x00\xff}", b""]
    stream, noise = b"", 0
    for f in STREAM_FRAMES * 3:
        g = rng.choice(garbage)
        stream += g + f
        noise += len(g)
    framer, out, at = WatchFramer(), [], 0
    while at < len(stream):
        step = rng.randint(1, 300)
        out += framer.feed(stream[at:at + step])
        at += step
    assert out == STREAM_FRAMES * 3
    assert framer.skipped_bytes == noise


def test_cut_short_frame_is_dropped() -> None:
    good = frame("LK").encode()
    framer = WatchFramer()
    assert framer.feed(b"[3G*8800000015*00B1*UD,30101") == []
    assert framer.feed(good) == [good]
    assert framer.skipped_bytes == len(b"[3G*8800000015*00B1*UD,30101")


def test_frame_over_the_limit() -> None:
    framer = WatchFramer(max_frame_bytes=64)
    with pytest.raises(FrameError):
        framer.feed(b"[" + b"x" * 64)
    framer = WatchFramer(max_frame_bytes=64)
    with pytest.raises(FrameError):
        framer.feed(b"[" + b"x" * 63 + b"]")
    framer = WatchFramer(max_frame_bytes=64)
    assert framer.feed(b"[" + b"x" * 62 + b"]") == [b"[" + b"x" * 62 + b"]"]
    assert WatchFramer().feed(b"z" * 200_000) == []  # garbage is never buffered


def test_voice_sized_frame_fits() -> None:
    content = b"TK," + escape(bytes(range(256)) * 200)
    wire = b"[3G*8800000015*%04X*" % (len(content) & 0xFFFF) + content + b"]"
    assert len(wire) < MAX_FRAME_BYTES
    framer = WatchFramer()
    out = []
    for at in range(0, len(wire), 1000):
        out += framer.feed(wire[at:at + 1000])
    assert out == [wire]


# --------------------------------------------------------------------------- properties

@settings(FUZZ, max_examples=5000)
@given(st.lists(st.binary(max_size=80) | st.sampled_from(STREAM_FRAMES[:4] + [b"[", b"]"]),
                max_size=8))
def test_fuzz_framer_chunks(chunks: list[bytes]) -> None:
    framer = WatchFramer(max_frame_bytes=512)
    fed = 0
    for chunk in chunks:
        try:
            frames = framer.feed(chunk)
        except FrameError:
            framer, fed = WatchFramer(max_frame_bytes=512), 0
            continue
        fed += len(chunk)
        for f in frames:
            assert f[:1] == b"[" and f[-1:] == b"]" and len(f) <= 512
            assert b"[" not in f[1:] and b"]" not in f[:-1]
    assert framer.skipped_bytes <= fed


@settings(FUZZ, max_examples=8000)
@given(st.binary(max_size=200) | st.builds(
    lambda v, i, body: b"[" + v + b"*" + i + b"*" + body + b"]",
    st.sampled_from([b"3G", b"SG", b"ZJ", b"", b"3G!"]),
    st.sampled_from([b"8800000015", b"", b"a*b"]),
    st.binary(max_size=200)))
def test_fuzz_decode_raises_only_validation_error(data: bytes) -> None:
    for f in WatchFramer().feed(data):
        try:
            decode(f)
        except ValidationError:
            pass


@settings(FUZZ, max_examples=4000)
@given(st.sampled_from([r[0] for r in REAL if "," in r[0]]), st.data())
def test_fuzz_mutated_real_frames(raw: str, data: st.DataObject) -> None:
    fields = raw[1:-1].split(",")
    at = data.draw(st.integers(1, len(fields) - 1))  # the header and command stay intact
    fields[at] = data.draw(st.text(alphabet="0123456789.-+ ANSEWVxF:", max_size=12))
    mutated = "[" + ",".join(fields) + "]"
    is_alarm = raw.split("*")[-1].startswith("AL")
    try:
        d = decode(mutated)
    except ValidationError:
        assert not is_alarm  # an alarm frame is never refused
        return
    if is_alarm:
        assert d.readings and d.reply is not None and d.reply_when == "after_publish"


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
EXPECTED_BY_BIT = {14: "power_cut", 16: "Sos", 17: "low_battery", 18: "fence_exit",
                   19: "fence_enter", 20: "Wear", 21: "Fall", 22: "Fall"}


@settings(FUZZ, max_examples=3000)
@given(
    vendor=st.text(ALNUM, min_size=1, max_size=8),
    device=st.text(ALNUM + "_.:-", min_size=1, max_size=64),
    index=st.none() | st.text("0123456789ABCDEFabcdef", min_size=4, max_size=4),
    alarm=st.booleans(),
    lat=st.floats(-89.9, 89.9).filter(lambda x: abs(x) > 1e-3),
    lon=st.floats(-179.9, 179.9),
    speed=st.integers(0, 300),
    battery=st.integers(0, 100),
    status=st.integers(0, 2**32 - 1),
    when=st.datetimes(datetime(2020, 1, 2), datetime(2025, 6, 1, 11, 0)),
)
def test_round_trip(vendor: str, device: str, index: str | None, alarm: bool, lat: float,
                    lon: float, speed: int, battery: int, status: int, when: datetime) -> None:
    lat_t = f"{abs(lat):.6f},{'N' if lat >= 0 else 'S'}"
    lon_t = f"{abs(lon):.6f},{'E' if lon >= 0 else 'W'}"
    cmd = "AL" if alarm else "UD"
    body = report(cmd, status=f"{status:08X}", lat=lat_t, lon=lon_t,
                  when=when.strftime("%d%m%y,%H%M%S"), speed=str(speed), battery=str(battery))
    d = decode(frame(body, vendor=vendor, device=device, index=index))
    ts = int(when.replace(tzinfo=UTC, microsecond=0).timestamp()) * 1000
    loc = d.readings[0]
    assert isinstance(loc, Location)
    assert (loc.lat, loc.lon) == (float(f"{lat:.6f}"), float(f"{lon:.6f}"))
    assert loc.ts == ts and loc.battery_pct == battery
    assert loc.speed_mps == pytest.approx(speed / 3.6)
    expected = []
    for bit, name in EXPECTED_BY_BIT.items():
        if status >> bit & 1 and name not in expected:
            expected.append(name)
    if alarm:
        if status & 0xFF800000:
            expected.append("other")
        if not expected:
            expected = [n for bit, n in ((0, "low_battery"), (1, "fence_exit"),
                                         (2, "fence_enter")) if status >> bit & 1]
        expected = expected or ["other"]
    assert kinds(d)[1:] == expected
    assert d.device_id == device and d.extra["vendor"] == vendor
    idx = f"{index}*" if index else ""
    assert d.reply == (f"[{vendor}*{device}*{idx}0002*AL]".encode() if alarm else None)
