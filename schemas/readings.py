"""Wire contract v1: the readings devices and gateways publish, as frozen msgspec structs.

Physical and format limits live here, in ``Annotated[..., Meta(...)]``, so they are checked once,
while bytes are decoded, and nowhere else. ``Reading`` is a tagged union on the JSON field
``type``; unknown extra fields are ignored (newer firmware), unknown types are rejected.

Limits the issue leaves open are chosen from physiology and device datasheets and documented in
``docs/wire-contract.md``: blood pressure 30-300 mmHg, RSSI -150..0 dBm, accelerometer samples
within ±200 g (the widest MEMS range sold is ±400 g; consumer parts top out at ±16 g or ±32 g).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

#: 2020-01-01T00:00:00Z in Unix milliseconds: readings older than this are rejected (an alarm's
#: time is replaced by the receipt time instead: ``schemas.decode``, alarm salvage).
MIN_TS_MS: Final = 1_577_836_800_000
#: Upper sanity bound (year 2100); the "not too far in the future" check is relative to now.
MAX_TS_MS: Final = 4_102_444_800_000
MAX_ACCEL_SAMPLES: Final = 2000

# Anchored with \Z, not $: `$` also matches before a final newline, and msgspec (and
# schemas.topics) search with these, so "BR-1\n" would pass as a device distinct from "BR-1".
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}\Z"
REGION_PATTERN: Final = r"^[a-z0-9-]{1,32}\Z"

DeviceId = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
TimestampMs = Annotated[int, Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Latitude = Annotated[float, Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0)]
# Bounded above too: an unbounded float would let NaN/inf through from MessagePack.
Meters = Annotated[float, Meta(ge=0.0, le=1e7)]
Speed = Annotated[float, Meta(ge=0.0, le=350.0)]
Percent = Annotated[float, Meta(ge=0.0, le=100.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
HeartRate = Annotated[float, Meta(ge=20.0, le=250.0)]
SpO2 = Annotated[float, Meta(ge=50.0, le=100.0)]
BodyTemp = Annotated[float, Meta(ge=30.0, le=45.0)]
Pressure = Annotated[float, Meta(ge=30.0, le=300.0)]
Steps = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Rssi = Annotated[float, Meta(ge=-150.0, le=0.0)]
RateHz = Annotated[float, Meta(ge=1.0, le=1000.0)]
AccelSample = Annotated[float, Meta(ge=-200.0, le=200.0)]
AccelAxis = Annotated[list[AccelSample], Meta(min_length=1, max_length=MAX_ACCEL_SAMPLES)]

LocationSource = Literal["gps", "wifi", "cell"]
HomeSensor = Literal["smoke", "gas", "water", "door", "bed_exit", "panic"]
#: What a device's own alarm says, where no other reading type carries it (docs/wire-contract.md):
#: its low-battery flag, its own fence, external power cut, vibration, its case opened or strap
#: cut, overspeed, and ``other`` for an alarm the gateway could not classify (still shown).
DeviceAlarmKind = Literal["low_battery", "fence_exit", "fence_enter", "power_cut", "vibration",
                          "cover_removed", "overspeed", "other"]
#: The vendor's own code of a device alarm, as evidence ("3G status 0x00040000", "GT06 0x16/0x09").
#: Printable ASCII: a vendor code is shown to people and written to logs.
VENDOR_CODE_PATTERN: Final = r"^[ -~]+\Z"
VendorCode = Annotated[str, Meta(min_length=1, max_length=64, pattern=VENDOR_CODE_PATTERN)]
#: Radio scans (``radio``): at most this many cell towers and Wi-Fi access points. A watch reports
#: its serving cell and up to six neighbours, and up to a few dozen access points; a geolocation
#: service takes about thirty.
MAX_CELLS: Final = 16
MAX_WIFI_APS: Final = 32
#: A BSSID as the gateway writes it: lowercase hex pairs separated by colons.
MAC_PATTERN: Final = r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z"
Mcc = Annotated[int, Meta(ge=0, le=999)]
Mnc = Annotated[int, Meta(ge=0, le=999)]
#: LAC (2G/3G, 16 bits) or TAC (LTE 16 bits, 5G 24 bits).
AreaCode = Annotated[int, Meta(ge=0, le=2**24 - 1)]
#: Cell identity: GSM 16 bits, UMTS 28, LTE 28 (ECI), 5G 36 (NCI).
CellIdentity = Annotated[int, Meta(ge=0, le=2**36 - 1)]
Mac = Annotated[str, Meta(pattern=MAC_PATTERN)]


class _ReadingBase(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True
):
    """Fields every reading carries.

    ``device_id`` may be omitted on a device topic (the topic names the device); the decoder fills
    it in, so every reading that leaves :mod:`schemas.decode` has one.
    """

    device_id: DeviceId | None = None
    ts: TimestampMs
    seq: Seq | None = None


class Location(_ReadingBase, frozen=True, tag="location"):
    """A position fix (WGS-84 degrees)."""

    lat: Latitude
    lon: Longitude
    accuracy_m: Meters | None = None
    speed_mps: Speed | None = None
    battery_pct: Percent | None = None
    source: LocationSource | None = None


class Vitals(_ReadingBase, frozen=True, tag="vitals"):
    """Health measurements; at least one must be present."""

    heart_rate_bpm: HeartRate | None = None
    spo2_pct: SpO2 | None = None
    body_temp_c: BodyTemp | None = None
    systolic_mmhg: Pressure | None = None
    diastolic_mmhg: Pressure | None = None
    steps: Steps | None = None

    def __post_init__(self) -> None:
        if (
            self.heart_rate_bpm is None
            and self.spo2_pct is None
            and self.body_temp_c is None
            and self.systolic_mmhg is None
            and self.diastolic_mmhg is None
            and self.steps is None
        ):
            raise ValueError("vitals reading carries no measurement")


class Sos(_ReadingBase, frozen=True, tag="sos"):
    """The SOS button was pressed. Position optional: an SOS without a fix is still an SOS."""

    lat: Latitude | None = None
    lon: Longitude | None = None
    accuracy_m: Meters | None = None


class Fall(_ReadingBase, frozen=True, tag="fall"):
    """The device itself detected a fall."""

    confidence: Probability | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Accel(_ReadingBase, frozen=True, tag="accel"):
    """Raw accelerometer chunk in g; ``ts`` is the first sample's time."""

    rate_hz: RateHz
    x: AccelAxis
    y: AccelAxis
    z: AccelAxis

    def __post_init__(self) -> None:
        if not len(self.x) == len(self.y) == len(self.z):
            raise ValueError(
                f"accel axes differ in length: x={len(self.x)} y={len(self.y)} z={len(self.z)}"
            )


class Heartbeat(_ReadingBase, frozen=True, tag="heartbeat"):
    """Periodic keep-alive."""

    battery_pct: Percent | None = None
    rssi_dbm: Rssi | None = None


class Wear(_ReadingBase, frozen=True, tag="wear"):
    """Wear state; ``worn=False`` means the bracelet was taken off or its strap opened."""

    worn: bool


class HomeAlarm(_ReadingBase, frozen=True, tag="home_alarm"):
    """A home safety sensor changed state."""

    sensor: HomeSensor
    active: bool


class DeviceAlarm(_ReadingBase, frozen=True, tag="device_alarm"):
    """An alarm the device raised itself that no other type carries (vendor protocols through
    the gateway: a watch's low-battery or fence bit, a tracker's power cut). An alarm: admitted
    and raised like an SOS, whatever else is wrong with it."""

    alarm: DeviceAlarmKind
    code: VendorCode | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Cell(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One cell tower a device heard (``radio``). ``signal_dbm`` only when the device reported
    dBm: vendor protocols also send levels on scales of their own, which are left out."""

    mcc: Mcc
    mnc: Mnc
    lac: AreaCode
    cid: CellIdentity
    signal_dbm: Rssi | None = None


class WifiAp(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One Wi-Fi access point a device heard (``radio``): its BSSID, never its network name
    (SSIDs name families and homes)."""

    mac: Mac
    signal_dbm: Rssi | None = None


CellList = Annotated[list[Cell], Meta(max_length=MAX_CELLS)]
WifiList = Annotated[list[WifiAp], Meta(max_length=MAX_WIFI_APS)]


class RadioScan(_ReadingBase, frozen=True, tag="radio"):
    """The cell towers and Wi-Fi access points a device heard when it had no GPS fix (indoors,
    mostly): evidence of where it was, which a geolocation service can turn into a position
    (published as a ``location`` of source ``cell`` or ``wifi``). Not a position, not an alarm."""

    cells: CellList = []
    wifi: WifiList = []

    def __post_init__(self) -> None:
        if not self.cells and not self.wifi:
            raise ValueError("radio scan carries no cell tower and no access point")


Reading = (Location | Vitals | Sos | Fall | Accel | Heartbeat | Wear | HomeAlarm | DeviceAlarm
           | RadioScan)
READING_TYPES: Final[tuple[type[_ReadingBase], ...]] = (
    Location, Vitals, Sos, Fall, Accel, Heartbeat, Wear, HomeAlarm, DeviceAlarm, RadioScan,
)
#: Wire ``type`` name of each struct.
TYPE_NAMES: Final[dict[type[_ReadingBase], str]] = {
    cls: str(cls.__struct_config__.tag) for cls in READING_TYPES
}
#: Types that are alarms: never shed under overload, never filtered (docs/ingest.md).
ALARM_TYPES: Final = frozenset({"sos", "fall", "wear", "home_alarm", "device_alarm"})
