"""Registry admission (issue #7): devices must be registered in their topic's region.

Decoder-level rules without I/O (refused readings, reasons, raw bytes, the counter and its
bounded labels, alarms admitted all the same), then end to end over real Mosquitto and
PostgreSQL: an SOS from a bracelet nobody registered still reaches the 12349 webhook as an alert,
and the console lists the device.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from alerts.auth import new_token
from alerts.webhook_receiver import Receiver
from eldercare.app import Application
from eldercare.config import Config
from ingest.admission import OTHER_REGION, RegistryAdmission
from ingest.metrics import IngestMetrics
from schemas import ALARM_TYPES, MessageDecoder, device_topic, gateway_topic
from schemas.admission import REASON_SQL_PATTERN, refusal_reason
from schemas.registry import Device, Registry, Wearer
from tests.conftest import Publisher, count, now_ms, wait_for
from tests.test_decode import VALID

NOW = 1_790_000_000_000
ADMITTED = "alarm admitted anyway (alarms are never dropped)"
REFUSED = "reading not stored"
A, B = "371002", "370102"
REGISTRY = Registry(wearers=[
    Wearer(id="W-1", name="王秀英", region=A, devices=[Device(id="BR-1", kind="bracelet"),
                                                      Device(id="HS-1", kind="home_sensor")]),
    Wearer(id="W-2", name="李建国", region=B, devices=[Device(id="WT-2", kind="watch")]),
])


def _decoder() -> tuple[MessageDecoder, IngestMetrics]:
    metrics = IngestMetrics(CollectorRegistry())
    admission = RegistryAdmission(REGISTRY, counter=metrics.unregistered_readings)
    return MessageDecoder(admission=admission), metrics


def _refused(metrics: IngestMetrics, region: str, reason: str, admitted: str) -> float:
    return metrics.value("eldercare_unregistered_readings_total", region=region, reason=reason,
                         admitted=admitted)


def enc(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_registered_devices_in_their_region_pass_untouched() -> None:
    decoder, metrics = _decoder()
    out = decoder.decode(device_topic(A, "BR-1"), enc(type="heartbeat", ts=NOW), now_ms=NOW)
    gw = decoder.decode(gateway_topic(A, "GW-1"), json.dumps([
        {"device_id": d, "type": "heartbeat", "ts": NOW} for d in ("BR-1", "HS-1")]).encode(),
        now_ms=NOW)
    assert (len(out.readings), out.rejects, len(gw.readings), gw.rejects) == (1, [], 2, [])
    assert metrics.registry.get_sample_value("eldercare_unregistered_readings_total",
                                             {"region": A, "reason": "unknown_device",
                                              "admitted": "false"}) is None


def test_an_unknown_device_is_refused_with_its_bytes_and_counted_by_region() -> None:
    decoder, metrics = _decoder()
    payload = enc(type="location", ts=NOW, lat=37.5, lon=122.1)
    out = decoder.decode(device_topic(A, "BR-9"), payload, now_ms=NOW)
    assert out.readings == []
    (reject,) = out.rejects
    assert reject.raw == payload and not reject.admitted
    assert reject.reason == 'unknown device "BR-9" (not in the registry): location reading not stored'
    assert _refused(metrics, A, "unknown_device", "false") == 1


def test_a_registered_device_on_another_regions_topic_is_refused() -> None:
    decoder, metrics = _decoder()
    out = decoder.decode(device_topic(B, "BR-1"), enc(type="heartbeat", ts=NOW), now_ms=NOW)
    assert out.readings == []
    assert [r.reason for r in out.rejects] == [
        'device "BR-1" is registered in region 371002, not 370102: heartbeat reading not stored']
    assert _refused(metrics, B, "wrong_region", "false") == 1


def test_a_region_nobody_is_registered_in_is_one_metric_label() -> None:
    decoder, metrics = _decoder()
    for i in range(5):   # five invented regions: one series, never five
        decoder.decode(device_topic(f"made-up-{i}", "X"), enc(type="heartbeat", ts=NOW),
                       now_ms=NOW)
    assert _refused(metrics, OTHER_REGION, "unknown_device", "false") == 5
    samples = [s for m in metrics.registry.collect() if m.name == "eldercare_unregistered_readings"
               for s in m.samples if s.name.endswith("_total")]
    assert len(samples) == 1 and "device_id" not in samples[0].labels


@pytest.mark.parametrize("kind", sorted(ALARM_TYPES))
def test_an_alarm_of_an_unknown_device_is_admitted_and_recorded(kind: str) -> None:
    decoder, metrics = _decoder()
    fields, cls = cast(tuple[dict[str, Any], type], VALID[kind])
    payload = enc(type=kind, ts=NOW, **fields)
    out = decoder.decode(device_topic(A, "BR-9"), payload, now_ms=NOW)
    (reading,) = out.readings
    assert type(reading) is cls and reading.device_id == "BR-9"
    (sighting,) = out.rejects
    assert sighting.admitted and sighting.raw == payload
    assert sighting.reason == f'unknown device "BR-9" (not in the registry): {kind} {ADMITTED}'
    assert _refused(metrics, A, "unknown_device", "true") == 1


def test_gateway_batches_refuse_reading_by_reading_with_each_readings_bytes() -> None:
    decoder, metrics = _decoder()
    items: list[dict[str, Any]] = [
        {"device_id": "BR-1", "type": "heartbeat", "ts": NOW},
        {"device_id": "ZZ-1", "type": "heartbeat", "ts": NOW, "battery_pct": 40},
        {"device_id": "ZZ-1", "type": "sos", "ts": NOW + 1},
        {"device_id": "WT-2", "type": "fall", "ts": NOW},
        {"device_id": "HS-1", "type": "home_alarm", "ts": NOW, "sensor": "smoke", "active": True},
    ]
    for codec in (msgspec.json, msgspec.msgpack):
        out = decoder.decode(gateway_topic(A, "GW-1"), codec.encode(items), now_ms=NOW,
                             content_type=None if codec is msgspec.json else "application/msgpack")
        assert [(r.device_id, type(r).__name__) for r in out.readings] == [
            ("BR-1", "Heartbeat"), ("ZZ-1", "Sos"), ("WT-2", "Fall"), ("HS-1", "HomeAlarm")]
        unknown = 'unknown device "ZZ-1" (not in the registry)'
        elsewhere = 'device "WT-2" is registered in region 370102, not 371002'
        assert [(r.raw, r.reason, r.admitted) for r in out.rejects] == [
            (codec.encode(items[1]), f"reading [1]: {unknown}: heartbeat {REFUSED}", False),
            (codec.encode(items[2]), f"reading [2]: {unknown}: sos {ADMITTED}", True),
            (codec.encode(items[3]), f"reading [3]: {elsewhere}: fall {ADMITTED}", True)]
    assert _refused(metrics, A, "unknown_device", "false") == 2
    assert _refused(metrics, A, "wrong_region", "true") == 2


def test_contract_errors_come_first_and_are_not_admission_refusals() -> None:
    decoder, metrics = _decoder()
    spoofed = decoder.decode(device_topic(A, "BR-9"), enc(type="sos", ts=NOW, device_id="BR-1"),
                             now_ms=NOW)
    # (A future-dated *alarm* is kept with its clock dead-lettered: tests/test_decode.py.)
    future = decoder.decode(device_topic(A, "BR-9"), enc(type="heartbeat", ts=NOW + 3_600_000),
                            now_ms=NOW)
    bad = decoder.decode(gateway_topic(A, "GW-1"), json.dumps([
        {"device_id": "ZZ-1", "type": "vitals", "ts": NOW, "heart_rate_bpm": 400}]).encode(),
        now_ms=NOW)
    for out in (spoofed, future, bad):
        assert out.readings == [] and len(out.rejects) == 1 and not out.rejects[0].admitted
        assert "registry" not in out.rejects[0].reason
    assert metrics.value("eldercare_unregistered_readings_total", region=A,
                         reason="unknown_device", admitted="true") == 0


def test_without_admission_every_device_id_is_decoded() -> None:
    out = MessageDecoder().decode(device_topic(A, "ANY-1"), enc(type="heartbeat", ts=NOW),
                                  now_ms=NOW)
    assert len(out.readings) == 1 and out.rejects == []


def test_the_console_pattern_parses_every_reason_and_nothing_else() -> None:
    # Python's re and PostgreSQL's AREs agree on this pattern's syntax; the console tests run
    # it in PostgreSQL too.
    pattern = re.compile(REASON_SQL_PATTERN)
    unknown = refusal_reason("BR-9", topic_region=A, registered=None, type_name="sos", alarm=True)
    wrong = refusal_reason("BR-1", topic_region=B, registered=A, type_name="location",
                           alarm=False)
    m1, m2 = pattern.match(f"reading [12]: {unknown}"), pattern.match(wrong)
    assert m1 is not None and m1.groups() == ("BR-9", None, None, "sos", "alarm admitted")
    assert m2 is not None and m2.groups() == (None, "BR-1", A, "location", "reading not stored")
    decoder = MessageDecoder()
    forged = decoder.decode(f'eldercare/v1/{A}/dev/{unknown}', b"{}", now_ms=NOW)
    assert forged.rejects and pattern.match(forged.rejects[0].reason) is None


# --- End to end --------------------------------------------------------------------------------

E2E_REGISTRY = """
wearers:
  - id: W-ADM
    name: 李桂兰
    region: "{region}"
    devices: [{{id: WT-ADM, kind: watch}}]
    contacts: [{{name: 李明, phone: "13800000001"}}]
"""


def test_an_sos_from_an_unregistered_bracelet_reaches_dispatch_and_the_console(
        make_config: Callable[..., Config], publisher: Publisher, region: str, db_url: str,
        receiver: Receiver, tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(E2E_REGISTRY.format(region=region))
    token, digest = new_token()
    (tmp_path / "tokens.yaml").write_text(
        f"- {{name: dispatch-12349, token_sha256: {digest}, role: dispatch, regions: ['*']}}\n")
    config = make_config(**{"registry": str(tmp_path / "registry.yaml"),
                            "api.tokens_file": str(tmp_path / "tokens.yaml"),
                            "alerts.webhook.url": receiver.url, "alerts.webhook.secret": "s"})
    elsewhere = region + "-b"
    now = now_ms()
    with Application(config) as svc:
        publisher.publish(device_topic(region, "BR-NEW"), enc(type="heartbeat", ts=now - 2000))
        publisher.publish(device_topic(elsewhere, "WT-ADM"), enc(type="heartbeat", ts=now - 2000))
        publisher.publish(device_topic(region, "WT-ADM"), enc(type="heartbeat", ts=now - 2000))
        publisher.publish(device_topic(region, "BR-NEW"),
                          enc(type="sos", ts=now - 1000, lat=37.51, lon=122.12))
        wait_for(lambda: any(json.loads(r.body)["event"] == "alert.opened"
                             for r in list(receiver.requests)), what="the SOS at the webhook")
        doc = next(json.loads(r.body) for r in list(receiver.requests)
                   if json.loads(r.body)["event"] == "alert.opened")
        wait_for(lambda: svc.ingest.metrics.value("eldercare_dead_letters_total") == 3,
                 what="three dead letters")
        assert svc.http is not None
        r = httpx.get(f"http://127.0.0.1:{svc.http.port}/api/v1/unregistered-devices",
                      headers={"Authorization": f"Bearer {token}"})
        value = svc.ingest.metrics.value
    alert = doc["alert"]
    assert (alert["type"], alert["device_id"], alert["region"], alert["subject"]) == (
        "sos", "BR-NEW", region, "device:BR-NEW")
    assert alert["wearer"] == {"id": None, "name": None}
    assert alert["position"] == {"lat": 37.51, "lon": 122.12}
    # Stored: the SOS and the registered watch's heartbeat; the rest only dead-lettered.
    with psycopg.connect(db_url) as c:
        stored = c.execute("SELECT device_id, type, region FROM readings ORDER BY type").fetchall()
        reasons = [row[0] for row in c.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert stored == [("WT-ADM", "heartbeat", region), ("BR-NEW", "sos", region)]
    unknown = 'unknown device "BR-NEW" (not in the registry)'
    assert sorted(reasons) == sorted([
        f"{unknown}: heartbeat {REFUSED}", f"{unknown}: sos {ADMITTED}",
        f'device "WT-ADM" is registered in region {region}, not {elsewhere}: heartbeat {REFUSED}'])
    assert count(db_url, "SELECT count(*) FROM detection_events WHERE device_id = 'BR-NEW'"
                 " AND type = 'sos' AND wearer_id IS NULL") == 1
    assert value("eldercare_unregistered_readings_total", region=region,
                 reason="unknown_device", admitted="true") == 1
    assert value("eldercare_unregistered_readings_total", region=region,
                 reason="unknown_device", admitted="false") == 1
    assert value("eldercare_unregistered_readings_total", region=OTHER_REGION,
                 reason="wrong_region", admitted="false") == 1
    assert r.status_code == 200, r.text
    rows = {(d["device_id"], d["region"]): d for d in r.json()["devices"]}
    assert set(rows) == {("BR-NEW", region), ("WT-ADM", elsewhere)}
    new = rows["BR-NEW", region]
    assert (new["readings"], new["alarms"], new["alarm_types"], new["registered_region"]) == (
        2, 1, ["sos"], None)
    assert rows["WT-ADM", elsewhere]["registered_region"] == region
