"""Positions without GPS (issue #10): radio scans resolved through a geolocation provider.

The provider is Amap's hardware positioning service, played by a local stand-in that speaks its
protocol (tests/amap_standin.py): a real HTTP server, reached through the real httpx client.
The cache and the rate limit are driven by a clock the tests move (nothing sleeps for them);
the server tests run the gateway's asyncio server on a real socket, with a publisher that
records what would reach the broker and when; the last test runs ``eldercare gateway`` against
a real Mosquitto and the service storing into PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eldercare.config import Config, load_config
from foundation.errors import ConfigError
from gateway.amap import (
    MAX_MACS,
    AmapGeolocator,
    amap_form,
    parse_amap,
    pseudonymous_imei,
)
from gateway.gcj02 import gcj02_to_wgs84, in_china, wgs84_to_gcj02
from gateway.geolocate import (
    CachedGeolocator,
    Fix,
    FixCache,
    GeolocationError,
    Outcome,
    TokenBucket,
    build_locator,
    metrics_observer,
    read_key,
    scan_key,
)
from gateway.server import GatewayMetrics, GatewayServer
from gateway.settings import GatewayConfig, GeolocationConfig
from gateway.watch3g import WatchCodec
from schemas.readings import Cell, RadioScan, WifiAp
from tests.amap_standin import GCJ02_LAT, GCJ02_LON, KEY, AmapStandIn
from tests.services import Mosquitto

DEV = "8800000077"
REGION = "371002"
NOW = 1_790_000_000_000
#: Two towers in dBm and three access points with their network names, as a watch sends them.
NETWORK = ("2,1,460,0,9360,4082,-71,9360,4092,-80,3,Zhang-home,00:11:22:33:44:55,-60,"
           "Li-5G,00:11:22:33:44:56,-61,Office,00:11:22:33:44:57,-70")
MACS = "00:11:22:33:44:55,-60,|00:11:22:33:44:56,-61,|00:11:22:33:44:57,-70,"
WGS84_LAT, WGS84_LON = gcj02_to_wgs84(GCJ02_LAT, GCJ02_LON)


def scan(cells: int = 2, aps: int = 3, **kw: Any) -> RadioScan:
    return RadioScan(
        device_id=kw.get("device_id", DEV), ts=kw.get("ts", NOW),
        cells=[Cell(mcc=460, mnc=0, lac=9360, cid=4082 + i, signal_dbm=-71 - i)
               for i in range(cells)],
        wifi=[WifiAp(mac=f"00:11:22:33:44:{0x55 + i:02x}", signal_dbm=(-60, -61, -70)[i % 3])
              for i in range(aps)])


def watch_frame(command: str, status: int, network: str = NETWORK) -> bytes:
    """A UD/AL report of now without a fix (``V``), its towers and access points."""
    now = datetime.now(UTC)
    content = ",".join([command, now.strftime("%d%m%y"), now.strftime("%H%M%S"), "V", "0.0",
                        "N", "0.0", "E", "0", "0", "0", "0", "100", "80", "0", "0",
                        f"{status:08X}", network])
    return f"[3G*{DEV}*{len(content):04X}*{content}]".encode()


@pytest.fixture
def amap() -> Iterator[AmapStandIn]:
    standin = AmapStandIn()
    yield standin
    standin.close()


# --------------------------------------------------------------------------- GCJ-02

#: WGS-84 points and their GCJ-02 images as published by prcoords 1.0.2 (``wgs_gcj``, public
#: domain), an implementation of the same transform written independently of ours.
PUBLISHED = [
    ((39.90734, 116.39119), (39.908741216263294, 116.39743110333876)),  # Beijing, Tiananmen
    ((31.2304, 121.4737), (31.22845773757727, 121.47822305927693)),     # Shanghai
    ((22.5431, 114.0579), (22.54038281422246, 114.06301399856547)),     # Shenzhen
    ((37.5133, 122.1205), (37.5143324246257, 122.12555698002639)),      # Weihai
]


@pytest.mark.parametrize(("wgs", "gcj"), PUBLISHED)
def test_gcj02_forward_matches_published_values(wgs: tuple[float, float],
                                                gcj: tuple[float, float]) -> None:
    got = wgs84_to_gcj02(*wgs)
    assert got == pytest.approx(gcj, abs=1e-9)
    # The offset is the hundreds of metres that would move a wearer across a home geofence.
    north_m = (got[0] - wgs[0]) * 111_320
    east_m = (got[1] - wgs[1]) * 111_320 * math.cos(math.radians(wgs[0]))
    assert 100 < math.hypot(north_m, east_m) < 1_500


@pytest.mark.parametrize(("wgs", "gcj"), PUBLISHED)
def test_gcj02_to_wgs84_inverts_published_values(wgs: tuple[float, float],
                                                 gcj: tuple[float, float]) -> None:
    assert gcj02_to_wgs84(*gcj) == pytest.approx(wgs, abs=1e-8)  # ~1 mm


def test_gcj02_round_trip_across_china_and_identity_outside() -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    for _ in range(2_000):
        lat, lon = rng.uniform(18.0, 53.0), rng.uniform(74.0, 134.0)
        assert in_china(lat, lon)
        back = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon))
        assert back == pytest.approx((lat, lon), abs=1e-9)
    for point in ((48.8566, 2.3522), (-33.45, -70.66), (37.5665, 126.978 + 20)):
        assert wgs84_to_gcj02(*point) == point == gcj02_to_wgs84(*point)


# --------------------------------------------------------------------------- Amap, pure

def test_the_request_carries_towers_and_access_points_and_nothing_of_the_wearer() -> None:
    form = amap_form(scan(), key=KEY, imei="356938035643809")
    assert form == {"key": KEY, "output": "json", "imei": "356938035643809", "accesstype": "0",
                    "cdma": "0", "network": "GSM", "bts": "460,0,9360,4082,-71",
                    "nearbts": "460,0,9360,4083,-72", "macs": MACS}
    assert DEV not in repr(form)


def test_the_request_without_towers_is_a_wifi_one_strongest_first_at_most_thirty() -> None:
    aps = [WifiAp(mac=f"00:11:22:33:{i // 256:02x}:{i % 256:02x}",
                  signal_dbm=None if i == 0 else -90 + i % 40) for i in range(32)]
    form = amap_form(RadioScan(device_id=DEV, ts=NOW, wifi=aps), key=KEY, imei="1")
    assert form["accesstype"] == "1" and "bts" not in form and "cdma" not in form
    sent = form["macs"].split("|")
    assert len(sent) == MAX_MACS
    levels = [int(m.split(",")[1]) for m in sent]
    assert levels == sorted(levels, reverse=True) and levels[0] == -59
    assert all(m.endswith(",") for m in sent)  # the network name: always empty
    # A level the device did not give goes as -99, the weakest but one here: cut off.
    assert "00:11:22:33:00:00" not in form["macs"]


def test_a_tower_without_dbm_goes_with_the_neutral_level() -> None:
    s = RadioScan(device_id=DEV, ts=NOW, cells=[Cell(mcc=460, mnc=11, lac=5766, cid=17005108)])
    assert amap_form(s, key=KEY, imei="1")["bts"] == "460,11,5766,17005108,-99"


def test_the_imei_sent_is_a_fresh_luhn_valid_pseudonym() -> None:
    seen = {pseudonymous_imei() for _ in range(200)}
    assert len(seen) == 200
    for imei in seen:
        assert len(imei) == 15 and imei.isdigit()
        digits = [int(d) for d in imei]
        total = sum(d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d)
                    for i, d in enumerate(reversed(digits)))
        assert total % 10 == 0


def _answer(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_an_answer_is_read_and_converted_to_wgs84() -> None:
    body = _answer(status="1", info="OK", infocode="10000",
                   result={"type": "4", "location": f"{GCJ02_LON},{GCJ02_LAT}", "radius": "550"})
    fix = parse_amap(body, source="cell")
    assert fix == Fix(lat=WGS84_LAT, lon=WGS84_LON, accuracy_m=550.0, source="cell")
    assert (fix.lat, fix.lon) != (GCJ02_LAT, GCJ02_LON)
    no_radius = parse_amap(_answer(status="1", result={"type": "4", "radius": "",
                                                       "location": "116.4,39.9"}),
                           source="wifi")
    assert no_radius is not None and no_radius.accuracy_m is None


@pytest.mark.parametrize("body", [
    _answer(status="1", info="OK", result={"type": "0"}),
    _answer(status="1", info="OK", result={"type": "4", "location": ""}),
    _answer(status="1", info="OK", result=[]),
    _answer(status="1", info="OK"),
])
def test_no_position_known_is_none(body: bytes) -> None:
    assert parse_amap(body, source="cell") is None


@pytest.mark.parametrize(("body", "reason"), [
    (_answer(status="0", info="INVALID_USER_KEY", infocode="10001"),
     "status 0, info INVALID_USER_KEY, infocode 10001"),
    (_answer(status="0", info="DAILY_QUERY_OVER_LIMIT\n\x00", infocode="10003"),
     "info DAILY_QUERY_OVER_LIMIT??"),
    (b"<html>", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (_answer(status="1", result={"type": "4", "location": "116.4"}), "not 'lon,lat'"),
    (_answer(status="1", result={"type": "4", "location": "nan,39.9"}), "not 'lon,lat'"),
    (_answer(status="1", result={"type": "4", "location": "39.9,200"}), "not 'lon,lat'"),
])
def test_a_refusal_or_a_strange_answer_is_an_error_naming_why(body: bytes, reason: str) -> None:
    with pytest.raises(GeolocationError) as info:
        parse_amap(body, source="cell")
    assert reason in info.value.reason


# --------------------------------------------------------------------------- Amap, over HTTP

def test_the_adapter_posts_the_form_and_reads_the_answer(amap: AmapStandIn) -> None:
    async def main() -> Fix | None:
        geo = AmapGeolocator(key=KEY, url=amap.url, timeout_s=5)
        try:
            return await geo.locate(scan())
        finally:
            await geo.aclose()

    fix = asyncio.run(main())
    assert fix == Fix(lat=WGS84_LAT, lon=WGS84_LON, accuracy_m=30.0, source="wifi")
    (form,) = amap.requests
    # A form body: neither the key nor a MAC is ever in a URL (httpx logs URLs).
    assert amap.methods == ["POST"] and amap.queries == [""]
    assert form["key"] == KEY and form["macs"] == MACS and form["bts"] == "460,0,9360,4082,-71"
    assert form["imei"] != DEV and len(form["imei"]) == 15


def test_one_tower_is_a_cell_fix_and_one_access_point_alone_is_not_asked(
        amap: AmapStandIn) -> None:
    async def main() -> tuple[Fix | None, Fix | None]:
        geo = AmapGeolocator(key=KEY, url=amap.url, timeout_s=5)
        try:
            return await geo.locate(scan(cells=1, aps=1)), await geo.locate(scan(0, 1))
        finally:
            await geo.aclose()

    cell, lonely = asyncio.run(main())
    assert cell is not None and cell.source == "cell"
    assert lonely is None and len(amap.requests) == 1  # the service needs two access points


@pytest.mark.parametrize(("behaviour", "key", "reason"), [
    ("http500", KEY, "HTTP 500"),
    ("garbage", KEY, "not JSON"),
    ("huge", KEY, "answer over 65536 bytes"),
    ("refuse", KEY, "DAILY_QUERY_OVER_LIMIT"),
    ("ok", "wrong-key", "INVALID_USER_KEY"),
    ("hang", KEY, "timed out"),
])
def test_the_adapter_turns_failures_into_geolocation_errors(
        amap: AmapStandIn, behaviour: str, key: str, reason: str) -> None:
    amap.behaviour = behaviour

    async def main() -> None:
        geo = AmapGeolocator(key=key, url=amap.url, timeout_s=0.3)
        try:
            await geo.locate(scan())
        finally:
            await geo.aclose()

    with pytest.raises(GeolocationError) as info:
        asyncio.run(main())
    assert reason in info.value.reason
    assert key not in str(info.value) and "00:11:22" not in str(info.value)


def test_the_adapter_answers_none_when_the_service_knows_no_position(
        amap: AmapStandIn) -> None:
    amap.behaviour = "none"

    async def main() -> Fix | None:
        geo = AmapGeolocator(key=KEY, url=amap.url, timeout_s=5)
        try:
            return await geo.locate(scan())
        finally:
            await geo.aclose()

    assert asyncio.run(main()) is None
    assert "wrong" not in repr(AmapGeolocator(key="wrong", url=amap.url))  # repr hides the key


# --------------------------------------------------------------------------- cache, rate limit

def test_scan_key_is_the_set_of_radios_whatever_their_order_and_signal() -> None:
    a = scan()
    b = RadioScan(device_id="OTHER", ts=NOW + 60_000,
                  cells=[Cell(mcc=460, mnc=0, lac=9360, cid=4083, signal_dbm=-90),
                         Cell(mcc=460, mnc=0, lac=9360, cid=4082)],
                  wifi=[*reversed([WifiAp(mac=ap.mac) for ap in a.wifi]), a.wifi[0]])
    assert scan_key(a) == scan_key(b)
    assert scan_key(a) != scan_key(scan(aps=2)) != scan_key(scan(cells=1))


def test_cache_is_lru_and_expires_by_the_time_passed_in() -> None:
    fix = Fix(lat=1.0, lon=2.0, accuracy_m=30.0, source="wifi")
    cache = FixCache(size=2, ttl_s=60.0)
    k1, k2, k3 = (scan_key(scan(cells=n)) for n in (1, 2, 3))
    cache.put(k1, fix, now=0.0)
    cache.put(k2, None, now=0.0)   # "no position" is an answer too
    assert cache.get(k1, now=59.9) == fix  # used: k2 is now the least recent
    cache.put(k3, fix, now=10.0)
    assert len(cache) == 2
    assert cache.get(k2, now=11.0) is not None and cache.get(k2, now=11.0) is not fix  # MISSING
    assert cache.get(k1, now=60.0) is not fix   # expired at put + ttl
    assert cache.get(k3, now=69.9) == fix and cache.get(k3, now=70.0) is not fix


def test_token_bucket_allows_a_seconds_worth_then_refills_with_time() -> None:
    bucket = TokenBucket(rate_per_s=2.0, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(100.4) is False and bucket.take(100.5) is True
    assert bucket.take(101.5) and bucket.take(101.5) and not bucket.take(101.5)
    slow = TokenBucket(rate_per_s=0.1, now=0.0)
    assert slow.take(0.0) and not slow.take(9.9) and slow.take(10.0)


class FakeProvider:
    """A :class:`~gateway.geolocate.Geolocator` answering from a script: a Fix, None, an
    exception to raise, or "hang"."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def locate(self, scan: RadioScan) -> Fix | None:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer == "hang":
            await asyncio.sleep(30)
        result: Fix | None = answer
        return result


FIX = Fix(lat=37.5, lon=122.1, accuracy_m=40.0, source="wifi")


def cached(provider: FakeProvider, clock: list[float], outcomes: list[Outcome], *,
           rate: float = 100.0, timeout_s: float = 5.0) -> CachedGeolocator:
    return CachedGeolocator(provider, cache_size=100, cache_ttl_s=600.0,
                            max_requests_per_s=rate, timeout_s=timeout_s,
                            clock=lambda: clock[0],
                            observe=lambda outcome, _s: outcomes.append(outcome))


def test_a_hit_asks_nothing_and_an_expired_entry_is_asked_again() -> None:
    provider, clock = FakeProvider(FIX, FIX), [1000.0]
    outcomes: list[Outcome] = []
    geo = cached(provider, clock, outcomes)

    async def main() -> list[Fix | None]:
        got = [await geo.locate(scan()), await geo.locate(scan(ts=NOW + 1))]
        clock[0] += 599.0
        got.append(await geo.locate(scan()))
        clock[0] += 1.0  # the entry was stored at 1000, so it is gone at 1600
        got.append(await geo.locate(scan()))
        return got

    assert asyncio.run(main()) == [FIX] * 4
    assert outcomes == ["miss", "hit", "hit", "miss"] and provider.calls == 2


def test_no_position_is_cached_a_failure_is_not() -> None:
    provider, clock = FakeProvider(None, GeolocationError("HTTP 503"), FIX), [0.0]
    outcomes: list[Outcome] = []
    geo = cached(provider, clock, outcomes)

    async def main() -> list[Fix | None]:
        other = scan(cells=1)
        return [await geo.locate(scan()), await geo.locate(scan()),
                await geo.locate(other), await geo.locate(other), await geo.locate(other)]

    assert asyncio.run(main()) == [None, None, None, FIX, FIX]
    assert outcomes == ["failed", "hit", "failed", "miss", "hit"] and provider.calls == 3


def test_over_the_rate_limit_nothing_is_asked_until_time_passes() -> None:
    provider, clock = FakeProvider(FIX, FIX, FIX), [0.0]
    outcomes: list[Outcome] = []
    geo = cached(provider, clock, outcomes, rate=2.0)

    async def main() -> list[Fix | None]:
        got = [await geo.locate(scan(cells=n)) for n in (1, 2, 3)]
        clock[0] += 0.5
        got.append(await geo.locate(scan(cells=3)))
        return got

    assert asyncio.run(main()) == [FIX, FIX, None, FIX]
    assert outcomes == ["miss", "miss", "rate_limited", "miss"] and provider.calls == 3


def test_a_hanging_or_broken_provider_costs_a_position_never_an_exception(
        caplog: pytest.LogCaptureFixture) -> None:
    provider, clock = FakeProvider("hang", ValueError("bug")), [0.0]
    outcomes: list[Outcome] = []
    geo = cached(provider, clock, outcomes, timeout_s=0.05)
    caplog.set_level(logging.INFO, logger="gateway.geolocate")

    async def main() -> list[Fix | None]:
        return [await geo.locate(scan()), await geo.locate(scan())]

    started = time.monotonic()
    assert asyncio.run(main()) == [None, None]
    assert time.monotonic() - started < 5
    assert outcomes == ["failed", "failed"]
    text = caplog.text
    assert "no answer within 0.05 s" in text and "provider error ValueError" in text
    assert DEV in text and "00:11:22" not in text


# --------------------------------------------------------------------------- configuration

def test_configuration_needs_a_key_file_for_a_provider_and_reads_it_once(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs key_file"):
        load_config(path=None, env={}, overrides={"gateway.geolocation.provider": "amap"})
    assert build_locator(GeolocationConfig()) is None
    missing = GeolocationConfig(provider="amap", key_file=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="key_file .*nope"):
        build_locator(missing)
    (tmp_path / "two").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="on one line") as info:
        read_key(str(tmp_path / "two"))
    assert "a\nb" not in str(info.value)
    (tmp_path / "key").write_text(KEY + "\n", encoding="utf-8")
    assert read_key(str(tmp_path / "key")) == KEY
    config = load_config(path=None, env={}, overrides={
        "gateway.geolocation.provider": "amap", "gateway.geolocation.key_file": str(
            tmp_path / "key"), "gateway.geolocation.max_requests_per_s": 2})
    locator = build_locator(config.gateway.geolocation)
    assert locator is not None and KEY not in repr(locator.provider)
    asyncio.run(locator.aclose())


# --------------------------------------------------------------------------- the server

class Recorder:
    """The gateway's publisher: what would reach the broker, and when."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, str, list[dict[str, Any]]]] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        self.messages.append((time.monotonic(), topic, json.loads(payload)))

    def device(self) -> list[list[dict[str, Any]]]:
        """The device's readings, message by message (the gateway batches many devices'
        readings on its gateway topic; each names its device)."""
        out = [[r for r in m if r.get("device_id") == DEV] for _, topic, m in self.messages
               if "/gw/" in topic]
        return [m for m in out if m]

    def types(self) -> list[list[str]]:
        return [[r["type"] for r in m] for m in self.device()]


async def until(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def gateway(recorder: Recorder, locator: CachedGeolocator | None, metrics: GatewayMetrics,
                  regions: dict[str, str] | None = None,
                  ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    settings = msgspec.convert({"listen": "127.0.0.1:0", "region": REGION}, GatewayConfig)
    server = GatewayServer(codec=WatchCodec(), settings=settings, publisher=recorder,
                           metrics=metrics, locator=locator, regions=regions)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await server.stop()
        if locator is not None:
            await locator.aclose()


def amap_locator(amap: AmapStandIn, metrics: GatewayMetrics, *,
                 timeout_s: float = 5.0) -> CachedGeolocator:
    return CachedGeolocator(AmapGeolocator(key=KEY, url=amap.url, timeout_s=timeout_s),
                            cache_size=100, cache_ttl_s=3600, max_requests_per_s=10,
                            timeout_s=timeout_s,
                            observe=metrics_observer(metrics.lookups, metrics.lookup_latency))


def test_an_sos_goes_out_and_is_answered_while_its_lookup_waits_then_its_position_follows(
        amap: AmapStandIn) -> None:
    amap.proceed.clear()  # the service holds its answer until we have seen the SOS go out
    metrics, recorder = GatewayMetrics(), Recorder()

    async def main() -> bytes:
        async with gateway(recorder, amap_locator(amap, metrics), metrics) as (reader, writer):
            writer.write(watch_frame("AL", 1 << 16))
            reply = await asyncio.wait_for(reader.readuntil(b"]"), 10)
            # Published and answered with the lookup still in flight: nothing waited for it.
            await until(lambda: amap.requests)
            assert recorder.types() == [["sos", "radio"]]
            amap.proceed.set()
            await until(lambda: len(recorder.device()) == 2)
            return reply

    assert asyncio.run(main()) == f"[3G*{DEV}*0002*AL]".encode()
    (sos, radio), (location,) = recorder.device()
    assert radio["wifi"][0] == {"mac": "00:11:22:33:44:55", "signal_dbm": -60.0}
    assert location == {"type": "location", "device_id": DEV, "ts": sos["ts"],
                        "lat": pytest.approx(WGS84_LAT, abs=1e-9),
                        "lon": pytest.approx(WGS84_LON, abs=1e-9),
                        "accuracy_m": 30.0, "source": "wifi"}
    (form,) = amap.requests
    assert form["macs"] == MACS and DEV not in repr(form)
    assert not any(name in repr(form) for name in ("Zhang", "Li-5G", "Office"))
    assert metrics.value("eldercare_gateway_geolocation_lookups_total", outcome="miss") == 1
    assert metrics.value("eldercare_gateway_positions_published_total", source="wifi") == 1
    assert metrics.value("eldercare_gateway_geolocation_seconds_count") == 1


def test_a_periodic_scan_goes_out_and_its_position_follows_from_the_cache_the_second_time(
        amap: AmapStandIn) -> None:
    metrics, recorder = GatewayMetrics(), Recorder()

    async def main() -> None:
        async with gateway(recorder, amap_locator(amap, metrics), metrics) as (_, writer):
            writer.write(watch_frame("UD", 0))
            await until(lambda: len(recorder.device()) == 2)
            writer.write(watch_frame("UD", 0))
            await until(lambda: len(recorder.device()) == 4)

    asyncio.run(main())
    assert recorder.types() == [["radio"], ["location"]] * 2
    assert len(amap.requests) == 1
    assert metrics.value("eldercare_gateway_geolocation_lookups_total", outcome="hit") == 1
    assert metrics.value("eldercare_gateway_readings_published_total") == 4


@pytest.mark.parametrize("behaviour", ["refuse", "hang"])
def test_a_failed_lookup_publishes_the_scan_without_a_position(
        amap: AmapStandIn, behaviour: str, caplog: pytest.LogCaptureFixture) -> None:
    amap.behaviour = behaviour
    metrics, recorder = GatewayMetrics(), Recorder()
    caplog.set_level(logging.INFO)

    async def main() -> None:
        locator = amap_locator(amap, metrics, timeout_s=0.3)
        async with gateway(recorder, locator, metrics) as (reader, writer):
            writer.write(watch_frame("AL", 1 << 16))
            await asyncio.wait_for(reader.readuntil(b"]"), 10)
            await until(lambda: metrics.value("eldercare_gateway_geolocation_lookups_total",
                                              outcome="failed") == 1)
            writer.write(f"[3G*{DEV}*0002*LK]".encode())
            await until(lambda: len(recorder.device()) == 2)  # the keepalive's heartbeat

    asyncio.run(main())
    assert recorder.types() == [["sos", "radio"], ["heartbeat"]]
    assert DEV in caplog.text and ("DAILY_QUERY_OVER_LIMIT" in caplog.text
                                   or "0.3 s" in caplog.text)
    assert KEY not in caplog.text and "00:11:22" not in caplog.text and "122.1" not in caplog.text


def test_a_device_the_registry_does_not_name_is_not_looked_up(amap: AmapStandIn) -> None:
    metrics, recorder = GatewayMetrics(), Recorder()

    async def main() -> None:
        locator = amap_locator(amap, metrics)
        async with gateway(recorder, locator, metrics, regions={"OTHER": REGION}) as (_, w):
            w.write(watch_frame("UD", 0) + f"[3G*{DEV}*0002*LK]".encode())
            await until(lambda: len(recorder.device()) == 2)
            await asyncio.sleep(0.3)  # time for a lookup that should not start to show up

    asyncio.run(main())
    # Published under the configured region for ingest's admission to judge; never sent out.
    assert recorder.types() == [["radio"], ["heartbeat"]] and amap.requests == []


def test_without_a_provider_the_scan_is_published_and_no_position_is_made_up() -> None:
    metrics, recorder = GatewayMetrics(), Recorder()

    async def main() -> None:
        async with gateway(recorder, None, metrics) as (reader, writer):
            writer.write(watch_frame("AL", 1 << 16))
            await asyncio.wait_for(reader.readuntil(b"]"), 10)
            writer.write(watch_frame("UD", 0) + f"[3G*{DEV}*0002*LK]".encode())
            await until(lambda: len(recorder.device()) == 3)

    asyncio.run(main())
    assert recorder.types() == [["sos", "radio"], ["radio"], ["heartbeat"]]
    (sos, radio), *_ = recorder.device()
    assert "lat" not in sos and [c["cid"] for c in radio["cells"]] == [4082, 4092]
    assert metrics.value("eldercare_gateway_geolocation_lookups_total", outcome="miss") == 0


# --------------------------------------------------------------------------- end to end

def test_eldercare_gateway_with_amap_stores_the_scan_and_its_position(
        make_config: Callable[..., Config], broker: Mosquitto, region: str, db_url: str,
        amap: AmapStandIn, tmp_path: Path) -> None:
    """``eldercare gateway watch`` configured with the provider, a real broker, the service:
    the SOS is raised, and the scan and the position it resolved to are stored."""
    from eldercare.app import Application
    from foundation.ports import free_port
    from tests.conftest import count, wait_for
    from tests.test_gateway_e2e import Gateway, watch

    (tmp_path / "amap.key").write_text(KEY + "\n", encoding="utf-8")
    listen = f"127.0.0.1:{free_port()}"
    gw = load_config(path=None, env={}, overrides={
        "mqtt.url": broker.url, "gateway.protocol": "watch", "gateway.region": region,
        "gateway.listen": listen, "gateway.client_id": f"gw-{region}",
        "gateway.geolocation.provider": "amap", "gateway.geolocation.url": amap.url,
        "gateway.geolocation.key_file": str(tmp_path / "amap.key")})
    with Application(make_config()), Gateway(gw), watch(int(listen.rpartition(":")[2])) as w:
        w.send(watch_frame("AL", 1 << 16))
        assert w.reply() == f"[3G*{DEV}*0002*AL]".encode()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings WHERE device_id = %s"
                               " AND type = 'location'", DEV) == 1,
                 timeout_s=15, what="the position from the radio scan stored")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM detection_events WHERE"
                               " device_id = %s AND type = 'sos'", DEV) == 1,
                 timeout_s=15, what="the SOS raised")
    import psycopg
    with psycopg.connect(db_url) as conn:
        cells, wifi = conn.execute("SELECT cells, wifi FROM readings WHERE device_id = %s AND"
                                   " type = 'radio'", (DEV,)).fetchone() or (None, None)
        loc = conn.execute("SELECT lat, lon, accuracy_m, source, region FROM readings WHERE"
                           " device_id = %s AND type = 'location'", (DEV,)).fetchone()
    assert cells == [{"mcc": 460, "mnc": 0, "lac": 9360, "cid": 4082, "signal_dbm": -71.0},
                     {"mcc": 460, "mnc": 0, "lac": 9360, "cid": 4092, "signal_dbm": -80.0}]
    assert [ap["mac"] for ap in wifi] == ["00:11:22:33:44:55", "00:11:22:33:44:56",
                                          "00:11:22:33:44:57"]
    assert loc is not None and loc[2:] == (30.0, "wifi", region)
    assert loc[:2] == pytest.approx((WGS84_LAT, WGS84_LON), abs=1e-9)
