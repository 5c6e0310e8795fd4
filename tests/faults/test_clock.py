"""Faults: device clocks hours off, and readings days late from a buffered gateway (issue #7).

The wire contract (README, docs/wire-contract.md) takes ``ts`` from 2020 up to ``max_future_s``
ahead of our clock (configured here to 600 s): a clock hours ahead is dead-lettered with a
reason naming ``$.ts``; a clock hours behind is stored as it is. A gateway that was offline for
days delivers its backlog late, and twice (it resends what it never saw acknowledged): each
reading is stored once. An SOS in that backlog, pressed two days ago, is raised and alerted
(docs/detectors.md: "an old press nobody saw is raised"), once, however often it is delivered.
A late press of a wearer whose SOS alert is already open is raised as its own event and folded
into that alert (docs/alerts.md: repeated events update one alert); what the dispatch platform
is told of it is recorded in the row.

An SOS from a watch whose clock runs hours ahead is where the two documents meet: the contract
dead-letters the clock, and the detectors' rule says every press raises, whatever else is wrong
with it. The alarm salvage (docs/wire-contract.md) settles it for every alarm whose device can
be read: stored on the receipt time when its own is missing or implausible, invalid fields
dropped, alerted, and each defect dead-lettered beside it. ``test_an_sos_from_a_clock_hours_
ahead_is_alerted`` and ``test_alarms_with_a_bad_clock_or_a_bad_field_are_alerted`` pin it (an
alarm is never dropped: STYLE.md habit 8); ``test_a_press_stamped_2099_does_not_hold_its_alert``
that a press from 2099 no longer holds its episode and alert there.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from schemas import device_topic
from tests.conftest import now_ms
from tests.faults.conftest import FaultReport
from tests.faults.dispatch import DispatchPlatform
from tests.faults.harness import (
    AckedPublisher,
    FaultRow,
    Ledger,
    Outgoing,
    Post,
    ServiceProcess,
    device_message,
    gateway_message,
    registry_yaml,
    wait_until,
)
from tests.faults.stream import periodic_reading
from tests.services import Mosquitto

HOUR_MS = 3600_000
DAY_MS = 24 * HOUR_MS
MAX_FUTURE_S = 600
FUTURE_REASON = re.compile(
    rf"ts \d+ is \d+ s in the future \(limit {MAX_FUTURE_S} s\) - at `\$\.ts`")
AHEAD, BEHIND, LATE_SOS, OPEN_SOS, FUTURE_SOS, SOS_2099 = (
    "CK-AHEAD", "CK-BEHIND", "CK-LATE-SOS", "CK-OPEN-SOS", "CK-FUTURE-SOS", "CK-2099")
GATEWAY_DEVICES = [f"CK-GW-{i}" for i in range(5)]
TS_2099 = 4_070_908_800_000  # 2099-01-01T00:00Z
#: Alarms the review found dead-lettered and silent: (device, wire reading without device_id,
#: its clock is bad (else it gets ts = now when sent), MessagePack?, through a gateway?, what
#: the dead letter must name).
SALVAGED: list[tuple[str, dict[str, Any], bool, bool, bool, str]] = [
    ("CK-TS-ZERO", {"type": "sos", "ts": 0}, True, False, False, "ts 0 is before 2020-01-01"),
    ("CK-TS-2019", {"type": "sos", "ts": 1_559_347_200_000, "seq": 3}, True, False, False,
     "ts 1559347200000 is before 2020-01-01"),
    ("CK-TS-NONE", {"type": "sos", "lat": 37.51, "lon": 122.12}, True, False, False,
     "missing required field `ts`"),
    ("CK-TS-TEXT", {"type": "sos", "ts": "12:03"}, True, False, False, "ts is a string"),
    ("CK-LAT-91", {"type": "sos", "lat": 91, "lon": 122.12}, False, False, False, "`$.lat`"),
    ("CK-ACC-NEG", {"type": "sos", "lat": 37.51, "lon": 122.12, "accuracy_m": -1}, False, False,
     False, "`$.accuracy_m`"),
    ("CK-FALL-1.5", {"type": "fall", "confidence": 1.5}, False, False, False, "`$.confidence`"),
    ("CK-NAN-LAT", {"type": "sos", "lat": math.nan, "lon": 122.12}, False, True, False,
     "`$.lat`"),
    ("CK-GW-TS-ZERO", {"type": "sos", "ts": 0}, True, False, True, "ts 0 is before 2020-01-01"),
]


@dataclass
class ClockRig:
    service: ServiceProcess
    publisher: AckedPublisher
    ledger: Ledger
    region: str

    def send(self, messages: list[Outgoing]) -> None:
        for m in messages:
            self.publisher.publish(m)
        self.publisher.wait_acked(timeout_s=30)


@pytest.fixture
def clock_rig(fault_broker: Mosquitto, db_url: str, fault_region: str,
              dispatch: DispatchPlatform, service_factory: Callable[..., ServiceProcess],
              tmp_path: Path) -> Iterator[ClockRig]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(
        fault_region, [AHEAD, BEHIND, LATE_SOS, OPEN_SOS, FUTURE_SOS, SOS_2099, *GATEWAY_DEVICES,
                       *(case[0] for case in SALVAGED)]),
        encoding="utf-8")
    service = service_factory(mqtt_url=fault_broker.url, database_url=db_url,
                              registry=registry, webhook_url=dispatch.url,
                              settings={"ingest.max_future_s": MAX_FUTURE_S})
    service.start()
    publisher = AckedPublisher(fault_broker.url)
    yield ClockRig(service, publisher, Ledger(db_url, region=fault_region), fault_region)
    publisher.close()


def readings(rng: random.Random, device: str, *, start_ms: int, n: int, step_ms: int,
             seq0: int = 0) -> list[dict[str, Any]]:
    return [periodic_reading(rng, device, ts=start_ms + i * step_ms, seq=seq0 + i)
            for i in range(n)]


def sos(ts: int, seq: int) -> dict[str, Any]:
    return {"type": "sos", "ts": ts, "seq": seq, "lat": 37.51, "lon": 122.12}


def test_clocks_hours_off_and_a_backlog_days_late(
        clock_rig: ClockRig, dispatch: DispatchPlatform, fault_report: FaultReport,
        fault_seed: int) -> None:
    r, rng, now = clock_rig, random.Random(fault_seed), now_ms()
    region = r.region
    ahead = readings(rng, AHEAD, start_ms=now + 3 * HOUR_MS, n=20, step_ms=10_000)
    near = readings(rng, AHEAD, start_ms=now + 120_000, n=1, step_ms=1, seq0=100)
    behind = readings(rng, BEHIND, start_ms=now - 5 * HOUR_MS, n=20, step_ms=10_000)
    backlog = [x for d in GATEWAY_DEVICES
               for x in readings(rng, d, start_ms=now - 3 * DAY_MS, n=60, step_ms=60_000)]
    rng.shuffle(backlog)
    late_press = sos(now - 2 * DAY_MS, 7)
    late_of_open = sos(now - 2 * DAY_MS + 5000, 8)

    # A wearer presses SOS now, and the alert opens (the platform is told).
    r.send([device_message(region, OPEN_SOS, [sos(now, 9)])])
    wait_until(lambda: dispatch.accepted("alert.opened"), timeout_s=30, service=r.service,
               what="the fresh SOS alerted")
    posts_before = len(dispatch.accepted())
    # Clocks hours off, then the gateway's days-old backlog with two old presses, twice.
    gw = [gateway_message(region, "GW-BUFFERED", backlog[i:i + 50])
          for i in range(0, len(backlog), 50)]
    gw.append(gateway_message(region, "GW-BUFFERED", [
        {**late_press, "device_id": LATE_SOS}, {**late_of_open, "device_id": OPEN_SOS}]))
    r.send([device_message(region, AHEAD, ahead[i:i + 5]) for i in range(0, 20, 5)]
           + [device_message(region, AHEAD, near), device_message(region, BEHIND, behind)]
           + gw + gw)

    expected = {m for m in r.publisher.acked_keys()
                if not (m.device_id == AHEAD and m.ts > now + MAX_FUTURE_S * 1000)}
    wait_until(lambda: r.ledger.count_readings() >= len(expected)
               and len(r.ledger.dead_letters()) >= len(ahead), timeout_s=60, service=r.service,
               what="every reading stored or dead-lettered")
    wait_until(lambda: r.ledger.alarms([LATE_SOS], dispatch.received()).delivered == 1,
               timeout_s=30, service=r.service, what="the two-day-old SOS alerted")
    wait_until(lambda: r.ledger.unfolded_events() == 0, timeout_s=30, service=r.service,
               what="every event folded into alerts")
    stored = r.ledger.readings(expected)
    dead = r.ledger.dead_letters()
    late = r.ledger.alarms([LATE_SOS], dispatch.received())
    open_alerts = r.ledger.alerts("sos")[OPEN_SOS]
    open_events = r.ledger.event_times(OPEN_SOS)
    event_count, first_ts = r.ledger.rows(
        "SELECT event_count, round(extract(epoch FROM first_ts) * 1000)::bigint FROM alerts"
        " WHERE id = %s", open_alerts[0])[0]
    backlog_rows = sum(n for k, n in r.ledger.stored_keys().items()
                       if k.device_id in GATEWAY_DEVICES)
    told = [p.event for p in dispatch.accepted()[posts_before:] if p.alert_id == open_alerts[0]]
    accounted = stored.stored + sum(bool(FUTURE_REASON.search(d.reason)) for d in dead)
    fault_report.record(FaultRow(
        fault="device clocks 3 h ahead / 5 h behind; gateway backlog 2-3 days late, sent twice",
        injections=len(ahead) + len(behind) + len(backlog) + 2, sent=stored.sent + len(ahead),
        stored=accounted, alerted=late.delivered,
        lost=stored.lost + late.lost + len(ahead) - (accounted - stored.stored),
        note=f"stored counts {len(dead)} readings 3 h ahead dead-lettered as the contract says"
             f" (reason: `$.ts` in the future); backlog rows"
             f" {backlog_rows} for {len(backlog)} readings sent"
             f" twice; 2-day-old SOS raised and alerted once; an old press of a wearer with an"
             f" open alert: event raised, folded (event_count {event_count}), platform told:"
             f" {', '.join(told) or 'nothing'}",
        extra={"seed": fault_seed, "readings_stored": stored.stored,
               "dead_letters": len(dead)}))

    assert stored.missing == () and stored.duplicates == 0, stored.missing[:5]
    assert stored.unacked_stored == 0
    assert [FUTURE_REASON.search(d.reason) is not None for d in dead] == [True] * len(ahead)
    assert all(d.topic.endswith(f"/dev/{AHEAD}") for d in dead)
    assert (late.events, late.alerts, late.delivered) == (1, 1, 1), late
    assert (late.duplicate_events, late.duplicate_alerts, late.reopened) == (0, 0, 0), late
    assert r.ledger.event_times(LATE_SOS) == [late_press["ts"]]
    # The old press of the wearer with an open alert: its own event, folded into that alert.
    assert open_events == [late_of_open["ts"], now] and len(open_alerts) == 1
    assert event_count == 2 and first_ts == late_of_open["ts"]
    assert backlog_rows == len(backlog)
    assert dispatch.bad_signatures() == 0


def test_an_sos_from_a_clock_hours_ahead_is_alerted(
        clock_rig: ClockRig, dispatch: DispatchPlatform, fault_report: FaultReport) -> None:
    r = clock_rig
    sent = now_ms()
    press = sos(sent + 3 * HOUR_MS, 1)
    r.send([device_message(r.region, FUTURE_SOS, [press])])
    # Whatever the service does with it, it is done once the message is stored or
    # dead-lettered and any event folded; then give the webhook a generous moment to be told.
    wait_until(lambda: r.ledger.dead_letters() or r.ledger.count_readings(), timeout_s=30,
               service=r.service, what="the press stored or dead-lettered")
    wait_until(lambda: r.ledger.unfolded_events() == 0, timeout_s=30, service=r.service,
               what="events folded")
    try:
        wait_until(lambda: r.ledger.alarms([FUTURE_SOS], dispatch.received()).delivered,
                   timeout_s=10, service=r.service, what="the SOS at the dispatch webhook")
    except AssertionError:
        pass  # recorded below: this is the fault's outcome, not a harness failure
    alarm = r.ledger.alarms([FUTURE_SOS], dispatch.received())
    dead = r.ledger.dead_letters()
    fault_report.record(FaultRow(
        fault="SOS from a watch whose clock runs 3 h ahead", injections=1, sent=1,
        stored=r.ledger.count_readings(), alerted=alarm.delivered, lost=alarm.lost,
        note="alarm admitted whatever its clock, alerted once; the bad clock dead-lettered"
             " beside it"
        if alarm.delivered else "NOT alerted"))
    assert alarm.events == 1 and alarm.delivered == 1, (alarm, [d.reason for d in dead])
    assert len(dead) == 1 and "alarm admitted anyway" in dead[0].reason
    assert FUTURE_REASON.search(dead[0].reason) and "replaced by the receipt time" in dead[0].reason
    # Stored and raised on the receipt time; the device's own ts is in the dead letter's bytes.
    (event_ts,) = r.ledger.event_times(FUTURE_SOS)
    assert sent <= event_ts <= now_ms()
    assert json.loads(dead[0].payload)["ts"] == press["ts"]


def _publish_msgpack(r: ClockRig, device: str, reading: dict[str, Any]) -> None:
    """One MessagePack reading, MQTT 5 content type and all (the fault publisher sends JSON)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/msgpack"
    info = r.publisher.client.publish(device_topic(r.region, device),
                                      msgspec.msgpack.encode(reading), qos=1, properties=props)
    info.wait_for_publish(timeout=30)


def _stored(r: ClockRig, devices: list[str]) -> dict[str, list[tuple[str, int]]]:
    """(type, ts) of the readings stored per device."""
    out: dict[str, list[tuple[str, int]]] = {d: [] for d in devices}
    for device, kind, ts in r.ledger.rows(
            "SELECT device_id, type, round(extract(epoch FROM ts) * 1000)::bigint FROM readings"
            " WHERE region = %s AND device_id = ANY(%s) ORDER BY ts", r.region, devices):
        out[device].append((kind, int(ts)))
    return out


def test_alarms_with_a_bad_clock_or_a_bad_field_are_alerted(
        clock_rig: ClockRig, dispatch: DispatchPlatform, fault_report: FaultReport,
        fault_seed: int) -> None:
    """Each case of the review: a stored sos/fall reading on the receipt time when its own is
    bad, a detection event, an alert the dispatch platform is told of, and a dead letter naming
    the defect beside it; the gateway's other readings stored as usual."""
    r, rng = clock_rig, random.Random(fault_seed)
    sent = now_ms()
    neighbours = readings(rng, GATEWAY_DEVICES[0], start_ms=sent - 60_000, n=3, step_ms=10_000)
    for device, reading, bad_clock, packed, via_gateway, _ in SALVAGED:
        reading = reading if bad_clock else {**reading, "ts": sent}
        if packed:
            _publish_msgpack(r, device, reading)
        elif via_gateway:
            r.send([gateway_message(r.region, "GW-SALVAGE",
                                    [*neighbours, {**reading, "device_id": device}])])
        else:  # built by hand: a reading without a ts has no storage key to derive
            r.send([Outgoing(device_topic(r.region, device), msgspec.json.encode(reading), ())])
    devices = [case[0] for case in SALVAGED]
    kinds = {case[0]: case[1]["type"] for case in SALVAGED}

    def delivered() -> int:
        posts = dispatch.received()
        return sum(r.ledger.alarms([d], posts, type=kinds[d]).delivered for d in devices)

    wait_until(lambda: delivered() == len(devices), timeout_s=60, service=r.service,
               what="every salvaged alarm at the dispatch webhook")
    stored = _stored(r, devices)
    dead = r.ledger.dead_letters()
    posts: list[Post] = dispatch.received()
    outcomes = {d: r.ledger.alarms([d], posts, type=kinds[d]) for d in devices}
    fault_report.record(FaultRow(
        fault="alarms with a bad clock (0, 2019, none, text) or a bad field (lat 91, accuracy"
              " -1, confidence 1.5, MessagePack NaN), device and gateway topics",
        injections=len(devices), sent=len(devices),
        stored=sum(bool(v) for v in stored.values()),
        alerted=sum(o.delivered for o in outcomes.values()),
        lost=sum(o.lost for o in outcomes.values()),
        note="each alarm stored (receipt time for a bad clock), raised, alerted once; its"
             " defects dead-lettered beside it",
        extra={"seed": fault_seed, "dead_letters": len(dead)}))

    for device, reading, bad_clock, _, via_gateway, defect in SALVAGED:
        kind = reading["type"]
        ((stored_kind, ts),) = stored[device]
        assert stored_kind == kind, (device, stored[device])
        if bad_clock:
            assert sent <= ts <= now_ms(), (device, ts)  # the receipt time
        else:
            assert ts == sent, (device, ts)
        o = outcomes[device]
        assert (o.events, o.alerts, o.delivered) == (1, 1, 1), (device, o)
        assert (o.duplicate_events, o.duplicate_alerts, o.reopened) == (0, 0, 0), (device, o)
        mine = [d for d in dead if (d.topic.endswith(f"/{device}") or device.encode() in d.payload)
                and "alarm admitted anyway" in d.reason]
        assert len(mine) == 1 and defect in mine[0].reason, (device, [d.reason for d in dead])
        if via_gateway:
            assert mine[0].reason.startswith("reading [3]: ")
    assert len(dead) == len(devices), [d.reason for d in dead]
    # The device's own time is found beside each reading as docs/wire-contract.md shows.
    beside = dict(r.ledger.rows(
        "SELECT r.device_id, d.payload FROM readings r JOIN dead_letters d"
        " ON d.received_at = r.received_at AND (d.topic LIKE '%%/dev/' || r.device_id"
        " OR position(convert_to(r.device_id, 'UTF8') IN d.payload) > 0)"
        " WHERE r.region = %s AND r.type IN ('sos', 'fall')"
        " AND d.reason LIKE '%%alarm admitted anyway%%'", r.region))
    assert sorted(beside) == sorted(devices)
    assert b'"ts":0' in bytes(beside["CK-TS-ZERO"]).replace(b" ", b"")
    assert sum(n for k, n in r.ledger.stored_keys().items()
               if k.device_id == GATEWAY_DEVICES[0]) == len(neighbours)
    assert dispatch.bad_signatures() == 0


def test_a_press_stamped_2099_does_not_hold_its_alert(
        clock_rig: ClockRig, dispatch: DispatchPlatform, fault_report: FaultReport) -> None:
    """A press stamped 2099 is judged on its receipt time: dispatch is told of an alert that
    opened now, and a press of the same watch 150 s later (past the 120 s SOS window) is its own
    event, folded into that alert, whose latest time is then that press's, not 2099's."""
    r = clock_rig
    sent = now_ms()
    r.send([device_message(r.region, SOS_2099, [sos(TS_2099, 1)])])
    wait_until(lambda: r.ledger.alarms([SOS_2099], dispatch.received()).delivered,
               timeout_s=30, service=r.service, what="the 2099 press at the dispatch webhook")
    (first_ts,) = r.ledger.event_times(SOS_2099)
    assert sent <= first_ts <= now_ms()
    (opened,) = [p for p in dispatch.accepted() if p.event == "alert.opened"
                 and p.document["alert"]["device_id"] == SOS_2099]
    told = datetime.fromisoformat(opened.document["alert"]["first_ts"])
    assert round(told.timestamp() * 1000) == first_ts
    # The watch's clock is right again (within the contract's 10 min ahead): pressed 150 s on.
    later = first_ts + 150_000
    r.send([device_message(r.region, SOS_2099, [sos(later, 2)])])
    wait_until(lambda: len(r.ledger.event_times(SOS_2099)) == 2 and r.ledger.unfolded_events() == 0,
               timeout_s=30, service=r.service, what="the later press raised and folded")
    (alert_id,) = r.ledger.alerts("sos")[SOS_2099]
    count, last_ts = r.ledger.rows(
        "SELECT event_count, round(extract(epoch FROM last_ts) * 1000)::bigint FROM alerts"
        " WHERE id = %s", alert_id)[0]
    fault_report.record(FaultRow(
        fault="SOS from a watch stamped 2099, then a good press 150 s later", injections=2,
        sent=2, stored=len(r.ledger.event_times(SOS_2099)),
        alerted=r.ledger.alarms([SOS_2099], dispatch.received()).delivered, lost=0,
        note=f"alert opened on the receipt time; the later press folded (event_count {count}),"
             " its last_ts the later press's"))
    assert r.ledger.event_times(SOS_2099) == [first_ts, later]
    assert (count, last_ts) == (2, later)
    assert dispatch.bad_signatures() == 0
