"""Simulator delivery, recording and replay (device_sim.gateway, .recording, .publisher, .load).

Reading streams are built by hand here, so these tests do not depend on the device models.
Broker tests use the suite's private Mosquitto and a unique region (so topics) per test.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detectors.replay import run_detect
from device_sim.gateway import MAX_PAYLOAD_BYTES, deliver
from device_sim.load import LoadParams, PayloadFactory, run_load
from device_sim.publisher import encode_payload, publish
from device_sim.recording import read_recording, write_recording
from device_sim.types import DeliveryParams, Publication, SimReading
from foundation.errors import ValidationError
from schemas import MessageDecoder, Reading, device_topic, gateway_topic
from tests.conftest import wait_for
from tests.services import Mosquitto

T0 = 1_790_000_000_000
CLEAN = DeliveryParams(duplicate_rate=0, reorder_rate=0, delay_rate=0, gateway_batch=5,
                       gateway_flush_s=2.0)


def loc(device: str, t_ms: int, gateway: str | None = None, region: str = "r1",
        seq: int = 0, **extra: Any) -> SimReading:
    body = {"device_id": device, "type": "location", "ts": t_ms, "seq": seq,
            "lat": 37.5, "lon": 122.1, **extra}
    return SimReading(t_ms, device, region, gateway, body)


def alarm(device: str, t_ms: int, gateway: str | None = None) -> SimReading:
    return SimReading(t_ms, device, "r1", gateway, {"device_id": device, "type": "sos", "ts": t_ms})


def times(pubs: list[Publication]) -> list[list[int]]:
    return [[r["ts"] for r in p.readings] for p in pubs]


def assert_ordered(pubs: list[Publication]) -> None:
    assert all(a.t_ms <= b.t_ms for a, b in itertools.pairwise(pubs))


# -- gateway delivery ------------------------------------------------------------------------

def test_a_device_without_gateway_publishes_each_reading_alone_at_its_time() -> None:
    pubs = list(deliver([loc("BR-1", T0 + i * 1000) for i in range(3)], params=CLEAN, seed=1))
    assert [(p.t_ms, p.topic, p.as_array) for p in pubs] == [
        (T0 + i * 1000, device_topic("r1", "BR-1"), False) for i in range(3)]
    assert encode_payload(pubs[0]).startswith(b'{"device_id":"BR-1"')


def test_a_gateway_flushes_at_batch_size_and_after_flush_time() -> None:
    dense = [loc(f"BR-{i % 3}", T0 + i * 100, "GW-1") for i in range(12)]
    sparse = [loc("BR-9", T0 + 10_000, "GW-1"), loc("BR-9", T0 + 10_500, "GW-1"),
              loc("BR-9", T0 + 13_000, "GW-1")]
    pubs = list(deliver(dense + sparse, params=CLEAN, seed=1))
    assert all(p.topic == gateway_topic("r1", "GW-1") and p.as_array for p in pubs)
    assert [p.t_ms for p in pubs] == [T0 + 400, T0 + 900, T0 + 1000 + 2000, T0 + 12_000,
                                      T0 + 15_000]
    assert times(pubs)[:3] == [[T0 + i * 100 for i in range(k, k + 5)] for k in (0, 5)] + [
        [T0 + 1000, T0 + 1100]]
    assert times(pubs)[3:] == [[T0 + 10_000, T0 + 10_500], [T0 + 13_000]]


def test_a_gateway_sends_an_alarm_and_what_it_held_at_once() -> None:
    pubs = list(deliver([loc("BR-1", T0, "GW-1"), loc("BR-2", T0 + 100, "GW-1"),
                         alarm("BR-3", T0 + 200, "GW-1"), loc("BR-1", T0 + 300, "GW-1")],
                        params=CLEAN, seed=1))
    assert [(p.t_ms, len(p.readings)) for p in pubs] == [(T0 + 200, 3), (T0 + 2300, 1)]
    assert pubs[0].readings[-1]["type"] == "sos"


def test_gateways_add_device_id_and_payloads_pass_the_wire_contract() -> None:
    bare = SimReading(T0, "BR-7", "r1", "GW-1", {"type": "heartbeat", "ts": T0})
    pubs = list(deliver([bare, loc("BR-8", T0 + 5, "GW-1")], params=CLEAN, seed=1))
    decoded = MessageDecoder().decode(pubs[0].topic, encode_payload(pubs[0]), now_ms=T0)
    assert not decoded.rejects
    assert [r.device_id for r in decoded.readings] == ["BR-7", "BR-8"]
    assert "device_id" not in bare.body  # the input is not modified


def test_mangling_happens_at_about_the_configured_rates() -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    params = DeliveryParams(duplicate_rate=0.05, delay_rate=0.1, delay_max_s=5.0,
                            reorder_rate=0.0)
    readings = [loc(f"BR-{i % 50}", T0 + i * 10, seq=i) for i in range(20_000)]
    pubs = list(deliver(readings, params=params, seed=seed))
    assert_ordered(pubs)
    copies = Counter(p.readings[0]["seq"] for p in pubs)
    assert set(copies) == set(range(20_000))  # nothing lost
    assert 0.04 < sum(n - 1 for n in copies.values()) / 20_000 < 0.06
    first: dict[int, Publication] = {}
    for p in pubs:
        first.setdefault(p.readings[0]["seq"], p)
    delayed = sum(p.t_ms > p.readings[0]["ts"] for p in first.values()) / 20_000
    assert 0.085 < delayed < 0.115
    assert max(p.t_ms - p.readings[0]["ts"] for p in first.values()) <= 5000
    seqs = [p.readings[0]["seq"] for p in first.values()]
    assert seqs != sorted(seqs)  # delayed messages are overtaken


def test_reordering_moves_about_the_configured_fraction_inside_gateway_messages() -> None:
    params = DeliveryParams(duplicate_rate=0, delay_rate=0, reorder_rate=0.1, gateway_batch=50)
    readings = [loc(f"BR-{i % 50}", T0 + i * 10, "GW-1", seq=i) for i in range(20_000)]
    pubs = list(deliver(readings, params=params, seed=7))
    moved = 0
    for ts in times(pubs):
        moved += sum(a != b for a, b in zip(ts, sorted(ts), strict=True))
    assert sorted(r["seq"] for p in pubs for r in p.readings) == list(range(20_000))
    assert 0.07 < moved / 20_000 < 0.14


def test_an_outage_holds_readings_and_releases_them_as_one_burst() -> None:
    own = [loc("BR-1", T0 + i * 500) for i in range(17)]          # 0 .. 8000
    gated = [loc("BR-2", T0 + i * 500 + 1, "GW-1") for i in range(17)]
    merged = sorted(own + gated, key=lambda r: r.t_ms)
    outages = {"BR-1": [(T0 + 1000, T0 + 5000)], "BR-2": [(T0 + 2000, T0 + 4000)]}
    params = DeliveryParams(duplicate_rate=0, delay_rate=0, reorder_rate=0,
                            gateway_batch=1)
    pubs = list(deliver(merged, params=params, seed=1, outages=outages))
    assert_ordered(pubs)
    burst = [p for p in pubs if len(p.readings) > 1]
    assert [(p.t_ms, p.topic, p.as_array) for p in burst] == [
        (T0 + 4000, gateway_topic("r1", "GW-1"), True),
        (T0 + 5000, device_topic("r1", "BR-1"), True)]
    assert times(burst) == [[T0 + t + 1 for t in range(2000, 4000, 500)],
                            [T0 + t for t in range(1000, 5000, 500)]]
    singles = [p.readings[0]["ts"] for p in pubs if p.readings[0]["device_id"] == "BR-1"
               and len(p.readings) == 1]
    assert singles == [T0, T0 + 500] + [T0 + t for t in range(5000, 8001, 500)]


def test_large_bursts_are_split_below_the_payload_limit() -> None:
    samples = [round(0.001 * i, 3) for i in range(2000)]
    accel = [SimReading(T0 + i, "FS-1", "r1", None,
                        {"device_id": "FS-1", "type": "accel", "ts": T0 + i, "rate_hz": 50,
                         "x": samples, "y": samples, "z": samples}) for i in range(40)]
    pubs = list(deliver(accel, params=CLEAN, seed=1, outages={"FS-1": [(T0, T0 + 100)]}))
    assert len(pubs) > 1 and sum(len(p.readings) for p in pubs) == 40
    assert all(len(encode_payload(p)) <= MAX_PAYLOAD_BYTES for p in pubs)


def test_delivery_is_deterministic_from_the_seed() -> None:
    params = DeliveryParams(duplicate_rate=0.1, delay_rate=0.1, reorder_rate=0.2,
                            gateway_batch=10)
    readings = [loc(f"BR-{i % 7}", T0 + i * 37, "GW-1" if i % 3 else None, seq=i)
                for i in range(3000)]

    def run(seed: int) -> list[tuple[int, str, bytes]]:
        return [(p.t_ms, p.topic, encode_payload(p))
                for p in deliver(iter(readings), params=params, seed=seed)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_readings_out_of_time_order_are_refused() -> None:
    with pytest.raises(ValueError, match="out of time order"):
        list(deliver([loc("BR-1", T0 + 10), loc("BR-1", T0)], params=CLEAN, seed=1))


# -- recording -------------------------------------------------------------------------------

def sample_pubs() -> list[Publication]:
    a = {"device_id": "BR-1", "type": "location", "ts": T0, "lat": 37.123456789, "lon": 122.1,
         "accuracy_m": 12}
    b = {"device_id": "BR-2", "type": "sos", "ts": T0 + 1}
    c = {"type": "vitals", "ts": T0 + 2, "heart_rate_bpm": 71.5}
    return [
        Publication(T0, gateway_topic("r1", "GW-1"), [a, b], True),
        Publication(T0 + 10, gateway_topic("r1", "GW-1"), [b], True),
        Publication(T0 + 20, device_topic("r2", "BR-3"), [c], False),
        Publication(T0 + 30, device_topic("r2", "BR-3"), [c], True),   # burst of one
        Publication(T0 + 30, device_topic("r2", "BR-3"), [c, c], True),
        Publication(T0 + 40, gateway_topic("r1", "GW-1"), [a, b], True),  # a duplicate
    ]


def test_a_recording_round_trips_to_identical_payloads() -> None:
    out = io.BytesIO()
    stats = write_recording(sample_pubs(), out)
    lines = out.getvalue().splitlines()
    assert (stats.messages, stats.readings, stats.bytes) == (6, 9, len(out.getvalue()))
    assert (stats.first_sent_ms, stats.last_sent_ms) == (T0, T0 + 40)
    assert len(lines) == 9
    first = json.loads(lines[0])
    assert list(first)[:3] == ["msg", "sent_ms", "topic"]
    assert [json.loads(line)["msg"] for line in lines] == [1, 1, 2, 3, 4, 5, 5, 6, 6]
    assert [("array" in json.loads(line)) for line in lines] == [False] * 4 + [True] + [
        False] * 4
    back = list(read_recording(io.BytesIO(out.getvalue())))
    assert [(p.t_ms, p.topic, p.as_array) for p in back] == [
        (p.t_ms, p.topic, p.as_array) for p in sample_pubs()]
    assert [encode_payload(p) for p in back] == [encode_payload(p) for p in sample_pubs()]


@pytest.mark.parametrize(("text", "reason"), [
    (b'{"msg":1,"sent_ms":5,"topic":"t","type":"sos"}\n{nope\n', "line 2: not a JSON object"),
    (b'{"sent_ms":5,"topic":"t","type":"sos"}\n', "line 1: envelope key `msg` missing"),
    (b'{"msg":1,"sent_ms":"5","topic":"t"}\n', "line 1: envelope key `sent_ms` not int"),
    (b'{"msg":2,"sent_ms":5,"topic":"t"}\n\n{"msg":1,"sent_ms":5,"topic":"t"}\n',
     "line 3: message 1 after message 2"),
    (b'{"msg":1,"sent_ms":5,"topic":"t"}\n{"msg":1,"sent_ms":6,"topic":"t"}\n',
     "line 2: message 1 changes"),
])
def test_a_malformed_recording_names_the_line(text: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        list(read_recording(io.BytesIO(text)))


def test_the_writer_refuses_what_a_recording_cannot_hold() -> None:
    with pytest.raises(ValueError, match="envelope key"):
        write_recording([Publication(T0, "x", [{"topic": "y", "ts": 1}], False)], io.BytesIO())
    with pytest.raises(ValueError, match="must be an array"):
        write_recording([Publication(T0, device_topic("r", "D"), [{}, {}], False)],
                        io.BytesIO())


# -- eldercare detect on recordings ------------------------------------------------------------

def test_detect_reads_a_recording_and_takes_the_region_from_the_topic() -> None:
    sos_own = SimReading(T0, "BR-1", "west-1", None, {"type": "sos", "ts": T0})  # no device_id
    sos_gw = alarm("BR-2", T0 + 5)._replace(region="east-2", gateway_id="GW-1")
    out = io.BytesIO()
    write_recording(deliver([sos_own, sos_gw], params=CLEAN, seed=1), out)
    lines = out.getvalue().splitlines(keepends=True)
    lines.append(b'{"msg":9,"sent_ms":%d,"topic":"eldercare/v1/south/dev/BR-4","region":"north",'
                 b'"type":"sos","ts":%d}\n' % (T0 + 9, T0 + 9))
    lines.append(b'{"msg":10,"sent_ms":%d,"topic":"eldercare/v1/r/dev/BR-5","device_id":"BR-6",'
                 b'"type":"sos","ts":%d}\n' % (T0 + 9, T0 + 9))
    events, err = io.StringIO(), io.StringIO()
    report = run_detect(lines, events, err)
    got = sorted((e["device_id"], e["region"], e["type"])
                 for e in map(json.loads, events.getvalue().splitlines()))
    assert got == [("BR-1", "west-1", "sos"), ("BR-2", "east-2", "sos"),
                   ("BR-4", "north", "sos")]
    assert report.readings == 3 and report.rejected == 1
    assert "does not match the topic's device 'BR-5'" in err.getvalue()


def test_the_envelope_does_not_fail_reading_validation() -> None:
    out = io.BytesIO()
    write_recording(sample_pubs()[:1], out)
    readings = [msgspec.json.decode(line, type=Reading) for line in out.getvalue().splitlines()]
    assert [r.device_id for r in readings] == ["BR-1", "BR-2"]


# -- publishing to a real broker ----------------------------------------------------------------

class Subscriber:
    """Records (monotonic arrival, topic, payload, user properties) of every message."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.got: list[tuple[float, str, bytes, dict[str, str]]] = []
        subscribed = threading.Event()
        host, port = broker.url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id="sub-" + uuid.uuid4().hex[:8])
        self.client.on_message = lambda c, u, m: self.got.append(
            (time.monotonic(), m.topic, bytes(m.payload),
             dict(getattr(m.properties, "UserProperty", []))))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker: Mosquitto, region: str) -> Iterator[Subscriber]:
    s = Subscriber(broker, f"eldercare/v1/{region}/#")
    yield s
    s.close()


def test_every_published_message_reaches_a_subscriber(
        broker: Mosquitto, region: str, subscriber: Subscriber) -> None:
    readings = [loc(f"BR-{i % 9}", T0 + i * 50, "GW-1" if i % 2 else None, region, seq=i)
                for i in range(600)]
    params = DeliveryParams(duplicate_rate=0.05, gateway_batch=10)
    pubs = list(deliver(readings, params=params, seed=3))
    stats = publish(pubs, url=broker.url, speed=None, window=16)
    assert (stats.messages, stats.readings, stats.refused) == (len(pubs), sum(
        len(p.readings) for p in pubs), 0)
    wait_for(lambda: len(subscriber.got) >= len(pubs), what="all messages")
    assert sorted((t, p) for _, t, p, _ in subscriber.got) == sorted(
        (p.topic, encode_payload(p)) for p in pubs)


def timed_recording(region: str, seed: int) -> bytes:
    rng = random.Random(seed)
    t, pubs = T0, []
    for i in range(40):
        pubs.append(Publication(t, device_topic(region, "BR-1"),
                                [{"type": "heartbeat", "ts": t, "seq": i}], False))
        t += rng.choice([0, 20, 40, 80, 100, 120, 180])  # ~3 s in all
    out = io.BytesIO()
    write_recording(pubs, out)
    return out.getvalue()


def check_timing(subscriber: Subscriber, recording: bytes, speed: float) -> float:
    sent = [p.t_ms for p in read_recording(io.BytesIO(recording))]
    wait_for(lambda: len(subscriber.got) >= len(sent), what="the replay")
    seqs = [json.loads(payload)["seq"] for _, _, payload, _ in subscriber.got]
    assert seqs == list(range(len(sent)))  # all, in order
    arrived = [at for at, *_ in subscriber.got]
    errors = [abs((at - arrived[0]) * 1000 - (ms - sent[0]) / speed)
              for at, ms in zip(arrived, sent, strict=True)]
    assert max(errors) < 50, f"timing off by up to {max(errors):.0f} ms"
    return arrived[-1] - arrived[0]


def test_replay_keeps_the_recorded_timing(
        broker: Mosquitto, region: str, subscriber: Subscriber) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    recording = timed_recording(region, seed)
    pubs = list(read_recording(io.BytesIO(recording)))
    span_s = (pubs[-1].t_ms - pubs[0].t_ms) / 1000
    assert 1.5 < span_s < 4.5
    stats = publish(iter(pubs), url=broker.url, speed=1.0)
    assert stats.messages == 40 and stats.max_late_ms < 50
    assert check_timing(subscriber, recording, 1.0) == pytest.approx(span_s, abs=0.05)


def test_replay_at_ten_times_takes_a_tenth_of_the_time(
        broker: Mosquitto, region: str, subscriber: Subscriber) -> None:
    recording = timed_recording(region, 11)
    pubs = list(read_recording(io.BytesIO(recording)))
    span_s = (pubs[-1].t_ms - pubs[0].t_ms) / 1000
    stats = publish(pubs, url=broker.url, speed=10.0)
    assert stats.seconds == pytest.approx(span_s / 10, abs=0.08)
    assert check_timing(subscriber, recording, 10.0) == pytest.approx(span_s / 10, abs=0.05)


def test_a_stop_event_ends_a_replay_early(broker: Mosquitto, region: str) -> None:
    pubs = list(read_recording(io.BytesIO(timed_recording(region, 5))))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t = time.monotonic()
    stats = publish(pubs, url=broker.url, speed=1.0, stop=stop)
    assert stats.stopped and 0 < stats.messages < 40 and time.monotonic() - t < 1.5


def test_publishing_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")  # a private one: restarting the shared one
    broker.start()                                # would disturb other tests

    def bounce() -> None:
        time.sleep(0.3)
        broker.stop()
        time.sleep(0.5)
        broker.start()

    pubs = [Publication(T0 + i * 15, device_topic("r1", "BR-1"),
                        [{"type": "heartbeat", "ts": T0 + i, "seq": i}], False)
            for i in range(100)]
    restart = threading.Thread(target=bounce)
    restart.start()
    try:
        stats = publish(pubs, url=broker.url, speed=1.0)
    finally:
        restart.join()
        broker.stop()
    assert stats.messages == 100 and stats.late_messages > 0  # held up, then all acknowledged


def test_an_unreachable_broker_is_a_broker_error() -> None:
    from foundation.errors import BrokerError
    from foundation.ports import free_port

    with pytest.raises(BrokerError, match="cannot reach"):
        publish([], url=f"mqtt://127.0.0.1:{free_port()}")


def test_replay_command_publishes_a_recording(
        broker: Mosquitto, region: str, subscriber: Subscriber, tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_bytes(timed_recording(region, 2))
    done = subprocess.run([sys.executable, "-m", "eldercare.cli", "sim", "replay", str(path),
                           "--mqtt-url", broker.url, "--max-speed"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "replayed 40 messages (40 readings)" in done.stderr
    wait_for(lambda: len(subscriber.got) >= 40, what="the replay")
    (tmp_path / "bad.jsonl").write_bytes(b"{}\n")
    bad = subprocess.run([sys.executable, "-m", "eldercare.cli", "sim", "replay",
                          str(tmp_path / "bad.jsonl"), "--mqtt-url", broker.url],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "bad.jsonl: line 1: envelope key `msg` missing" in bad.stderr


# -- load generation ---------------------------------------------------------------------------

def test_load_payloads_pass_the_wire_contract() -> None:
    decoder = MessageDecoder()
    for devices, batch in ((120, 50), (7, 5), (3, 1)):
        factory = PayloadFactory(LoadParams(devices=devices, rate=None, gateway_batch=batch))
        seen: Counter[str] = Counter()
        for i in range(2 * len(factory.slots)):
            topic, payload = factory.message(i, T0)
            decoded = decoder.decode(topic, payload, now_ms=T0)
            assert not decoded.rejects and len(decoded.readings) == batch
            assert all(r.ts == T0 for r in decoded.readings)
            for r in decoded.readings:
                assert r.seq == seen[r.device_id or ""]  # each device counts up by one
                seen[r.device_id or ""] += 1
        assert len(seen) == devices


def test_load_sends_at_the_asked_rate_with_its_send_time(
        broker: Mosquitto, region: str, subscriber: Subscriber) -> None:
    params = LoadParams(devices=40, rate=4000, gateway_batch=20, duration_s=1.0, region=region)
    stats = run_load(params, url=broker.url)
    assert stats.messages == pytest.approx(200, abs=4) and stats.readings == stats.messages * 20
    assert stats.rate == pytest.approx(4000, rel=0.1)
    wait_for(lambda: len(subscriber.got) >= stats.messages, what="the load")
    for at, _, payload, props in subscriber.got[:20]:
        sent_ns = int(props["sent_ns"])
        assert {r["ts"] for r in json.loads(payload)} == {sent_ns // 1_000_000}
        assert 0 <= time.time_ns() - sent_ns < 30e9


def test_load_command_prints_a_table_and_json(broker: Mosquitto, region: str) -> None:
    done = subprocess.run([sys.executable, "-m", "eldercare.cli", "sim", "load", "--devices",
                           "10", "--rate", "500", "--gateway-batch", "5", "--duration", "0.5",
                           "--region", region, "--mqtt-url", broker.url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| messages | readings |")
    report = json.loads(lines[-1])
    assert report["readings"] == report["messages"] * 5 and report["refused"] == 0
